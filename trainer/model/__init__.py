"""The dna2gff model: DNABERT-2 encoder (``encoder.py``), decoder, MoE and the model folder.

| module | job |
|---|---|
| ``config.py`` | ``Dna2GffConfig``: every size and setting, saved as ``config.json`` |
| ``encoder.py`` | DNABERT-2 as published (``DNABert2Encoder``, ``DNABert2Model``) |
| ``decoder.py`` | causal DNABERT-2 layers + cross-attention, ``KVCache`` |
| ``moe.py`` | DeepSpeed MoE MLP, local <-> global expert ids |
| ``seq2seq.py`` | ``Dna2GffModel``: the encoder-decoder module |
| ``build.py`` | ``build_from_dnabert2``: the init recipe |
| ``folder.py`` | model folder I/O, canonical state dict |
| ``dnabert2.py`` | strict DNABERT-2 checkpoint reader (folder or hub id) |
| ``random_checkpoint.py`` | random DNABERT-2-layout checkpoints for tests and demos |
| ``state.py`` | strict state-dict checks, atomic weight files |
"""

from trainer.model.build import build_from_dnabert2
from trainer.model.config import Dna2GffConfig
from trainer.model.decoder import KVCache
from trainer.model.dnabert2 import DNABERT2_HUB_ID, load_dnabert2
from trainer.model.encoder import DNABert2Encoder, DNABert2Model, alibi_slopes
from trainer.model.folder import load_model_folder, save_model_folder
from trainer.model.random_checkpoint import make_tiny_dnabert2, write_random_dnabert2
from trainer.model.seq2seq import Dna2GffModel, Seq2SeqOutput
from trainer.model.state import CheckpointError

__all__ = [
    "DNABERT2_HUB_ID",
    "CheckpointError",
    "DNABert2Encoder",
    "DNABert2Model",
    "Dna2GffConfig",
    "Dna2GffModel",
    "KVCache",
    "Seq2SeqOutput",
    "alibi_slopes",
    "build_from_dnabert2",
    "load_dnabert2",
    "load_model_folder",
    "make_tiny_dnabert2",
    "save_model_folder",
    "write_random_dnabert2",
]
