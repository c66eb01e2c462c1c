"""Synthetic bacterial-like genomes with their GFF3, in the shapes NCBI ships.

Why: the quickstart must run on a machine without internet, and tests need genomes whose every
annotation is known to be right. A generator we control also lets the learning benchmark ask the
model for exactly the signals a bacterial gene finder uses: long open reading frames with a codon
bias, a ribosome-binding (Shine-Dalgarno) motif a few bases before the start codon, conserved RNA
genes.

What a genome holds (one chromosome and, by default, one plasmid, both circular):
- protein-coding genes as real ORFs: ATG/GTG/TTG start, codons drawn from a biased usage table
  without an in-frame stop, a TAA/TGA/TAG stop, on both strands, in runs on one strand like operons;
- some genes overlapping their neighbour (same strand "ATGA"-style, or tail to tail);
- one gene spanning the origin of the chromosome, written with ``end > length`` as GFF3 allows;
- tRNA-like (cloverleaf stems, anticodon loop, CCA end) and rRNA operon-like (16S, 23S, 5S) genes
  whose sequences are shared by every genome of one ``species_seed``, as conserved genes are.

Genes are laid left to right; each base a gene writes is locked, and a later gene overlapping it
must agree with the locked bases codon by codon (otherwise another overlap length is tried), so no
gene can break an earlier one. A seed makes everything reproducible: the same config gives
byte-identical ``.fna.gz``/``.gff.gz`` (gzip header without time or name).
"""

from __future__ import annotations

import gzip
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from baking.common.errors import ConfigError
from baking.common.files import write_bytes
from baking.formats.fasta import complement, reverse_complement
from baking.formats.gff3 import GFFFeature, write_gff3

log = logging.getLogger(__name__)

STARTS: dict[str, float] = {"ATG": 0.86, "GTG": 0.10, "TTG": 0.04}  # E. coli-like frequencies
STOPS: dict[str, float] = {"TAA": 0.62, "TGA": 0.29, "TAG": 0.09}
STOPS_BY_CODE: dict[int, dict[str, float]] = {
    11: STOPS,
    # Mycoplasma-like: TGA is Trp, so genes stop on TAA/TAG only and read through TGA.
    4: {"TAA": 0.75, "TAG": 0.25},
}
TGA_BOOST_CODE4 = 1.5
"""Code 4's TGA (Trp) is weighted up so that most genes read through at least one in-frame TGA
(in Mycoplasma TGA is the usual Trp codon): a test of the genetic code then has TGAs to meet."""
SOURCE = "dna2gff-synthetic"
RBS_MOTIFS: tuple[str, ...] = ("AGGAGG", "AGGAGA", "GGAGG", "AGGAG", "GAGGT", "AGGA")
_BASES = "ACGT"
_CODONS = tuple(a + b + c for a in _BASES for b in _BASES for c in _BASES)
_TRNA_AMINO = ("Ala", "Arg", "Asn", "Gly", "Ile", "Leu", "Lys", "Met", "Phe", "Ser", "Thr", "Val")


