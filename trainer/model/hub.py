"""A model folder or a Hugging Face hub id -> a local folder, through ``huggingface_hub`` only.

One home for "where do the files come from", shared by the DNABERT-2 reader (``dnabert2.py``) and
our own model folders (``folder.py``). Only the named files are fetched (``allow_patterns``), never
code: a checkpoint's ``*.py`` is not downloaded, so nothing from it can run. Every failure (offline,
unknown repository, gated, ``HF_HUB_OFFLINE=1`` with nothing cached) is one ``InputError`` naming
the id, raised at once: ``huggingface_hub`` answers from its cache or fails when offline, it does
not retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from baking.common.errors import InputError

HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "force_download", "proxies")
"""``from_pretrained`` keyword arguments that mean something to the hub download."""


def looks_like_hub_id(name: str) -> bool:
    """``owner/name``: one slash, not a relative or absolute path."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name


def resolve_folder(
    path_or_id: str | Path,
    files: Sequence[str],
    *,
    what: str,
    hub_kwargs: dict[str, Any] | None = None,
) -> Path:
    """A local folder as is; otherwise ``path_or_id`` as a hub id, downloaded (or found in the HF
    cache) with only ``files`` (glob patterns) fetched. ``what`` names the folder's kind in errors."""
    local = Path(path_or_id).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError(local, f"a {what} must be a folder")
        return local
    repo_id = str(path_or_id)
    if not looks_like_hub_id(repo_id):
        raise InputError(local, f"no such folder (and not a hub id like owner/name) for a {what}")
    try:
        from huggingface_hub import constants, snapshot_download

        folder = snapshot_download(
            repo_id, allow_patterns=list(files), **{k: v for k, v in (hub_kwargs or {}).items()}
        )
    except Exception as exc:  # offline, unknown repo, gated: all mean "give me a folder"
        offline = " with HF_HUB_OFFLINE=1 and not in the local cache" if _offline(constants) else ""
        raise InputError(
            repo_id,
            f"cannot fetch the {what} from the Hugging Face hub{offline} ({type(exc).__name__}); "
            "pass a local folder instead",
        ) from exc
    return Path(folder)


def _offline(constants: Any) -> bool:
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


__all__ = ["HUB_KWARGS", "looks_like_hub_id", "resolve_folder"]
