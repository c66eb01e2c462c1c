"""annotate: an oracle on a synthetic genome (everything after the model must be exact), a tiny
untrained model on the shared phage genome (output must pass `gt gff3validator`), bad input."""

from __future__ import annotations

import math
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from baking.evaluate.metrics import Feature, compare
from baking.formats.gff3 import read_gff3, write_gff3
from baking.synthetic import SyntheticConfig, generate_genome
from baking.target_format.features import GenomeFeature, SequenceInfo
from baking.target_format.grammar import WindowFeature, target_vocabulary
from baking.target_format.pointers import decode_pointer_target, encode_pointer_target
from baking.target_format.windows import FeatureIndex, window_features
from trainer.inference.annotate import AnnotateOptions, annotate_sequences
from trainer.inference.generate import GeneratedTarget
from trainer.inference.merge import MergeStats, Prediction, drop_near_duplicates, merge_windows
from trainer.model import Dna2GffConfig, Dna2GffModel
from trainer.tokens.tokenizer import add_annotation_tokens, load_tokenizer, save_tokenizer

REPO = Path(__file__).resolve().parents[1]
TYPES = ["CDS", "tRNA", "rRNA"]
W = 600


# ------------------------------------------------------------------------------- oracle


@pytest.fixture(scope="module")
def genome():
    cfg = SyntheticConfig(seed=3, chromosome_length=40_000, plasmid_lengths=(4_000,))
    return generate_genome(cfg)


def _reference(genome) -> list[GenomeFeature]:
    return [
        GenomeFeature(f.seqid, f.start, f.end, f.strand, f.type, f.phase)
        for f in genome.features
        if f.type in TYPES
    ]


class Oracle:
    """Generates each window's true target items (found by locating the window's DNA in the genome);
    ``shift_starts`` moves every complete CDS's 5' end inward, the same way in every window."""

    def __init__(self, genome, shift_starts: int = 0) -> None:
        ref = _reference(genome)
        if shift_starts:
            ref = [
                GenomeFeature(
                    f.seqid,
                    f.start + (shift_starts if f.strand == "+" and f.type == "CDS" else 0),
                    f.end - (shift_starts if f.strand == "-" and f.type == "CDS" else 0),
                    f.strand,
                    f.type,
                    f.phase,
                )
                for f in ref
            ]
        self.seqs = {s.seqid: s.seq for s in genome.sequences}
        self.index = {
            s.seqid: FeatureIndex(
                [f for f in ref if f.seqid == s.seqid], SequenceInfo(s.seqid, len(s.seq), True)
            )
            for s in genome.sequences
        }
        self.calls = 0

    def _locate(self, dna: str) -> tuple[str, int]:
        for seqid, seq in self.seqs.items():
            pos = (seq + seq[: len(dna)]).find(dna)
            if pos >= 0:
                return seqid, pos
        raise AssertionError("window DNA not in the genome")

    def __call__(self, model, tokenizer, windows_dna: Sequence[str], window_len: int, types, **kw):
        self.calls += 1
        out = []
        for dna in windows_dna:
            seqid, pos = self._locate(dna)
            feats = window_features(self.index[seqid], pos, pos + len(dna))
            items = encode_pointer_target(feats, len(dna))
            out.append(GeneratedTarget(items, [0.0] * len(items)))
        return out


PointerOracle = Oracle  # one target form: the oracle's items are the pointer items


def test_pointer_oracle_round_trip_is_exact(genome) -> None:
    """Everything after a pointer model (pointer items -> features -> stitch -> merge -> snap ->
    GFF3) reproduces the annotation exactly, with the default (half-window) overlap."""
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    opts = AnnotateOptions(batch_size=8, circular=("all",), progress=False)
    oracle = PointerOracle(genome)
    gff, _, summary = annotate_sequences(None, None, seqs, opts, W, TYPES, generate=oracle)
    for rep in compare(_as_features(genome.features), _as_features(gff), TYPES):
        assert rep.n_ref > 0
        assert rep.exact.f1 == 1.0, rep
    assert summary.merge["orphans_dropped"] == 0 and oracle.calls > 0


def _as_features(gff: Sequence, types: Sequence[str] = TYPES) -> list[Feature]:
    return [Feature(f.seqid, f.type, f.start, f.end, f.strand) for f in gff if f.type in types]


