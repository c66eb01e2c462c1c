"""What every dna2gff command shares: logging set-up and the error contract.

Commands catch the project's ``Dna2GffError`` (bad input, bad options), print a single
``error: ...`` line to stderr and exit 2; the traceback goes only to the debug log. Anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from collections.abc import Callable, Sequence

from baking import __version__
from baking.common.errors import Dna2GffError

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


def run_cli(
    main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None
) -> int:
    """Run a command's ``main`` and turn project errors into ``error: ...`` plus exit code 2."""
    try:
        code = main(argv)
    except Dna2GffError as exc:
        log.debug("failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)