@dataclass(frozen=True)
class SyntheticConfig:
    """Everything that shapes one synthetic genome; the defaults give ~100 kbp + a 10 kbp plasmid."""

    seed: int = 1
    """Drives the gene layout and every intergenic base; same seed, same files."""
    species_seed: int = 0
    """Drives the codon usage table and the RNA gene templates shared by a family of genomes."""
    chromosome_length: int = 100_000
    plasmid_lengths: tuple[int, ...] = (10_000,)
    gc: float = 0.5
    """GC fraction of intergenic DNA and the codon usage's third-position bias."""
    mean_protein_codons: int = 280
    min_protein_codons: int = 40
    max_protein_codons: int = 1200
    mean_gap: int = 80
    """Mean intergenic distance (bp) between non-overlapping genes."""
    overlap_rate: float = 0.15
    """Chance that a protein-coding gene overlaps the previous one (when the bases allow it)."""
    same_strand_rate: float = 0.6
    """Chance that a gene continues on its predecessor's strand (operon-like runs)."""
    trna_count: int = 4
    """tRNA genes on the chromosome."""
    rrna_operons: int = 1
    """16S-23S-5S operons on the chromosome."""
    rrna_lengths: tuple[int, int, int] = (1540, 2900, 116)
    origin_gene: bool = True
    """Lay one protein-coding gene across the chromosome's origin (end > length)."""
    name: str = ""
    """Organism name in FASTA headers; default ``Synthetic bacterium <seed>``."""
    accession: str = ""
    """Sequence-id stem; default ``NZ_SYN<seed>`` (chromosome ``.1``, plasmids ``.2``, ...)."""
    transl_table: int = 11
    """Genetic code of the genes: 11, or 4 (TGA = Trp: genes read through in-frame TGA codons);
    written as the CDS ``transl_table=`` attribute."""

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        if self.seed < 0:
            raise bad("seed", "must be >= 0")
        if self.transl_table not in STOPS_BY_CODE:
            raise bad("transl_table", f"must be one of {sorted(STOPS_BY_CODE)}")
        if not 0.2 <= self.gc <= 0.8:
            raise bad("gc", "must be within [0.2, 0.8]")
        if not 0.0 <= self.overlap_rate <= 1.0:
            raise bad("overlap_rate", "must be within [0, 1]")
        if not 0.0 <= self.same_strand_rate <= 1.0:
            raise bad("same_strand_rate", "must be within [0, 1]")
        if not 10 <= self.min_protein_codons <= self.mean_protein_codons <= self.max_protein_codons:
            raise bad(
                "mean_protein_codons",
                "need 10 <= min_protein_codons <= mean_protein_codons <= max_protein_codons",
            )
        if self.mean_gap < 20:
            raise bad("mean_gap", "must be >= 20 (room for a ribosome-binding site)")
        if self.trna_count < 0 or self.rrna_operons < 0:
            raise bad("trna_count", "counts must be >= 0")
        if len(self.rrna_lengths) != 3 or min(self.rrna_lengths) < 60:
            raise bad("rrna_lengths", "need three lengths (16S, 23S, 5S) of >= 60 bp")
        longest_gene = 3 * (self.max_protein_codons + 2) + 2 * self.mean_gap
        if self.chromosome_length < max(2_000, longest_gene):
            raise bad("chromosome_length", f"must be >= max(2000, {longest_gene}) bp")
        if any(n < 1_000 for n in self.plasmid_lengths):
            raise bad("plasmid_lengths", "each plasmid must be >= 1000 bp")
        operon_bp = self.rrna_operons * (sum(self.rrna_lengths) + 400)
        if operon_bp + self.trna_count * 200 > self.chromosome_length // 2:
            raise bad("rrna_operons", "RNA genes would fill more than half the chromosome")


@dataclass
class SyntheticSequence:
    """One replicon: its id, bases (upper case), whether it is circular and its role."""

    seqid: str
    seq: str
    circular: bool
    role: str  # "chromosome" or "plasmid"
    description: str = ""


@dataclass
class SyntheticGenome:
    """The generator's result: sequences plus features in file order (region, gene, child...)."""

    config: SyntheticConfig
    sequences: list[SyntheticSequence]
    features: list[GFFFeature]

    def sequence(self, seqid: str) -> SyntheticSequence:
        for s in self.sequences:
            if s.seqid == seqid:
                return s
        raise KeyError(seqid)

    def features_of(self, ftype: str) -> list[GFFFeature]:
        return [f for f in self.features if f.type == ftype]


# ----------------------------------------------------------------------------------------------
# The species: codon usage and conserved RNA templates, shared by genomes of one species_seed.


@dataclass(frozen=True)
class _Species:
    codons: tuple[str, ...]  # sense codons (no stops)
    cum_weights: tuple[float, ...]
    trna_templates: tuple[tuple[str, str], ...]  # (amino acid, sequence)
    rrna_templates: tuple[str, str, str]  # 16S, 23S, 5S


