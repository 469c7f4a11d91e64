"""A city for the analytics tests: four grid cells with streets and squads, and cases put straight into a real case store."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from pipelines.cases.store import CaseStore, NewCase

TZ = ZoneInfo("Asia/Shanghai")

# Four 0.004° x 0.004° cells side by side near 文三路 (lon/lat); street and squad as the city's grid file gives them.
CELLS = [("330106001001", "文三路东", "文新街道", "一中队"), ("330106001002", "文三路西", "蒋村街道", "一中队"),
         ("330106002001", "五常港", "蒋村街道", "二中队"), ("330106002002", "西溪湿地北", "蒋村街道", "二中队")]
G1, G2, G3, G4 = (c[0] for c in CELLS)
LON0, LAT0 = 120.10, 30.27


def cell_polygon(i: int) -> list[list[float]]:
    x = LON0 + 0.004 * i
    return [[x, LAT0], [x + 0.004, LAT0], [x + 0.004, LAT0 + 0.004], [x, LAT0 + 0.004], [x, LAT0]]


def write_grid(path: Path) -> Path:
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [cell_polygon(i)]},
                 "properties": {"id": code, "name": name, "street": street, "squad": squad}}
                for i, (code, name, street, squad) in enumerate(CELLS)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False), encoding="utf-8")
    return path


def write_zones(path: Path) -> Path:
    """One no-vending city zone over the first two cells."""
    poly = [[LON0, LAT0], [LON0 + 0.008, LAT0], [LON0 + 0.008, LAT0 + 0.002], [LON0, LAT0 + 0.002], [LON0, LAT0]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [poly]},
                 "properties": {"id": "wensan-no-vending", "name": "文三路禁止摆摊区", "kind": "no_vending"}}]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False), encoding="utf-8")
    return path


def local(day: int, hour: int = 10, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TZ)


class CaseMaker:
    """Cases in a real store, confirmed (approved in review) unless asked otherwise."""

    def __init__(self, store: CaseStore) -> None:
        self.store, self.n = store, 0

    def add(self, vtype: str, cell: str | None, at: datetime, *, stalls: int = 1, camera: str | None = None,
            zone: str | None = None, phones: list[str] = (), tags: list[str] = (), state: str = "confirmed",
            address: str | None = None) -> str:
        self.n += 1
        case = self.store.create_case(NewCase(
            violation_type=vtype, source_kind="camera" if camera else "photo_batch", source_id=camera or "triage:batch-1",
            violation_id=f"t:{self.n}", zone_id=zone, grid_cell=cell, address=address or f"{cell} 号 {self.n}", opened_at=at,
            first_seen_at=at - timedelta(minutes=5),
            details={"object_count": stalls, "phones": list(phones), **({"tags": list(tags)} if tags else {})}),
            now=at)
        if state == "confirmed":
            self.store.update(case.id, review_decision="approved", reviewer="审核员", reviewed_at=at)
        elif state == "rejected":
            self.store.review(case.id, approve=False, reviewer="审核员", reason_code="not_a_violation", now=at)
        return case.id
