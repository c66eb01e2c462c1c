"""Where each base of a window sits among the encoder's tokens, and the codons around it.

The decoder points at bases, while the encoder sees BPE tokens of 1-32 bases; the base layout is
the bridge (built from the tokenizer's character offsets): per base, the encoder position of its
token and its offset inside it, plus the codons starting and ending at it (the pointer keys'
inputs, ``trainer.model.pointer``). Training (``trainer.data.examples``) and decoding
(``trainer.inference.generate``) build it the same way, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from trainer.model.pointer import NO_CODON, WindowBases

_BASE_CODE = {"A": 0, "C": 1, "G": 2, "T": 3}


@dataclass
class BaseLayout:
    """Per base of a window: the encoder position of its token ([CLS] is 0), its offset inside
    the token and the codons starting / ending at it (0..63, ``NO_CODON``)."""

    token: list[int]
    offset: list[int]
    codon5: list[int]
    codon3: list[int]

    @property
    def length(self) -> int:
        return len(self.token)


def _codons(dna: str) -> tuple[list[int], list[int]]:
    n = len(dna)
    code = [_BASE_CODE.get(c, -1) for c in dna]
    five = [NO_CODON] * n
    for i in range(n - 2):
        a, b, c = code[i], code[i + 1], code[i + 2]
        if a >= 0 and b >= 0 and c >= 0:
            five[i] = 16 * a + 4 * b + c
    three = [NO_CODON, NO_CODON, *five[: max(0, n - 2)]][:n]
    return five, three


def base_layout(dna: str, offsets: Sequence[tuple[int, int]], max_tokens: int) -> BaseLayout:
    """Map bases to tokens from the tokenizer's character ``offsets`` (no special tokens).

    Only the first ``max_tokens`` tokens reach the encoder; the bases they cover are the
    window the model sees (a prefix of ``dna``).
    """
    token: list[int] = []
    offset: list[int] = []
    for j, (a, b) in enumerate(offsets[:max_tokens]):
        if a != len(token):
            raise ValueError(
                f"token {j} starts at {a}, expected {len(token)}: offsets not contiguous"
            )
        token.extend([j + 1] * (b - a))
        offset.extend(range(b - a))
    five, three = _codons(dna[: len(token)])
    return BaseLayout(token, offset, five, three)


def layout_tensors(layouts: Sequence[BaseLayout], device: torch.device | str) -> WindowBases:
    """The base arrays of a batch of windows, padded to the longest."""
    b = len(layouts)
    n_bases = max(1, max(x.length for x in layouts))
    token = torch.zeros((b, n_bases), dtype=torch.long)
    offset = torch.zeros((b, n_bases), dtype=torch.long)
    codon5 = torch.full((b, n_bases), NO_CODON, dtype=torch.long)
    codon3 = torch.full((b, n_bases), NO_CODON, dtype=torch.long)
    mask = torch.zeros((b, n_bases), dtype=torch.bool)
    for i, x in enumerate(layouts):
        n = x.length
        if n:
            token[i, :n] = torch.tensor(x.token)
            offset[i, :n] = torch.tensor(x.offset)
            codon5[i, :n] = torch.tensor(x.codon5)
            codon3[i, :n] = torch.tensor(x.codon3)
            mask[i, :n] = True
    return WindowBases(*(t.to(device) for t in (token, offset, codon5, codon3, mask)))
