"""A pip-installed streetwatch: what its wheel ships of models/ and where it writes models (never site-packages)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


def _committed(folder: str) -> list[str]:
    """The files git tracks under `folder` of the checkout (what a wheel built from a clone has to go on)."""
    out = subprocess.run(["git", "ls-files", folder], capture_output=True, text=True, cwd=REPO, check=True)
    return out.stdout.split()


def test_the_wheel_ships_the_committed_cards_and_verifier_heads_not_a_models_package(tmp_path):
    """A deployer who installs the wheel judges with the same default verifier as a checkout: every committed file of
    models/ (cards, heads, promoted.yaml) is in it as streetwatch_models/, and no top-level `models` package is."""
    src = tmp_path / "src"
    for name in _committed("."):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [wheel] = (tmp_path / "dist").glob("streetwatch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("streetwatch_models/") for n in names if n.startswith("streetwatch_models/")}
    assert shipped == {n.removeprefix("models/") for n in _committed("models")}
    assert {"verifiers/promoted.yaml", "verifiers/street-v7.npz", "cards/yolo11n.yaml"} <= shipped
    assert not [n for n in names if n.startswith("models/")]


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    """The registry as in a pip install: the committed models/ copied as site-packages/streetwatch_models, the command
    run in an empty folder, no $STREETWATCH_MODELS."""
    shipped = tmp_path / "site-packages" / "streetwatch_models"
    for name in _committed("models"):
        (shipped / name.removeprefix("models/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, shipped / name.removeprefix("models/"))
    monkeypatch.setattr("detect.registry.SHIPPED_MODELS", shipped)
    monkeypatch.setattr("detect.registry.PROJECT_MODELS", shipped)
    monkeypatch.delenv("STREETWATCH_MODELS", raising=False)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return shipped


def test_an_install_judges_with_the_shipped_verifier_and_promotes_outside_site_packages(installed, tmp_path):
    """The shipped promoted verifier is the default; a promotion goes into ./models (read before the shipped copy), the
    shipped files untouched, and new cards into ./models/registry, never site-packages."""
    from detect.registry import registry_dir
    from detect.verifier import find_card, promote_verifier, promoted_id

    assert promoted_id() == "street-v7" and find_card() == installed / "verifiers" / "street-v7.yaml"
    before = (installed / "verifiers" / "promoted.yaml").read_bytes()
    (tmp_path / "work" / "models" / "verifiers").mkdir(parents=True)
    shutil.copy2(installed / "verifiers" / "street-v7.yaml", tmp_path / "work" / "models" / "verifiers" / "mine.yaml")
    shutil.copy2(installed / "verifiers" / "street-v7.npz", tmp_path / "work" / "models" / "verifiers" / "street-v7.npz")
    target, _ = promote_verifier("mine")
    assert target == Path.cwd() / "models" / "verifiers" / "promoted.yaml" and promoted_id() == "mine"
    assert (installed / "verifiers" / "promoted.yaml").read_bytes() == before
    assert registry_dir() == Path.cwd() / "models" / "registry"


def test_registry_dir_skips_a_model_folder_that_cannot_be_written(installed, tmp_path, monkeypatch):
    """$STREETWATCH_MODELS' first folder cannot be made (a file stands in its path): cards go into the next writable
    one; with none writable but the shipped copy (./models a file too), the error names the folders instead of
    writing into site-packages."""
    from detect.registry import registry_dir

    (tmp_path / "a-file").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("STREETWATCH_MODELS", f"{tmp_path / 'a-file' / 'models'}:{tmp_path / 'mine'}")
    assert registry_dir() == tmp_path / "mine" / "registry"
    monkeypatch.setenv("STREETWATCH_MODELS", str(tmp_path / "a-file" / "models"))
    (tmp_path / "work" / "models").write_text("not a folder either", encoding="utf-8")
    with pytest.raises(PermissionError, match="no writable model folder: .*a-file/models, .*work/models cannot be"):
        registry_dir()
    assert not (installed / "registry").exists()
