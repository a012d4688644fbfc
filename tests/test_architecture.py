"""The layers: imports point one way, no cycles, light CLI start-up, shared options defined once."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("augmentor", "pipelines", "recognition")
SHARED_OPTIONS = (
    "--config", "--set", "--out", "--dataset", "--identities", "--device", "--batch-size", "--workers",
    "--limit", "--progress/--no-progress", "--dry-run", "--resume",
    "--precision", "--donors", "--address", "--model", "--seed",
)  # fmt: skip
# Declarations still spelled out in files that another branch owns; the merge moves them onto the factories of
# augmentor/options.py and empties this (precision_option, donors_option, model_specs_option, seed_option).
NOT_YET_SHARED: dict[str, set[str]] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports anywhere (top level or inside functions), resolved to known modules."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules:
                    found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_the_core_imports_no_upper_layer():
    graph = _graph()
    upward = {m: sorted(d for d in deps if not d.startswith("augmentor")) for m, deps in graph.items()}
    assert {m: d for m, d in upward.items() if m.startswith("augmentor") and d} == {}
    sideways = {
        m: sorted(d for d in deps if d.split(".")[0] not in ("augmentor", m.split(".")[0]))
        for m, deps in graph.items()
    }
    assert {m: d for m, d in sideways.items() if d} == {}  # pipelines and recognition do not import each other
    # and the lazily loaded command strings of the core name only the core
    from augmentor.cli import CORE_COMMANDS

    assert all(target.startswith("augmentor.") for target in CORE_COMMANDS.values())


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _imported_modules(*args: str) -> tuple[set[str], float]:
    """Modules a real ``augmentor ARGS`` process imports (from ``-X importtime``), and its wall time."""
    script = Path(sys.executable).with_name("augmentor")  # the installed console script, as a user runs it
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    start = time.perf_counter()
    done = subprocess.run([str(script), *args], check=False, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr[-2000:]
    names = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)$", done.stderr, flags=re.MULTILINE))
    assert "augmentor.cli" in names  # the probe reads the import log at all
    return names, seconds


def test_help_imports_neither_ray_nor_the_recognition_stack(capsys):
    names, seconds = _imported_modules("--help")
    heavy = {n for n in names if n.split(".")[0] in ("ray", "torch", "pandas", "pyarrow")}
    assert heavy == set()
    assert {n for n in names if n.startswith("recognition.")} <= {"recognition.cli"}  # only the click layer
    with capsys.disabled():
        print(f"\n`augmentor --help`: {seconds:.2f} s wall, {len(names)} modules imported")


@pytest.mark.parametrize("command", ["preprocess", "evaluate"])
def test_core_commands_load_no_ray_or_recognition(command):
    names, _ = _imported_modules(command, "--help")
    assert {n for n in names if n.split(".")[0] in ("ray", "recognition", "pipelines")} == set()


def test_every_command_is_listed_and_loads():
    from click.testing import CliRunner

    from augmentor.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for name in ("preprocess", "train", "export", "pack", "evaluate", "run", "finetune", "verify-lfw", "compare"):
        assert re.search(rf"^\s+{name}\s", result.output, flags=re.MULTILINE), name
        sub = CliRunner().invoke(main, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output, (name, sub.output)


def test_shared_options_are_defined_once():
    """The shared option sets live in augmentor/options.py; no CLI module spells one of them out again."""
    offenders = []
    for path in [*ROOT.glob("augmentor/**/*.py"), *ROOT.glob("pipelines/*.py"), *ROOT.glob("recognition/*.py")]:
        if path.name == "options.py":
            continue
        text = path.read_text()
        for option in SHARED_OPTIONS:
            if re.search(rf'click\.option\(\s*(?:"-\w", )?"{re.escape(option)}"', text):
                offenders.append(f"{path.relative_to(ROOT)}: {option}")
    pending = [f"{path}: {option}" for path, options in NOT_YET_SHARED.items() for option in options]
    assert sorted(offenders) == sorted(pending)
