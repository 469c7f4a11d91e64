"""Every third-party module the product imports comes from a distribution pyproject.toml declares (core or an
extra), so `pip install streetwatch[...]` installs what the code needs; optional imports are guarded."""

from __future__ import annotations

import ast
import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import REPO

PACKAGES = ("detect", "pipelines", "api", "streetwatch", "benchmarks")


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return {_normal(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _normal(name: str) -> str:
    """PEP 503 name: `prometheus_client` and `prometheus-client` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _guarded(tree: ast.AST) -> set[int]:
    """Line numbers of optional imports: inside `try:` blocks whose handler catches ImportError (or any
    Exception), and under `if TYPE_CHECKING:` (never run)."""
    catches = ("ImportError", "ModuleNotFoundError", "Exception")
    blocks = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(h.type is None or (isinstance(h.type, ast.Name) and h.type.id in catches)
                                             for h in node.handlers):
            blocks += node.body
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            blocks += node.body
    return {n.lineno for stmt in blocks for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))}


def _imports() -> dict[str, list[str]]:
    """Top-level module name -> where it is imported unguarded."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            guarded = _guarded(tree)
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                if node.lineno in guarded:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_every_imported_third_party_module_is_declared():
    declared = _declared()
    providers = md.packages_distributions()
    local = set(PACKAGES) | {"tests"}
    undeclared = {}
    for module, where in _imports().items():
        if module in local or module in sys.stdlib_module_names or module == "__future__":
            continue
        dists = {_normal(d) for d in providers.get(module, [])}
        assert dists, f"{module} (imported at {where[0]}) is not installed at all"
        if not dists & declared:
            undeclared[module] = (sorted(dists), where[:2])
    assert undeclared == {}, "imported but not declared in pyproject.toml: " + repr(undeclared)


def test_a_command_whose_extra_is_not_installed_names_the_extra():
    """`pip install streetwatch` without the api extra, then `serve`: one line naming the extra, not uvicorn's
    ModuleNotFoundError traceback (the module is hidden as an install without it lacks it)."""
    code = ("import sys; sys.modules['uvicorn'] = None; sys.argv = ['streetwatch', 'serve']; "
            "from streetwatch.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == ("error: this command needs the api extra (uvicorn is not installed): "
                                  "pip install 'streetwatch[api]'")


@pytest.mark.parametrize("module, extra", [("uvicorn", "api"), ("ultralytics", "torch")])
def test_demo_without_an_extra_it_needs_names_it_before_doing_anything(tmp_path, module, extra):
    """`demo` without the api extra loaded the detector, made the footage and started the simulator before failing on
    uvicorn; without the torch extra it stopped at the photos with its own words. Both say the extra first, nothing
    written."""
    out_dir = tmp_path / "demo-out"
    code = (f"import sys; sys.modules[{module!r}] = None; "
            f"sys.argv = ['streetwatch', 'demo', '--no-serve', '--out', {str(out_dir)!r}]; "
            "from streetwatch.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip() == (f"error: this command needs the {extra} extra ({module} is not installed): "
                                  f"pip install 'streetwatch[{extra}]'")
    assert not out_dir.exists()


def test_demo_photos_without_ultralytics_name_the_torch_extra(monkeypatch):
    """The demo's footage made without the ultralytics package (its photos): the console script's line for a missing
    module names the extra, as for any command, instead of 'run make install'."""
    from streetwatch.cli import _user_error
    from streetwatch.demo.media import ultralytics_photos

    monkeypatch.setitem(sys.modules, "ultralytics", None)
    with pytest.raises(ModuleNotFoundError) as caught:
        ultralytics_photos()
    assert _user_error(caught.value) == ("this command needs the torch extra (ultralytics is not installed): "
                                         "pip install 'streetwatch[torch]'")


#: What a command that reads no image, signs nothing and sends nothing must not load (each costs 0.1-1.5 s a process).
HEAVY = ("supervision", "scipy", "trackers", "cv2", "cryptography", "httpx")
#: Runs a command as the console script does, then prints which of `HEAVY` it loaded.
LOADED_AFTER = """
import json, sys
from streetwatch.cli import main
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in HEAVY if m in sys.modules)}))
"""


def test_the_case_store_commands_do_not_load_supervision_scipy_opencv_cryptography_or_httpx(tmp_path):
    """Every command that opened the case store imported supervision, and scipy under it (1.2-1.5 s a process, 'users
    list' 3.8 s in all), through detect's modules the store reads a constant of: they import it where boxes are drawn
    or tracked. Every command that read the settings imported cryptography, OpenCV and httpx too (the evidence and
    dispatch packages' __init__ loaded the builder, the signing code and the adapters for a settings section each).
    'users list' on a new store runs without loading any of them."""
    config = tmp_path / "sw.yaml"
    config.write_text(f"cases:\n  url: sqlite:///{tmp_path / 'cases.db'}\n", encoding="utf-8")
    argv = ["streetwatch", "users", "list", "--config", str(config)]
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.argv = {argv!r}; HEAVY = {HEAVY!r}\n" + LOADED_AFTER],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == {"code": 0, "loaded": []}, out.stderr


def test_the_service_app_loads_no_report_drawing_or_workbook():
    """serve imported Matplotlib and its PDF backend at start-up (about 1.3 s) for the analytics routes' list of a
    report's files, and openpyxl (0.2 s) for the tables' module: each is imported where a report is drawn or a
    workbook made."""
    code = "import json, sys, api.app; print(json.dumps(sorted(m for m in ('matplotlib', 'openpyxl') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[-1]) == []