def test_oracle_round_trip_is_exact(genome, tmp_path: Path) -> None:
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    opts = AnnotateOptions(batch_size=8, circular=("all",), progress=False)
    oracle = Oracle(genome)
    gff, regions, summary = annotate_sequences(None, None, seqs, opts, W, TYPES, generate=oracle)
    ref = _as_features(genome.features)
    pred = _as_features(gff)
    for rep in compare(ref, pred, TYPES):
        assert rep.n_ref > 0
        assert rep.exact.f1 == 1.0, rep
    # The synthetic chromosome has a gene across the origin and a 2.9 kb rRNA (several windows).
    n = len(seqs[0][1])
    assert any(f.end > n for f in pred if f.seqid == seqs[0][0])
    assert any(f.end - f.start + 1 > 2 * W for f in pred)
    assert summary.snap.get("kept", 0) == sum(f.type == "CDS" for f in ref)
    assert summary.merge["orphans_dropped"] == 0
    out = tmp_path / "oracle.gff3"
    write_gff3(out, gff, regions)
    _validate(out)


def test_types_option_chooses_what_is_written(genome) -> None:
    """``--types tRNA`` on a model that knows CDS, tRNA, rRNA writes exactly the tRNAs."""
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    opts = AnnotateOptions(batch_size=8, circular=("all",), progress=False, feature_types=("tRNA",))
    gff, _, summary = annotate_sequences(None, None, seqs, opts, W, TYPES, generate=Oracle(genome))
    ref = _as_features(genome.features, ["tRNA"])
    pred = _as_features(gff)
    assert ref and {f.type for f in pred} == {"tRNA"}
    (rep,) = compare(ref, pred, ["tRNA"])
    assert rep.exact.f1 == 1.0 and summary.features == {"tRNA": len(ref)}
    genes = [f for f in gff if f.type == "gene"]
    assert len(genes) == len(ref)  # no gene left without its child


def test_snapping_repairs_shifted_starts(genome) -> None:
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    ref = _as_features(genome.features, ["CDS"])
    runs = {}
    for snap in (False, True):
        opts = AnnotateOptions(batch_size=8, circular=("all",), progress=False, snap=snap)
        gff, _, _ = annotate_sequences(
            None, None, seqs, opts, W, TYPES, generate=Oracle(genome, shift_starts=2)
        )
        (runs[snap],) = compare(ref, _as_features(gff, ["CDS"]), ["CDS"])
    assert runs[False].exact.f1 < 0.05  # every start is off by 2 bases
    assert runs[False].stop.f1 == 1.0
    assert runs[True].exact.f1 >= 0.9  # joint snapping puts them back
    assert runs[True].stop.f1 == 1.0


def test_orf_completion_recovers_genes_whose_continuations_were_lost(genome) -> None:
    """A model that places the ends it sees but loses a gene's continuation in the next window
    (the failure seen in short CPU training runs) still yields the gene, from its closed end."""

    class ForgetsContinuations(Oracle):
        def __call__(self, *args, **kw):
            out = []
            for t, dna in zip(super().__call__(*args, **kw), args[2]):
                feats = [
                    f
                    for f in decode_pointer_target(t.tokens, len(dna))
                    if not (f.cut_left and f.type == "CDS")
                ]
                items = encode_pointer_target(feats, len(dna))
                out.append(GeneratedTarget(items, [0.0] * len(items)))
            return out

    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    ref = _as_features(genome.features, ["CDS"])
    runs, summaries = {}, {}
    for complete in (False, True):
        opts = AnnotateOptions(
            batch_size=8, circular=("all",), progress=False, complete_orfs=complete
        )
        gff, _, summaries[complete] = annotate_sequences(
            None, None, seqs, opts, W, TYPES, generate=ForgetsContinuations(genome)
        )
        (runs[complete],) = compare(ref, _as_features(gff, ["CDS"]), ["CDS"])
    n_crossing = summaries[True].snap["completed"]
    assert n_crossing > 10  # many genes cross a 600 bp window edge
    assert runs[False].stop.sensitivity < 0.8  # those genes are lost without completion
    # A + strand gene keeps its start (5') and so its whole ORF; a - strand gene keeps its stop.
    assert runs[True].stop.f1 > 0.95
    assert runs[True].exact.f1 > runs[False].exact.f1


