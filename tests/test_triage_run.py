"""Photo triage end to end on real photos with phone EXIF, bad files mixed in, a zip, map zones and grid.

One run (module fixture) is checked from every side: results.jsonl, cases.csv, the near-duplicate
groups, and report.html as rendered by headless Chromium.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import zipfile
from datetime import datetime
from pathlib import Path

import cv2
import pytest
from PIL import Image

from pipelines.triage import TriageSettings, run_triage
from tests.conftest import CHROMIUM, CHROMIUM_FLAGS
from tests.triage_helpers import as_heic, phone_photo, png_bomb

ON_ROAD = (30.2741, 120.1551)  # inside the no-parking street and grid cell A
ON_ROAD_8M = (30.27417, 120.1551)
ELSEWHERE = (30.2900, 120.2000)  # no zone, grid cell B


def _ring(x1, y1, x2, y2):
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]


def _geojson(path: Path, features: list[dict], **extra) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", **extra, "features": features}, ensure_ascii=False))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, bus_jpg, zidane_jpg, real_sample_dir):
    """An inspector's upload: good phone photos, near-duplicates, bad files, a zip, map zones, grid."""
    root = tmp_path_factory.mktemp("triage")
    day = root / "upload"
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))
    facades = sorted((real_sample_dir / "facades-ads" / "images").glob("*.jpg"))
    # the same bus twice, two minutes and 8 m apart (a re-take), then again at night elsewhere, sideways
    phone_photo(bus_jpg, day / "0900_bus.jpg", taken=datetime(2024, 6, 3, 9, 0), gps=ON_ROAD)
    phone_photo(bus_jpg, day / "0902_bus_retake.jpg", taken=datetime(2024, 6, 3, 9, 2), gps=ON_ROAD_8M, crop=0.04, gain=1.1)
    phone_photo(bus_jpg, day / "night" / "2300_bus_on_road.jpg", taken=datetime(2024, 6, 3, 23, 0), gps=ON_ROAD)
    phone_photo(bus_jpg, day / "night" / "2310_bus_sideways.jpg", taken=datetime(2024, 6, 3, 23, 10), gps=ELSEWHERE,
                orientation=6, rotate=cv2.ROTATE_90_COUNTERCLOCKWISE)
    phone_photo(zidane_jpg, day / "1000_people.jpg", taken=datetime(2024, 6, 3, 10, 0), gps=ELSEWHERE)
    for i, src in enumerate(garbage[:2] + facades[:2]):
        phone_photo(src, day / "street" / f"11{i:02d}_{src.stem[:12]}.jpg", taken=datetime(2024, 6, 3, 11, i))
    as_heic(phone_photo(garbage[3], day / "1200_iphone.jpg", taken=datetime(2024, 6, 3, 12, 0), gps=ELSEWHERE),
            day / "1200_iphone.heic")
    bad = day / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    whole = (day / "0900_bus.jpg").read_bytes()
    (bad / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (bad / "notes.jpg").write_text("meeting notes, not a photo")
    png_bomb(bad / "huge.png")
    shutil.copy(day / "0900_bus.jpg", bad / "copy_of_bus.jpg")
    import piexif

    phone_photo(zidane_jpg, bad / "broken_exif.jpg", exif_extra={"Exif": {piexif.ExifIFD.DateTimeOriginal: b"not a date"}})
    with zipfile.ZipFile(day / "phone.zip", "w") as zf:
        zf.write(garbage[2], "DCIM/garbage.jpg")
        zf.write(bus_jpg, "../../../tmp/evil.jpg")
        inner = io.BytesIO()
        with zipfile.ZipFile(inner, "w") as z2:
            z2.write(zidane_jpg, "z.jpg")
        zf.writestr("DCIM/more.zip", inner.getvalue())
    zones = _geojson(root / "zones.geojson", [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(120.150, 30.270, 120.160, 30.280)},
         "properties": {"id": "hubin-road", "kind": "no_parking", "schedule": [{"start": "07:00", "end": "21:00"}]}},
    ], timezone="Asia/Shanghai")
    grid = _geojson(root / "grid.geojson", [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(120.150, 30.270, 120.160, 30.280)},
         "properties": {"id": "330102001001", "name": "湖滨"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(120.190, 30.280, 120.210, 30.300)},
         "properties": {"id": "330102002007"}},
    ])
    return {"root": root, "day": day, "zones": zones, "grid": grid}