def _species(
    species_seed: int, gc: float, rrna_lengths: Sequence[int], transl_table: int = 11
) -> _Species:
    """Codon usage skewed like a real genome (GC at the third position, a few favourite codons)."""
    rng = random.Random(f"species-{species_seed}")
    base_p = {"A": (1 - gc) / 2, "T": (1 - gc) / 2, "G": gc / 2, "C": gc / 2}
    third_gc = min(0.9, max(0.1, gc + 0.15 * (1 if gc >= 0.5 else -1)))
    third_p = {
        "A": (1 - third_gc) / 2,
        "T": (1 - third_gc) / 2,
        "G": third_gc / 2,
        "C": third_gc / 2,
    }
    stops = STOPS_BY_CODE[transl_table]
    codons = tuple(c for c in _CODONS if c not in STOPS)  # code 11's sense codons (same draws)
    weights = []
    for c in codons:
        w = base_p[c[0]] * base_p[c[1]] * third_p[c[2]] * rng.lognormvariate(0.0, 0.8)
        weights.append(w)
    if "TGA" not in stops:  # no random draw: both codes share every other weight and template
        codons = (*codons, "TGA")
        weights.append(TGA_BOOST_CODE4 * sum(weights) / len(weights))  # ~2.4% of codons
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    rna_gc = min(0.65, max(0.45, gc))
    trnas = tuple((aa, _trna_sequence(rng)) for aa in _TRNA_AMINO)
    rrnas = tuple(_random_bases(rng, n, rna_gc) for n in rrna_lengths)
    return _Species(codons, tuple(cum), trnas, (rrnas[0], rrnas[1], rrnas[2]))


def _random_bases(rng: random.Random, n: int, gc: float) -> str:
    at, cg = (1 - gc) / 2, gc / 2
    return "".join(rng.choices(_BASES, weights=(at, cg, cg, at), k=n))


def _trna_sequence(rng: random.Random) -> str:
    """A 76-nt cloverleaf: acceptor, D, anticodon and T stems pair with their partners; CCA end."""

    def r(n: int) -> str:
        return _random_bases(rng, n, 0.55)

    acceptor, d_stem, ac_stem, t_stem = r(7), r(4), r(5), r(5)
    anticodon = r(3)
    return (
        acceptor
        + "TA"
        + d_stem
        + "AGC"
        + r(5)
        + reverse_complement(d_stem)
        + "A"
        + ac_stem
        + "CT"
        + anticodon
        + "AA"
        + reverse_complement(ac_stem)
        + r(5)
        + t_stem
        + "TTCGAAT"
        + reverse_complement(t_stem)
        + reverse_complement(acceptor)
        + "A"
        + "CCA"
    )


def _mutate(rng: random.Random, seq: str, rate: float) -> str:
    """Point substitutions at ``rate``: copies of one RNA gene differ a little, as in real genomes."""
    out = list(seq)
    for i in range(len(out)):
        if rng.random() < rate:
            out[i] = rng.choice([b for b in _BASES if b != out[i]])
    return "".join(out)


# ----------------------------------------------------------------------------------------------
# One replicon under construction: bases plus a lock mask, positions taken modulo the length.


class _Replicon:
    def __init__(self, seqid: str, length: int, circular: bool, rng: random.Random, gc: float):
        self.seqid = seqid
        self.length = length
        self.circular = circular
        inter_gc = max(0.15, gc - 0.06)  # intergenic DNA is AT-richer than genes
        self.bases = bytearray(_random_bases(rng, length, inter_gc).encode())
        self.locked = bytearray(length)

    def sense_positions(self, left: int, n: int, strand: str) -> list[int]:
        """Genomic positions of sense bases 0..n-1 of an element whose leftmost base is ``left``."""
        L = self.length
        if strand == "+":
            return [(left + i) % L for i in range(n)]
        return [(left + n - 1 - i) % L for i in range(n)]

    def sense_base(self, pos: int, strand: str) -> str | None:
        """The locked base at ``pos`` read on ``strand``, or None when the base is still free."""
        if not self.locked[pos]:
            return None
        b = chr(self.bases[pos])
        return b if strand == "+" else complement(b)

    def write(self, positions: Sequence[int], sense: str, strand: str, lock: bool = True) -> None:
        text = sense if strand == "+" else complement(sense)
        for pos, b in zip(positions, text):
            self.bases[pos] = ord(b)
            if lock:
                self.locked[pos] = 1

    def fits(self, left: int, n: int) -> bool:
        """Whether ``left..left+n`` stays on a linear sequence (always true when circular)."""
        return self.circular or (left >= 0 and left + n <= self.length)


