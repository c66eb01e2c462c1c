"""The ``--extract_tokens`` file: annotation tokens the tokenizer must learn, one per line.

The file is shared by runs (the recipe bakes genome after genome into one ``data/new_tokens.txt``),
so new tokens are *merged*: lines already there keep their order, new ones are appended in the
grammar's stable order. Two bakes may merge at the same moment (into different output folders), so
the read-modify-write holds an exclusive lock on ``.FILE.lock`` beside the file; unlocked, one
run's tokens were lost in 3 of 8 trials. Lines are never stripped of inner content (a token is the whole line minus
its line end) so no token can silently lose characters; the write is atomic. A token holding an
invisible character (a zero-width space U+200B, a BOM, a control or format character, any Unicode
separator) is a corrupt file: it would become a vocabulary entry no target ever matches, so the
readers here and in ``trainer.tokens`` reject it, naming file and line.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from pathlib import Path

from baking.common.errors import InputError
from baking.common.files import write_text
from baking.common.locks import waiting_lock


def invisible_character(token: str) -> str | None:
    """A description of the first invisible character in ``token`` (Unicode categories C* and Z*:
    controls, format characters such as U+200B or U+FEFF, separators), or None."""
    for c in token:
        if unicodedata.category(c)[0] in "CZ":
            return f"U+{ord(c):04X} {unicodedata.name(c, 'unnamed').lower()}"
    return None


def read_tokens(path: str | Path) -> list[str]:
    """Tokens in ``path`` (missing file: none); blank lines are skipped, duplicates rejected."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, "token file is not UTF-8 text") from exc
    out: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line != line.strip():
            raise InputError(path, f"token {line!r} has surrounding whitespace", lineno)
        bad = invisible_character(line)
        if bad is not None:
            raise InputError(
                path,
                f"token {line!r} contains an invisible character ({bad}): corrupt file",
                lineno,
            )
        if line in seen:
            raise InputError(path, f"duplicate token {line!r}", lineno)
        seen.add(line)
        out.append(line)
    return out


def lock_path(path: str | Path) -> Path:
    """The lock file of a token file: hidden, beside it (removed by the merge that made it)."""
    p = Path(path)
    return p.with_name(f".{p.name}.lock")


def merge_tokens(path: str | Path, tokens: Iterable[str]) -> list[str]:
    """Append the ``tokens`` not yet in ``path`` (locked, atomic write); returns the merged list."""
    path = Path(path)
    wanted = list(tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    with waiting_lock(lock_path(path)):
        merged = read_tokens(path)
        seen = set(merged)
        for t in wanted:
            if t not in seen:
                merged.append(t)
                seen.add(t)
        write_text(path, "".join(f"{t}\n" for t in merged))
    return merged