@pytest.fixture(scope="module")
def run(workdir, onnx_detector):
    settings = TriageSettings(out=workdir["root"] / "out", scene_zones=workdir["zones"], grid=workdir["grid"], cases=False)
    result = run_triage([workdir["day"]], settings, detector=onnx_detector, show_progress=False)
    records = [json.loads(line) for line in (settings.out / "results.jsonl").read_text().splitlines()]
    return {"result": result, "out": settings.out, "records": {Path(r["source"].replace("!", "/")).name: r for r in records},
            "all": records}


def test_every_input_has_one_record_with_its_outcome_or_reason(run):
    recs = run["records"]
    assert len(run["all"]) == len(recs) == 19  # 10 photos, 6 bad files, 3 zip members (1 good, 2 refused)
    reasons = {name: r["reason"] for name, r in recs.items() if r["status"] != "ok"}
    assert sorted(reasons) == ["copy_of_bus.jpg", "empty.jpg", "evil.jpg", "huge.png", "more.zip", "notes.jpg", "truncated.jpg"]
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.jpg"] == "not an image (unrecognised format)"
    assert reasons["truncated.jpg"].startswith("corrupt or truncated image data")
    assert reasons["huge.png"].startswith("image too large")
    assert reasons["copy_of_bus.jpg"] == f"duplicate of {run['out'].parent / 'upload' / '0900_bus.jpg'}"
    assert reasons["evil.jpg"] == "unsafe path in archive (absolute or '..' path traversal): refused"
    assert reasons["more.zip"] == "nested zip archive: extract it and pass it as its own input"
    # and each in Chinese, as the report and the upload page show it to inspectors
    assert {name: recs[name].get("reason_zh") for name in reasons} == {
        "copy_of_bus.jpg": "重复文件（与已上传的照片内容相同）", "empty.jpg": "空文件（0 字节）",
        "evil.jpg": "压缩包中的路径不安全（绝对路径或含 ..），未读取", "huge.png": "图片像素过多",
        "more.zip": "压缩包中的压缩包：请解压后单独上传", "notes.jpg": "不是图片（无法识别的格式）",
        "truncated.jpg": "图片数据损坏或不完整（文件可能未传完）"}
    assert recs["copy_of_bus.jpg"]["status"] == "duplicate"
    assert recs["broken_exif.jpg"]["status"] == "ok"
    assert any("capture time unreadable" in w for w in recs["broken_exif.jpg"]["warnings"])
    assert recs["garbage.jpg"]["status"] == "ok" and recs["garbage.jpg"]["source"].endswith("phone.zip!DCIM/garbage.jpg")
    assert run["result"].stats.recorded == 19 and run["result"].tally.ok == 12
    # Every stage that did work this run was timed (the bus photos are positives: their thumbnails are evidence).
    stages = run["result"].stats.stage_ms()
    assert list(stages) == ["read", "decode", "infer", "verify", "ocr", "rules", "evidence"]
    assert all(stages[s] > 0 for s in ("read", "decode", "infer", "verify", "rules", "evidence"))


