"""`streetwatch cases|dispatch|evidence` through the real Typer app, on real bundles and a real simulator."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from detect.config_io import ConfigError
from detect.evidence.builder import BundleContext, ModelInfo
from pipelines.cases import CaseState
from pipelines.cases.intake import Intake
from pipelines.settings import load_settings
from streetwatch.cli import app
from tests.dispatch_helpers import KEY, Sim, small_event

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "streetwatch-settings.yaml"


def test_example_settings_validate_and_bad_ones_name_the_field(tmp_path, monkeypatch):
    from detect.config_io import load_model
    from pipelines.settings import Settings

    settings = load_model(Settings, EXAMPLE)
    assert settings.dispatch.targets["hz-dcm"].field_map["externalId"] == "wbbh"
    assert settings.evidence_store.s3.bucket == "streetwatch-evidence"
    bad = tmp_path / "bad.yaml"
    bad.write_text("dispatch:\n  targets:\n    x: {adapter: fax, url: 'http://a'}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: dispatch.targets.x.adapter: Input should be 'cn-dcm' or 'open311'"):
        load_settings(bad)
    # loaded for use, every file the settings read must be there: named with the settings file and the field
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as missing:
        load_settings(EXAMPLE)
    assert f"{EXAMPLE}: analytics.grid: city/grid-cells.geojson: file not found (relative paths are read from the folder " \
           f"the command runs in, {tmp_path})" in str(missing.value)
    assert f"{EXAMPLE}: service.cameras_file: cameras.yaml: file not found" in str(missing.value)


def test_dispatch_warns_when_no_platform_can_open_the_photos(tmp_path, caplog):
    """A local evidence store without `public_base_url` sent `file:///…/annotated/opened.jpg` as a cn-dcm case's
    attachments and no media_url to Open311, without a word: the platform's staff saw cases with no photo. `dispatch
    run` says so at start-up, naming the setting; a store the platforms can reach, or no targets, says nothing."""
    from detect.config_io import load_model
    from pipelines.settings import Settings

    def settings(**store) -> Settings:
        path = tmp_path / "sw.yaml"
        path.write_text(yaml.safe_dump({
            "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
            "evidence_store": {"local_root": str(tmp_path / "evidence"), **store},
            "dispatch": {"targets": {"hz": {"adapter": "cn-dcm", "url": "http://127.0.0.1:9/cases"}}}}))
        return load_model(Settings, path)

    assert "evidence_store.public_base_url is not set: the photos sent with each case are file:// paths" in \
        settings().unreachable_attachments()
    assert settings(public_base_url="https://sw.example/api/attachments").unreachable_attachments() is None
    assert settings().model_copy(update={"dispatch": settings().dispatch.model_copy(update={"targets": {}})}
                                 ).unreachable_attachments() is None
    from pipelines.cases import CaseStore

    CaseStore(f"sqlite:///{tmp_path}/cases.db").close()
    with caplog.at_level("WARNING"):
        ran = _cli("dispatch", "run", "--once", "--config", str(tmp_path / "sw.yaml"))
    assert ran.exit_code == 0, ran.output
    assert "the photos sent with each case are file:// paths" in caplog.text + ran.output


def test_dispatch_run_says_how_many_errors_it_left_out():
    """`dispatch run` printed the last 20 errors of a pass and nothing of the others: a pass that parked 300 cases on
    an expired token read as 20. A line first says how many are left out and where to read them."""
    from pipelines.dispatch.dispatcher import PassStats
    from streetwatch.commands.dispatch import error_lines

    stats = PassStats(parked=25, errors=[f"case SW{i:02d}: hz: HTTP 401: token 已过期" for i in range(25)])
    lines = error_lines(stats.errors)
    assert len(lines) == 21 and lines[0].startswith("  (5 earlier errors not shown: `streetwatch dispatch parked` lists")
    assert lines[1] == "  case SW05: hz: HTTP 401: token 已过期" and lines[-1].endswith("SW24: hz: HTTP 401: token 已过期")
    assert error_lines(stats.errors[:20]) == [f"  {e}" for e in stats.errors[:20]]


@pytest.fixture
def deployment(tmp_path, monkeypatch, bus_event):
    """A settings file, one camera case with a stored bundle, and a simulator as the dispatch target."""
    sim = Sim(tmp_path)
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool"),
                           "public_base_url": "https://sw.example/evidence"},
        "dispatch": {"targets": {"sim": {"adapter": "cn-dcm", "url": f"{sim.base}/cn-dcm/cases", "timeout_s": 2}}},
    }))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    intake = Intake.from_settings(load_settings(config), ModelInfo("yolo11n-int8dq", "ab" * 32))
    event = replace(small_event(bus_event), violation_id="cam-07:z1:illegal_parking:t1", source_id="cam-07")
    case = intake.record_event(event, BundleContext(source_kind="camera", address="文三路 1 号"))
    yield intake, case, sim
    sim.stop()


@pytest.mark.slow  # 6 s: a simulator subprocess and a dispatch pass
def test_the_simulator_speaks_the_example_targets_field_names(tmp_path, monkeypatch, bus_event):
    """The example's hz-dcm target renames externalId and taskNumber (field_map) and adds regionCode (extra_fields):
    pointed at `dispatch-sim`, every case was refused (`'externalId' is a required property`), so an integrator could
    not try a city's field map before its platform did. `dispatch-sim --config --target` speaks that target's names."""
    from detect.config_io import load_model
    from pipelines.dispatch.adapters import CnDcmAdapter, Delivery
    from pipelines.settings import Settings

    hz = load_model(Settings, EXAMPLE).dispatch.targets["hz-dcm"].model_dump(mode="json", exclude_none=True)
    config = tmp_path / "sw.yaml"
    sim_url = "http://127.0.0.1:{port}/cn-dcm/cases"

    def write(port: int) -> None:
        target = {**hz, "url": sim_url.format(port=port), "lookup_url": sim_url.format(port=port) + "?wbbh={external_id}"}
        config.write_text(yaml.safe_dump({
            "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
            "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool"),
                               "public_base_url": "https://sw.example/evidence"},
            "dispatch": {"targets": {"hz": target}}}, allow_unicode=True))

    write(0)  # the simulator reads the target's dialect, not its url; the url is written once its port is known
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    sim = Sim(tmp_path, "--config", str(config), "--target", "hz")
    try:
        write(sim.port)
        settings = load_settings(config)
        intake = Intake.from_settings(settings, ModelInfo("yolo11n-int8dq", "ab" * 32))
        event = replace(small_event(bus_event), violation_id="cam-07:z1:illegal_parking:t1", source_id="cam-07")
        case = intake.record_event(event, BundleContext(source_kind="camera", address="文三路 1 号"))
        intake.store.review(case.id, approve=True, reviewer="li.wei", target="hz")
        ran = _cli("dispatch", "run", "--once")
        assert ran.exit_code == 0 and "delivered 1," in ran.output, ran.output
        [record] = sim.cases("cn-dcm")
        assert record["external_id"] == case.id and intake.store.get(case.id).dispatch_ref == record["ref"]
        # the look-up asks by their name for our id and reads their name for the task number
        adapter = CnDcmAdapter("hz", settings.dispatch.targets["hz"], settings.load_taxonomy())
        with httpx.Client(timeout=5) as client:
            found = adapter.look_up(client, Delivery(intake.store.get(case.id), {}, "", [], ""))
            refused = client.post(sim_url.format(port=sim.port), json={"wbbh": "SW1", "regionCode": "330100"}).json()
        assert found == record["ref"]
        assert "regionCode: expected '330106', got '330100'" in refused["message"]  # their constant field, checked
        wrong = _cli("dispatch-sim", "--port", "0", "--target", "nowhere")
        assert wrong.exit_code == 2 and "--target nowhere: no dispatch target of that name" in wrong.output
    finally:
        sim.stop()


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "250"})


def test_cases_list_show_and_dispatch_once(deployment):
    intake, case, sim = deployment
    listed = _cli("cases", "list")
    assert listed.exit_code == 0, listed.output
    assert case.id in listed.output and "candidate" in listed.output and "cam-07" in listed.output
    assert _cli("cases", "list", "--state", "queued").output.strip() == "no cases"
    bad = _cli("cases", "list", "--state", "lost")
    assert bad.exit_code == 2 and "--state 'lost': not a case state" in bad.output

    intake.store.review(case.id, approve=True, reviewer="li.wei", target="sim", reason_code="confirmed")
    # a dry run: the body dispatch run would send, in the target's names, and nothing sent or changed
    shown = _cli("dispatch", "preview", case.id)
    assert shown.exit_code == 0, shown.output
    assert f"POST {sim.base}/cn-dcm/cases (cn-dcm, target sim, Idempotency-Key streetwatch:sim:{case.id}); not sent" in shown.output
    body = json.loads(shown.output[shown.output.index("{"):])
    assert (body["externalId"], body["address"]) == (case.id, "文三路 1 号") and body["attachments"]
    assert sim.cases() == [] and [e.status for e in intake.store.outbox_entries(case_id=case.id)] == ["pending"]
    ran = _cli("dispatch", "run", "--once")
    assert ran.exit_code == 0, ran.output
    assert "delivered 1, retried 0, parked 0" in ran.output and "outbox: delivered 1" in ran.output
    [received] = sim.cases()
    shown = _cli("cases", "show", case.id)
    assert shown.exit_code == 0, shown.output
    assert f"dispatch_ref     {received['ref']}" in shown.output and "review_reason    confirmed" in shown.output
    assert "candidate -> queued           li.wei  (queued for sim)" in shown.output
    assert f"delivery 1 to sim: delivered, 1 attempt, ref {received['ref']}" in shown.output
    assert intake.store.get(case.id).state is CaseState.SUBMITTED
    missing = _cli("cases", "show", "SW00000000-nope")
    assert missing.exit_code == 2 and "no case 'SW00000000-nope' in the case store" in missing.output


def test_dispatch_parked_and_requeue(deployment):
    intake, case, sim = deployment
    intake.store.review(case.id, approve=True, reviewer="li.wei", target="gone")  # not a configured target
    assert "parked 1" in _cli("dispatch", "run", "--once").output
    parked = _cli("dispatch", "parked")
    header, line = parked.output.splitlines()  # the columns named, as every other list prints them
    assert header == "entry\tcase\ttarget\tattempts\treason" and "no dispatch target named 'gone' is configured" in line
    entry_id, case_id, target, attempts = line.split("\t")[:4]
    assert (case_id, target, attempts) == (case.id, "gone", "1")
    # several ids at once: one that cannot be requeued is named, the others are requeued all the same
    both = _cli("dispatch", "requeue", "999", entry_id, "--by", "ops")
    assert both.exit_code == 2 and "no outbox entry 999" in both.output and f"outbox entry {entry_id} requeued" in both.output
    again = _cli("dispatch", "requeue", entry_id)
    assert again.exit_code == 2 and "only parked entries can be requeued" in again.output
    # a cause every case shares (a token, a field map): all of a target's parked entries at once
    assert "parked 1" in _cli("dispatch", "run", "--once").output
    assert _cli("dispatch", "requeue", "--target", "gone").output.strip() == f"outbox entry {entry_id} requeued"
    none = _cli("dispatch", "requeue", "--target", "gone")
    assert none.exit_code == 2 and "--target gone: no parked deliveries to it" in none.output


@pytest.mark.slow  # 14 s: dispatch processes against a simulator
def test_dispatch_once_exits_non_zero_when_a_person_must_look(deployment, bus_event, tmp_path):
    """`dispatch run --once` exited 0 whatever happened, so a cron pass whose every delivery failed (the platform
    down) or was parked read as done. It exits 0 when nothing was due or what was due went out, 4 when deliveries
    were due and none went out, 3 when one was parked for a person."""
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    intake, case_a, sim = deployment
    with socket.socket() as s:  # a port nothing listens on: the platform is down
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    settings = yaml.safe_load(Path(os.environ["STREETWATCH_CONFIG"]).read_text(encoding="utf-8"))
    settings["dispatch"]["targets"]["down"] = {"adapter": "cn-dcm", "url": f"http://127.0.0.1:{closed}/cases", "timeout_s": 2}
    config = tmp_path / "with-down.yaml"
    config.write_text(yaml.safe_dump(settings), encoding="utf-8")

    def once() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streetwatch.cli", "dispatch", "run", "--once", "--config", str(config)],
                              cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)

    def another_case(n: int):
        event = replace(small_event(bus_event), violation_id=f"cam-07:z1:illegal_parking:t{n}", source_id="cam-07")
        return intake.record_event(event, BundleContext(source_kind="camera", address=f"文三路 {n} 号"))

    nothing = once()
    assert nothing.returncode == 0 and "delivered 0, retried 0, parked 0" in nothing.stdout, nothing.stderr
    intake.store.review(case_a.id, approve=True, reviewer="li.wei", target="down")
    down = once()
    assert down.returncode == 4 and "delivered 0, retried 1, parked 0" in down.stdout, down.stdout + down.stderr
    intake.store.review(another_case(2).id, approve=True, reviewer="li.wei", target="sim")
    delivered = once()
    assert delivered.returncode == 0 and "delivered 1," in delivered.stdout, delivered.stdout + delivered.stderr
    intake.store.review(another_case(3).id, approve=True, reviewer="li.wei", target="gone")  # no such target: parked
    parked = once()
    assert parked.returncode == 3 and "parked 1" in parked.stdout, parked.stdout + parked.stderr


def test_evidence_verify_by_stored_reference(deployment):
    intake, case, _ = deployment
    ok = _cli("evidence", "verify", case.evidence_ref)
    assert ok.exit_code == 0 and ok.output.startswith(f"OK  {case.evidence_ref}")
    crop = next((intake.evidence.path(case.evidence_ref) / "crops").iterdir())
    crop.write_bytes(crop.read_bytes()[:-1])
    bad = _cli("evidence", "verify", case.evidence_ref, "--json")
    assert bad.exit_code == 1 and f'"tampered": ["crops/{crop.name}"]' in bad.output


def test_evidence_verify_names_an_s3_reference_on_a_local_store_and_a_path_that_does_not_exist(deployment, tmp_path):
    ref = "s3://streetwatch-evidence/cases/SW20250314-3f9c2a7b1d0e"
    s3 = _cli("evidence", "verify", ref)
    assert s3.exit_code == 2 and (f"{ref} is an S3 reference, but evidence_store.backend is local (settings: "
                                  f"{tmp_path / 'sw.yaml'}); to fetch it, set evidence_store.backend: s3") in s3.output
    gone, a_file = tmp_path / "no-such-bundle", tmp_path / "sw.yaml"
    checked = _cli("evidence", "verify", str(gone), str(a_file), "--no-store")
    assert checked.exit_code == 1
    assert f"problem: {gone}: does not exist" in checked.output and f"problem: {a_file}: not a directory" in checked.output


def test_evidence_verify_names_a_local_reference_on_an_s3_store(deployment, tmp_path):
    """A file:// reference while the settings' evidence store is S3 failed with 'not a reference into s3://…', as if it
    were a malformed S3 one; it is said to be a local reference, with the folder to give instead."""
    _, case, _ = deployment
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "evidence_store": {"backend": "s3", "s3": {"endpoint": "127.0.0.1:9", "bucket": "sw-evidence"}}}))
    refused = _cli("evidence", "verify", case.evidence_ref, "--config", str(config))
    folder = tmp_path / "evidence" / case.id
    assert refused.exit_code == 2 and (f"{case.evidence_ref} is a local reference, but evidence_store.backend is s3 "
                                       f"(settings: {config}); to verify it, give its folder ({folder}) instead") in refused.output
    given = _cli("evidence", "verify", str(folder), "--config", str(config), "--no-store")
    assert given.exit_code == 0 and given.output.startswith(f"OK  {folder}"), given.output


def test_a_valid_bundle_of_another_case_copied_in_is_refused_by_verify_and_dispatch(deployment, bus_event):
    """Issue 14, item 4: a bundle is tied to its case by case id and by the digest recorded at sealing."""
    from pipelines.cases import CaseStore

    intake, case_a, sim = deployment
    event = replace(small_event(bus_event), violation_id="cam-07:z1:illegal_parking:t2", source_id="cam-07")
    case_b = intake.record_event(event, BundleContext(source_kind="camera", address="文三路 2 号"))
    folder_a, folder_b = (intake.evidence.path(c.evidence_ref) for c in (case_a, case_b))
    assert case_a.evidence_digest and _cli("evidence", "verify", str(folder_a)).exit_code == 0

    # An older signed bundle of the same case put back after an update: valid signature, wrong digest.
    old_copy = folder_a.parent / "old-a"
    shutil.copytree(folder_a, old_copy)
    intake.add_strip(case_a.violation_id, [replace(event.frame, frame_id="after-1")])
    assert intake.store.get(case_a.id).evidence_digest != case_a.evidence_digest
    shutil.rmtree(folder_a)
    shutil.copytree(old_copy, folder_a)
    rolled_back = _cli("evidence", "verify", str(folder_a))
    assert rolled_back.exit_code == 1 and "is not the one recorded when case" in rolled_back.output
    assert _cli("evidence", "verify", str(folder_a), "--no-store").exit_code == 0  # the signature alone is fine

    # Case B's valid bundle copied into case A's folder.
    shutil.rmtree(folder_a)
    shutil.copytree(folder_b, folder_a)
    swapped = _cli("evidence", "verify", str(folder_a), "--no-store")
    assert swapped.exit_code == 1 and f"bundle belongs to case {case_b.id}, not to case {case_a.id}" in swapped.output
    by_ref = _cli("evidence", "verify", case_a.evidence_ref, "--json")
    assert by_ref.exit_code == 1 and f'"case_id": "{case_b.id}"' in by_ref.output

    # The dispatcher does not send it: the entry is parked with the reason, the platform gets nothing.
    store = CaseStore(load_settings().cases.url)
    store.queue(case_a.id, "sim", actor="ops")
    run = _cli("dispatch", "run", "--once")
    assert run.exit_code == 3 and "parked 1" in run.output, run.output
    assert f"belongs to case {case_b.id}, not {case_a.id}" in store.get(case_a.id).reason
    assert sim.cases() == []

    # A bundle of another case put into the spool in place of case A's is never stored.
    spool = Path(load_settings().evidence_store.spool_dir)
    shutil.copytree(folder_b, spool / case_a.id)
    assert intake.retry_evidence() == []
    assert not (spool / case_a.id).exists() and len(list((spool / ".rejected").iterdir())) == 1
    store.close()


@pytest.mark.parametrize("command", [["cases", "list"], ["cases", "show", "c-1"], ["cases", "export"],
                                     ["cases", "export", "--out", "cases.xlsx"], ["dispatch", "parked"], ["dispatch", "requeue", "1"],
                                     ["score", "--period", "2026-11"], ["report", "--period", "day"],
                                     ["data", "export-reviews", "--out", "reviews"], ["shops", "list"],
                                     ["callout", "export", "calls.csv"], ["callout", "import", "calls.csv"],
                                     ["callout", "cutoffs"], ["retrain", "--name", "n1", "--from-store"]])
def test_commands_on_existing_cases_refuse_a_missing_store_instead_of_creating_one(tmp_path, monkeypatch, command):
    """Run in a folder without the deployment's settings, they made streetwatch-data/cases.db there and said nothing
    (or 'no parked deliveries', or exported a file of no cases, scores without deductions, no reviews to train on),
    which reads as 'no cases' rather than 'wrong --config'."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREETWATCH_CONFIG", raising=False)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    assert "no case store at sqlite:///streetwatch-data/cases.db (cases.url; give the deployment's settings" in result.output
    assert list(tmp_path.iterdir()) == []


def test_dispatch_run_in_the_wrong_folder_refuses_a_missing_store(tmp_path):
    """The settings' relative store path, run from another folder: it made an empty store there and said 'outbox: empty'."""
    settings = tmp_path / "settings.yaml"
    settings.write_text("dispatch:\n  targets:\n    hz-dcm: {adapter: cn-dcm, url: 'http://127.0.0.1:9'}\n", encoding="utf-8")
    (tmp_path / "elsewhere").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path / "elsewhere")
        result = CliRunner().invoke(app, ["dispatch", "run", "--once", "--config", str(settings)])
    assert result.exit_code == 2, result.output
    assert "no case store at sqlite:///streetwatch-data/cases.db" in result.output and "outbox" not in result.output
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_shop_register_import_still_starts_a_new_store(tmp_path, monkeypatch):
    """A new deployment's first register comes before any case: the import alone may create the store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREETWATCH_CONFIG", raising=False)
    (tmp_path / "shops.csv").write_text('name,address,gps_polygon\n老王面馆,文三路 1 号,"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"\n',
                                          encoding="utf-8")
    result = CliRunner().invoke(app, ["shops", "import", "shops.csv"])
    assert result.exit_code == 0, result.output
    assert "1 shop imported" in result.output and (tmp_path / "streetwatch-data" / "cases.db").is_file()


def test_a_shop_register_gbk_and_windows_1252_both_read_is_read_as_the_encoding_given(tmp_path, monkeypatch):
    """`shops import` of a Windows-1252 sheet that GB18030 reads too imported `Cr鑝e`: it is read as Windows-1252
    (charset_normalizer's choice between the two), with a warning naming it and `--encoding gbk`, which reads it the
    other way (a warning line, not the `error: warning: …` it printed); `--encoding cp1252` reads it without one."""
    import json

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STREETWATCH_CONFIG", raising=False)
    (tmp_path / "shops.csv").write_bytes('name,address,licence_no,gps_polygon\nCrème,12 Rue de la Paix,91330106MA27XY0021,'
                                         '"120.1550,30.2740; 120.1552,30.2740; 120.1552,30.2742"\n'.encode("cp1252"))
    result = CliRunner().invoke(app, ["shops", "import", "shops.csv"])
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith("warning: shops.csv：已按 Windows-1252 编码读取（“Crème”），但它也可按 GB18030 (GBK) 读取（“Cr鑝e”）；"
                                    "若后者才对，请指定编码 gbk 重新导入（命令行 --encoding gbk"), result.stderr  # not `error: warning: …`
    listed = CliRunner().invoke(app, ["shops", "list"])
    assert [json.loads(line)["name"] for line in listed.output.splitlines()] == ["Crème"]
    result = CliRunner().invoke(app, ["shops", "import", "shops.csv", "--encoding", "gbk"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    listed = CliRunner().invoke(app, ["shops", "list"])
    assert [json.loads(line)["name"] for line in listed.output.splitlines()] == ["Cr鑝e"]
    result = CliRunner().invoke(app, ["shops", "import", "shops.csv", "--encoding", "cp1252"])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    result = CliRunner().invoke(app, ["shops", "import", "shops.csv", "--encoding", "latin-9"])
    assert result.exit_code == 2 and "encoding 'latin-9': use utf-8, gbk or cp1252" in result.output


#: Imports the city commands as the CLI does, adds an encoding to the choices, and prints both imports' --help.
HELP_WITH_ONE_MORE_ENCODING = """
import importlib, sys
import typer
from typer.testing import CliRunner
import streetwatch.commands.cityops as cityops
print("pipelines.tables imported:", "pipelines.tables" in sys.modules)
import pipelines.tables as tables
tables.SHEET_ENCODING_CHOICES["utf-16"] = ("utf-16", "UTF-16")
importlib.reload(cityops)
app = typer.Typer()
cityops.register(app)
for command in (["shops", "import"], ["callout", "import"]):
    print(CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).output)
"""


def test_encoding_help_lists_the_encodings_the_imports_take():
    """The --encoding help listed utf-8, gbk or cp1252 in its own words, beside SHEET_ENCODING_CHOICES, which the
    imports take: one more choice would be taken and not listed. The help lists that constant, and the command module
    reads it without loading pipelines.tables (the CLI loads pipelines lazily)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", HELP_WITH_ONE_MORE_ENCODING], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=120)
    assert done.returncode == 0, done.stderr
    text = " ".join(done.stdout.split())
    assert "pipelines.tables imported: False" in text
    assert text.count("The CSV's encoding: utf-8, gbk, cp1252 or utf-16 (default: found;") == 2, text


def test_a_call_out_import_that_applies_no_row_exits_non_zero(deployment, tmp_path):
    """Every row refused (a number no flyposting case carries, a status nobody uses) exited 0 and said
    '0 number(s) updated, 1 unknown, 2 row(s) refused', counting the unknown number twice: a cron import whose whole
    file was refused read as done. It exits 1, as `shops import` does, and says how many refused rows were unknown."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    results = tmp_path / "results.csv"
    results.write_text("number,status\n13800138000,已停机\n13900139000,挂起\n", encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "callout", "import", str(results)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert run.stdout.strip() == "0 numbers updated, 2 rows refused (1 of them not on the list)"
    assert "13800138000 不在追呼清单上" in run.stderr and "第 3 行「状态」" in run.stderr


def test_a_call_out_import_of_a_file_not_there_is_the_usual_one_line(deployment, tmp_path):
    """`callout import` of a missing file printed Python's `[Errno 2] No such file or directory: '…'`, where
    `shops import` and every other command say `PATH: reason`."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    missing = tmp_path / "results.csv"
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "callout", "import", str(missing)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr.strip() == f"error: {missing}: No such file or directory", run.stderr


@pytest.mark.slow  # 7 s: starts PostgreSQL; the default suite's ~15-minute budget
def test_a_postgresql_password_is_taken_from_pgpassword_and_a_missing_one_says_where_it_goes(tmp_path):
    """The settings file keeps no secret, yet nothing said where the case store's password goes: a server asking for
    one refused `fe_sendauth: no password supplied`, and the hint named no place for it. libpq reads $PGPASSWORD
    (or ~/.pgpass): the refusal names them, and with PGPASSWORD set the same settings open the store."""
    import os
    import subprocess
    import sys
    import tempfile

    from tests.conftest import REPO
    from tests.pg import pg_bin, postgres_server

    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries (initdb/pg_ctl) are not installed: run scripts/install-system-deps.sh")
    root = Path(tempfile.mkdtemp(prefix="streetwatch-pg-"))  # not pytest's: the server's user must enter it
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"} | {"PYTHONPATH": str(REPO)}
    try:
        with postgres_server(root, password="s3cret-pw") as url:
            config = tmp_path / "sw.yaml"
            config.write_text(yaml.safe_dump({"cases": {"url": url}}))
            users = [sys.executable, "-m", "streetwatch.cli", "users", "list", "--config", str(config)]
            refused = subprocess.run(users, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2 and "no password supplied" in refused.stderr, refused.stderr
            assert "in $PGPASSWORD or ~/.pgpass where the command runs" in refused.stderr
            opened = subprocess.run(users, cwd=REPO, env={**env, "PGPASSWORD": "s3cret-pw"}, capture_output=True, text=True,
                                    timeout=120)
            assert opened.returncode == 0, opened.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("command, store", [(["users", "list"], "postgres"), (["cases", "list"], "postgres"),
                                            (["serve"], "postgres"), (["users", "list"], "folder"), (["serve"], "folder"),
                                            (["cases", "list"], "not a database"), (["cases", "list"], "empty"),
                                            (["serve"], "empty"), (["cases", "backup", "{tmp}/backup.db"], "not a database"),
                                            (["cases", "backup", "{tmp}/backup.db"], "empty")])
def test_a_case_store_that_cannot_be_opened_is_one_error_line(tmp_path, command, store):
    """A PostgreSQL server that is down (or a SQLite path naming a folder, a file that is not a SQLite database or an
    empty one, a failed copy that serve made a new empty store of)
    printed SQLAlchemy's traceback from every command that opens the store; one line names the store, its password
    masked, the driver's reason and what to check. `cases backup` of a damaged store too (its raw connection bypassed
    the store's error handler: sqlite3's traceback 'file is not a database'), writing nothing."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.pg import free_port

    if store == "postgres":  # a port nothing listens on: the server is down
        url, shown, reason = (f"postgresql://streetwatch:s3cret-pw@127.0.0.1:{free_port()}/cases",
                              "postgresql://streetwatch:***@127.0.0.1:", "Connection refused")
    elif store == "folder":  # (cases list refuses a SQLite store that is not a file before opening it)
        (tmp_path / "data").mkdir()
        url, shown, reason = f"sqlite:///{tmp_path}/data", f"sqlite:///{tmp_path}/data: ", "unable to open database file"
    elif store == "empty":  # a copy that failed: SQLite would take it for a new database
        (tmp_path / "cases.db").write_bytes(b"")
        url, shown, reason = f"sqlite:///{tmp_path}/cases.db", f"sqlite:///{tmp_path}/cases.db: ", "file is empty (0 bytes)"
    else:  # cases.url naming another file (here the settings themselves): SQLite's DatabaseError, not OperationalError
        (tmp_path / "cases.db").write_text("cases:\n  url: sqlite:///streetwatch-data/cases.db\n" * 20)
        url, shown, reason = f"sqlite:///{tmp_path}/cases.db", f"sqlite:///{tmp_path}/cases.db: ", "file is not a database"
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": url}}))
    if command == ["serve"]:
        command = ["serve", "--port", str(free_port())]
    command = [arg.format(tmp=tmp_path) for arg in command]
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", *command, "--config", str(config)], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot open the case store {shown}") and reason in line
    assert "(cases.url; check " in line and "s3cret-pw" not in run.stderr
    if store == "not a database":
        assert "this file is not a SQLite database" in line
    if store == "empty":
        assert "delete the empty file to start a new store" in line and (tmp_path / "cases.db").stat().st_size == 0
    if command[:2] == ["cases", "backup"]:
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cases.db", "sw.yaml"]  # no backup, no temporary file


def test_serve_whose_start_up_fails_is_one_error_line_and_exit_2(tmp_path):
    """A failure in the app's own start-up (resuming the patrol jobs of a service.data_dir whose patrol/ is a file)
    printed uvicorn's traceback and exited 3, uvicorn's code; it is the one `PATH: reason` line and exit 2, as every
    other refused setting."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.pg import free_port

    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "patrol").write_text("not a folder")
    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "service": {"data_dir": str(tmp_path / "service")}}))
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(free_port()), "--config", str(config)],
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: {tmp_path / 'service' / 'patrol'}: Not a directory"


@pytest.mark.slow  # 4 s: serve started and stopped in a subprocess; the default suite's ~15-minute budget
def test_serve_stopped_by_sigterm_shuts_down_and_exits_0(tmp_path):
    """systemd's stop: uvicorn shuts the app down and raises SIGTERM again once stopped; `serve` catches it as
    uvicorn.run does, so the stop is exit 0, not the 'interrupted (已中断)' line and 143 of a command cut short."""
    import os
    import signal
    import sys

    from tests.conftest import REPO, start_server
    from tests.pg import free_port

    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "service": {"data_dir": str(tmp_path / "service")}}))
    port, log = free_port(), tmp_path / "serve.log"
    proc = start_server([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(port), "--config", str(config)],
                        "127.0.0.1", port, log, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert "Application shutdown complete." in log.read_text() and "error:" not in log.read_text()


def test_serve_on_a_port_in_use_is_one_error_line_before_jobs_resume(tmp_path):
    """uvicorn binds after the app's start-up: serve on a port another server holds resumed the unfinished upload
    jobs that server was running (two servers on one job folder), then printed uvicorn's log lines and exited 3.
    The port is tried first: one line naming it and why, exit 2 as every other refused setting, nothing started."""
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import REPO

    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({"cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
                                      "service": {"data_dir": str(tmp_path / "service")}}))
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "serve", "--port", str(port), "--config", str(config)],
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1] == f"error: cannot listen on 127.0.0.1:{port}: Address already in use (--host, --port)"
    assert "startup" not in run.stderr


def test_case_ids_bear_the_citys_date(tmp_path, monkeypatch, bus_event):
    """A case drafted at 00:30 in the city bears that day in its id, not the UTC day before (the reports count the
    case in that day). Through the real intake of a deployment: its clock is the wall clock, so the city is put in
    Kiritimati (UTC+14) and in Pago Pago (UTC-11), one of which always has a date other than UTC's."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from pipelines.cases.store import new_case_id

    assert new_case_id(datetime(2025, 3, 13, 16, 30, tzinfo=UTC), ZoneInfo("Asia/Shanghai")).startswith("SW20250314-")
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    for n, zone in enumerate(("Pacific/Kiritimati", "Pacific/Pago_Pago")):
        config = tmp_path / f"sw{n}.yaml"
        config.write_text(yaml.safe_dump({
            "timezone": zone, "cases": {"url": f"sqlite:///{tmp_path}/cases{n}.db"},
            "evidence_store": {"local_root": str(tmp_path / f"evidence{n}"), "spool_dir": str(tmp_path / f"spool{n}")}}))
        intake = Intake.from_settings(load_settings(config), ModelInfo("yolo11n-int8dq", "ab" * 32))
        before = datetime.now(ZoneInfo(zone))
        case = intake.record_event(replace(small_event(bus_event), violation_id=f"cam-07:z1:illegal_parking:t{n}"))
        after = datetime.now(ZoneInfo(zone))
        intake.store.close()
        assert case.id[2:10] in {f"{before:%Y%m%d}", f"{after:%Y%m%d}"}, (zone, case.id)


def _old_flyposting_cases(tmp_path: Path, monkeypatch, real_sample_dir: Path) -> tuple[Intake, list, dict]:
    """Three flyposting cases on a real facade photo (its labelled window ad as a small ad carrying 138 0013 8000, real
    bundles in a local evidence store), then left as the release before left a case whose bundle its spool's retry
    uploaded: the store taken down to that release's revision (0006) and their evidence boxes emptied there. Returns
    the intake (its store closed), the three cases and the boxes the intake recorded for the first."""
    import numpy as np
    import sqlalchemy as sa
    import supervision as sv
    from alembic import command

    from detect import fields
    from detect.frames import Frame
    from detect.imageio import read_image
    from detect.rules import PhotoRules
    from pipelines.cases import schema

    config = tmp_path / "sw.yaml"
    config.write_text(yaml.safe_dump({
        "cases": {"url": f"sqlite:///{tmp_path}/cases.db"},
        "evidence_store": {"local_root": str(tmp_path / "evidence"), "spool_dir": str(tmp_path / "spool")},
    }))
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY.decode())
    monkeypatch.setenv("STREETWATCH_CONFIG", str(config))
    intake = Intake.from_settings(load_settings(config), ModelInfo("facade-v1", "ab" * 32))
    src = real_sample_dir / "facades-ads"
    picture = src / "images" / "img_198.jpg"
    image = read_image(picture)
    h, w = image.shape[:2]
    _, cx, cy, bw, bh = map(float, next(x for x in (src / "labels" / "img_198.txt").read_text().splitlines()
                                        if x.startswith("4 ")).split())  # class 4: win_ad
    ad = sv.Detections(xyxy=np.array([[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h]]),
                       confidence=np.array([0.9]), class_id=np.array([0]),
                       data={fields.CLASS_NAME: np.array(["small_ad"]), fields.TEXT: np.array(["办证 13800138000"], dtype=object),
                             fields.PHONES: np.array(["13800138000"], dtype=object)})
    frame = Frame(image=image, source_id="batch-5", ts=datetime(2025, 3, 14, 2, 0, tzinfo=UTC), frame_id="p1", path=str(picture))
    [event] = PhotoRules().process(frame, ad)
    found = [intake.record_event(replace(event, violation_id=f"batch-5:image:flyposting:o{n}"),
                                 BundleContext(source_kind="photo_batch")) for n in range(3)]
    recorded = intake.store.get(found[0].id).evidence_boxes
    intake.store.close()
    engine = sa.create_engine(f"sqlite:///{tmp_path}/cases.db")
    with engine.begin() as conn:
        command.downgrade(schema.alembic_config(conn), "0006")
        conn.execute(sa.text("UPDATE cases SET evidence_boxes = NULL"))
    engine.dispose()
    return intake, found, recorded


def test_fill_boxes_gives_old_flyposting_cases_their_call_out_photo(tmp_path, monkeypatch, real_sample_dir):
    """A flyposting case the release before stored without its evidence boxes had no photo on the call-out list,
    which reads the store alone; `cases fill-boxes` writes them from its verified bundle, once. A case whose bundle
    is gone is named with why, the others filled, and the command exits 1 so the gap is not taken for done."""
    import cv2
    import numpy as np

    from pipelines.cases import CaseStore
    from pipelines.cityops.callout import CallOutList

    intake, (old, lost, edited), recorded = _old_flyposting_cases(tmp_path, monkeypatch, real_sample_dir)
    shutil.rmtree(intake.evidence.path(lost.evidence_ref))  # its evidence gone from the store
    (intake.evidence.path(edited.evidence_ref) / recorded["image"]).write_bytes(b"not the photo taken")
    store = CaseStore(f"sqlite:///{tmp_path}/cases.db")  # this release's: upgraded on opening
    calls = CallOutList(store.engine)
    calls.sync()
    [entry] = calls.entries()
    assert sorted(entry.cases) == sorted([old.id, lost.id, edited.id]) and entry.photos == []  # the gap: no photo for any

    result = _cli("cases", "fill-boxes")
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1] == ("filled the evidence boxes of 1 case; 0 had none (no opening picture in "
                                              "the bundle); 1 with their evidence missing (0 removed by the retention, "
                                              "1 unreadable); 1 refused (not the bundle sealed for the case)")
    gone, refused = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert gone.startswith(f"error: case {lost.id}: evidence unreadable: {lost.evidence_ref}: cannot read evidence: "), gone
    assert refused == f"error: case {edited.id}: evidence not verified: tampered: {recorded['image']}"
    assert "3/3 cases without boxes checked" in result.stderr
    assert store.get(old.id).evidence_boxes == recorded
    assert store.get(lost.id).evidence_boxes is None and store.get(edited.id).evidence_boxes is None

    calls.sync()
    [entry] = calls.entries()
    assert entry.photos == [f"{old.id}/{recorded['image']}"]
    photo = cv2.imdecode(np.frombuffer(intake.evidence.read_bytes(old.evidence_ref, recorded["image"]), np.uint8),
                         cv2.IMREAD_COLOR)
    assert photo.shape[:2] == (recorded["height"], recorded["width"]) == (792, 844)  # the facade photo as taken
    [box] = recorded["boxes"]
    x1, y1, x2, y2 = (round(v) for v in box["xyxy"])
    assert box["class_name"] == "small_ad" and photo[y1:y2, x1:x2].shape[:2] == (y2 - y1, x2 - x1) == (113, 103)

    filled_at = store.get(old.id).updated_at
    again = _cli("cases", "fill-boxes")  # idempotent: the filled case untouched, the lost one named again
    assert again.exit_code == 1 and "filled the evidence boxes of 0 cases" in again.stdout
    assert store.get(old.id).updated_at == filled_at and f"case {lost.id}: evidence unreadable" in again.stderr
    store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_fill_boxes_reads_only_the_cases_without_boxes(tmp_path, request, backend):
    """The store picks the cases a fill reads (`CaseStore.without_boxes`): boxes never written (SQL NULL), written as
    None (JSON null) or without an image, each with stored evidence, a page at a time in `cases list`'s order, on SQLite
    and PostgreSQL alike. A case with its boxes, or without stored evidence, is never read: the fill names only the
    three (their bundles are not in the evidence store here) and leaves the others as they were."""
    import sqlalchemy as sa

    from pipelines.cases import CaseStore
    from pipelines.cases.fill import fill_boxes
    from pipelines.cases.store import NewCase
    from pipelines.evidence_store import LocalEvidenceStore
    from tests.conftest import new_database

    url = f"sqlite:///{tmp_path}/cases.db" if backend == "sqlite" else new_database(request.getfixturevalue("postgres_url"))
    store = CaseStore(url)
    boxes = {"image": "00_frame.jpg", "width": 844, "height": 792,
             "boxes": [{"class_name": "small_ad", "xyxy": [10.0, 20.0, 113.0, 133.0], "confidence": 0.9}]}
    made = [store.create_case(NewCase("flyposting", "photo_batch", "batch-5", violation_id=f"batch-5:image:flyposting:o{n}"))
            for n in range(6)]
    store.update(made[0].id, evidence_ref="ev/0", evidence_boxes=boxes)
    store.update(made[1].id, evidence_ref="ev/1", evidence_boxes=None)
    store.update(made[2].id, evidence_ref="ev/2", evidence_boxes={"width": 844, "height": 792, "boxes": []})
    store.update(made[3].id, evidence_ref="ev/3")
    store.update(made[5].id, evidence_ref="ev/5", evidence_boxes=boxes)  # made[4]: no stored evidence yet
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cases SET evidence_boxes = NULL WHERE id = :id"), {"id": made[3].id})
        stored = dict(conn.execute(sa.text("SELECT id, evidence_boxes IS NULL FROM cases")).all())
    assert [bool(stored[c.id]) for c in made[1:4]] == [False, False, True]  # JSON null, no image, SQL NULL: all three kinds
    before = {c.id: c for c in store.list()}
    todo = [made[1].id, made[2].id, made[3].id]

    assert store.count_without_boxes() == 3
    assert [c.id for c in store.without_boxes(page=2)] == todo  # two pages, the last one short
    seen = []
    for case in store.without_boxes(page=1):  # cases filled while paging leave the query and shift no page
        seen.append(case.id)
        store.update(case.id, evidence_boxes=boxes)
    assert seen == todo and store.count_without_boxes() == 0
    for case_id in todo:
        store.update(case_id, evidence_boxes=before[case_id].evidence_boxes)
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE cases SET evidence_boxes = NULL WHERE id = :id"), {"id": made[3].id})
    unchanged = {c.id: c.updated_at for c in store.list()}

    filled = fill_boxes(store, LocalEvidenceStore(tmp_path / "evidence"), [KEY])
    assert list(filled.missing) == todo and not (filled.filled or filled.had_none or filled.removed or filled.refused)
    after = {c.id: c for c in store.list()}
    assert after == {**before, **{i: after[i] for i in todo}}  # the case with boxes and the one without evidence untouched
    assert {i: after[i].updated_at for i in todo} == {i: unchanged[i] for i in todo}  # nothing written to those it missed
    store.close()


def test_cases_list_shows_each_case_id_whole_in_a_terminal_of_100_columns(deployment):
    """The id is what `cases show`, `dispatch requeue` and the review page take: at 100 (and 120) columns a case with
    a reason showed `SW20261… ` (rich shrinks every column alike), so no listed case could be looked up."""
    intake, case, sim = deployment
    intake.store.review(case.id, approve=True, reviewer="li.wei", target="gone")  # parked, a long reason to show
    assert "parked 1" in _cli("dispatch", "run", "--once").output
    listed = CliRunner().invoke(app, ["cases", "list"], env={"COLUMNS": "100"})
    assert listed.exit_code == 0, listed.output
    assert case.id in listed.output, listed.output
