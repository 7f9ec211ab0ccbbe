"""Module layout: packages whose modules import one another one way only, and old
import paths that keep working after a move."""

from __future__ import annotations

import ast
import importlib
import pickle
from pathlib import Path

import pytest

import flowkit

PACKAGE_ROOT = Path(flowkit.__file__).parent

#: An old module path, and the modules where the names it re-exports are defined now.
MOVED = {
    "flowkit.sinks_2pc": {"flowkit.sinks.two_phase_commit", "flowkit.sinks.file"},
    "flowkit.state_processor": {"flowkit.checkpoint.inspect"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, package: str) -> set[str]:
    """The modules of ``package`` (itself included) that the file at ``path`` imports at
    module level."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found |= {n for n in names if n == package or n.startswith(package + ".")}
    return found


def modules_of(package: str) -> dict[str, Path]:
    directory = PACKAGE_ROOT.joinpath(*package.split(".")[1:])
    return {module_name(path): path for path in sorted(directory.glob("*.py"))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a list of nodes, or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


@pytest.mark.parametrize("package", ["flowkit.sinks"])
def test_modules_of_a_package_import_each_other_one_way(package: str) -> None:
    modules = modules_of(package)
    assert len(modules) > 1
    submodules = {name: path for name, path in modules.items() if name != package}
    graph = {
        name: imported_modules(path, package) & set(modules) for name, path in submodules.items()
    }
    # A module of the package importing the package itself imports its __init__, which
    # imports every module: a cycle.
    assert {name: sorted(deps) for name, deps in graph.items() if package in deps} == {}
    assert find_cycle(graph) is None
    # Nothing in the package reaches back to an old module path that re-exports it.
    for name, path in submodules.items():
        assert imported_modules(path, "flowkit") & set(MOVED) == set(), name


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


@pytest.mark.parametrize(("old", "new"), MOVED.items())
def test_old_module_paths_re_export_the_moved_names(old: str, new: set[str]) -> None:
    module = importlib.import_module(old)
    assert module.__all__
    for name in module.__all__:
        value = getattr(module, name)
        homes = [m for m in sorted(new) if getattr(importlib.import_module(m), name, None) is value]
        assert homes, f"{old}.{name} is not the object of that name in {sorted(new)}"
        if hasattr(value, "__qualname__"):  # classes and functions: defined there
            assert value.__module__ in new, f"{old}.{name} comes from {value.__module__}"


def test_sinks_package_re_exports_its_modules_names() -> None:
    from flowkit import sinks
    from flowkit.sinks import base, builtin, file, two_phase_commit

    defined = {
        name: getattr(module, name)
        for module in (base, builtin, two_phase_commit, file)
        for name in module.__all__
    }
    for name in sinks.__all__:
        assert getattr(sinks, name) is defined[name]
    # the names users imported before the split, from their old places
    for name in ("Sink", "SinkWriter", "CollectSink", "PrintSink", "FileSink", "Encoder"):
        namespace: dict[str, object] = {}
        exec(f"from flowkit.sinks import {name}", namespace)
        assert namespace[name] is defined[name]


def test_state_pickled_under_the_old_module_path_still_loads() -> None:
    """Checkpoints hold pickled transactions; those written before the move name the
    classes in ``flowkit.sinks_2pc``."""
    from flowkit.sinks.file import FileTransaction, PartFile
    from flowkit.sinks.two_phase_commit import TwoPhaseCommitState

    state = TwoPhaseCommitState(
        current=FileTransaction(0, "s1", [PartFile(0, ".part-0-0.inprogress.s1", "part-0-0")]),
        pending=((3, FileTransaction(0, "s0")),),
    )
    data = pickle.dumps(state, protocol=0)  # text protocol: module names stand alone
    for new in MOVED["flowkit.sinks_2pc"]:
        data = data.replace(f"c{new}\n".encode(), b"cflowkit.sinks_2pc\n")
    assert b"flowkit.sinks_2pc" in data and b"flowkit.sinks.file" not in data
    assert pickle.loads(data) == state