def test_photo_facts_time_place_grid_and_orientation(run):
    recs = run["records"]
    bus = recs["0900_bus.jpg"]
    assert bus["taken_at"] == "2024-06-03T09:00:00+08:00" and bus["time_source"] == "exif"
    assert (bus["lat"], bus["lon"]) == pytest.approx(ON_ROAD, abs=1e-6)
    assert bus["grid_cell"] == "330102001001"
    assert recs["2310_bus_sideways.jpg"]["grid_cell"] == "330102002007"
    assert recs["broken_exif.jpg"]["time_source"] == "file" and recs["broken_exif.jpg"]["grid_cell"] is None
    heic = recs["1200_iphone.heic"]  # HEIC from an iPhone: pixels, EXIF time and GPS all read
    assert heic["status"] == "ok" and heic["taken_at"] == "2024-06-03T12:00:00+08:00" and heic["grid_cell"] == "330102002007"
    sideways = recs["2310_bus_sideways.jpg"]
    assert (sideways["width"], sideways["height"]) == (bus["width"], bus["height"]) == (810, 1080)
    # the rotated photo is seen upright: the same bus box as in the upright photo, in full-resolution pixels
    box = lambda r: next(b["xyxy"] for b in r["detections"] if b["class_name"] == "bus")  # noqa: E731
    assert box(sideways) == pytest.approx(box(bus), abs=25)
    assert box(bus)[2] > 700  # full-resolution pixels, not the decoded size


def test_violations_follow_map_zones_and_their_hours(run):
    recs = run["records"]
    day = recs["0900_bus.jpg"]["findings"]
    assert [(f["type"], f["zone_id"], f["name_zh"]) for f in day] == [("illegal_parking", "hubin-road", "机动车乱停放")]
    assert day[0]["boxes"][0]["class_name"] == "bus" and day[0]["score"] > 0.8
    assert recs["2300_bus_on_road.jpg"]["findings"] == []  # the no-parking street is not enforced at 23:00
    assert [f["zone_id"] for f in recs["2310_bus_sideways.jpg"]["findings"]] == ["image"]  # no map zone there
    assert recs["1000_people.jpg"]["findings"] == []  # people alone are no violation
    assert recs["1000_people.jpg"]["detections"]  # ...but they were detected


def test_zone_hours_without_a_zone_file_timezone_follow_the_run_timezone(tmp_path, bus_jpg, onnx_detector):
    """São Paulo's inspectors run with --timezone America/Sao_Paulo and a zones file that names no time zone:
    its 07:00-21:00 no-parking hours are São Paulo's, not Shanghai's (where 06:00 local is 17:00)."""
    paulista = (-23.55, -46.63)
    day = tmp_path / "photos"
    phone_photo(bus_jpg, day / "0600_before_hours.jpg", taken=datetime(2024, 6, 3, 6, 0), gps=paulista)
    phone_photo(bus_jpg, day / "1000_in_hours.jpg", taken=datetime(2024, 6, 3, 10, 0), gps=paulista, crop=0.05)
    zones = _geojson(tmp_path / "zones.geojson", [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(-46.64, -23.56, -46.62, -23.54)},
         "properties": {"id": "av-paulista", "kind": "no_parking", "schedule": [{"start": "07:00", "end": "21:00"}]}},
    ])
    settings = TriageSettings(out=tmp_path / "out", scene_zones=zones, timezone="America/Sao_Paulo", cases=False, verifier="none")
    run_triage([day], settings, detector=onnx_detector, show_progress=False)
    records = {Path(r["source"]).name: r for r in map(json.loads, (settings.out / "results.jsonl").read_text().splitlines())}
    assert records["0600_before_hours.jpg"]["taken_at"] == "2024-06-03T06:00:00-03:00"
    assert records["0600_before_hours.jpg"]["findings"] == []
    assert [(f["type"], f["zone_id"]) for f in records["1000_in_hours.jpg"]["findings"]] == [("illegal_parking", "av-paulista")]


