"""The layered core: imports in ``segformer.common`` only point down, there is no import circle anywhere in
``segformer``, no module grows past 600 lines, ``pt`` and ``tf`` never import each other, and the flat module
paths of earlier releases still import as the same module objects (with a ``DeprecationWarning``).

The import graph is read from the source (every ``import`` statement, also those inside functions), so the
checks need neither torch nor TensorFlow."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "segformer"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``segformer`` module (or package) the file imports, resolved to absolute names."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("segformer"):
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)  # `from pkg import module`
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("segformer"))
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path):
            while target and target not in modules:  # `from pkg import name`: keep the real module
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["segformer", "common"] else None


def test_common_imports_only_point_down(graph):
    from segformer.common import LAYERS

    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = []
    for module, targets in graph.items():
        if not module.startswith("segformer.common."):
            continue
        layer = _layer(module)
        assert layer in rank, f"{module} is not inside one of the layers {LAYERS}"
        for target in targets:
            if target in ("segformer", "segformer.common"):
                continue  # the package roots: the version string, lazy exports
            if not target.startswith("segformer.common."):
                wrong.append(f"{module} -> {target} (the core imports no framework or command code)")
            elif rank[_layer(target)] > rank[layer]:
                wrong.append(f"{module} ({layer}) -> {target} ({_layer(target)}): an upward import")
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_circle_anywhere(graph):
    # package __init__ files that re-export their submodules are edges into the package; a circle through
    # a package's own __init__ and its submodule is how packages work, not a circle between modules
    edges = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_frameworks_never_import_each_other(graph):
    wrong = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
             if (m.startswith("segformer.pt") and t.startswith("segformer.tf"))
             or (m.startswith("segformer.tf") and t.startswith("segformer.pt"))]
    assert not wrong, wrong


def test_no_module_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_no_code_uses_the_old_flat_paths():
    from segformer.common import MOVED_MODULES

    old = {f"segformer.common.{name}" for name in MOVED_MODULES} - {"segformer.common.inference", "segformer.common.training"}
    users = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]:
        if path.name == Path(__file__).name:
            continue
        for target in _imports(path):
            if target in old:
                users.append(f"{path.relative_to(ROOT)}: {target}")
    assert not users, "\n".join(users)


def test_old_flat_paths_import_the_same_module_with_a_warning():
    from segformer.common import MOVED_MODULES

    assert len(MOVED_MODULES) > 40
    for old, new in MOVED_MODULES.items():
        module = importlib.import_module(f"segformer.common.{new}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sys.modules.pop(f"segformer.common.{old}", None)
            alias = importlib.import_module(f"segformer.common.{old}")
        assert alias is module, old
        assert alias.__name__ == alias.__spec__.name == f"segformer.common.{new}"
        assert any(issubclass(w.category, DeprecationWarning) and f"segformer.common.{new}" in str(w.message)
                   for w in caught), old
    # names used the old way resolve to the same objects
    from segformer.common.checkpoint import CheckpointError
    from segformer.common.base.errors import CheckpointError as moved
    from segformer.common.inference.rules import as_size_pair
    from segformer.common.inference.rules import as_size_pair as rule
    from segformer.common.training.recipe import lr_at
    from segformer.common.training.recipe import lr_at as recipe_lr_at

    assert CheckpointError is moved and as_size_pair is rule and lr_at is recipe_lr_at


def test_old_paths_work_in_a_fresh_process():
    """``from segformer.common.config import ...`` as the first import of a program (nothing imported yet)."""
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from segformer.common.config import SegformerConfig\nexcept DeprecationWarning as w:\n"
            "    print('warned', w)\n"
            "warnings.simplefilter('ignore')\n"
            "from segformer.common.checkpoint.files import detect_format\n"
            "from segformer.common.config import SegformerConfig\n"
            "import segformer.common.model.config as m; assert SegformerConfig is m.SegformerConfig\n"
            "print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "warned segformer.common.config moved to segformer.common.model.config" in out.stdout
    assert out.stdout.strip().endswith("ok")
