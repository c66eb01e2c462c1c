"""``python tests/faulty_train.py --faults SPEC <launch/train.py arguments>``: the train command
with faults injected (``tests/faults.py``), for tests that run it in a subprocess or under
torchrun. Everything but the faults is ``launch/train.py`` itself: same parser, same error
contract, same exit."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import from this checkout
    sys.path[0] = str(Path(__file__).resolve().parents[1])


def main() -> None:
    import trainer.train.engine as engine_mod
    from launch import train as train_cli
    from tests.faults import faults_from_spec

    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "--faults":
        raise SystemExit("usage: faulty_train.py --faults SPEC TRAIN_ARGS...")
    faults = faults_from_spec(args[1])
    real = engine_mod.train

    def train(cfg, observer=None):  # launch/train.py looks ``train`` up when it runs
        with faults.poisoned_loss():
            return real(cfg, observer=faults)

    engine_mod.train = train  # type: ignore[assignment]
    sys.argv = [str(Path(train_cli.__file__)), *args[2:]]
    train_cli.cli()


if __name__ == "__main__":
    main()
