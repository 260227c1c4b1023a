"""The shape of the package: what core/ may import and read, and how long a file or function may be.

See docs/architecture.md: core/ and sim/ are plain libraries (no Dagster, no environment, no
configuration loading of their own); entry points (the CLI, defs/, resources/, definitions.py) load
settings and pass configs and paths in.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "loop_pipeline"
LIBRARIES = ("core", "sim")
# Entry points inside core/: `python -m loop_pipeline.core.training` is a command of its own.
ENTRY_MODULES = {"__main__.py"}
# What only an entry point may call: the environment and the settings / config loaders.
FORBIDDEN_NAMES = {"environ", "getenv", "LoopSettings", "load_config", "config_dir", "landing_url", "loop_home"}
FORBIDDEN_MODULES = ("loop_pipeline.settings", "dagster", "loop_pipeline.defs", "loop_pipeline.resources")


def library_files() -> list[Path]:
    files = [p for name in LIBRARIES for p in sorted((PACKAGE / name).rglob("*.py"))]
    return [p for p in files if p.name not in ENTRY_MODULES]


def _violations(path: Path, root: Path = PACKAGE) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
        else:
            modules = []
        for module in modules:
            if module.startswith(FORBIDDEN_MODULES):
                found.append(f"{path.relative_to(root)}:{node.lineno} imports {module}")
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f"{path.relative_to(root)}:{node.lineno} uses .{node.attr}")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"{path.relative_to(root)}:{node.lineno} uses {node.id}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "paths":
            found.append(f"{path.relative_to(root)}:{node.lineno} calls paths()")
    return found


def test_the_libraries_read_no_environment_and_load_no_config_themselves():
    files = library_files()
    assert len(files) > 30  # the scan sees the packages
    problems = [problem for path in files for problem in _violations(path)]
    assert problems == []


def test_the_scan_catches_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import os\nimport dagster as dg\nfrom loop_pipeline.settings import LoopSettings\n"
        "x = os.environ.get('LOOP_HOME')\ny = LoopSettings().load(None)\n",
        encoding="utf-8",
    )
    problems = _violations(sample, root=tmp_path)
    assert problems == [
        "sample.py:2 imports dagster",
        "sample.py:3 imports loop_pipeline.settings",
        "sample.py:4 uses .environ",
        "sample.py:5 uses LoopSettings",
    ]


def test_core_and_sim_import_no_dagster_in_a_fresh_interpreter():
    modules = sorted(
        ".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for p in library_files()
    )
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'dagster')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("limit_lines, limit_function", [(500, 80)])
def test_no_file_over_500_lines_and_no_function_over_80(limit_lines, limit_function):
    long_files, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > limit_lines:
            long_files.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit_function:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert long_files == []
    assert long_functions == []
