"""The package's shape, read from the source's imports: wings import only downward, nothing imports
in a circle, torch stays out of the quick commands' wings and rich out of everything but the CLI.

The order, lowest first (a module may import its own wing and any wing below it):

    errors, geometry  <  atomic, icc  <  images  <  jobdir  <  job  <  memory, report  <  fit  <  runner  <  cli, api  <  the package's entry points (__init__, __main__)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "stylebatch"
LEVELS = {
    "errors": 0,
    "geometry": 0,
    "atomic": 1,
    "images": 2,
    "icc": 1,  # colour profiles: what images.py decodes and encodes with
    "jobdir": 3,
    "job": 4,
    "memory": 5,
    "report": 5,
    "fit": 6,
    "runner": 7,
    "cli": 8,
    "api": 8,
    "__main__": 9,  # the entry points sit on top of everything
    "__init__": 9,
}
# Wings that `status`, `report` and `validate`'s checks load: they must start without torch.
TORCH_FREE = ("errors", "geometry", "atomic", "images", "icc", "jobdir", "job", "report")


def wing(module: str) -> str:
    """`stylebatch.job.config` -> `job`; `stylebatch.images` -> `images`; `stylebatch` -> `__init__`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(path: Path, known: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, at top level) for every import in the file, function-level ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # `from stylebatch.job import config` imports the module stylebatch.job.config
                sub = f"{node.module}.{a.name}"
                found.append((sub if sub in known else node.module, node.lineno, id(node) in top))
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    mods = modules()
    known = set(mods)
    return {
        name: [(m, line) for m, line, _ in imports(path, known) if m.startswith("stylebatch") and m in known]
        for name, path in mods.items()
    }


def test_every_module_belongs_to_a_known_wing() -> None:
    assert {wing(m) for m in modules()} <= set(LEVELS), "a new wing needs its place in LEVELS"


def test_no_import_goes_up_or_sideways_between_wings() -> None:
    bad = []
    for name, deps in graph().items():
        for dep, line in deps:
            here, there = wing(name), wing(dep)
            if dep == "stylebatch" or here == there:
                continue
            if LEVELS[there] >= LEVELS[here]:
                bad.append(f"{name}:{line} imports {dep} ({here} may not import {there})")
    assert not bad, "\n".join(bad)


def test_no_import_circles() -> None:
    edges = {name: {dep for dep, _ in deps if dep != "stylebatch" and dep != name} for name, deps in graph().items()}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("third_party", ["torch", "torchvision", "lightning", "rich"])
def test_heavy_and_printing_libraries_stay_in_their_wings(third_party: str) -> None:
    allowed = {"rich": {"cli"}}.get(third_party)
    known = set(modules())
    bad = []
    for name, path in modules().items():
        here = wing(name)
        if allowed is None and here not in TORCH_FREE:
            continue
        if allowed is not None and here in allowed:
            continue
        bad += [f"{name}:{line}" for m, line, _ in imports(path, known) if m.split(".")[0] == third_party]
    assert not bad, f"{third_party} imported at " + ", ".join(bad)


def test_the_quick_commands_start_without_torch() -> None:
    """What status, report and the manifest checks load, loaded in a fresh interpreter: torch not among it."""
    code = (
        "import sys, stylebatch.cli.status, stylebatch.report.build, stylebatch.report.rows, "
        "stylebatch.job.manifest, stylebatch.jobdir.claims; "
        "print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_module_says_what_it_holds() -> None:
    missing = [name for name, path in modules().items() if not ast.get_docstring(ast.parse(path.read_text()))]
    assert not missing, "no module docstring: " + ", ".join(missing)
