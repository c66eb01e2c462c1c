"""What every dna2gff command shares: logging set-up and the error contract.

Commands catch the project's ``Dna2GffError`` (bad input, bad options) and every ``OSError`` (a
folder that is read-only, a disk that is full, a path under a file), print a single
``error: PATH: reason`` line to stderr and exit 2; the traceback goes only to the debug log.
Anything else is a bug and keeps its traceback. ``check_outputs`` is what every command calls
right after parsing its arguments, so an output that cannot be written fails before the work.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from baking import __version__
from baking.common.errors import Dna2GffError
from baking.common.files import (
    PathLike,
    check_distinct,
    check_output,
    check_output_dir,
    input_keys,
)

log = logging.getLogger("dna2gff")


def setup_logging(verbose: bool = False, log_file: str | None = None) -> None:
    """Log key=value lines to stderr (INFO, or DEBUG with ``verbose``) and optionally to a file."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    log.debug(
        "start argv=%r version=%s python=%s host=%s",
        sys.argv,
        __version__,
        platform.python_version(),
        platform.node(),
    )


def add_logging_args(group: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``-v/--verbose`` and ``--log_file``, the same on every command (read by ``setup_logging``)."""
    group.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    group.add_argument("--log_file", help="also log to this file")


def check_outputs(
    files: Iterable[PathLike | None] = (),
    folders: Iterable[PathLike | None] = (),
    inputs: Iterable[PathLike | None] = (),
) -> None:
    """Before any work: each output file / folder can be created, none is an input or given twice.

    ``None`` entries (options not given) are skipped. Raises ``OutputError`` (``PATH: reason``).
    """
    files, folders = list(files), list(folders)
    keys = input_keys(inputs)  # once: a many-genome call checks hundreds against hundreds
    probed: set[Path] = set()  # a new folder is proved makeable once, not once per file
    for f in files:
        if f is not None:
            check_output(f, keys, probed)
    for d in folders:
        if d is not None:
            check_output_dir(d, keys)
    check_distinct([*files, *folders])


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` (or ``PATH -> PATH2: reason``, or the reason alone) for an ``OSError``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    reason = reason[:1].lower() + reason[1:]
    if exc.filename is None:
        return reason
    where = str(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    return f"{where}: {reason}"


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> int:
    """Run a command's ``main``; project and OS errors become ``error: ...`` plus exit code 2."""
    try:
        code = main(argv)
    except Dna2GffError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early (``| head``): not an error worth a line
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
