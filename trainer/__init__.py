"""dna2gff trainer: the DNABERT-2-derived encoder-decoder, its tokenizer, training and inference."""

from baking import __version__

__all__ = ["__version__"]