def _choose_codon(
    rng: random.Random, pattern: Sequence[str | None], options: dict[str, float]
) -> str | None:
    """A codon from ``options`` (weights) agreeing with the locked bases in ``pattern``."""
    fit = [
        (c, w) for c, w in options.items() if all(p is None or p == b for p, b in zip(pattern, c))
    ]
    if not fit:
        return None
    return rng.choices([c for c, _ in fit], weights=[w for _, w in fit], k=1)[0]


class _Builder:
    """Lays genes on replicons; every protein-coding gene is built codon by codon over locks."""

    def __init__(self, cfg: SyntheticConfig):
        self.cfg = cfg
        self.rng = random.Random(f"genome-{cfg.seed}")
        self.species = _species(cfg.species_seed, cfg.gc, cfg.rrna_lengths, cfg.transl_table)
        self.stops = STOPS_BY_CODE[cfg.transl_table]
        self.sense_weights = dict(
            zip(self.species.codons, _diff(self.species.cum_weights), strict=True)
        )
        self.elements: list[tuple[str, int, int, str, str]] = []  # seqid, left, n, strand, kind

    # -- protein-coding genes ------------------------------------------------------------------
    def cds_sense(self, rep: _Replicon, left: int, codons: int, strand: str) -> str | None:
        """Sense sequence of an ORF at ``left`` honouring locked bases, or None if impossible."""
        n = 3 * (codons + 2)
        if not rep.fits(left, n):
            return None
        pos = rep.sense_positions(left, n, strand)
        pattern = [rep.sense_base(p, strand) for p in pos]
        for k in range(codons + 2):  # cheap test of the locked codons before drawing anything
            pat = pattern[3 * k : 3 * k + 3]
            if pat != [None, None, None]:
                opts = STARTS if k == 0 else self.stops if k == codons + 1 else self.sense_weights
                if not any(all(p is None or p == b for p, b in zip(pat, c)) for c in opts):
                    return None
        rng, sp = self.rng, self.species
        free_run = rng.choices(sp.codons, cum_weights=sp.cum_weights, k=codons)
        out: list[str] = []
        for k in range(codons + 2):
            pat = pattern[3 * k : 3 * k + 3]
            if k == 0:
                codon = _choose_codon(rng, pat, STARTS)
            elif k == codons + 1:
                codon = _choose_codon(rng, pat, self.stops)
            elif pat == [None, None, None]:
                codon = free_run[k - 1]
            else:
                codon = _choose_codon(rng, pat, self.sense_weights)
            if codon is None:
                return None
            out.append(codon)
        return "".join(out)

    def place_cds(self, rep: _Replicon, left: int, codons: int, strand: str) -> bool:
        sense = self.cds_sense(rep, left, codons, strand)
        if sense is None:
            return False
        rep.write(rep.sense_positions(left, len(sense), strand), sense, strand)
        self.add_rbs(rep, left, len(sense), strand)
        self.elements.append((rep.seqid, left, len(sense), strand, "CDS"))
        return True

    def add_rbs(self, rep: _Replicon, left: int, n: int, strand: str) -> None:
        """A Shine-Dalgarno-like motif ending 5-9 bp before the start codon, on free bases only."""
        motif = self.rng.choice(RBS_MOTIFS)
        spacer = self.rng.randint(5, 9)
        # sense coordinates relative to the start codon's first base: motif at -(spacer+len)..-spacer
        offsets = range(-(spacer + len(motif)), -spacer)
        if strand == "+":
            positions = [left + o for o in offsets]
        else:
            positions = [left + n - 1 - o for o in offsets]
        if not rep.circular and (min(positions) < 0 or max(positions) >= rep.length):
            return
        positions = [p % rep.length for p in positions]
        for p, b in zip(positions, motif):
            if not rep.locked[p]:
                rep.write([p], b, strand)

    def protein_codons(self) -> int:
        cfg = self.cfg
        shape = 2.5
        draw = self.rng.gammavariate(shape, cfg.mean_protein_codons / shape)
        return int(min(cfg.max_protein_codons, max(cfg.min_protein_codons, draw)))

    # -- RNA genes -----------------------------------------------------------------------------
    def place_rna(self, rep: _Replicon, left: int, sense: str, strand: str, kind: str) -> None:
        rep.write(rep.sense_positions(left, len(sense), strand), sense, strand)
        self.elements.append((rep.seqid, left, len(sense), strand, kind))

    def rna_block(self, kind: str) -> list[tuple[str, str, int]]:
        """(feature kind, sense sequence, gap after) parts of one tRNA or rRNA operon."""
        sp, rng = self.species, self.rng
        if kind == "tRNA":
            aa, seq = rng.choice(sp.trna_templates)
            return [(f"tRNA:{aa}", _mutate(rng, seq, 0.01), 0)]
        s16, s23, s5 = (_mutate(rng, t, 0.005) for t in sp.rrna_templates)
        return [
            ("rRNA:16S", s16, rng.randint(150, 300)),
            ("rRNA:23S", s23, rng.randint(80, 120)),
            ("rRNA:5S", s5, 0),
        ]

    # -- layout ---------------------------------------------------------------------------------
    def gap(self) -> int:
        return 20 + int(self.rng.expovariate(1.0 / (self.cfg.mean_gap - 19)))

    def lay_out(self, rep: _Replicon, n_trna: int, n_operons: int, origin_gene: bool) -> None:
        """Walk the replicon left to right placing genes and RNA blocks until it is full."""
        cfg, rng, L = self.cfg, self.rng, rep.length
        pos, limit = self.gap(), L - self.gap()
        prev_strand = rng.choice("+-")
        if origin_gene and rep.circular:
            for _ in range(50):
                codons = self.protein_codons()
                n = 3 * (codons + 2)
                left = L - n // 2 - rng.randint(0, n // 4)
                if self.place_cds(rep, left, codons, prev_strand):
                    pos, limit = (left + n) % L + self.gap(), left - self.gap()
                    break
        span = max(1, limit - pos)
        rna_at = sorted(
            [(pos + rng.randrange(span), "tRNA") for _ in range(n_trna)]
            + [(pos + rng.randrange(span), "rRNA") for _ in range(n_operons)]
        )
        prev_end, prev_kind = pos, "none"
        while True:
            if rna_at and rna_at[0][0] <= pos:
                _, kind = rna_at.pop(0)
                strand = rng.choice("+-")
                parts = self.rna_block(kind)
                total = sum(len(s) + g for _, s, g in parts)
                if pos + total > limit:
                    continue
                if strand == "-":  # the operon reads 16S-23S-5S on its own strand
                    gaps = [g for _, _, g in parts][:-1][::-1] + [0]
                    parts = [(k, s, g) for (k, s, _), g in zip(parts[::-1], gaps)]
                for part_kind, sense, gap_after in parts:
                    self.place_rna(rep, pos, sense, strand, part_kind)
                    pos += len(sense) + gap_after
                prev_end, prev_kind, prev_strand = pos, "RNA", strand
                pos += self.gap()
                continue
            strand = prev_strand if rng.random() < cfg.same_strand_rate else _flip(prev_strand)
            codons = self.protein_codons()
            n = 3 * (codons + 2)
            placed = False
            may_overlap = prev_kind == "CDS" and (prev_strand, strand) != ("-", "+")
            if may_overlap and rng.random() < cfg.overlap_rate:  # never head to head
                # small overlaps first, as in real genomes (1 and 4 bp are the commonest)
                for overlap in sorted(range(1, 61), key=lambda o: rng.random() * o):
                    left = prev_end - overlap
                    if left + n <= limit and self.place_cds(rep, left, codons, strand):
                        placed = True
                        break
            if not placed:
                left = pos
                if left + n > limit:
                    if not rna_at:
                        break
                    rna_at[0] = (pos, rna_at[0][1])  # no room for a gene: place pending RNAs
                    continue
                placed = self.place_cds(rep, left, codons, strand)
            if not placed:  # a rare clash with a locked RBS base: skip ahead a little
                pos += 10
                continue
            prev_end, prev_kind, prev_strand = left + n, "CDS", strand
            pos = prev_end + self.gap()


