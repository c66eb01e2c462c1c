"""Open reading frames of one DNA sequence: codon tables, an index for O(log n) questions, masks.

Why: in bacteria a protein-coding gene is (almost always) an ORF -- a start codon, codons without a
stop, the first in-frame stop -- so once one end of a CDS is known the other is fixed or limited to
a few in-frame start codons. A decoder that only ever emits ORFs (pointer decoding), a snapper, a
completion step and the no-model control all ask the same few questions of one sequence; the
``OrfIndex`` answers them from start/stop codon positions computed once per sequence (numpy, no
torch: ``baking`` imports nothing from ``trainer``).

Conventions (everything in this module):

* Coordinates are **0-based, end-exclusive** on the sequence given, ``seq[lo:hi]``, ``lo < hi``
  (GFF's 1-based inclusive ``start..end`` is ``lo = start - 1``, ``hi = end``).
* ``strand`` is ``"+"`` (read ``seq`` left to right) or ``"-"`` (read its reverse complement);
  there is no other strand of *this* sequence, so a caller that holds a reverse-complemented
  window passes that window and ``"+"``.
* The **5' end** of a CDS is ``lo`` on ``+`` and ``hi`` on ``-``; its **3' end** is ``hi`` on ``+``
  and ``lo`` on ``-``. Queries that take "a start" or "an end" take these boundary coordinates, so
  one call serves both strands: ``forced_end(five, strand) -> three``.
* A codon "at ``lo``" occupies ``seq[lo:lo + 3]``; on ``-`` it is read reverse-complemented.
* A CDS includes its stop codon (as RefSeq writes them): a ``+`` ORF is ``seq[lo:hi]`` with a start
  codon at ``lo``, the stop codon at ``hi - 3`` and no other in-frame stop.
* ``phase`` is GFF3's, of the piece's 5' end: bases to skip from the 5' end to the first complete
  codon (as in ``docs/target-format.md``).
* Linear sequences only: an ORF never runs past either end. A caller with a circular sequence
  indexes ``seq + seq[:k]`` and maps coordinates back.
* ``N`` (or any non-ACGT letter) makes a codon neither a start nor a stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from baking.common.errors import ConfigError

STRANDS = ("+", "-")


@dataclass(frozen=True)
class GeneticCode:
    """The start and stop codons of an NCBI translation table, as far as gene finding needs them.

    ``starts`` are the starts real annotations use (the ones Prodigal accepts), not every codon the
    table allows: rare alternatives (ATT, CTG, ...) would offer a wrong start in most windows.
    """

    table: int
    starts: frozenset[str]
    stops: frozenset[str]
    amino_acids: str = ""
    """One letter per codon in NCBI's order (TTT, TTC, TTA, TTG, TCT, ... GGG; ``*`` = stop), as
    NCBI prints each table; what ``baking.translate`` reads proteins with."""

    def amino_acid(self, codon: str) -> str:
        """The one-letter amino acid of an upper-case codon (``*`` stop, ``X`` for any non-ACGT)."""
        i = _NCBI_INDEX.get(codon)
        return "X" if i is None else self.amino_acids[i]


# NCBI's codon order: first, second, third base each running T, C, A, G.
_NCBI_BASES = "TCAG"
_NCBI_INDEX = {
    a + b + c: 16 * i + 4 * j + k
    for i, a in enumerate(_NCBI_BASES)
    for j, b in enumerate(_NCBI_BASES)
    for k, c in enumerate(_NCBI_BASES)
}
_STANDARD_AA = "FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG"


def _reassigned(changes: dict[str, str]) -> str:
    """The standard table with ``changes`` (codon -> amino acid) applied."""
    aa = list(_STANDARD_AA)
    for codon, letter in changes.items():
        aa[_NCBI_INDEX[codon]] = letter
    return "".join(aa)


_BACTERIAL_STARTS = frozenset({"ATG", "GTG", "TTG"})
GENETIC_CODES: dict[int, GeneticCode] = {
    1: GeneticCode(
        1, frozenset({"ATG", "TTG", "CTG"}), frozenset({"TAA", "TAG", "TGA"}), _STANDARD_AA
    ),
    # Mycoplasma/Spiroplasma: TGA is Trp.
    4: GeneticCode(4, _BACTERIAL_STARTS, frozenset({"TAA", "TAG"}), _reassigned({"TGA": "W"})),
    11: GeneticCode(11, _BACTERIAL_STARTS, frozenset({"TAA", "TAG", "TGA"}), _STANDARD_AA),
    # Candidate division SR1 and Gracilibacteria: TGA is Gly.
    25: GeneticCode(25, _BACTERIAL_STARTS, frozenset({"TAA", "TAG"}), _reassigned({"TGA": "G"})),
}


def genetic_code(table: int) -> GeneticCode:
    """The code for NCBI translation table ``table``; ConfigError for one we do not know."""
    try:
        return GENETIC_CODES[table]
    except KeyError:
        known = ", ".join(str(t) for t in sorted(GENETIC_CODES))
        raise ConfigError(f"transl_table={table} is not supported (known: {known})") from None


# Bases as 0..3 (A C G T); anything else 4, which poisons the codon it is part of.
_BASE = np.full(256, 4, dtype=np.int16)
for _i, _b in enumerate(b"ACGT"):
    _BASE[_b] = _i
    _BASE[_b + 32] = _i  # lower case too


def _codon_mask(codons: frozenset[str]) -> np.ndarray:
    """A 65-entry lookup: index ``16*b0 + 4*b1 + b2`` (64 = invalid codon) -> is in ``codons``."""
    mask = np.zeros(65, dtype=bool)
    for c in codons:
        b = [int(_BASE[ord(x)]) for x in c]
        mask[16 * b[0] + 4 * b[1] + b[2]] = True
    return mask


def _resolve_code(transl_table: int | GeneticCode) -> GeneticCode:
    return transl_table if isinstance(transl_table, GeneticCode) else genetic_code(transl_table)


def _check_strand(strand: str) -> None:
    if strand not in STRANDS:
        raise ValueError(f"strand must be '+' or '-', got {strand!r}")


@dataclass(frozen=True)
class Orf:
    """One ORF: ``seq[lo:hi]`` on ``strand``, start and stop codon included."""

    lo: int
    hi: int
    strand: str

    @property
    def codons(self) -> int:
        """Codons including the start and the stop codon."""
        return (self.hi - self.lo) // 3

    @property
    def five_prime(self) -> int:
        return self.lo if self.strand == "+" else self.hi

    @property
    def three_prime(self) -> int:
        return self.hi if self.strand == "+" else self.lo


class OrfIndex:
    """Start and stop codons of one sequence, per strand and frame, for O(log n) ORF questions.

    Built once per window or genome in O(n) numpy work. ``frame`` of a codon at ``lo`` is
    ``lo % 3`` on both strands (codons of one reading frame share it). Position arrays hold the
    ``lo`` of each codon (its leftmost base on the + strand), sorted.
    """

    def __init__(self, seq: str, transl_table: int | GeneticCode = 11) -> None:
        self.code = _resolve_code(transl_table)
        self.seq = seq
        self.n = n = len(seq)
        raw = np.frombuffer(seq.encode("ascii", "replace"), dtype=np.uint8)
        b = _BASE[raw]
        m = max(n - 2, 0)  # codon positions 0 .. n-3
        if m:
            b0, b1, b2 = b[:m], b[1 : m + 1], b[2 : m + 2]
            bad = (b0 > 3) | (b1 > 3) | (b2 > 3)
            plus = np.where(bad, 64, 16 * b0 + 4 * b1 + b2)
            minus = np.where(bad, 64, 16 * (3 - b2) + 4 * (3 - b1) + (3 - b0))
        else:
            plus = minus = np.zeros(0, dtype=np.int16)
        starts, stops = _codon_mask(self.code.starts), _codon_mask(self.code.stops)
        # Boolean codon masks over codon positions (length max(n - 2, 0)).
        self._is_start = {"+": starts[plus], "-": starts[minus]}
        self._is_stop = {"+": stops[plus], "-": stops[minus]}
        pos = np.arange(m)
        self._starts = {
            s: [pos[self._is_start[s] & (pos % 3 == f)] for f in range(3)] for s in STRANDS
        }
        self._stops = {
            s: [pos[self._is_stop[s] & (pos % 3 == f)] for f in range(3)] for s in STRANDS
        }

    # ---- single codons -------------------------------------------------------------------
    def _codon_at(self, table: dict[str, np.ndarray], lo: int, strand: str) -> bool:
        _check_strand(strand)
        return 0 <= lo <= self.n - 3 and bool(table[strand][lo])

    def is_start(self, five: int, strand: str) -> bool:
        """Whether a CDS whose 5' end is ``five`` begins with a start codon of the table."""
        return self._codon_at(self._is_start, five if strand == "+" else five - 3, strand)

    def is_stop(self, three: int, strand: str) -> bool:
        """Whether a CDS whose 3' end is ``three`` ends with a stop codon (stop included)."""
        return self._codon_at(self._is_stop, three - 3 if strand == "+" else three, strand)

    def start_positions(self, strand: str, frame: int | None = None) -> np.ndarray:
        """Sorted ``lo`` of start codons on ``strand`` (one frame, or all)."""
        _check_strand(strand)
        if frame is not None:
            return self._starts[strand][frame % 3]
        return np.flatnonzero(self._is_start[strand])

    def stop_positions(self, strand: str, frame: int | None = None) -> np.ndarray:
        """Sorted ``lo`` of stop codons on ``strand`` (one frame, or all)."""
        _check_strand(strand)
        if frame is not None:
            return self._stops[strand][frame % 3]
        return np.flatnonzero(self._is_stop[strand])

    # ---- masks for constrained decoding ----------------------------------------------------
    def allowed_starts(self, strand: str) -> np.ndarray:
        """``mask[b]`` (``b`` in ``0..n``): a CDS on ``strand`` may have its 5' end at boundary ``b``.

        On ``+`` that is a start codon at ``b``; on ``-`` a (reverse-complemented) start codon
        ending at ``b``. Length ``n + 1`` so every boundary, both sequence ends included, indexes it.
        """
        return self._boundary_mask(self._is_start, strand, five=True)

    def allowed_stops(self, strand: str) -> np.ndarray:
        """``mask[b]`` (``b`` in ``0..n``): a CDS on ``strand`` may have its 3' end at ``b``."""
        return self._boundary_mask(self._is_stop, strand, five=False)

    def _boundary_mask(self, table: dict[str, np.ndarray], strand: str, five: bool) -> np.ndarray:
        _check_strand(strand)
        mask = np.zeros(self.n + 1, dtype=bool)
        codons = table[strand]
        # The codon at lo is the CDS's first codon (+, 5') or last (-, 3') -> boundary lo;
        # otherwise the boundary is lo + 3.
        at_lo = (strand == "+") == five
        if at_lo:
            mask[: len(codons)] = codons
        else:
            mask[3 : 3 + len(codons)] = codons
        return mask

    # ---- ORF questions -------------------------------------------------------------------
    def forced_end(self, five: int, strand: str) -> int | None:
        """The 3' end fixed by a 5' end: just past the first in-frame stop (stop included).

        Counted from the codon at the 5' end itself (a 5' end on a stop gives that stop); None when
        the frame runs off the sequence without a stop. Does not require a start codon at ``five``
        (ask ``is_start``), so it also serves a piece whose 5' end was cut.
        """
        _check_strand(strand)
        if strand == "+":
            stops = self._stops["+"][five % 3]
            k = int(np.searchsorted(stops, five, "left"))
            return int(stops[k]) + 3 if k < len(stops) else None
        stops = self._stops["-"][five % 3]  # codon lo positions five-3, five-6, ...
        k = int(np.searchsorted(stops, five - 3, "right")) - 1
        return int(stops[k]) if k >= 0 else None

    def forced_ends(self, strand: str) -> np.ndarray:
        """``forced_end`` for every boundary ``0..n`` at once (``-1`` where it is None).

        One vectorised lookup table per strand, so a decoder that has chosen a 5' end reads the 3'
        end without a Python call per candidate.
        """
        _check_strand(strand)
        out = np.full(self.n + 1, -1, dtype=np.int64)
        b = np.arange(self.n + 1)
        for f in range(3):
            at = b[b % 3 == f]
            stops = self._stops[strand][f]
            if not len(stops):
                continue
            if strand == "+":
                k = np.searchsorted(stops, at, "left")
                ok = k < len(stops)
                out[at[ok]] = stops[k[ok]] + 3
            else:
                k = np.searchsorted(stops, at - 3, "right") - 1
                ok = k >= 0
                out[at[ok]] = stops[k[ok]]
        return out

    def allowed_five_primes(self, three: int, strand: str) -> np.ndarray:
        """Every 5' end a CDS ending at ``three`` can have: in-frame starts after the previous stop.

        Empty when ``three`` is not just past a stop codon. Sorted ascending; the longest ORF is
        the first on ``+`` and the last on ``-``. A start after the sequence end cannot be seen,
        so an ORF whose frame has no earlier stop lists only the starts inside the sequence.
        """
        _check_strand(strand)
        if not self.is_stop(three, strand):
            return np.zeros(0, dtype=np.int64)
        if strand == "+":
            stop_lo = three - 3
            f = stop_lo % 3
            stops, starts = self._stops["+"][f], self._starts["+"][f]
            k = int(np.searchsorted(stops, stop_lo, "left"))
            prev = int(stops[k - 1]) if k > 0 else -3
            a = int(np.searchsorted(starts, prev + 3, "left"))
            b = int(np.searchsorted(starts, stop_lo, "left"))
            return starts[a:b].astype(np.int64)
        f = three % 3
        stops, starts = self._stops["-"][f], self._starts["-"][f]
        k = int(np.searchsorted(stops, three, "right"))
        nxt = int(stops[k]) if k < len(stops) else self.n
        a = int(np.searchsorted(starts, three + 3, "left"))
        b = int(np.searchsorted(starts, nxt, "left"))
        return starts[a:b].astype(np.int64) + 3

    def stops_in_frame(self, lo: int, hi: int, strand: str, phase: int = 0) -> int:
        """How many stop codons lie wholly inside ``seq[lo:hi]`` in the piece's reading frame.

        The frame is the piece's: its first complete codon starts ``phase`` bases from its 5' end
        (``lo + phase`` on ``+``, ending at ``hi - phase`` on ``-``).
        """
        _check_strand(strand)
        frame = (lo + phase) % 3 if strand == "+" else (hi - phase) % 3
        lo, hi = max(lo, 0), min(hi, self.n)
        if hi - lo < 3:
            return 0
        stops = self._stops[strand][frame]
        a = int(np.searchsorted(stops, lo, "left"))
        b = int(np.searchsorted(stops, hi - 3, "right"))
        return max(b - a, 0)

    def no_internal_stop(
        self, lo: int, hi: int, strand: str, phase: int = 0, *, open_3p: bool = False
    ) -> bool:
        """The phase-consistent "no stop inside" check of a CDS piece.

        ``open_3p``: the piece was cut at its 3' end (a sequence edge), so *every* in-frame stop
        is internal; otherwise its last codon is its own stop and is allowed.
        """
        n_stops = self.stops_in_frame(lo, hi, strand, phase)
        if open_3p or n_stops == 0:
            return n_stops == 0
        own_stop = (hi - lo - phase) % 3 == 0 and self.is_stop(hi if strand == "+" else lo, strand)
        return n_stops == 1 and own_stop

    def is_valid_orf(
        self,
        lo: int,
        hi: int,
        strand: str,
        phase: int = 0,
        *,
        open_5p: bool = False,
        open_3p: bool = False,
    ) -> bool:
        """Whether ``seq[lo:hi]`` on ``strand`` is an ORF, or a piece of one cut at a sequence edge.

        A closed 5' end needs phase 0 and a start codon there; a closed 3' end needs a whole
        number of codons after the phase and the first in-frame stop there; no stop in between.
        An open end must lie on the sequence edge (``0`` or ``n``): that is what "cut" means.
        """
        _check_strand(strand)
        if not 0 <= lo < hi <= self.n or phase not in (0, 1, 2):
            return False
        five, three = (lo, hi) if strand == "+" else (hi, lo)
        edge = {0, self.n}
        if open_5p and five not in edge or open_3p and three not in edge:
            return False
        if not open_5p and (phase != 0 or not self.is_start(five, strand)):
            return False
        if not open_3p:
            if (hi - lo - phase) % 3 or hi - lo - phase < (3 if open_5p else 6):
                return False
            if not self.is_stop(three, strand):
                return False
        return self.no_internal_stop(lo, hi, strand, phase, open_3p=open_3p)

    def iter_orfs(self, min_codons: int = 1, strand: str | None = None) -> Iterator[Orf]:
        """Every complete ORF of at least ``min_codons`` codons (start and stop included).

        One ORF per stop codon: the longest, from the first start codon after the previous in-frame
        stop (Prodigal's and the textbook's choice when nothing says where a gene starts). Sorted by
        ``(lo, hi)`` within a strand; ``+`` then ``-`` (or only ``strand``).
        """
        for s in STRANDS if strand is None else (strand,):
            _check_strand(s)
            los, his = [], []
            for f in range(3):
                lo, hi = self._longest_per_stop(s, f)
                keep = (hi - lo) // 3 >= min_codons
                los.append(lo[keep])
                his.append(hi[keep])
            lo_all, hi_all = np.concatenate(los), np.concatenate(his)
            order = np.lexsort((hi_all, lo_all))
            for i in order:
                yield Orf(int(lo_all[i]), int(hi_all[i]), s)

    def _longest_per_stop(self, strand: str, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` arrays of the longest ORF ending at each stop of one strand and frame."""
        stops, starts = self._stops[strand][frame], self._starts[strand][frame]
        if not len(stops) or not len(starts):
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if strand == "+":
            prev = np.concatenate(([-3], stops[:-1]))  # the previous in-frame stop's lo
            k = np.searchsorted(starts, prev + 3, "left")
            ok = k < len(starts)
            first = starts[np.minimum(k, len(starts) - 1)]
            ok &= first < stops
            return first[ok].astype(np.int64), (stops[ok] + 3).astype(np.int64)
        nxt = np.concatenate((stops[1:], [self.n]))  # the next in-frame stop upstream (higher)
        k = np.searchsorted(starts, nxt, "left") - 1
        ok = k >= 0
        last = starts[np.maximum(k, 0)]
        ok &= last > stops
        return stops[ok].astype(np.int64), (last[ok] + 3).astype(np.int64)


def is_valid_orf(seq: str, lo: int, hi: int, strand: str, transl_table: int = 11) -> bool:
    """One-off check of a complete ORF on ``seq`` (builds an index; reuse ``OrfIndex`` in loops)."""
    return OrfIndex(seq, transl_table).is_valid_orf(lo, hi, strand)
