"""The layer rule of DESIGN "Layers": each module imports only from its own layer or the ones below it. Read from the
source (every import statement, also those inside functions), so a new upward import fails here, in `make test`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"liid": "liid", "graph": "liid.graph", "detection": "liid.detection", "proposals": "liid.proposals"}

# bottom to top; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, ...]] = [
    # the schema, atomic writes, errors, progress, fingerprints, worker pools, task backends, stage rule, peak RSS
    ("liid", "liid.config", "liid.atomic", "liid.errors", "liid.progress", "liid.fingerprint", "liid.workers",
     "liid.parallel", "liid.stage", "liid.memory"),
    ("liid.models", "liid.datasets", "liid.losses"),  # backbones, readers, the losses' math
    ("liid.proposals", "liid.graph", "liid.synthetic_features"),  # pure computation over arrays + their formats
    ("liid.training", "liid.detection"),  # the trainers; export, evaluation, Mask R-CNN, DeepLab
    ("liid.labelers",),  # one object per method (the registry) and the methods' labelling
    ("liid.pipeline",),  # `liid run`: the stages in order, the report
    ("liid.cli", "liid.__main__", "liid.commands"),  # thin: read and validate, call one function, write
]


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int | None:
    best, found = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, found = len(name), i
    return found


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of the toolkit's own modules in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names
                      if layer_of(f"{node.module}.{a.name}") is not None and node.module == "liid"]
    return [(line, m) for line, m in found if m == "liid" or m.startswith("liid.")]


SOURCES = sorted(p for folder in FOLDERS for p in (REPO / folder).rglob("*.py"))


def test_every_module_has_a_layer():
    missing = [module_name(p) for p in SOURCES if layer_of(module_name(p)) is None]
    assert not missing, f"modules without a layer (add them to LAYERS): {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_upward_import(path):
    me = module_name(path)
    mine = layer_of(me)
    upward = [f"{path.relative_to(REPO)}:{line} imports {m} ({LAYERS[layer_of(m)][0]}, above {LAYERS[mine][0]})"
              for line, m in imports(path) if layer_of(m) is not None and layer_of(m) > mine]
    assert not upward, "\n".join(upward)


def test_the_rule_catches_an_upward_import(tmp_path):
    """The check itself: a datasets module importing the pipeline is caught."""
    bad = REPO / "liid" / "datasets" / "_probe_upward.py"
    bad.write_text("def f():\n    from liid.pipeline.runner import plan\n    return plan\n")
    try:
        found = [m for _, m in imports(bad) if layer_of(m) > layer_of(module_name(bad))]
        assert found == ["liid.pipeline.runner"]
    finally:
        bad.unlink()
