"""The layering of DESIGN.md §4 as import contracts (`[tool.importlinter]` in pyproject.toml, import-linter):
detect imports neither pipelines nor api, pipelines never imports api, the benchmarks nothing from the CLI,
nothing in api imports the app back, and no package has an import cycle. The contracts hold on this tree,
and a copy of the tree with a forbidden import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PACKAGES = ("detect", "pipelines", "api", "streetwatch", "benchmarks")


def _lint(root: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([str(exe), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    run = _lint(REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Contracts: 3 kept, 0 broken." in run.stdout


def test_a_forbidden_import_breaks_its_contract(tmp_path):
    """A copy of the source (Python files and pyproject.toml) with one offending module per rule."""
    for package in PACKAGES:
        for src in (REPO / package).rglob("*.py"):
            dst = tmp_path / src.relative_to(REPO)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    shutil.copyfile(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    probes = {
        "detect/probe_up.py": "from pipelines.settings import Settings\n",  # detect -> pipelines
        "detect/probe_api.py": "import api.problems\n",  # detect -> api
        "pipelines/probe_api.py": "from api.accounts import Role\n",  # pipelines -> api
        "benchmarks/probe_cli.py": "from streetwatch.commands.common import fail\n",  # benchmarks -> CLI
        "api/routers/probe_app.py": "from api.app import create_app\n",  # a router imports the app back
        "pipelines/cases/probe_cycle.py": "import pipelines.triage.run\n",  # cases <-> triage
    }
    for name, code in probes.items():
        (tmp_path / name).write_text(code, encoding="utf-8")
    run = _lint(tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Contracts: 0 kept, 3 broken." in run.stdout
    for importer, imported in (("detect.probe_up", "pipelines.settings"), ("detect.probe_api", "api.problems"),
                               ("pipelines.probe_api", "api.accounts"), ("benchmarks.probe_cli", "streetwatch.commands.common"),
                               ("api.routers.probe_app", "api.app")):
        assert f"{importer} -> {imported}" in run.stdout, (importer, run.stdout)
    assert "No cycles are allowed in pipelines" in run.stdout
