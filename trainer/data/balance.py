"""Genome balancing: draw windows across genomes so that small genomes are not drowned.

A corpus of many species is uneven: on the 21 shared genomes the largest (P. fluorescens, 3,033
train windows) holds 98 times the windows of the smallest (phage VT2-Sakai, 31), so a pass in
proportion to size shows the model the phage 0.12% of the time. With ``alpha`` each genome's share
of a pass is ``n_g ** alpha / sum_h n_h ** alpha`` (``n``: its train windows): 1.0 is proportional to
size (no balancing), 0.0 every genome alike, 0.5 (the default) the square root -- the phage's
share rises to 0.8% and the largest genome's falls to 8.1% (ratio 9.9 instead of 98), while no
window is repeated more than 6.8 times a pass and the largest genomes keep 69% of theirs
(``docs/training.md`` has the table). A pass keeps its length (the split's sample count).

The stage gives window ``k`` (in arrival order) of genome ``g`` in a slot's pass
``floor((k + 1) * r_g + phase) - floor(k * r_g + phase)`` copies, ``r_g`` being the genome's copies
per window and ``phase`` a seeded number in [0, 1) per (slot, pass, genome): every ``1/r_g``-th
window when ``r_g < 1`` (evenly along the genome, other windows each pass), ``floor`` or ``ceil``
of ``r_g`` copies when ``r_g > 1``. The counts telescope, so a pass's length is arithmetic on the
manifest's counts and a resume skips whole passes without reading a shard.

The genome of a sample is its ``json`` ``genome``; it must be the genome the manifest lists the
sample's shard under (the arithmetic relies on it).
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from baking.common.errors import ConfigError, InputError
from trainer.data.shards import ShardEntry

DEFAULT_ALPHA = 0.5


def genome_shares(counts: Mapping[str, int], alpha: float) -> dict[str, float]:
    """Each genome's share of a pass: ``n ** alpha`` normalised (``counts``: train windows)."""
    weights = {g: float(n) ** alpha for g, n in counts.items() if n > 0}
    total = sum(weights.values())
    return {g: w / total for g, w in weights.items()}


@dataclass(frozen=True)
class GenomeBalance:
    """Copies per window for each genome of the train split, and the seed of the phases."""

    alpha: float
    rates: dict[str, float]
    seed: int
    owners: dict[str, str]
    """Shard path -> the genome the manifest lists it under."""

    @classmethod
    def for_shards(
        cls, shards: Sequence[ShardEntry], alpha: float, seed: int
    ) -> GenomeBalance | None:
        """The balance of these shards; None when it changes nothing (``alpha`` 1, one genome,
        genomes of equal window counts: their stream stays bit-identical to an unbalanced one).

        Shards whose genome the manifest does not name make it a ``ConfigError`` (unless it
        changes nothing), since their windows could not be counted per genome.
        """
        if not (isinstance(alpha, (int, float)) and 0.0 <= alpha <= 1.0):
            raise ConfigError(f"genome_balance must be in [0, 1], got {alpha!r}")
        counts: Counter[str] = Counter()
        unnamed = 0
        for s in shards:
            if s.genome is None:
                unnamed += 1
            else:
                counts[s.genome] += s.count
        if alpha == 1.0 or (len(counts) <= 1 and not (counts and unnamed)):
            return None
        if unnamed:
            raise ConfigError(
                f"--genome_balance {alpha} needs each train shard's genome, but manifest.json "
                f"names none for {unnamed} shard(s): re-bake with bake_data, or pass "
                "--genome_balance 1"
            )
        total = sum(counts.values())
        shares = genome_shares(counts, alpha)
        rates = {g: shares[g] * total / counts[g] for g in sorted(counts)}
        if all(abs(r - 1.0) < 1e-9 for r in rates.values()):  # genomes of one size
            return None
        owners = {s.path: s.genome for s in shards if s.genome is not None}
        return cls(float(alpha), rates, seed, owners)

    def phases(self, slot: int, p: int) -> dict[str, float]:
        rng = random.Random(f"{self.seed}:balance:{slot}:{p}")
        return {g: rng.random() for g in self.rates}

    def pass_yield(self, counts: Mapping[str, int], slot: int, p: int) -> int:
        """Samples the stage yields in pass ``p`` of a slot that reads ``counts`` per genome."""
        phase = self.phases(slot, p)
        return sum(
            _drawn(n, self.rates[g], phase[g]) - _drawn(0, self.rates[g], phase[g])
            for g, n in counts.items()
        )

    def stage(self, samples: Iterable[dict], slot: int, p: int) -> Iterator[dict]:
        """The loader stage: each sample as many times as its genome's rate says (see module)."""
        phase = self.phases(slot, p)
        seen: Counter[str] = Counter()
        for sample in samples:
            g = sample_genome(sample)
            shard = sample.get("__shard__", "?")
            listed = self.owners.get(shard)
            if g != listed:
                raise InputError(
                    shard,
                    f"{sample.get('__key__', '?')}: json: genome {g!r}, but manifest.json lists "
                    f"this shard under {listed!r}",
                )
            rate = self.rates[g]
            k = seen[g]
            seen[g] = k + 1
            for _ in range(_drawn(k + 1, rate, phase[g]) - _drawn(k, rate, phase[g])):
                yield dict(sample)


def _drawn(k: int, rate: float, phase: float) -> int:
    """Copies drawn from a genome's first ``k`` windows (the same float expression everywhere,
    so the per-window counts telescope exactly to the pass total)."""
    return math.floor(k * rate + phase)


def sample_genome(sample: dict[str, Any]) -> str:
    """The sample's ``json`` ``genome``; a missing or damaged one names shard and key."""
    where = sample.get("__shard__", "?")
    key = sample.get("__key__", "?")
    try:
        meta = json.loads(sample["json"])
    except KeyError:
        raise InputError(where, f"{key}: no json in this sample (its genome)") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise InputError(where, f"{key}: json: not valid JSON ({exc})") from None
    genome = meta.get("genome") if isinstance(meta, dict) else None
    if not isinstance(genome, str):
        raise InputError(where, f"{key}: json: no genome name")
    return genome