def test_near_duplicates_become_one_case_led_by_the_best_photo(run):
    groups = run["result"].groups
    bus_cases = [g for g in groups if any("bus" in m.source for m in g.members)]
    assert sorted(sorted(Path(m.source).name for m in g.members) for g in bus_cases) == [
        ["0900_bus.jpg", "0902_bus_retake.jpg"], ["2310_bus_sideways.jpg"]]
    pair = next(g for g in bus_cases if len(g.members) == 2)
    assert pair.lead.score == max(m.score for m in pair.members)
    rows = list(csv.DictReader((run["out"] / "cases.csv").open(encoding="utf-8-sig")))
    assert len(rows) == len(groups)
    assert [float(r["score"]) for r in rows] == sorted((float(r["score"]) for r in rows), reverse=True)
    row = next(r for r in rows if r["photos"] == "2")
    assert row["type"] == "illegal_parking" and row["name_zh"] == "机动车乱停放" and row["grid_cell"] == "330102001001"
    assert row["severity"] == "general"  # the type's own: the grid cell has no grade
    assert row["lead_photo"] == pair.lead.source and row["first_taken_at"] == "2024-06-03T09:00:00+08:00"


PROBE = """<!DOCTYPE html><html><body><pre id="out">loading</pre>
<iframe id="f" src="report.html" style="width:1200px;height:800px"></iframe>
<script>
document.getElementById('f').addEventListener('load', async () => {
  const d = document.getElementById('f').contentDocument;
  // a figure's thumbnail: the image its <use> refers to (embedded once at the page's end), decoded, and drawn
  const shown = async (f) => {
    const use = f.querySelector('svg.thumb use');
    if (!use) return 0;
    const img = new Image();
    img.src = d.getElementById(use.getAttribute('href').slice(1)).getAttribute('href');
    await img.decode();
    return f.querySelector('svg.thumb').getBoundingClientRect().height > 0 ? img.naturalWidth : -1;
  };
  const thumbs = new Map(await Promise.all([...d.querySelectorAll('figure')].map(async f => [f, await shown(f)])));
  const out = {
    title: d.title,
    counts: Object.fromEntries([...d.querySelectorAll('#summary td[id]')].map(td => [td.id, td.textContent])),
    cases: [...d.querySelectorAll('section.case')].map(s => ({
      type: s.dataset.type, photos: +s.dataset.photos, heading: s.querySelector('h2').textContent,
      grid: s.querySelector('.grid').textContent, time: s.querySelector('.time').textContent,
      zone: s.querySelector('.zone') ? s.querySelector('.zone').textContent : null,
      figures: [...s.querySelectorAll('figure')].map(f => ({source: f.dataset.source, lead: f.classList.contains('lead'),
        img: thumbs.get(f)}))})),
    by_type: Object.fromEntries([...d.querySelectorAll('tr.by-type')].map(r => [r.dataset.type, r.cells[1].textContent])),
    problems: [...d.querySelectorAll('tr.problem')].map(r => [r.querySelector('.source').textContent, r.dataset.status,
      r.querySelector('.reason').textContent]),
  };
  document.getElementById('out').textContent = JSON.stringify(out);
});
</script></body></html>"""


