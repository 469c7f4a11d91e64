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
# The four cells and a fifth drawn with the first one's code (a cell copied in a GIS tool and its code left as it was).
TWICE_G1 = [*CELLS, (G1, "文三路东延伸段", "蒋村街道", "二中队")]
TWICE_G1_REFUSED = (f"features.4.properties.id: 网格编号 '{G1}' 重复：features.0.properties（文三路东） 与 "
                    f"features.4.properties（文三路东延伸段）；案件按网格编号归档")
LON0, LAT0 = 120.10, 30.27


def cell_polygon(i: int) -> list[list[float]]:
    x = LON0 + 0.004 * i
    return [[x, LAT0], [x + 0.004, LAT0], [x + 0.004, LAT0 + 0.004], [x, LAT0 + 0.004], [x, LAT0]]


def write_grid(path: Path, cells: list[tuple[str, str, str, str]] = CELLS) -> Path:
    """The grid file of `cells` (code, name, street, squad), the i-th cell's polygon `cell_polygon(i)`."""
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [cell_polygon(i)]},
                 "properties": {"id": code, "name": name, "street": street, "squad": squad}}
                for i, (code, name, street, squad) in enumerate(cells)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False), encoding="utf-8")
    return path


def write_zones(path: Path) -> Path:
    """One no-vending city zone over the first two cells."""
    poly = [[LON0, LAT0], [LON0 + 0.008, LAT0], [LON0 + 0.008, LAT0 + 0.002], [LON0, LAT0 + 0.002], [LON0, LAT0]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [poly]},
                 "properties": {"id": "wensan-no-vending", "name": "文三路禁止摆摊区", "kind": "no_vending"}}]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}, ensure_ascii=False), encoding="utf-8")
    return path


def many_cells(n: int) -> list[tuple[str, str, str, str]]:
    """`n` grid cells (a district's hundreds), for the paged lists of units."""
    return [(f"3301069{i:05d}", f"网格 {i}", "文新街道", "一中队") for i in range(n)]


def local(day: int, hour: int = 10, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TZ)


class CaseMaker:
    """Cases in a real store, confirmed (approved in review) unless asked otherwise, placed in their grid cell."""

    def __init__(self, store: CaseStore) -> None:
        self.store, self.n = store, 0

    def add(self, vtype: str, cell: str | None, at: datetime, *, stalls: int = 1, camera: str | None = None,
            zone: str | None = None, phones: list[str] = (), tags: list[str] = (), state: str = "confirmed",
            address: str | None = None) -> str:
        self.n += 1
        index = next((i for i, c in enumerate(CELLS) if c[0] == cell), None)
        lon, lat = (None, None) if index is None else (LON0 + 0.004 * index + 0.002, LAT0 + 0.001)  # lower half of the cell
        case = self.store.create_case(NewCase(
            violation_type=vtype, source_kind="camera" if camera else "photo_batch", source_id=camera or "triage:batch-1",
            violation_id=f"t:{self.n}", zone_id=zone, grid_cell=cell, lat=lat, lon=lon, address=address or f"{cell} 号 {self.n}", opened_at=at,
            first_seen_at=at - timedelta(minutes=5),
            details={"object_count": stalls, "phones": list(phones), **({"tags": list(tags)} if tags else {})}),
            now=at)
        if state == "confirmed":
            self.store.update(case.id, review_decision="approved", reviewer="审核员", reviewed_at=at)
        elif state == "rejected":
            self.store.review(case.id, approve=False, reviewer="审核员", reason_code="not_a_violation", now=at)
        return case.id


# Phone numbers read on flyposting cases (normalised as detect.phones writes them).
N = [f"1380013800{i}" for i in range(10)]