def _diff(cum: Sequence[float]) -> list[float]:
    return [c - (cum[i - 1] if i else 0.0) for i, c in enumerate(cum)]


def _flip(strand: str) -> str:
    return "-" if strand == "+" else "+"


# ----------------------------------------------------------------------------------------------
# Public API: generate, write, and the checks the tests (and users) rely on.


def generate_genome(cfg: SyntheticConfig) -> SyntheticGenome:
    """Build one genome (chromosome + plasmids) and its annotation, deterministically from ``cfg``."""
    b = _Builder(cfg)
    stem = cfg.accession or f"NZ_SYN{cfg.seed:05d}"
    organism = cfg.name or f"Synthetic bacterium {cfg.seed}"
    reps = [_Replicon(f"{stem}.1", cfg.chromosome_length, True, b.rng, cfg.gc)]
    for i, n in enumerate(cfg.plasmid_lengths):
        reps.append(_Replicon(f"{stem}.{i + 2}", n, True, b.rng, cfg.gc))
    b.lay_out(reps[0], cfg.trna_count, cfg.rrna_operons, cfg.origin_gene)
    for rep in reps[1:]:
        b.lay_out(rep, 0, 0, False)

    sequences: list[SyntheticSequence] = []
    features: list[GFFFeature] = []
    prefix = f"SYN{cfg.seed}"
    number = 0
    for i, rep in enumerate(reps):
        role = "chromosome" if i == 0 else "plasmid"
        what = "chromosome, complete genome" if i == 0 else f"plasmid pSYN{i}, complete sequence"
        sequences.append(
            SyntheticSequence(
                rep.seqid, rep.bases.decode(), rep.circular, role, f"{organism} {what}"
            )
        )
        attrs = {
            "ID": f"{rep.seqid}:1..{rep.length}",
            "Is_circular": "true" if rep.circular else "false",
            "Name": "ANONYMOUS",
            "gbkey": "Src",
            "genome": role,
            "mol_type": "genomic DNA",
        }
        if role == "plasmid":
            attrs["plasmid-name"] = f"pSYN{i}"
        features.append(_feature(rep.seqid, "region", 1, rep.length, "+", None, attrs))
        mine = sorted((e for e in b.elements if e[0] == rep.seqid), key=lambda e: (e[1], e[3]))
        for seqid, left, n, strand, kind in mine:
            number += 1
            tag = f"{prefix}_{5 * number:05d}"
            features.extend(
                _gene_pair(seqid, left + 1, left + n, strand, kind, tag, cfg.transl_table)
            )
    log.debug(
        "synthetic seed=%d sequences=%d genes=%d bp=%d",
        cfg.seed,
        len(sequences),
        number,
        sum(len(s.seq) for s in sequences),
    )
    return SyntheticGenome(cfg, sequences, features)