def render_report(out: Path) -> dict:
    """Open report.html in headless Chromium and read what a person would see (via a same-folder probe page)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `bash scripts/install-system-deps.sh`")
    import html

    (out / "probe.html").write_text(PROBE)
    for budget in (10_000, 30_000, 60_000):  # the thumbnails' decoding is not what virtual time waits for: on a busy
        # machine the DOM was dumped before the probe wrote its answer (the full suite beside other work, once)
        dom = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, "--allow-file-access-from-files",
             f"--virtual-time-budget={budget}", "--dump-dom", (out / "probe.html").as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout
        start = dom.index('<pre id="out">') + len('<pre id="out">')
        answer = html.unescape(dom[start: dom.index("</pre>", start)])
        if answer.startswith("{"):
            return json.loads(answer)
    pytest.fail(f"the probe page wrote no answer: {answer!r}")


def test_report_in_chromium_shows_the_ranked_cases_and_the_errors(run):
    page = render_report(run["out"])
    assert "Photo triage report" in page["title"]
    assert page["counts"]["n-photos"] == "19" and page["counts"]["n-errors"] == "6" and page["counts"]["n-duplicates"] == "1"
    groups = run["result"].groups
    assert [c["type"] for c in page["cases"]] == [g.type for g in groups]
    assert [[f["source"] for f in c["figures"]] for c in page["cases"]] == [[m.source for m in g.members] for g in groups]
    pair = next(c for c in page["cases"] if c["photos"] == 2)
    assert "机动车乱停放" in pair["heading"] and "Illegal parking" in pair["heading"]
    assert pair["zone"] == "hubin-road (no_parking)"
    assert pair["grid"] == "330102001001" and pair["time"].startswith("2024-06-03 09:00:00 – 2024-06-03 09:02:00")
    assert [f["lead"] for f in pair["figures"]] == [True, False]
    assert all(f["img"] > 0 for c in page["cases"] for f in c["figures"])  # every thumbnail decoded and drawn in the browser
    problems = {Path(src.replace("!", "/")).name: (status, reason) for src, status, reason in page["problems"]}
    assert problems["empty.jpg"] == ("error", "空文件（0 字节） — empty file (0 bytes)")  # Chinese first, as inspectors read it
    assert problems["copy_of_bus.jpg"][0] == "duplicate"
    assert "path traversal" in problems["evil.jpg"][1] and "nested zip" in problems["more.zip"][1]
    assert len(problems) == 7
    counts = run["result"].tally.by_type  # each type's cases and photos: the bus pair is one case of two photos
    cases = {t: sum(g.type == t for g in groups) for t in counts}
    assert cases["illegal_parking"] < counts["illegal_parking"]
    assert page["by_type"] == {t: f"{cases[t]} 件 {'case' if cases[t] == 1 else 'cases'} · {n} 张 {'photo' if n == 1 else 'photos'}"
                               for t, n in counts.items()}


def test_thumbnails_have_the_evidence_boxes_drawn(run):
    rec = run["records"]["0900_bus.jpg"]
    thumb = Image.open(run["out"] / rec["thumb"])
    assert max(thumb.size) == 360
    plain = Image.open(run["out"].parent / "upload" / "0900_bus.jpg").resize(thumb.size)
    import numpy as np

    diff = np.abs(np.asarray(thumb, dtype=int) - np.asarray(plain.convert("RGB"), dtype=int)).mean(axis=2)
    x1, y1, x2, y2 = (v * 360 / 1080 for v in rec["findings"][0]["boxes"][0]["xyxy"])
    assert diff[int(y1) + 1: int(y2) - 1, int(x1) + 1].mean() > 40  # the box's left edge is drawn


def test_small_ad_on_a_real_wall_is_flyposting_with_its_phone_number(tmp_path, real_sample_dir, onnx_detector):
    """OCR for every photo (`--ocr all`): a paper ad pasted on a real shop front, next to the same front without it."""
    from PIL import ImageDraw, ImageFont

    from tests.test_ocr_flyposting import _cjk_font

    wall = sorted((real_sample_dir / "facades-ads" / "images").glob("*.jpg"))[4]
    img = Image.open(wall).convert("RGB")
    draw, font = ImageDraw.Draw(img), ImageFont.truetype(_cjk_font(), 26)
    w, h = img.size
    x, y = w // 2 - 150, h // 2 - 80
    draw.rectangle((x, y, x + 300, y + 170), fill=(248, 248, 240))
    draw.text((x + 15, y + 15), "专业开锁 疏通", font=font, fill=(10, 10, 10))
    draw.text((x + 15, y + 65), "办证 刻章", font=font, fill=(200, 0, 0))
    draw.text((x + 15, y + 115), "139 1234 5678", font=font, fill=(10, 10, 10))
    img.save(tmp_path / "ad.png")
    photos = tmp_path / "photos"
    phone_photo(tmp_path / "ad.png", photos / "with_ad.jpg", taken=datetime(2024, 6, 4, 15, 30), gps=ON_ROAD)
    phone_photo(wall, photos / "clean_wall.jpg", taken=datetime(2024, 6, 4, 15, 31), gps=ELSEWHERE)

    settings = TriageSettings(out=tmp_path / "out", ocr="all", cases=False)
    result = run_triage([photos], settings, detector=onnx_detector, show_progress=False)
    recs = {Path(r["source"]).name: r for r in map(json.loads, (settings.out / "results.jsonl").read_text().splitlines())}
    ad = next(f for f in recs["with_ad.jpg"]["findings"] if f["type"] == "flyposting")
    assert ad["phones"] == ["13912345678"] and ad["name_zh"].startswith("非法小广告")
    assert all(x - 5 <= b["xyxy"][0] and b["xyxy"][2] <= x + 305 for b in ad["boxes"])  # the pasted paper
    assert "flyposting" not in {f["type"] for f in recs["clean_wall.jpg"]["findings"]}
    case = next(g for g in result.groups if g.type == "flyposting")
    row = next(r for r in csv.DictReader((settings.out / "cases.csv").open(encoding="utf-8-sig")) if r["type"] == "flyposting")
    assert row["phones"] == '="13912345678"' and row["lead_photo"] == case.lead.source  # text to Excel, not 1.39E+10
    assert "13912345678" in (settings.out / "report.html").read_text(encoding="utf-8")


def test_a_thumbnails_labels_leave_the_evidence_they_name_in_sight(tmp_path, bus_event):
    """Each box of a thumbnail had its class drawn above it: the three text lines of a small ad on a wall got three
    labels, each over the line above it, so at 360 px the ad the case is about was hidden by its own labels. One label
    a finding, above all its boxes, leaves every box's inside as the photo shows it."""
    from dataclasses import replace

    import numpy as np
    import supervision as sv

    from detect.evidence import drawing
    from detect.fields import TEXT
    from detect.ocr import TextReader
    from detect.taxonomy import load_taxonomy
    from pipelines.triage.analyse import write_thumbnail
    from pipelines.triage.findings import Finding

    event, _ = bus_event
    image = event.frame.image  # bus.jpg, 810 x 1080
    lines = np.array([[300, 500 + 60 * i, 620, 550 + 60 * i] for i in range(3)], dtype=float)  # a slip's three lines
    ad = replace(event, violation_type="flyposting",
                 detections=sv.Detections(xyxy=lines, confidence=np.full(3, 0.9), class_id=np.zeros(3, dtype=int),
                                          data={"class_name": np.array(["small_ad_text"] * 3)}))
    k = 360 / image.shape[1]
    small = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    for font in (None, drawing.chinese_font()):  # lettered with OpenCV's font (no Chinese font), then in Chinese
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(drawing, "chinese_font", lambda font=font: font)
            write_thumbnail(tmp_path / "t.jpg", small, k, [Finding(ad, objects=3)], load_taxonomy())
        drawn = cv2.imread(str(tmp_path / "t.jpg")).astype(int)
        for x1, y1, x2, y2 in (lines * k).round().astype(int):
            inside = (slice(y1 + 3, y2 - 2), slice(x1 + 3, x2 - 2))  # within the box's border
            assert np.abs(drawn[inside] - small[inside].astype(int)).mean() < 12  # JPEG's error, no label
        assert np.abs(drawn - small.astype(int)).mean() > 0.5  # the boxes and the label are drawn
    x1, y1 = (lines[0, :2] * k).round().astype(int)
    label = np.ascontiguousarray(cv2.resize(drawn[max(0, y1 - 24):y1, x1:x1 + 220].astype(np.uint8), None, fx=3, fy=3))
    read = "".join(TextReader(min_score=0.3, det_limit_side_len=960, det_limit_type="max").read(label).data[TEXT])
    assert "非法" in read and "乱画" in read, read  # 非法小广告 / 乱贴乱画, the type's Chinese name, at 12 px
