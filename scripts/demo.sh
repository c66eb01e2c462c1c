#!/usr/bin/env bash
# README command 1: set up (idempotent), then run the whole recipe end to end on synthetic genomes:
# make genomes -> tokenizer + tiny DNABERT-2-layout checkpoint -> init_model (MoE) -> bake -> tokens
# -> DeepSpeed training on 2 CPU ranks -> annotate a held-out genome -> evaluate next to Prodigal.
# Extra arguments go to launch/demo.py (e.g. --out DIR, --max_steps N, --genome FNA GFF).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
exec python launch/demo.py "$@"
