#!/usr/bin/env python3
"""``torchrun`` for jobs that may be preempted: SIGTERM checkpoints the run and exits 0.

Plain torchrun turns a SIGTERM into a ``SignalException`` in its agent: it forwards the signal,
the ranks save a checkpoint and exit 0, and the agent still exits 1 with a traceback (torch's
elastic agent re-raises the signal as an error). Here the agent is told not to handle SIGTERM
itself (torchrun's ``--signals_to_handle``, without SIGTERM) and this process forwards it to its
worker processes instead; the workers stop after saving, the agent sees every rank succeed and
exits 0. SIGINT, SIGHUP and SIGQUIT keep torchrun's own handling. A rank that fails (a bad
option: exit 2) gives one ``error:`` line here and its exit code, not torchrun's traceback.

    python launch/torchrun.py --nproc_per_node 8 launch/train.py --model ... --data ... --output ...

takes torchrun's arguments unchanged (Linux: workers are found in ``/proc``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (the agent's workers), read from ``/proc``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _forward(signum: int, frame: FrameType | None) -> None:
    for pid in _children(os.getpid()):
        with contextlib.suppress(ProcessLookupError):  # exited meanwhile
            os.kill(pid, signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _forward)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    try:
        torchrun(["--signals_to_handle", "SIGINT,SIGHUP,SIGQUIT", *args])
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 1
        print(
            f"error: rank {rank} of {exc.name} exited with code {failure.exitcode} "
            "(its own error line is above)",
            file=sys.stderr,
        )
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