# ------------------------------------------------------------------------------- merge rules


def _meta(start: int, end: int, n: int = 10_000, circular: bool = False):
    from baking.target_format.windows import WindowMeta

    return WindowMeta("", "s", start, end, "+", n, circular, 1000)


def test_merge_scores_orphans_and_duplicates() -> None:
    lp = [math.log(0.5), math.log(0.9), math.log(0.6)]
    results = [
        # window 0 [0, 1000): a CDS running past its right edge, a tRNA cut at the right edge
        (
            _meta(0, 1000),
            [
                (WindowFeature(800, 999, "+", "CDS", 0, cut_right=True), lp[0]),
                (WindowFeature(900, 999, "+", "tRNA", None, cut_right=True), lp[1]),
            ],
        ),
        # window 1 [750, 1750) sees the whole CDS (801..1200) but no tRNA at all
        (_meta(750, 1750), [(WindowFeature(50, 449, "+", "CDS", 0), lp[2])]),
    ]
    preds, stats = merge_windows(results)
    assert [(p.start, p.end, p.type, p.partial) for p in preds] == [(801, 1200, "CDS", False)]
    assert preds[0].prob == pytest.approx((0.5 + 0.6) / 2)
    assert preds[0].windows == {0, 1}
    assert stats.orphans_dropped == 1  # the tRNA window 1 never continued
    # At a linear sequence's own end a cut is a real partial feature and is kept.
    edge = [
        (_meta(9000, 10_000), [(WindowFeature(900, 999, "+", "tRNA", None, cut_right=True), 0.0)])
    ]
    (p,), _ = merge_windows(edge)
    assert (p.start, p.end, p.partial_right) == (9901, 10_000, True)


def test_near_duplicates_prefer_more_context() -> None:
    def pred(start: int, end: int, margin: int, prob: float, window: int) -> Prediction:
        return Prediction("s", start, end, "+", "CDS", 0, prob, margin, frozenset({window}))

    a = pred(100, 400, margin=20, prob=0.9, window=0)
    b = pred(106, 400, margin=300, prob=0.5, window=1)
    c = pred(600, 900, margin=5, prob=0.5, window=1)  # no overlap: kept
    same_window = pred(103, 400, margin=1, prob=0.1, window=0)  # shares window 0 with a
    stats = MergeStats()
    kept = drop_near_duplicates([a, b, c], stats)
    assert kept == [b, c] and stats.near_duplicates_dropped == 1
    assert len(drop_near_duplicates([a, same_window], MergeStats())) == 2


# ------------------------------------------------------------------------------- tiny model


def _validate(path: Path) -> None:
    if shutil.which("gt") is None:
        pytest.skip("GenomeTools `gt` not installed")
    res = subprocess.run(["gt", "gff3validator", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


@pytest.fixture
def tiny_model(dnabert2_tokenizer_dir: Path, tmp_path: Path) -> Path:
    """An untrained 2+1-layer model on the real DNABERT-2 tokenizer plus the grammar's tokens."""
    tok = load_tokenizer(dnabert2_tokenizer_dir)
    add_annotation_tokens(tok, target_vocabulary(TYPES))
    save_tokenizer(tok, tmp_path / "tok")
    cfg = Dna2GffConfig(
        vocab_size=tok.get_vocab_size(True),
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        window_len=1000,
        feature_types=TYPES,
    )
    torch.manual_seed(0)
    Dna2GffModel(cfg).save_pretrained(tmp_path / "model", tmp_path / "tok")
    return tmp_path / "model"


def _cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "launch" / "annotate.py"), *map(str, args), "--no_progress"],
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.shared
def test_untrained_model_writes_valid_gff3_for_phage(tiny_model: Path, genome_pair, tmp_path):
    fna, _ = genome_pair("phage")
    out = tmp_path / "pred.gff3"
    res = _cli(
        "--model",
        tiny_model,
        "--fasta",
        fna,
        "--out",
        out,
        "--max_new_tokens",
        "40",
        "--batch_size",
        "32",
        "--circular",
        "all",
        "--num_beams",
        "2",
    )
    assert res.returncode == 0, res.stderr
    _validate(out)
    doc = read_gff3(out)
    assert doc.sequence_regions == {"NC_000902.1": (1, 60942)}
    children = [f for f in doc.features if f.type in TYPES]
    genes = {f.attr("ID"): f for f in doc.features if f.type == "gene"}
    assert children, "an untrained model still writes features"
    for f in children:
        assert f.source == "dna2gff" and 0.0 <= f.score <= 1.0
        parent = genes[f.attr("Parent")]
        assert (parent.start, parent.end, parent.strand) == (f.start, f.end, f.strand)
        assert (f.phase is not None) == (f.type == "CDS")


