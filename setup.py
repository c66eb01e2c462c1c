"""Install dna2gff: the packages ``baking`` and ``trainer`` and their console commands.

torch is asked for as a range so cluster users keep their own CUDA build; on a CPU-only machine
install ``torch==2.13.0`` first (see README) so pip does not pull a multi-GB CUDA wheel.
"""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
for line in (ROOT / "baking" / "__init__.py").read_text().splitlines():
    if line.startswith("__version__"):
        version["v"] = line.split("=")[1].strip().strip('"')

setup(
    name="dna2gff",
    version=version["v"],
    description="Teach a DNABERT-2-derived encoder-decoder to write genome annotations: DNA in, GFF3 out.",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["baking", "baking.*", "trainer", "trainer.*", "launch"]),
    install_requires=[
        "torch>=2.4,<3",
        "deepspeed>=0.16,<0.20",
        "transformers>=4.50,<6",  # the model is a PreTrainedModel: save_pretrained, Auto classes, hub
        "tokenizers>=0.20",
        "safetensors>=0.4",
        "huggingface_hub>=0.24",
        "webdataset>=0.2.90",
        "pyfastx>=2.1",
        "tensorboard>=2.15",
        "tqdm>=4.66",
        "numpy>=1.26",
        "pyrodigal>=3.5",  # the Prodigal baseline in `evaluate --baseline prodigal`
        "matplotlib>=3.8",  # `evaluate --plot`
    ],
    extras_require={
        "mpi": ["mpi4py>=3.1"],  # needs an MPI library (e.g. Debian libopenmpi-dev) to build
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "mypy>=1.10"],
    },
    entry_points={
        "console_scripts": [
            "dna2gff-bake=launch.bake_data:main",
            "dna2gff-init-model=launch.init_model:main",
            "dna2gff-init-tk=launch.init_tk:main",
            "dna2gff-append-tk=launch.append_tk:main",
            "dna2gff-resize-model=launch.resize_model:main",
            "dna2gff-train=launch.train:cli",
            "dna2gff-annotate=launch.annotate:main",
            "dna2gff-evaluate=launch.evaluate:main",
            "dna2gff-demo=launch.demo:main",
            "dna2gff-make-synthetic=launch.make_synthetic:main",
            "dna2gff-orf-rule=launch.orf_rule:main",
            "dna2gff-tune-orf=launch.tune_orf:main",
        ]
    },
)