def november(make: CaseMaker, folder: Path) -> Path:
    """The worked example of docs/analytics.md: November 2026's cases; returns the cut-off list it goes with."""
    # 12 stalls together in G1 on 5 November (one camera case and two photo cases) = one road market of 10–20 stalls.
    make.add("street_stall", G1, local(5, 9), stalls=5, camera="cam-01", zone="north-walk")
    make.add("street_stall", G1, local(5, 11), stalls=4)
    make.add("street_stall", G1, local(5, 19), stalls=3)
    # 2 more stalls in G1 at 00:30 on the 6th: another local day (still the 5th in UTC), so single stalls.
    make.add("street_stall", G1, local(6, 0, 30), stalls=2)
    # 3 shops beyond their doors in G1: shop A seen twice on the 5th (one shop that day), shop B, and a photo.
    make.add("shopfront_spillover", G1, local(5, 9), camera="cam-01", zone="frontage-a")
    make.add("shopfront_spillover", G1, local(5, 15), camera="cam-01", zone="frontage-a")
    make.add("shopfront_spillover", G1, local(6, 9), camera="cam-01", zone="frontage-b")
    make.add("shopfront_spillover", G1, local(7, 9))
    # 25 stalls elsewhere, one a day: 15 in G3 (1st-15th), 10 in G4 (1st-10th): no market, 25 single stalls.
    for day in range(1, 16):
        make.add("street_stall", G3, local(day, 8))
    for day in range(1, 11):
        make.add("street_stall", G4, local(day, 8))
    # 4 flyposting spots: two in G1, one in G2, one in G3, with the numbers they carried.
    make.add("flyposting", G1, local(3), phones=N[0:2])
    make.add("flyposting", G1, local(4), phones=N[2:4])
    make.add("flyposting", G2, local(8), phones=[N[4]])
    make.add("flyposting", G3, local(9), phones=N[5:8])
    # October: a spot in G2 whose number is cut off in November (counts for November's quota, not its flyposting).
    make.add("flyposting", G2, local(20, month=10), phones=[N[9]])
    # Never counted by default: an unreviewed candidate stall in G2, and a rejected flyposting case in G2.
    make.add("street_stall", G2, local(20), state="candidate")
    make.add("flyposting", G2, local(21), state="rejected", phones=[N[8]])
    # 7 numbers cut off in November: N0-N3 and N9 (squad 一中队), N5 and N6 (二中队); N4 in December, N7 in October.
    cutoffs = folder / "cutoffs.csv"
    cutoffs.write_text("number,cut_off_at,note\n" + "\n".join([
        "138-0013-8000,2026-11-10 10:00,", "138 0013 8001,2026-11-10,", "13800138002,2026-11-11,", "13800138003,2026-11-30 23:59,",
        "13800138009,2026-11-02,十月发现", "13800138005,2026-11-15,", "13800138006,2026-11-16,",
        "13800138004,2026-12-01 00:00,下月", "13800138007,2026-10-31,上月"]) + "\n", encoding="utf-8")
    return cutoffs


def write_named_cameras(folder: Path) -> Path:
    """A cameras file (service.cameras_file) whose scenes name cam-01 文三路北门 and its zone curb 北门人行道; cam-02 and
    its zone kerb go unnamed, and cam-01 is disabled now (its past cases are still named)."""
    import yaml

    zone = {"kind": "no_parking", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}
    scenes = {"cam-01": {"camera_id": "cam-01", "name": "文三路北门", "zones": [{"id": "curb", "name": "北门人行道", **zone}]},
              "cam-02": {"camera_id": "cam-02", "zones": [{"id": "kerb", **zone}]}}
    for camera_id, scene in scenes.items():
        (folder / f"{camera_id}.yaml").write_text(yaml.safe_dump(scene, allow_unicode=True), encoding="utf-8")
    cameras = folder / "cameras.yaml"
    cameras.write_text(yaml.safe_dump({"cameras": [{"id": c, "url": f"{c}.mp4", "scene": f"{c}.yaml", "enabled": c != "cam-01"}
                                                   for c in scenes]}), encoding="utf-8")
    return cameras