def _gene_pair(
    seqid: str, start: int, end: int, strand: str, kind: str, tag: str, transl_table: int = 11
) -> list[GFFFeature]:
    """The ``gene`` parent and its CDS/tRNA/rRNA child with NCBI's attribute names."""
    ftype, _, detail = kind.partition(":")
    biotype = "protein_coding" if ftype == "CDS" else ftype
    gene = _feature(
        seqid,
        "gene",
        start,
        end,
        strand,
        None,
        {
            "ID": f"gene-{tag}",
            "Name": tag,
            "gbkey": "Gene",
            "gene_biotype": biotype,
            "locus_tag": tag,
        },
    )
    if ftype == "CDS":
        child_attrs = {
            "ID": f"cds-{tag}",
            "Parent": f"gene-{tag}",
            "Name": tag,
            "gbkey": "CDS",
            "locus_tag": tag,
            "product": "hypothetical protein",
            "transl_table": str(transl_table),
        }
        phase: int | None = 0
    else:
        product = f"tRNA-{detail}" if ftype == "tRNA" else f"{detail} ribosomal RNA"
        child_attrs = {
            "ID": f"rna-{tag}",
            "Parent": f"gene-{tag}",
            "gbkey": ftype,
            "locus_tag": tag,
            "product": product,
        }
        phase = None
    return [gene, _feature(seqid, ftype, start, end, strand, phase, child_attrs)]


