#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py; docs/gpu-check.md): set up, then run it.
#
#   bash benchmarks/gpu_check.sh                          # lent GPU machine: $OUT/gpu_check.json
#   bash benchmarks/gpu_check.sh --smoke --out check.json # CPU, tiny shapes, under a minute (CI)
#
# What it expects, because a lent machine is bare and offline:
# - a Python with torch: $PYTHON, else the repo's .venv when its torch imports, else python3;
# - the project's other packages importable, or carried as wheels in .whl/ (made here by
#   benchmarks/gpu_wheels.sh): when one is missing they are installed with --no-index --no-deps
#   into a folder of their own that goes on PYTHONPATH, so the machine's torch and CUDA stay;
# - no install of the project itself: the repository root goes on PYTHONPATH;
# - data: ../shared (or $DNA2GFF_SHARED) when present, else .whl/shared (a carried copy of
#   E. coli's FASTA and the DNABERT-2 tokenizer), else a synthetic genome and a small tokenizer.
# Exit status: 0 when every part passed, 1 when one did not (the JSON says which), 2 on bad flags.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' >/dev/null 2>&1; then
        PY=.venv/bin/python
    else
        PY=python3
    fi
fi

# the carried wheels, only where this Python lacks one of the packages they provide
NEEDED="deepspeed pydantic hjson webdataset braceexpand pyfastx pyrodigal archspec"
if compgen -G ".whl/*.whl" >/dev/null && ! "$PY" -c '
import importlib.util, sys
sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))' $NEEDED; then
    SITE="${TMPDIR:-/tmp}/dna2gff-gpu-check-site"
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" .whl/*.whl; then
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "gpu_check.sh: warning: installing the wheels in .whl/ failed; going on without them" >&2
    fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [ -z "${DNA2GFF_SHARED:-}" ] && [ ! -d ../shared/data ] && [ -d .whl/shared/data ]; then
    export DNA2GFF_SHARED="$ROOT/.whl/shared"
fi
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1

exec "$PY" benchmarks/gpu_check.py "$@"
