"""`streetwatch cases|dispatch|evidence` through the real Typer app, on real bundles and a real simulator."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from detect.config_io import ConfigError
from detect.evidence import BundleContext, ModelInfo
from pipelines.cases import CaseState
from pipelines.cases.intake import Intake
from pipelines.settings import load_settings
from streetwatch.cli import app
from tests.dispatch_helpers import KEY, Sim, small_event

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "streetwatch-settings.yaml"


def test_example_settings_validate_and_bad_ones_name_the_field(tmp_path):
    settings = load_settings(EXAMPLE)
    assert settings.dispatch.targets["hz-dcm"].field_map["externalId"] == "wbbh"
    assert settings.evidence_store.s3.bucket == "streetwatch-evidence"
    bad = tmp_path / "bad.yaml"
    bad.write_text("dispatch:\n  targets:\n    x: {adapter: fax, url: 'http://a'}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: dispatch.targets.x.adapter: Input should be 'cn-dcm' or 'open311'"):
        load_settings(bad)


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
    ran = _cli("dispatch", "run", "--once")
    assert ran.exit_code == 0, ran.output
    assert "delivered 1, retried 0, parked 0" in ran.output and "outbox: delivered 1" in ran.output
    [received] = sim.cases()
    shown = _cli("cases", "show", case.id)
    assert shown.exit_code == 0, shown.output
    assert f"dispatch_ref     {received['ref']}" in shown.output and "review_reason    confirmed" in shown.output
    assert "candidate -> queued           li.wei  (queued for sim)" in shown.output
    assert f"delivery 1 to sim: delivered, 1 attempts, ref {received['ref']}" in shown.output
    assert intake.store.get(case.id).state is CaseState.SUBMITTED
    missing = _cli("cases", "show", "SW00000000-nope")
    assert missing.exit_code == 2 and "no case 'SW00000000-nope' in the case store" in missing.output


def test_dispatch_parked_and_requeue(deployment):
    intake, case, sim = deployment
    intake.store.review(case.id, approve=True, reviewer="li.wei", target="gone")  # not a configured target
    assert "parked 1" in _cli("dispatch", "run", "--once").output
    parked = _cli("dispatch", "parked")
    assert "no dispatch target named 'gone' is configured" in parked.output
    entry_id = parked.output.split("\t")[0]
    assert _cli("dispatch", "requeue", entry_id, "--by", "ops").output.strip() == f"outbox entry {entry_id} requeued"
    again = _cli("dispatch", "requeue", entry_id)
    assert again.exit_code == 2 and "only parked entries can be requeued" in again.output


def test_evidence_verify_by_stored_reference(deployment):
    intake, case, _ = deployment
    ok = _cli("evidence", "verify", case.evidence_ref)
    assert ok.exit_code == 0 and ok.output.startswith(f"OK  {case.evidence_ref}")
    crop = next((intake.evidence.path(case.evidence_ref) / "crops").iterdir())
    crop.write_bytes(crop.read_bytes()[:-1])
    bad = _cli("evidence", "verify", case.evidence_ref, "--json")
    assert bad.exit_code == 1 and f'"tampered": ["crops/{crop.name}"]' in bad.output