def _feature(
    seqid: str,
    ftype: str,
    start: int,
    end: int,
    strand: str,
    phase: int | None,
    attrs: dict[str, str],
) -> GFFFeature:
    return GFFFeature(seqid, SOURCE, ftype, start, end, None, strand, phase, tuple(attrs.items()))


def feature_sequence(seq: str, start: int, end: int, strand: str) -> str:
    """Bases of a 1-based closed feature read on its strand; ``end > len(seq)`` wraps the origin."""
    n = len(seq)
    if start < 1 or end < start or start > n or end > 2 * n:
        raise ValueError(f"feature {start}..{end} does not fit a sequence of {n} bp")
    s = seq[start - 1 : end] if end <= n else seq[start - 1 :] + seq[: end - n]
    return s if strand == "+" else reverse_complement(s)


def orf_problems(sense: str, transl_table: int = 11) -> list[str]:
    """Why ``sense`` is not a complete bacterial ORF under code 11 or 4 (empty list: it is one)."""
    if transl_table not in STOPS_BY_CODE:
        raise ValueError(f"transl_table={transl_table}: only tables 11 and 4 are known here")
    stops = STOPS_BY_CODE[transl_table]
    problems = []
    if len(sense) % 3:
        problems.append(f"length {len(sense)} is not a multiple of 3")
    if len(sense) < 6:
        return problems + ["shorter than a start and a stop codon"]
    if sense[:3] not in STARTS:
        problems.append(f"start codon {sense[:3]}")
    if sense[-3:] not in stops:
        problems.append(f"stop codon {sense[-3:]}")
    for i in range(3, len(sense) - 3 - len(sense) % 3, 3):
        if sense[i : i + 3] in stops:
            problems.append(f"in-frame stop {sense[i : i + 3]} at codon {i // 3}")
            break
    return problems


def fasta_text(genome: SyntheticGenome, width: int = 80) -> str:
    """The sequences as FASTA with ``>seqid description`` headers and ``width``-column lines."""
    parts = []
    for s in genome.sequences:
        parts.append(f">{s.seqid} {s.description}".rstrip())
        parts.extend(s.seq[i : i + width] for i in range(0, len(s.seq), width))
    return "\n".join(parts) + "\n"


def write_genome(genome: SyntheticGenome, out_dir: str | Path, stem: str) -> tuple[Path, Path]:
    """Write ``<stem>.fna.gz`` and ``<stem>.gff.gz`` into ``out_dir``; returns (fasta, gff).

    Both are gzip without a time stamp (same genome, same bytes) and written atomically.
    """
    out = Path(out_dir)
    fna, gff = out / f"{stem}.fna.gz", out / f"{stem}.gff.gz"
    write_bytes(fna, gzip.compress(fasta_text(genome).encode(), mtime=0))
    regions = {s.seqid: len(s.seq) for s in genome.sequences}
    write_gff3(gff, genome.features, regions, ["#!gff-spec-version 1.21", f"#!processor {SOURCE}"])
    return fna, gff


def make_genomes(
    out_dir: str | Path, count: int, first_seed: int = 1, **options: object
) -> list[tuple[Path, Path]]:
    """Write ``count`` genomes with seeds ``first_seed..`` (one species) as ``synthetic_<seed>``."""
    if count < 1:
        raise ConfigError(f"count={count}: must be >= 1")
    pairs = []
    for seed in range(first_seed, first_seed + count):
        cfg = SyntheticConfig(seed=seed, **options)  # type: ignore[arg-type]
        pairs.append(write_genome(generate_genome(cfg), out_dir, f"synthetic_{seed}"))
        log.info("wrote genome seed=%d fasta=%s gff=%s", seed, pairs[-1][0], pairs[-1][1])
    return pairs


def iter_cds(genome: SyntheticGenome) -> Iterator[tuple[GFFFeature, str]]:
    """Each CDS with its sense sequence (start codon first), for checks and benchmarks."""
    for f in genome.features_of("CDS"):
        yield f, feature_sequence(genome.sequence(f.seqid).seq, f.start, f.end, f.strand)
