"""The dna2gff model: DNABERT-2 encoder (``encoder.py``), decoder, MoE and the model folder.

| module | job |
|---|---|
| ``config.py`` | ``Dna2GffConfig`` (a HF ``PreTrainedConfig``): every size and setting, ``config.json`` |
| ``encoder.py`` | DNABERT-2 as published (``DNABert2Encoder``, ``DNABert2Model``) |
| ``decoder.py`` | causal DNABERT-2 layers + cross-attention, ``KVCache`` |
| ``moe.py`` | DeepSpeed MoE MLP, local <-> global expert ids |
| ``seq2seq.py`` | ``Dna2GffModel`` (a HF ``PreTrainedModel``): the encoder-decoder module |
| ``build.py`` | ``build_from_dnabert2``: the init recipe |
| ``folder.py`` | model folder I/O (local or hub), canonical state dict, push to the hub |
| ``generation.py`` | ``DecodingSettings``: the folder's ``generation_config.json`` (annotate's defaults) |
| ``card.py`` | the folder's ``README.md`` model card |
| ``hub.py`` | folder or hub id -> local folder (``huggingface_hub``, data files only) |
| ``dnabert2.py`` | strict DNABERT-2 checkpoint reader (folder or hub id) |
| ``state.py`` | strict state-dict checks, atomic weight files |

Importing this package registers ``Dna2GffConfig`` / ``Dna2GffModel`` with ``transformers.AutoConfig``
and ``AutoModel`` (model type ``dna2gff``), so once any ``trainer.model`` module is imported a model
folder loads with ``AutoModel.from_pretrained(FOLDER)`` (not at ``import trainer``: registering
imports torch and transformers, and the torch-free ``trainer.tokens`` tools must stay fast). ``AutoModelForSeq2SeqLM`` is deliberately not registered:
its contract is ``generate()``, and pointer decoding cannot be expressed there (``docs/model.md``).
"""

from transformers import AutoConfig, AutoModel

from trainer.model.build import build_from_dnabert2
from trainer.model.config import Dna2GffConfig
from trainer.model.decoder import KVCache
from trainer.model.dnabert2 import DNABERT2_HUB_ID, load_dnabert2
from trainer.model.encoder import DNABert2Encoder, DNABert2Model, alibi_slopes
from trainer.model.folder import load_model_folder, save_model_folder
from trainer.model.generation import DecodingSettings
from trainer.model.seq2seq import Dna2GffModel, Seq2SeqOutput
from trainer.model.state import CheckpointError

AutoConfig.register(Dna2GffConfig.model_type, Dna2GffConfig, exist_ok=True)
AutoModel.register(Dna2GffConfig, Dna2GffModel, exist_ok=True)

__all__ = [
    "DNABERT2_HUB_ID",
    "CheckpointError",
    "DNABert2Encoder",
    "DNABert2Model",
    "DecodingSettings",
    "Dna2GffConfig",
    "Dna2GffModel",
    "KVCache",
    "Seq2SeqOutput",
    "alibi_slopes",
    "build_from_dnabert2",
    "load_dnabert2",
    "load_model_folder",
    "save_model_folder",
]