def _fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{k}\n{v}\n" for k, v in records.items()))
    return path


@pytest.mark.slow  # eight CLI subprocesses, each importing torch
def test_bad_input_fails_cleanly(tiny_model: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    good = _fasta(tmp_path / "g.fna", {"a": "".join(rng.choice("ACGT") for _ in range(300))})
    out = tmp_path / "out" / "pred.gff3"
    no_weights = tmp_path / "no_weights"
    no_weights.mkdir()
    shutil.copy(tiny_model / "config.json", no_weights / "config.json")
    not_fasta = tmp_path / "notes.txt"
    not_fasta.write_text("this is not a FASTA file\n")
    cases = [
        (["--model", tiny_model, "--fasta", tmp_path / "absent.fna"], "no such file"),
        (["--model", tiny_model, "--fasta", not_fasta], "notes.txt"),
        (["--model", no_weights, "--fasta", good], "model.safetensors"),
        (["--model", tmp_path / "nowhere", "--fasta", good], "model folder not found"),
        (["--model", tiny_model, "--fasta", good, "--transl_table", "99"], "transl_table=99"),
        (["--model", tiny_model, "--fasta", good, "--overlap", "1000"], "overlap=1000"),
        (["--model", tiny_model, "--fasta", good, "--circular", "chr9"], "chr9"),
    ]
    for args, message in cases:
        res = _cli(*args, "--out", out)
        assert res.returncode == 2, (args, res.stderr)
        last = res.stderr.strip().splitlines()[-1]
        assert last.startswith("error:") and message in last, res.stderr
        assert not out.parent.exists() or not any(out.parent.iterdir())
    # And a short linear sequence (shorter than a window) annotates fine.
    res = _cli("--model", tiny_model, "--fasta", good, "--out", out, "--max_new_tokens", "20")
    assert res.returncode == 0, res.stderr
    _validate(out)


def test_window_len_and_types_fall_back_to_options(tiny_model: Path) -> None:
    """A model whose config lacks window_len/feature_types needs --window_len (and may use
    --types, or the types its tokenizer knows)."""
    from baking.common.errors import ConfigError
    from trainer.inference.annotate import load_model, resolve_grammar

    model, tok = load_model(tiny_model, "cpu")
    assert resolve_grammar(model, tok, AnnotateOptions()) == (1000, TYPES)
    model.config.window_len = None
    model.config.feature_types = None
    with pytest.raises(ConfigError, match="--window_len"):
        resolve_grammar(model, tok, AnnotateOptions())
    got = resolve_grammar(model, tok, AnnotateOptions(window_len=1000))
    assert got == (1000, TYPES)  # the tokenizer knows <CDS>, <tRNA>, <rRNA>
    got = resolve_grammar(model, tok, AnnotateOptions(window_len=800, feature_types=("CDS",)))
    assert got == (800, ["CDS"])


def test_windows_vote_on_whole_cds_and_one_start_per_stop() -> None:
    """A CDS that three windows hold whole but only one predicted is dropped; two of three keep
    it; of two CDS sharing a stop codon the one more windows predicted stays."""
    from collections import Counter

    from baking.target_format.windows import WindowMeta
    from trainer.inference.annotate import _one_start_per_stop
    from trainer.inference.merge import drop_outvoted

    metas = [WindowMeta("", "s", a, a + 600, "+", 3000, False, 600) for a in (0, 200, 400, 600)]

    def pred(start, end, windows, strand="+", prob=0.5):
        return Prediction("s", start, end, strand, "CDS", 0, prob, 0, frozenset(windows))

    stray = pred(450, 590, {1})  # held whole by windows 0, 1, 2
    agreed = pred(451, 591, {0, 2})
    lonely = pred(1100, 1190, {3})  # held whole only by window 3: nothing to vote with
    stats = MergeStats()
    kept = drop_outvoted([stray, agreed, lonely], metas, 0.5, stats)
    assert kept == [agreed, lonely] and stats.outvoted_dropped == 1

    a, b = pred(100, 400, {0, 1}, prob=0.2), pred(160, 400, {1}, prob=0.9)
    c = pred(100, 400, {0}, strand="-")  # same end, other strand: another stop codon
    snaps: Counter = Counter()
    out = _one_start_per_stop([(p, "") for p in (a, b, c)], snaps, metas)
    assert [p for p, _ in out] == [a, c] and snaps["same_stop_dropped"] == 1


def test_only_windows_that_saw_both_starts_choose_between_them() -> None:
    """Windows of 600 bp every 200: a gene at 251..700 is whole only in window 1; windows 2 and 3
    cut its start off and each wrote a gene from an inner start codon. Their two votes must not
    outweigh window 1, the one window that saw both start codons (one start per stop codon used
    to keep the start more windows predicted)."""
    from collections import Counter

    from baking.target_format.windows import WindowMeta
    from trainer.inference.annotate import _one_start_per_stop
    from trainer.inference.merge import judged_votes

    metas = [WindowMeta("", "s", a, a + 600, "+", 3000, False, 600) for a in (0, 200, 400, 600)]

    def pred(start, end, windows, prob=0.5):
        return Prediction("s", start, end, "+", "CDS", 0, prob, 0, frozenset(windows))

    whole, inner = pred(251, 700, {1}), pred(611, 700, {2, 3}, prob=0.9)
    assert judged_votes(whole, inner, metas) == (1, 0)
    snaps: Counter = Counter()
    out = _one_start_per_stop([(inner, "moved"), (whole, "kept")], snaps, metas)
    assert out == [(whole, "kept")] and snaps["same_stop_dropped"] == 1

    # a gene no window holds whole (window 1's piece starts it, window 2's ends it): window 1
    # holds both start codons, so it judges the start even though it cut the stop off
    stitched, late = pred(251, 990, {1, 2}), pred(611, 990, {2, 3})
    assert judged_votes(stitched, late, metas) == (1, 0)
    # nobody holds both starts (101 and 651 are 550 apart in windows that begin 200 apart and
    # hold 600): the old order decides, the more windows first
    far, near = pred(101, 990, {0, 2}), pred(651, 990, {3})
    assert judged_votes(far, near, metas) == (0, 0)
    assert [p for p, _ in _one_start_per_stop([(near, ""), (far, "")], Counter(), metas)] == [far]


@pytest.mark.parametrize("circular", [False, True])
def test_window_cover_finds_exactly_the_windows_a_scan_finds(circular: bool) -> None:
    """``WindowCover`` (bisection over window starts) answers what a scan over every window
    answers, for spans anywhere, over the origin of a circular sequence and at a linear end."""
    from baking.target_format.windows import WindowMeta, plan_windows
    from trainer.inference.merge import WindowCover

    n, w = 20_011, 1536
    metas = [
        WindowMeta("", "s", a, b, "+", n, circular, w)
        for a, b in plan_windows(n, w, 512, circular=circular)
    ]
    random.Random(0).shuffle(metas)  # the index must not rely on the windows' order

    def scan(start: int, end: int) -> set[int]:
        s, e = start - 1, end - 1
        shifts = (0, n, -n) if circular else (0,)
        return {
            i
            for i, m in enumerate(metas)
            if any(m.start <= s + k and e + k < m.end for k in shifts)
        }

    cover = WindowCover(metas)
    rng = random.Random(1)
    spans = [(1, 300), (n - 400, n), (n - 100, n + 200), (5000, 5000 + w - 1), (5000, 5000 + w)]
    for _ in range(400):
        a = rng.randint(1, n)
        spans.append((a, a + rng.randint(0, 1800)))
    found = 0
    for a, b in spans:
        if b > n and not circular:
            continue
        assert cover(a, b) == scan(a, b), (a, b)
        found += bool(scan(a, b))
    assert found > 100, "most spans are held by some window: the comparison is not vacuous"
