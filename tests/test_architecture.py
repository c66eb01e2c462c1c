"""The house rules, checked from the source: no import circles, no upward imports, no argparse
in the library, no torch where a stage does not need it.

The walk reads every module's imports with ``ast`` (module level and inside functions alike:
a lazy import is still a dependency, and so is one under ``if TYPE_CHECKING:``: a type the
module needs is a layer it depends on), so it sees what ``import`` would do without running it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("baking", "trainer", "launch")

# Lower layers first. A module may import from its own layer or any layer before it, never after.
# The longest matching prefix gives a module's layer.
LAYERS: list[tuple[str, ...]] = [
    ("baking", "baking.common"),
    ("baking.formats",),
    (
        "baking.target_format",
        "baking.synthetic",
        "baking.orfs",
        "baking.gene_selection",
        "baking.genome_stats",
        "baking.adapt_genes",
        "baking.translate",
        "baking.gene_sequences",
        "baking.genome_list",
    ),
    ("baking.evaluate",),
    ("baking.bake_config",),
    ("baking.shards", "baking.shards.writer"),
    ("baking.shards.manifest",),
    ("baking.bake",),
    ("trainer", "trainer.distributed"),
    ("trainer.tokens", "trainer.tokens.tokenizer"),
    ("trainer.model",),
    ("trainer.random_checkpoint", "trainer.model.resize", "trainer.model.from_data"),
    ("trainer.data",),
    ("trainer.inference",),
    (
        "trainer.train.config",
        "trainer.train.dsconfig",
        "trainer.train.monitor",
        "trainer.train.observe",
        "trainer.train.ds_engine",
    ),
    ("trainer.train.checkpoint", "trainer.train.step", "trainer.train.stats"),
    ("trainer.train.validation", "trainer.train.export"),
    ("trainer.train",),
    ("trainer.demo", "trainer.fixtures"),
    ("launch",),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> set[str]:
    """Dotted names imported by the module, resolved to the project's modules where they are ours."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            out.add(base)
            # `from pkg import module` imports the submodule
            out.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return out


def project_imports(name: str) -> set[str]:
    own = set()
    for dotted in imports_of(name, MODULES[name]):
        while dotted and dotted not in MODULES:
            dotted = dotted.rpartition(".")[0]
        if dotted and dotted != name:
            own.add(dotted)
    return own


GRAPH = {name: project_imports(name) for name in MODULES}


def layer(name: str) -> int:
    best, best_len = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    assert best >= 0, f"{name} is in no layer of tests/test_architecture.py: add it"
    return best


def test_walk_sees_the_packages() -> None:
    # the walk itself must find real edges, or every rule below would pass vacuously
    assert len(MODULES) > 50
    assert "baking.formats.gff3" in GRAPH["baking.bake"]
    assert "trainer.model.seq2seq" in GRAPH["trainer.inference.annotate"] or any(
        m.startswith("trainer.model") for m in GRAPH["trainer.inference.annotate"]
    )


def test_no_import_circles() -> None:
    # Tarjan's strongly connected components over the module graph: any component of size > 1 is a
    # circle (``package/__init__`` re-exports are edges too)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert circles == [], f"import circles: {circles}"


def test_no_upward_imports() -> None:
    upward = [
        f"{src} -> {dst}"
        for src, dsts in sorted(GRAPH.items())
        for dst in sorted(dsts)
        if layer(dst) > layer(src) and not dst.startswith(src + ".")  # a package may import its own
    ]
    assert upward == [], "upward imports:\n" + "\n".join(upward)


def test_baking_imports_nothing_from_trainer_or_launch() -> None:
    bad = [
        f"{src} -> {dst}"
        for src, dsts in GRAPH.items()
        if src.startswith("baking")
        for dst in dsts
        if dst.startswith(("trainer", "launch"))
    ]
    assert bad == []


@pytest.mark.parametrize("pkg", ["baking", "trainer"])
def test_library_packages_are_free_of_argparse(pkg: str) -> None:
    users = [n for n in MODULES if n.startswith(pkg) and "argparse" in imports_of(n, MODULES[n])]
    assert users == [], f"argparse belongs in launch/: {users}"


def test_stages_without_torch_import_none() -> None:
    # evaluation and baking run on machines without torch (a scoring box, a baking node)
    users = [
        n
        for n in MODULES
        if n.startswith("baking")
        and any(i.split(".")[0] == "torch" for i in imports_of(n, MODULES[n]))
    ]
    assert users == []


def package_of(name: str) -> str:
    """The unit a module belongs to for the package rule: its sub-package (``trainer.model``,
    ``baking.shards``) or, for a module directly in a top package, the module itself
    (``baking.bake_config``); a top package's ``__init__`` is its own unit."""
    return ".".join(name.split(".")[:2])


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Components of more than one node (Tarjan), each sorted: the circles of ``graph``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph folded onto packages (``package_of``), self-edges left out."""
    folded: dict[str, set[str]] = {}
    for src, dsts in graph.items():
        a = package_of(src)
        folded.setdefault(a, set()).update(b for b in map(package_of, dsts) if b != a)
    return folded


def test_no_package_level_circles() -> None:
    # modules without a circle can still tie two packages together (``a.x -> b.y`` and
    # ``b.z -> a.w``): then neither package can be read, tested or split off without the other
    folded = package_graph(GRAPH)
    circles = strongly_connected(folded)
    detail = [
        f"{src} -> {dst}"
        for circle in circles
        for src, dsts in sorted(GRAPH.items())
        if package_of(src) in circle
        for dst in sorted(dsts)
        if package_of(dst) in circle and package_of(dst) != package_of(src)
    ]
    assert circles == [], f"package circles: {circles}\n" + "\n".join(detail)


def test_the_package_rule_sees_a_circle() -> None:
    # the rule on a graph with a package circle but no module circle (what the project had:
    # bake_config -> shards.writer, shards.manifest -> bake_config), or it could pass vacuously
    graph = {
        "baking.bake_config": {"baking.shards.writer"},
        "baking.shards.writer": set(),
        "baking.shards.manifest": {"baking.bake_config"},
    }
    assert strongly_connected(graph) == []
    assert strongly_connected(package_graph(graph)) == [["baking.bake_config", "baking.shards"]]
