"""baking.target_format.windows: placement covers every base, clipping keeps the reading frame, and reverse
complement transforms DNA and coordinates together."""

from __future__ import annotations

import random

import pytest

from baking.formats.fasta import reverse_complement
from baking.target_format.features import GenomeFeature, SequenceInfo
from baking.target_format.grammar import WindowFeature
from baking.target_format.windows import (
    FeatureIndex,
    WindowMeta,
    clip_feature,
    mirror,
    plan_windows,
    sample_dna,
    window_dna,
    window_features,
)


def _covered(windows: list[tuple[int, int]], n: int) -> set[int]:
    return {p % n for s, e in windows for p in range(s, e)}


@pytest.mark.parametrize(
    "n, w, stride, offset",
    [
        (10, 3, 3, 0),
        (10, 3, 2, 1),
        (1000, 100, 100, 37),
        (1001, 100, 30, 0),
        (99, 100, 50, 0),
        (100, 100, 100, 5),
    ],
)
def test_linear_windows_cover_and_stay_inside(n: int, w: int, stride: int, offset: int) -> None:
    wins = plan_windows(n, w, stride, offset=offset)
    assert _covered(wins, n) == set(range(n))
    assert all(0 <= s < e <= n and e - s == min(w, n) for s, e in wins)
    assert wins == sorted(set(wins))


@pytest.mark.parametrize(
    "n, w, stride, offset", [(10, 3, 3, 0), (1000, 100, 70, 13), (100, 100, 100, 0)]
)
def test_circular_windows_wrap(n: int, w: int, stride: int, offset: int) -> None:
    wins = plan_windows(n, w, stride, circular=True, offset=offset)
    assert _covered(wins, n) == set(range(n))
    assert all(0 <= s < n and e - s == w for s, e in wins)
    assert len(wins) == -(-n // stride)


def test_region_windows_never_leave_the_block() -> None:
    wins = plan_windows(1000, 100, 100, circular=True, region=(800, 1000))
    assert wins == [(800, 900), (900, 1000)]
    assert plan_windows(1000, 100, 100, region=(0, 850))[-1] == (750, 850)
    with pytest.raises(ValueError):
        plan_windows(100, 10, 11)


def test_window_dna_wraps() -> None:
    seq = "ACGTTGCA"
    assert window_dna(seq, 6, 10) == "CAAC"
    assert sample_dna(seq, 6, 10, "-") == reverse_complement("CAAC")


def _codon_starts(f: GenomeFeature) -> set[int]:
    """0-based positions where codons start (in the feature's reading direction)."""
    s, e = f.start - 1, f.end - 1
    if f.strand == "+":
        return set(range(s + (f.phase or 0), e + 1, 3))
    return set(range(e - (f.phase or 0), s - 1, -3))


def test_clipped_phase_points_at_the_next_codon() -> None:
    rng = random.Random(3)
    for _ in range(500):
        s = rng.randrange(1, 500)
        f = GenomeFeature(
            "c", s, s + rng.randrange(3, 400), rng.choice("+-"), "CDS", rng.randrange(3)
        )
        ws = rng.randrange(0, 600)
        we = ws + rng.randrange(1, 300)
        if f.end - 1 < ws or f.start - 1 > we - 1:
            continue
        wf = clip_feature(f.start - 1, f.end - 1, f, ws, we)
        assert wf.phase is not None
        if f.strand == "+":
            first = ws + wf.start + wf.phase
        else:
            first = ws + wf.end - wf.phase
        assert first in _codon_starts(f) or not (ws + wf.start <= first <= ws + wf.end)
        assert wf.cut_left == (f.start - 1 < ws) and wf.cut_right == (f.end - 1 > we - 1)


def test_mirror_is_an_involution_and_keeps_phase() -> None:
    feats = [
        WindowFeature(0, 10, "+", "CDS", 2, True, False),
        WindowFeature(3, 99, "-", "tRNA", None, False, True),
    ]
    m = mirror(feats, 100)
    assert m == [
        WindowFeature(89, 99, "-", "CDS", 2, False, True),
        WindowFeature(0, 96, "+", "tRNA", None, True, False),
    ]
    assert mirror(m, 100) == feats


def test_reverse_complement_sample_sees_the_same_bases() -> None:
    """A feature's bases in a '-' sample are the reverse complement of its bases in the '+' one."""
    rng = random.Random(5)
    seq = "".join(rng.choice("ACGT") for _ in range(3000))
    info = SequenceInfo("c", 3000, True)
    feats = [
        GenomeFeature("c", 2900, 3100, "+", "CDS", 0),
        GenomeFeature("c", 40, 400, "-", "CDS", 1),
        GenomeFeature("c", 350, 360, "+", "tRNA"),
    ]
    index = FeatureIndex(feats, info)
    for ws, we in plan_windows(3000, 500, 300, circular=True):
        plus, minus = window_features(index, ws, we, "+"), window_features(index, ws, we, "-")
        dna_p, dna_m = sample_dna(seq, ws, we, "+"), sample_dna(seq, ws, we, "-")
        assert len(plus) == len(minus)
        for p, m in zip(sorted(plus), sorted(mirror(minus, we - ws))):
            assert p == m
        for m in minus:
            p = mirror([m], we - ws)[0]
            assert dna_m[m.start : m.end + 1] == reverse_complement(dna_p[p.start : p.end + 1])
            assert m.phase == p.phase and m.strand != p.strand


def test_origin_spanning_feature_seen_whole_and_at_start() -> None:
    info = SequenceInfo("c", 1000, True)
    f = GenomeFeature("c", 951, 1050, "+", "CDS", 0)  # 950..1049 0-based, crosses the origin
    index = FeatureIndex([f], info)
    assert window_features(index, 900, 1100) == [WindowFeature(50, 149, "+", "CDS", 0)]
    assert window_features(index, 0, 100) == [
        WindowFeature(0, 49, "+", "CDS", 1, True, False)
    ]  # 1001 = 950 + 3*17
    assert window_features(index, 800, 960) == [WindowFeature(150, 159, "+", "CDS", 0, False, True)]
    assert window_features(index, 100, 900) == []


def test_meta_json_round_trip() -> None:
    m = WindowMeta("g", "s", 10, 2010, "-", 5000, True, 2000)
    assert WindowMeta.from_json(m.to_json()) == m and m.length == 2000
