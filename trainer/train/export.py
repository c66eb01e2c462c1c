"""Export a training engine's weights as a plain model folder (the format ``init_model`` writes).

Under ZeRO-2 with bf16 the module holds bf16 copies while the fp32 master weights are partitioned
across data-parallel ranks; experts are further split across expert-parallel ranks. The export
assembles the fp32 masters (``safe_get_full_fp32_param``, a collective), lets the model gather its
experts under global indices (``save_pretrained`` at ``ep_size > 1``), and rank 0 swaps the finished
folder into place, so ``RUN_DIR/export`` is always either the previous export or the new one and
loads in one process at any ``ep_size``.

The export is the folder users share, so it carries a model card (``README.md``: base encoder,
training genomes and their counts from the data's ``manifest.json``, target spec, genetic codes;
``trainer.model.card``) beside HF's files.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from baking.common.files import replace_dir
from trainer.distributed import barrier
from trainer.train.ds_engine import TrainEngine

log = logging.getLogger(__name__)


def export_model(
    engine: TrainEngine,
    out_dir: str | Path,
    *,
    tokenizer_dir: str | Path,
    rank: int,
    data_dir: str | Path | None = None,
    scores: dict[str, Any] | None = None,
) -> Path:
    """Write a consolidated fp32 model folder to ``out_dir``; every rank must call it.

    The module's config is written as it is: the trainer recorded the target spec in it at set-up
    (``Dna2GffConfig.record_target``), so nothing is patched here. ``data_dir`` (the baked data
    trained on) gives the card its training genomes, ``scores`` what the run measured so far
    (``export_scores``); scores measured later are added to the card by ``tune_orf`` and the
    learning benchmark (``card.record_scores``).
    """
    from deepspeed.utils import safe_get_full_fp32_param

    from trainer.model.card import CardFacts, facts_from_manifest

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp")
    if rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    module = engine.module
    if getattr(module, "card", None) is None or data_dir is not None:
        module.card = facts_from_manifest(data_dir) if data_dir is not None else CardFacts()
    if scores:
        module.card.scores.update(scores)
    saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
    for _, p in module.named_parameters():
        full = safe_get_full_fp32_param(p)  # collective over the param's data-parallel group
        saved.append((p, p.data))
        p.data = (full if full is not None else p.data).detach().float().cpu()
    try:
        module.save_pretrained(tmp, tokenizer_dir=tokenizer_dir)  # gathers experts; rank 0 writes
    finally:
        for p, data in saved:
            p.data = data
    if rank == 0:
        replace_dir(tmp, out)
        log.info("exported model=%s", out)
    barrier()
    return out


def export_scores(step: int, val_loss: float | None) -> dict[str, Any]:
    """The run's own figures for the card: the last validation loss and the step it was taken at."""
    if val_loss is None:
        return {}
    return {f"validation loss (step {step})": round(float(val_loss), 4)}
