"""The dna2gff model: DNABERT-2 encoder (``encoder.py``), decoder, MoE and the model folder."""

from trainer.model.config import Dna2GffConfig
from trainer.model.decoder import KVCache
from trainer.model.dnabert2 import (
    DNABERT2_HUB_ID,
    load_dnabert2,
    make_tiny_dnabert2,
    write_random_dnabert2,
)
from trainer.model.encoder import DNABert2Model, alibi_slopes
from trainer.model.seq2seq import Dna2GffModel, Seq2SeqOutput, build_from_dnabert2
from trainer.model.state import CheckpointError

__all__ = [
    "DNABERT2_HUB_ID",
    "CheckpointError",
    "DNABert2Model",
    "Dna2GffConfig",
    "Dna2GffModel",
    "KVCache",
    "Seq2SeqOutput",
    "alibi_slopes",
    "build_from_dnabert2",
    "load_dnabert2",
    "make_tiny_dnabert2",
    "write_random_dnabert2",
]
