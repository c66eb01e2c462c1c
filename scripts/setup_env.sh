#!/usr/bin/env bash
# Set up everything dna2gff needs on a fresh CPU machine (Python 3.10+): system tools when we can
# install them, a virtual environment in .venv, the CPU build of torch, then the package itself.
# Safe to run again: every step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# System tools: GenomeTools (gt gff3validator / gt eval in tests), Open MPI (mpi4py, mpirun).
need_apt=()
command -v gt >/dev/null 2>&1 || need_apt+=(genometools)
command -v mpicc >/dev/null 2>&1 || need_apt+=(libopenmpi-dev openmpi-bin)
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: warning: could not install ${need_apt[*]} (needs apt-get as root); the tests that need them skip"
  fi
fi

PY=${PYTHON:-python3}
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
# The CPU build first: a range asked for by setup.py is then satisfied and pulls no CUDA wheels.
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
extras="dev"
command -v mpicc >/dev/null 2>&1 && extras="dev,mpi"
python -m pip install -q -e ".[${extras}]"
echo "setup: ready ($(python -c 'import torch, deepspeed; print("torch", torch.__version__, "deepspeed", deepspeed.__version__)' 2>/dev/null | tail -n 1))"
