#!/usr/bin/env bash
# Fill .whl/ (ignored by git) with what benchmarks/gpu_check.sh needs on a bare, offline GPU machine.
#
#   bash benchmarks/gpu_wheels.sh          # wheels only (needs the package index)
#   bash benchmarks/gpu_wheels.sh --data   # + .whl/shared: E. coli's FASTA and the DNABERT-2 tokenizer
#
# The lent machine (docs/gpu-check.md) is x86-64 with Python 3.12, torch, CUDA, tokenizers,
# safetensors, tensorboard, numpy, pytest... but not these: DeepSpeed (only a source release on
# PyPI: built here into a pure-Python wheel, no compiled ops, which is what the trainer uses),
# its pydantic and hjson, webdataset, pyfastx and pyrodigal (compiled: cp312 manylinux wheels).
# Versions are the ones this machine's Python has installed, so the GPU runs the code CI tested.
# Each wheel is fetched without its dependencies; the list below names every one that is missing
# there. ../shared does not travel to the machine (only the repository does), hence --data.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
DEST=.whl
mkdir -p "$DEST"

# name and the version to use when this Python does not have the package
PACKAGES=(
    "hjson 3.1.0" "pydantic 2.14.4" "pydantic_core 2.50.5" "annotated_types 0.8.0"
    "typing_inspection 0.4.5" "typing_extensions 4.16.0" "webdataset 1.0.2" "braceexpand 0.1.7"
    "pyfastx 2.3.1" "pyrodigal 3.7.1" "archspec 0.2.7"
)
installed_version() {
    "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1" 2>/dev/null || true
}

PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
    manylinux2014_x86_64 manylinux1_x86_64; do
    PLATFORMS+=(--platform "$p")
done
for entry in "${PACKAGES[@]}"; do
    read -r name pin <<<"$entry"
    version="$(installed_version "$name")"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${PLATFORMS[@]}" -d "$DEST" "$name==${version:-$pin}"
done

# DeepSpeed: no wheel on PyPI; build one (no ops compiled; torch from this Python, no isolation)
ds="$(installed_version deepspeed)"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST" "deepspeed==${ds:-0.19.8}"

if [ "${1:-}" = "--data" ]; then
    SHARED="${DNA2GFF_SHARED:-$ROOT/../shared}"
    ecoli="data/genomes/E.coli/GCF_000005845.2_ASM584v2_genomic.fna.gz"
    tok="data/dnabert2/DNABERT-2-117M"
    mkdir -p "$DEST/shared/$(dirname "$ecoli")" "$DEST/shared/$tok"
    cp "$SHARED/$ecoli" "$DEST/shared/$ecoli"
    cp "$SHARED/$tok/tokenizer.json" "$SHARED/$tok/config.json" "$DEST/shared/$tok/"
    [ -f "$SHARED/$tok/tokenizer_config.json" ] && cp "$SHARED/$tok/tokenizer_config.json" "$DEST/shared/$tok/"
fi

ls -l "$DEST"
du -sh "$DEST"
echo "carry it: run(command='bash benchmarks/gpu_check.sh', carry=['.whl'])"
