#!/usr/bin/env python3
"""``--selection votes`` vs ``genome`` on model-like window errors, with no model: a noisy oracle.

    python benchmarks/selection_noisy_oracle.py [--length 300000] [--seed 5]

A synthetic genome (``baking.synthetic``, circular chromosome + plasmid) is annotated by an
oracle that writes each window's true features (the target items), then spoils them window by window,
independently: a whole CDS is left out (``miss``), its start moved to the next in-frame start
codon downstream (``start``: a wrong start on the right stop), and one random ORF of >= 60 codons
of the window added (``stray``). Everything after generation is annotate's own
(``annotate_sequences``: stitch, merge, completion, snapping, then the selection under test).
Printed: CDS stop and exact Sn / Pr / F1 for each noise level and selection. Real model errors are
not independent from window to window; this measures the finishing step, not a model.
"""

from __future__ import annotations

import argparse
import random
import sys
import zlib
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baking.evaluate.metrics import Feature, compare  # noqa: E402
from baking.formats.fasta import reverse_complement  # noqa: E402
from baking.orfs import OrfIndex  # noqa: E402
from baking.synthetic import SyntheticConfig, generate_genome  # noqa: E402
from baking.target_format.features import GenomeFeature, SequenceInfo  # noqa: E402
from baking.target_format.grammar import WindowFeature  # noqa: E402
from baking.target_format.pointers import encode_pointer_target  # noqa: E402
from baking.target_format.windows import FeatureIndex, window_features  # noqa: E402
from trainer.inference.annotate import AnnotateOptions, annotate_sequences  # noqa: E402
from trainer.inference.generate import GeneratedTarget  # noqa: E402

TYPES = ["CDS", "tRNA", "rRNA"]
WINDOW = 600
STARTS = {"ATG", "GTG", "TTG"}
LEVELS = ((0.0, 0.0, 0.0), (0.1, 0.1, 0.15), (0.2, 0.2, 0.3), (0.3, 0.3, 0.6))


class NoisyOracle:
    """Each window's true features, spoiled as the module docstring says (seeded per window)."""

    def __init__(self, genome, miss: float, start: float, stray: float, seed: int) -> None:
        ref = [
            GenomeFeature(f.seqid, f.start, f.end, f.strand, f.type, f.phase)
            for f in genome.features
            if f.type in TYPES
        ]
        self.seqs = {s.seqid: s.seq for s in genome.sequences}
        self.index = {
            s.seqid: FeatureIndex(
                [f for f in ref if f.seqid == s.seqid], SequenceInfo(s.seqid, len(s.seq), True)
            )
            for s in genome.sequences
        }
        self.miss, self.start, self.stray, self.seed = miss, start, stray, seed

    def _locate(self, dna: str) -> tuple[str, int]:
        for seqid, seq in self.seqs.items():
            pos = (seq + seq[: len(dna)]).find(dna)
            if pos >= 0:
                return seqid, pos
        raise AssertionError("window DNA not in the genome")

    def _inner_start(self, f: WindowFeature, dna: str) -> WindowFeature:
        if f.strand == "+":
            for x in range(f.start + 3, f.end - 90, 3):
                if dna[x : x + 3] in STARTS:
                    return replace(f, start=x)
        else:
            for x in range(f.end - 3, f.start + 90, -3):
                if reverse_complement(dna[x - 2 : x + 1]) in STARTS:
                    return replace(f, end=x)
        return f

    def __call__(self, model, tokenizer, windows, window_len, types, **kw):
        out = []
        for dna in windows:
            seqid, pos = self._locate(dna)
            rng = random.Random(zlib.crc32(f"{self.seed}:{seqid}:{pos}".encode()))
            feats = []
            for f in window_features(self.index[seqid], pos, pos + len(dna)):
                whole = f.type == "CDS" and not (f.cut_left or f.cut_right)
                if whole and rng.random() < self.miss:
                    continue
                if whole and rng.random() < self.start:
                    f = self._inner_start(f, dna)
                feats.append(f)
            if rng.random() < self.stray:
                orfs = list(OrfIndex(dna).iter_orfs(60))
                if orfs:
                    o = rng.choice(orfs)
                    feats.append(WindowFeature(o.lo, o.hi - 1, o.strand, "CDS", 0))
            items = encode_pointer_target(feats, len(dna))
            out.append(GeneratedTarget(items, [0.0] * len(items)))
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=300_000, help="chromosome bp")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    genome = generate_genome(
        SyntheticConfig(seed=args.seed, chromosome_length=args.length, plasmid_lengths=(20_000,))
    )
    seqs = [(s.seqid, s.seq) for s in genome.sequences]
    ref = [Feature(f.seqid, f.type, f.start, f.end, f.strand) for f in genome.features]
    print("| miss / start / stray | selection | stop Sn / Pr / F1 | exact Sn / Pr / F1 |")
    print("|---|---|---|---|")
    for level in LEVELS:
        for selection in ("votes", "genome"):
            opts = AnnotateOptions(
                batch_size=64, circular=("all",), progress=False, selection=selection
            )
            oracle = NoisyOracle(genome, *level, seed=args.seed)
            gff, _, _ = annotate_sequences(None, None, seqs, opts, WINDOW, TYPES, generate=oracle)
            pred = [Feature(f.seqid, f.type, f.start, f.end, f.strand) for f in gff]
            (rep,) = compare(ref, pred, ["CDS"])
            s, e = rep.stop, rep.exact
            print(
                f"| {' / '.join(map(str, level))} | {selection} | {s.sensitivity:.3f} / "
                f"{s.precision:.3f} / {s.f1:.3f} | {e.sensitivity:.3f} / {e.precision:.3f} / "
                f"{e.f1:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
