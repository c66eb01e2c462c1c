"""Write FASTA (proteins ``.faa``, gene sequences ``.ffn``) through the project's one safe writer.

Records are wrapped at 60 letters a line, as Prodigal writes its ``-a`` and ``-d`` files. The
whole file is formatted in memory and written atomically (``baking.common.files.write_bytes``;
a ``.gz`` name is gzip with a zero mtime, so equal content gives equal bytes), so a reader never
sees half a file.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterable
from pathlib import Path

from baking.common.files import PathLike, write_bytes

WIDTH = 60


def format_fasta(records: Iterable[tuple[str, str]], width: int = WIDTH) -> str:
    """``>header`` then the sequence in lines of ``width``, for each ``(header, sequence)``."""
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    out: list[str] = []
    for header, seq in records:
        if not header or "\n" in header:
            raise ValueError(f"a FASTA header must be one non-empty line, got {header!r}")
        out.append(f">{header}\n")
        out.extend(f"{seq[i : i + width]}\n" for i in range(0, len(seq), width))
    return "".join(out)


def write_fasta(path: PathLike, records: Iterable[tuple[str, str]], width: int = WIDTH) -> Path:
    """Write ``records`` as FASTA to ``path`` atomically (gzip for a ``.gz`` name)."""
    data = format_fasta(records, width).encode("ascii")
    if Path(path).suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    return write_bytes(path, data)
