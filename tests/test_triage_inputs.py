"""Triage inputs without the model: listing files/folders/zips, EXIF time and GPS, grid cells, grouping."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from detect.config_io import ConfigError
from detect.engine.profile import StageProfile
from detect.frames import GeoPoint
from detect.imageio import decode_image
from pipelines.triage.exif import name_time, read_facts
from pipelines.grid import load_grid
from pipelines.triage.grouping import Member, group_members, perceptual_hash, within_span
from pipelines.triage.reasons import reason_zh
from pipelines.triage.record import PhotoFinding, PhotoRecord
from pipelines.triage.journal import Journal, JournalExists, read_records
from pipelines.triage.photos import load_photo
from pipelines.triage.pipeline import STAGES
from pipelines.triage.settings import TriageSettings
from pipelines.triage.sources import ArchiveCache, PhotoSource, Refused, expand_sources
from tests.triage_helpers import phone_photo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def _refusals(items) -> dict[str, str]:
    return {r.name.split("!")[-1]: r.reason for r in items if isinstance(r, Refused)}


def test_folders_are_searched_recursively_and_zips_read_member_by_member(tmp_path, bus_jpg, zidane_jpg):
    day = tmp_path / "day"
    (day / "morning" / "deep").mkdir(parents=True)
    shutil.copy(bus_jpg, day / "morning" / "deep" / "a.jpg")
    shutil.copy(zidane_jpg, day / "b.JPG")
    (day / "notes.txt").write_text("not a photo, not listed")
    with zipfile.ZipFile(day / "upload.zip", "w") as zf:
        zf.write(bus_jpg, "2024-06-01/bus.jpg")
        zf.writestr("__MACOSX/2024-06-01/._bus.jpg", b"resource fork")
        zf.writestr("readme.txt", "skipped")
    items = expand_sources([day, day / "b.JPG"])  # b.JPG named twice: listed once
    names = [i.name for i in items]
    assert names == [str(day / "b.JPG"), str(day / "morning" / "deep" / "a.jpg"), f"{day / 'upload.zip'}!2024-06-01/bus.jpg"]
    archives = ArchiveCache()
    assert items[2].read_bytes(archives) == bus_jpg.read_bytes()
    assert items[2].modified_at(archives, SHANGHAI) is not None
    os.utime(day / "b.JPG", (1764000000.123456, 1764000000.123456))  # a copy's time, to the microsecond
    assert items[0].modified_at(archives, SHANGHAI) == datetime.fromtimestamp(1764000000, UTC)  # to the second, as cases.csv says it
    archives.close()


def test_jfif_photos_are_read_and_a_gif_in_a_zip_is_refused_like_one_in_a_folder(tmp_path, bus_jpg, zidane_jpg):
    """A month's WeChat-for-Windows export holds JPEGs saved as `.jfif`: the folder scan and the zip listing both
    passed them over without a word, as a zip passed over a GIF that a folder records with its reason."""
    day = tmp_path / "巡查"
    day.mkdir()
    shutil.copy(bus_jpg, day / "微信图片_20231129101522.jfif")
    shutil.copy(zidane_jpg, day / "old.JPE")
    gif = tmp_path / "anim.gif"
    from PIL import Image

    Image.open(zidane_jpg).save(gif)
    shutil.copy(gif, day / "anim.gif")
    with zipfile.ZipFile(day / "导出.zip", "w") as zf:
        zf.write(bus_jpg, "b.jfif")
        zf.write(gif, "动图.gif")
    items = expand_sources([day])
    assert sorted(i.name for i in items if isinstance(i, PhotoSource)) == sorted(
        [str(day / "微信图片_20231129101522.jfif"), str(day / "old.JPE"), f"{day / '导出.zip'}!b.jfif"])
    gif_reason = "GIF files are not read: convert to JPEG or PNG (read: JPEG, PNG, WebP, BMP, TIFF, HEIC)"
    assert _refusals(items) == {str(day / "anim.gif"): gif_reason, "动图.gif": gif_reason}
    member = next(i for i in items if i.name.endswith("!b.jfif"))
    archives = ArchiveCache()
    assert decode_image(member.read_bytes(archives)).image.shape == (1080, 810, 3)  # the bus, read as the JPEG it is
    archives.close()


def test_every_reason_a_folder_scan_gives_is_said_in_chinese(tmp_path, zidane_jpg):
    """The report's error table and the upload page show inspectors `reason_zh`: a GIF, a RAW file and a link to a
    folder had none, so their rows read in English alone."""
    day = tmp_path / "巡查"
    (day / "sub").mkdir(parents=True)
    from PIL import Image

    Image.open(zidane_jpg).save(day / "anim.gif")
    shutil.copy(zidane_jpg, day / "IMG_0001.DNG")
    (day / "link").symlink_to(day / "sub")
    reasons = {Path(r.name).name: reason_zh(r.reason) for r in expand_sources([day]) if isinstance(r, Refused)}
    assert reasons == {"anim.gif": "不读取此格式（GIF）：请转换为 JPEG 或 PNG",
                       "IMG_0001.DNG": "不读取此格式（相机 RAW）：请转换为 JPEG 或 PNG",
                       "link": "指向文件夹的链接，未读取（请直接传入该文件夹）"}


def test_a_video_among_the_photos_is_named_with_how_it_is_judged_not_left_out(tmp_path, bus_jpg):
    """A phone's folder or a WeChat export holds videos beside the photos: triage listed 208 of an inspector's 210
    files and said nothing of the 2 videos. A video in a folder or a zip now has its record's reason, in Chinese too:
    it is judged as a patrol video, not as photos."""
    from benchmarks.media import write_clip
    from streetwatch.demo.media import road_view

    day = tmp_path / "巡查"
    day.mkdir()
    shutil.copy(bus_jpg, day / "IMG_0001.jpg")
    write_clip(day / "VID_0002.mp4", road_view(bus_jpg, (320, 180)), [], 1, fps=2)
    with zipfile.ZipFile(tmp_path / "微信导出.zip", "w") as zf:
        zf.write(bus_jpg, "IMG_0003.jpg")
        zf.write(day / "VID_0002.mp4", "VID_0004.MOV")
    refused = {Path(r.name.split("!")[-1]).name: (r.reason, reason_zh(r.reason))
               for r in expand_sources([day, tmp_path / "微信导出.zip"]) if isinstance(r, Refused)}
    said = ("a video is not judged as photos: run `streetwatch patrol VIDEO` (or upload it as a patrol video)",
            "视频不作为照片判读：请作为巡查视频上传（streetwatch patrol）")
    assert refused == {"VID_0002.mp4": said, "VID_0004.MOV": said}


def test_a_name_a_zip_holds_twice_is_one_photo_its_last_entry(tmp_path, bus_jpg, zidane_jpg):
    """An archive appended to (a photo retaken and added again) holds a name twice: both entries were listed, both
    read the last entry by name, and the second was recorded as a duplicate of itself. The name is listed once,
    the entry reading it gives."""
    import warnings

    with warnings.catch_warnings(), zipfile.ZipFile(tmp_path / "day.zip", "w") as zf:
        warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name"
        zf.write(bus_jpg, "0900.jpg")
        zf.write(zidane_jpg, "0900.jpg")
        zf.write(bus_jpg, "0901.jpg")
    items = expand_sources([tmp_path / "day.zip"])
    assert [i.name.split("!")[-1] for i in items] == ["0900.jpg", "0901.jpg"]
    archives = ArchiveCache()
    assert items[0].read_bytes(archives) == zidane_jpg.read_bytes()
    archives.close()


def _zip_with_raw_names(path, entries) -> None:
    """A zip whose entry names are the given bytes, without the UTF-8 flag (as Windows' built-in zip
    writes them: the ANSI code page, GBK on a Chinese Windows). zipfile always flags non-ASCII names,
    so ASCII stand-ins of the same length are written and then replaced (the CRC covers the data only)."""
    stand_ins = [(f"N{i}".encode() + b"x" * (len(raw) - 2), raw) for i, (raw, _) in enumerate(entries)]
    with zipfile.ZipFile(path, "w") as zf:
        for (stand_in, _), (_, photo) in zip(stand_ins, entries, strict=True):
            zf.write(photo, stand_in.decode())
    data = path.read_bytes()
    for stand_in, raw in stand_ins:
        data = data.replace(stand_in, raw)
    path.write_bytes(data)


def test_chinese_folder_names_in_zips_from_windows_macos_and_linux(tmp_path, bus_jpg, zidane_jpg):
    windows = tmp_path / "windows.zip"  # GBK names, no UTF-8 flag
    _zip_with_raw_names(windows, [("城管/巡查一/照片1.jpg".encode("gbk"), bus_jpg), ("城管/巡查二/照片2.jpg".encode("gbk"), zidane_jpg)])
    unflagged = tmp_path / "unflagged.zip"  # UTF-8 names without the flag (older 7-Zip, some Linux tools)
    _zip_with_raw_names(unflagged, [("城管/早上/照片3.jpg".encode(), bus_jpg)])
    flagged = tmp_path / "flagged.zip"
    with zipfile.ZipFile(flagged, "w") as zf:
        zf.write(zidane_jpg, "城管/下午/照片4.jpg")
    dos = tmp_path / "dos.zip"  # neither UTF-8 nor GBK: the standard's code page 437
    _zip_with_raw_names(dos, [("caf\x82.jpg".encode("latin-1"), bus_jpg)])

    items = expand_sources([windows, unflagged, flagged, dos])
    assert [i.member for i in items] == ["城管/巡查一/照片1.jpg", "城管/巡查二/照片2.jpg", "城管/早上/照片3.jpg", "城管/下午/照片4.jpg", "café.jpg"]
    assert items[0].name == f"{windows}!城管/巡查一/照片1.jpg"
    archives = ArchiveCache()
    assert [i.read_bytes(archives) for i in items] == [p.read_bytes() for p in (bus_jpg, zidane_jpg, bus_jpg, zidane_jpg, bus_jpg)]
    assert all(i.modified_at(archives, SHANGHAI) is not None for i in items)
    archives.close()


def test_hostile_and_unreadable_archives_are_refused_with_reasons(tmp_path, bus_jpg):
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.write(bus_jpg, "bus.jpg")
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.write(bus_jpg, "ok.jpg")
        zf.write(bus_jpg, "../../escape.jpg")
        zf.writestr(zipfile.ZipInfo("/etc/absolute.jpg"), bus_jpg.read_bytes())  # ZipFile.write would strip the /
        zf.writestr(zipfile.ZipInfo("C:/DCIM/drive.jpg"), bus_jpg.read_bytes())
        zf.writestr(zipfile.ZipInfo("D:here.jpg"), bus_jpg.read_bytes())  # drive-relative: D:'s current folder to Windows
        zf.writestr(zipfile.ZipInfo("E:\\back.jpg"), bus_jpg.read_bytes())
        zf.write(inner, "photos/inner.zip")
    fake = tmp_path / "fake.zip"
    fake.write_text("this is not a zip archive")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    shutil.copy(bus_jpg, secret_dir / "locked.jpg")
    subprocess.run(["zip", "-q", "-P", "s3cret", "-j", str(tmp_path / "locked.zip"), str(secret_dir / "locked.jpg")], check=True)

    items = expand_sources([bad, fake, tmp_path / "locked.zip", tmp_path / "missing.jpg"])
    assert [i.name for i in items if isinstance(i, PhotoSource)] == [f"{bad}!ok.jpg"]
    reasons = _refusals(items)
    assert "path traversal" in reasons["../../escape.jpg"]
    assert "path traversal" in reasons["/etc/absolute.jpg"]
    # refused for what it is: neither absolute nor '..', but a drive to Windows, with a folder after it or not
    assert {name: reasons[name] for name in ("C:/DCIM/drive.jpg", "D:here.jpg", "E:\\back.jpg")} == {
        name: f"unsafe path in archive (it begins with the drive name {drive!r}, as Windows reads it): refused"
        for name, drive in (("C:/DCIM/drive.jpg", "C:"), ("D:here.jpg", "D:"), ("E:\\back.jpg", "E:"))}
    assert "nested zip" in reasons["photos/inner.zip"]
    assert "not a valid zip" in reasons[str(fake)]
    assert "password-protected" in reasons["locked.jpg"]
    assert reasons[str(tmp_path / "missing.jpg")] == "not found"


def test_exif_time_gps_and_orientation_from_a_phone_photo(tmp_path, bus_jpg):
    import cv2

    taken = datetime(2024, 6, 3, 14, 5, 9)
    photo = phone_photo(bus_jpg, tmp_path / "p.jpg", taken=taken, gps=(30.274085, 120.155070),
                        orientation=6, rotate=cv2.ROTATE_90_COUNTERCLOCKWISE)
    decoded = decode_image(photo, max_side=640)
    assert decoded.full_size == (810, 1080)  # portrait again after applying the orientation
    assert decoded.image.shape[0] > decoded.image.shape[1]
    facts = read_facts(decoded.exif, SHANGHAI)
    assert facts.taken_at == taken.replace(tzinfo=SHANGHAI)
    assert facts.taken_at.astimezone(UTC) == datetime(2024, 6, 3, 6, 5, 9, tzinfo=UTC)
    assert facts.geo.lat == pytest.approx(30.274085, abs=1e-6)
    assert facts.geo.lon == pytest.approx(120.155070, abs=1e-6)
    assert facts.warnings == []

    with_offset = phone_photo(bus_jpg, tmp_path / "o.jpg", taken=taken, offset="-05:00", gps=(-33.8688, -151.2093))
    facts = read_facts(decode_image(with_offset).exif, SHANGHAI)
    assert facts.taken_at.utcoffset() == timedelta(hours=-5)
    assert (facts.geo.lat, facts.geo.lon) == pytest.approx((-33.8688, -151.2093), abs=1e-6)


def test_broken_exif_becomes_warnings_and_keeps_the_picture(tmp_path, zidane_jpg):
    import piexif

    photo = phone_photo(zidane_jpg, tmp_path / "broken.jpg", exif_extra={
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"yesterday at noon"},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((0, 0), (0, 0), (0, 0)),
                piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((120, 1), (0, 1), (0, 1))},
    })
    decoded = decode_image(photo)
    facts = read_facts(decoded.exif, SHANGHAI)
    assert decoded.image.shape[:2] == (720, 1280)
    assert facts.taken_at is None and facts.geo is None
    assert any("capture time unreadable" in w and "yesterday" in w for w in facts.warnings)
    assert any("GPS unreadable" in w for w in facts.warnings)

    # an original the camera never set: the file's DateTime, read with its own offset tag, not OffsetTimeOriginal
    unset = phone_photo(zidane_jpg, tmp_path / "unset.jpg", offset="+08:00", exif_extra={
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"0000:00:00 00:00:00", piexif.ExifIFD.DateTimeDigitized: b"0000:00:00 00:00:00",
                 piexif.ExifIFD.OffsetTime: b"-03:00"},
        "0th": {piexif.ImageIFD.DateTime: b"2024:06:03 10:00:00"},
    })
    facts = read_facts(decode_image(unset).exif, SHANGHAI)
    assert facts.taken_at == datetime(2024, 6, 3, 13, 0, tzinfo=UTC)
    assert facts.warnings == ["EXIF capture time unreadable: '0000:00:00 00:00:00' is not 'YYYY:MM:DD HH:MM:SS'"]

    no_fix = phone_photo(zidane_jpg, tmp_path / "nofix.jpg", gps=(0.0, 0.0))
    facts = read_facts(decode_image(no_fix).exif, SHANGHAI)
    assert facts.geo is None and any("no GPS fix" in w for w in facts.warnings)


BERLIN = ZoneInfo("Europe/Berlin")
COPIED = datetime(2024, 6, 5, 8, 0, tzinfo=UTC)  # when the photos were copied to the laptop: their file time


def _exported(original: Path, dst: Path) -> Path:
    """The photo as WeChat or an export app hands it on: re-encoded by Pillow without its EXIF, copied later."""
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(original) as im:
        assert im.getexif()  # the phone's photo had its EXIF ...
        im.save(dst, **({"quality": 90} if dst.suffix == ".jpg" else {}))
    with Image.open(dst) as im:
        assert not im.getexif()  # ... the export has none
    os.utime(dst, (COPIED.timestamp(), COPIED.timestamp()))
    return dst


def test_the_2000_cut_off_is_the_local_wall_clock_in_every_zone():
    """The cut-off was compared in UTC: a camera's unset 2000-01-01 00:00 (and a 1999 time) in a file name was refused
    in Asia/Shanghai (UTC+8) but taken in America/Sao_Paulo (UTC-3). The local wall clock is compared, in both zones."""
    for zone in (ZoneInfo("America/Sao_Paulo"), ZoneInfo("Asia/Shanghai")):
        for name, why in (("IMG_19991231_233000.jpg", "is before 2000"), ("IMG_20000101_000000.jpg", "a camera's clock never set")):
            with pytest.raises(ValueError, match=rf"^{name!r}: .* {why}$"):
                name_time(name, zone)
        assert name_time("IMG_20000101_080000.jpg", zone) == datetime(2000, 1, 1, 8, 0, tzinfo=zone)


def test_photos_without_exif_time_are_timed_by_the_time_in_their_file_name(tmp_path, zidane_jpg):
    """mmexport/wx_camera names are milliseconds since 1970; IMG_/PXL_/微信图片/Screenshot names are local times,
    read in the run's time zone; impossible ones are warnings; the EXIF time still comes first."""
    original = phone_photo(zidane_jpg, tmp_path / "phone" / "original.jpg", taken=datetime(2023, 11, 29, 10, 15, 22))
    local = datetime(2023, 11, 29, 10, 15, 22, tzinfo=BERLIN)
    expected = {  # file name -> (time, source, warning)
        "mmexport1701249322000.jpg": (datetime(2023, 11, 29, 9, 15, 22, tzinfo=UTC), "name", None),
        "wx_camera_1701249322123.jpg": (datetime(2023, 11, 29, 9, 15, 22, 123000, tzinfo=UTC), "name", None),
        "微信图片_20231129101522.jpg": (local, "name", None),
        "IMG_20231129_101522.jpg": (local, "name", None),
        "IMG20231129101522.jpg": (local, "name", None),
        "PXL_20231129_101522123.jpg": (local, "name", None),
        "VID_20231129_101522.jpg": (local, "name", None),
        "Screenshot_2023-11-29-10-15-22-123_com.tencent.mm.png": (local, "name", None),
        "IMG_1234.jpg": (COPIED, "file", None),  # an iPhone's number, not a time
        "IMG_19991231_235959.jpg": (COPIED, "file", "is before 2000"),
        "IMG_20991129_101522.jpg": (COPIED, "file", "is in the future"),
        "IMG_20231330_101522.jpg": (COPIED, "file", "is no date and time (month must be in 1..12)"),
    }
    for name in expected:
        _exported(original, tmp_path / "export" / name)
    shutil.copy(original, tmp_path / "export" / "IMG_20200101_000000.jpg")  # the EXIF kept: it wins over the name
    expected["IMG_20200101_000000.jpg"] = (datetime(2023, 11, 29, 10, 15, 22, tzinfo=BERLIN), "exif", None)
    member = _exported(original, tmp_path / "member" / "IMG_20231129_101522.jpg")
    with zipfile.ZipFile(tmp_path / "export" / "mmexport1500000000000.zip", "w") as zf:  # the member's name counts
        zf.write(member, "2024-06-05/IMG_20231129_101522.jpg")
    expected["mmexport1500000000000.zip!2024-06-05/IMG_20231129_101522.jpg"] = (local, "name", None)

    settings = TriageSettings(out=tmp_path / "out", timezone="Europe/Berlin")
    journal, archives = Journal(settings.out, resume=False), ArchiveCache()
    got = {}
    for source in expand_sources([tmp_path / "export"]):
        photo = load_photo(source, archives, settings, journal, None, StageProfile(seconds=dict.fromkeys(STAGES, 0.0)))
        key = f"{source.path.name}!{source.member}" if source.member else source.path.name
        got[key] = (photo.taken_at, photo.time_source, photo.warnings)
    archives.close()
    assert got.keys() == expected.keys()
    for name, (taken, time_source, warning) in expected.items():
        at, origin, warnings = got[name]
        assert (at, origin) == (taken, time_source), name
        if warning is None:
            assert warnings == [], name
        else:
            [w] = warnings
            assert w.startswith(f"file name time impossible: {name!r}: ") and w.endswith(warning), name
    assert got["IMG_20231129_101522.jpg"][0].utcoffset() == timedelta(hours=1)  # Berlin in November, not Shanghai


def test_an_impossible_file_time_is_not_the_capture_time(tmp_path, real_sample_dir):
    """A real photo without EXIF or a time in its name, whose file time is the zip format's zero (1980-01-01, as zip
    tools store it), a camera's unset 1970, or in the future: timed by the run, with a warning saying why."""
    [street] = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[:1]
    phone = phone_photo(street, tmp_path / "phone" / "original.jpg", taken=datetime(2023, 11, 29, 10, 15, 22))
    file_times = {"zero.jpg": datetime(1980, 1, 1, tzinfo=UTC), "unset.jpg": datetime(1970, 1, 1, 0, 0, 5, tzinfo=UTC),
                  "ahead.jpg": (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)}
    for name, at in file_times.items():
        os.utime(_exported(phone, tmp_path / "export" / name), (at.timestamp(), at.timestamp()))
    with zipfile.ZipFile(tmp_path / "export" / "photos.zip", "w") as zf:  # the member's stored date is the zip's zero
        zf.writestr(zipfile.ZipInfo("day/member.jpg", date_time=(1980, 1, 1, 0, 0, 0)), (tmp_path / "export" / "zero.jpg").read_bytes())

    settings = TriageSettings(out=tmp_path / "out")
    journal, archives = Journal(settings.out, resume=False), ArchiveCache()
    before = datetime.now(UTC)
    got = {}
    for source in expand_sources([tmp_path / "export"]):
        photo = load_photo(source, archives, settings, journal, None, StageProfile(seconds=dict.fromkeys(STAGES, 0.0)))
        got[source.filename] = photo
    archives.close()
    after = datetime.now(UTC)
    expected = {"zero.jpg": "1980-01-01T00:00:00+00:00 is before 2000", "unset.jpg": "1970-01-01T00:00:05+00:00 is before 2000",
                "ahead.jpg": f"{file_times['ahead.jpg'].isoformat()} is in the future",
                "member.jpg": "1980-01-01T00:00:00+08:00 is before 2000"}
    assert got.keys() == expected.keys()
    for name, why in expected.items():
        photo = got[name]
        assert photo.time_source == "run" and before <= photo.taken_at <= after, name
        assert photo.warnings == [f"file time impossible: {name!r}: {why}; the run's time is used"], name


def _ring(x1, y1, x2, y2):
    return [[[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]]


def test_grid_cells_from_geojson(tmp_path):
    cells = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(120.150, 30.270, 120.160, 30.280)},
         "properties": {"id": 330102001001, "name": "湖滨 1"}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": _ring(120.160, 30.270, 120.170, 30.280)},
         "properties": {"id": "330102001002"}},
    ]}
    path = tmp_path / "grid.geojson"
    path.write_text(json.dumps(cells))
    grid = load_grid(path)
    assert grid.at(GeoPoint(lat=30.275, lon=120.155)) == "330102001001"
    assert grid.at(GeoPoint(lat=30.275, lon=120.165)) == "330102001002"
    assert grid.at(GeoPoint(lat=31.0, lon=121.0)) is None

    cells["features"][1]["geometry"]["coordinates"] = [[[120.16, 30.27], [120.17, 30.28], [120.16, 30.28], [120.17, 30.27], [120.16, 30.27]]]
    path.write_text(json.dumps(cells))
    with pytest.raises(ConfigError, match=r"grid.geojson: features\.1\.geometry: 多边形自相交或无效（.*） — polygon is self-intersecting"):
        load_grid(path)



def test_a_grid_file_with_two_cells_of_one_id_is_refused_naming_both(tmp_path):
    """Two cells of one id were taken without a word: triage filed photos in either under the one code, and the
    analytics kept the last cell's street and squad for both. Each reader (triage, the analytics, the call-out list)
    refuses the file at the second's id, naming both cells by position and name, Chinese first."""
    from pipelines.analytics.config import AnalyticsConfig
    from pipelines.analytics.places import load_places
    from pipelines.cityops.hooks import squads_of
    from tests.analytics_helpers import G1, TWICE_G1, TWICE_G1_REFUSED, write_grid

    path = write_grid(tmp_path / "grid.geojson", TWICE_G1)
    refused = (f"{path}: {TWICE_G1_REFUSED}，其街道、中队与道路等级也按编号查找，其中一个将永远用不上，请为每个网格另起编号"
               f"（一个网格有几块的，写成一个 MultiPolygon） — cell id '{G1}' is used twice: by features.0.properties (文三路东) "
               f"and features.4.properties (文三路东延伸段); a case is filed under its cell's id, and the cell's street, squad "
               "and grade are found by it, so one of the two would never be used: give each cell an id of its own (a cell "
               "of several parts is one MultiPolygon feature)")
    for read in (load_grid, lambda p: load_places(AnalyticsConfig(grid=p)), squads_of):
        with pytest.raises(ConfigError) as refusal:
            read(path)
        assert str(refusal.value) == refused
        assert refusal.value.field == ("features", "4", "properties", "id")
    assert len(load_grid(write_grid(path, TWICE_G1[:4]))) == 4  # the same cells, each code once, still read

def _member(source, type_, score, minute, gps=None, phash=None):
    record = PhotoRecord(source=source, sha256=source, photo_id=source, status="ok",
                         taken_at=datetime(2024, 6, 3, 9, 0, tzinfo=UTC) + timedelta(minutes=minute),
                         lat=gps[0] if gps else None, lon=gps[1] if gps else None,
                         phash=None if phash is None else f"{phash:016x}")
    return Member(record, PhotoFinding(type=type_, name_zh=type_, name_en=type_, score=score))


@pytest.mark.parametrize("missing", ["sha256", "photo_id", "taken_at"])
def test_a_finding_whose_record_lacks_its_photo_facts_is_refused_by_name(missing):
    record = _member("shop.jpg", "street_stall", 0.7, 0).record.model_copy(update={missing: None})
    with pytest.raises(ValueError, match=r"shop\.jpg: a finding's record needs sha256, photo_id and taken_at"):
        Member(record, PhotoFinding(type="street_stall", name_zh="x", name_en="x", score=0.7))


def test_grouping_by_gps_distance_time_window_and_type():
    here = (30.27400, 120.15500)
    ten_m_north = (30.27409, 120.15500)
    far = (30.28000, 120.15500)  # ~660 m
    groups = group_members([
        _member("a", "illegal_parking", 0.6, 0, here),
        _member("b", "illegal_parking", 0.9, 5, ten_m_north),  # same car, better shot: leads
        _member("c", "illegal_parking", 0.8, 6, far),  # another street
        _member("d", "illegal_parking", 0.7, 120, here),  # same spot two hours later: a new case
        _member("e", "street_stall", 0.5, 1, here),  # other type at the same spot
    ], window_s=1800, radius_m=30, max_bits=12)
    assert [[m.source for m in g.members] for g in groups] == [["b", "a"], ["c"], ["d"], ["e"]]


def test_grouping_does_not_chain_a_street_into_one_case_and_keeps_a_burst_together():
    """QA: a patrol's frames 9.9 m apart along 300 m of stalls, each within the 30 m radius of the next, were one case
    (linked through each other) placed at one end. A case now reaches at most `span_m` from its first photo with GPS;
    a burst of shots of one stall, and a re-take without GPS joining it by its hash, are still one case."""
    street = [_member(f"f{k:02d}", "street_stall", 0.5 + k / 100, k / 6, (30.27 + k * 9.9 / 111_195, 120.155)) for k in range(31)]
    assert len(group_members(street, window_s=1800, radius_m=30, max_bits=12)) == 1  # unbounded: the whole street
    groups = group_members(street, window_s=1800, radius_m=30, max_bits=12, span_m=60)
    spans = sorted(sorted(int(m.source[1:]) for m in g.members) for g in groups)
    assert spans == [list(range(k, min(k + 7, 31))) for k in range(0, 31, 7)]  # 0-59 m, 69-129 m, ... each its own case
    assert all(within_span(g.members, 60) for g in groups)

    burst = [_member(f"b{k}", "street_stall", 0.6, k / 60, (30.27 + k * 2 / 111_195, 120.155), phash=0xF0F0) for k in range(12)]
    burst.append(_member("retake", "street_stall", 0.9, 1, phash=0xF0F1))  # no fix: joins by its hash
    [group] = group_members(burst, window_s=1800, radius_m=30, max_bits=12, span_m=60)
    assert len(group.members) == 13 and group.lead.source == "retake" and group.placed.source == "b0"


def test_grouping_without_gps_uses_perceptual_hashes_of_real_photos(tmp_path, real_sample_dir, bus_jpg):
    garbage = sorted((real_sample_dir / "street-garbage" / "images").glob("*.jpg"))[0]
    shots = {
        "first": phone_photo(garbage, tmp_path / "1.jpg"),
        "retake": phone_photo(garbage, tmp_path / "2.jpg", crop=0.03, gain=1.1),
        "other": phone_photo(bus_jpg, tmp_path / "3.jpg"),
    }
    hashes = {k: perceptual_hash(decode_image(p, max_side=640).image) for k, p in shots.items()}
    assert (hashes["first"] ^ hashes["retake"]).bit_count() <= 12 < (hashes["first"] ^ hashes["other"]).bit_count()
    groups = group_members([
        _member("first", "exposed_garbage", 0.7, 0, phash=hashes["first"]),
        _member("retake", "exposed_garbage", 0.8, 2, phash=hashes["retake"]),
        _member("other", "exposed_garbage", 0.9, 3, phash=hashes["other"]),
    ], window_s=1800, radius_m=30, max_bits=12)
    assert [[m.source for m in g.members] for g in groups] == [["other"], ["retake", "first"]]


def test_grouping_many_photos_of_one_time_compares_only_those_near_in_place_or_hash(monkeypatch):
    """Photos without EXIF all take their copy time: every pair of a type within the window was compared in
    Python, 27,250 for these 300 (minutes at 30,000). Only pairs near in place (a k-d tree) or of like hashes
    (numpy) reach `same_spot`, and the cases are the same: a re-take 10 m on, a re-take 3 bits apart, and a
    shot with a fix joining a shot without one by its hash."""
    import random

    from pipelines.triage import grouping

    rng = random.Random(7)
    members, expected = [], []
    for k in range(100):  # 100 spots ~111 m apart, the first 10 shot twice 10 m apart
        members.append(_member(f"gps{k}", "illegal_parking", 0.5, 0, (30.27 + k * 0.001, 120.155)))
        expected.append({f"gps{k}"})
        if k < 10:
            members.append(_member(f"gps{k}b", "illegal_parking", 0.4, 0, (30.27009 + k * 0.001, 120.155)))
            expected[-1].add(f"gps{k}b")
    for k in range(100):  # 100 scenes without GPS, the first 10 re-taken
        phash = rng.getrandbits(64)
        members.append(_member(f"hash{k}", "illegal_parking", 0.5, 0, phash=phash))
        expected.append({f"hash{k}"})
        if k < 10:
            members.append(_member(f"hash{k}b", "illegal_parking", 0.4, 0, phash=phash ^ 0b111))
            expected[-1].add(f"hash{k}b")
        if k == 50:  # the shot at spot 50 had a fix, its re-take none
            members[50 + 10].record.phash = f"{phash ^ 0b1:016x}"
            members[50 + 10].phash = phash ^ 0b1
            expected[-1] |= expected.pop(50)
    members += [_member(f"other{k}", "street_stall", 0.5, 0, (30.27 + k * 0.001, 120.155)) for k in range(80)]
    expected += [{f"other{k}"} for k in range(80)]
    calls = []
    same_spot = grouping.same_spot
    monkeypatch.setattr(grouping, "same_spot", lambda *a: calls.append(a) or same_spot(*a))
    groups = group_members(members, window_s=1800, radius_m=30, max_bits=12)
    assert sorted(sorted(m.source for m in g.members) for g in groups) == sorted(sorted(e) for e in expected)
    assert len(calls) == 21  # the 10 + 10 re-takes and the fix's, of 27,250 pairs of a type


def test_journal_refuses_to_overwrite_and_cuts_a_torn_line_on_resume(tmp_path):
    j = Journal(tmp_path, resume=False)
    j.append({"source": "a.jpg", "sha256": "aa", "status": "ok", "findings": []})
    j.append({"source": "b.jpg", "sha256": None, "status": "error", "reason": "not found"})
    j.close()
    with (tmp_path / "results.jsonl").open("a") as fh:
        fh.write('{"source": "c.jpg", "sha2')  # killed mid-write
    with pytest.raises(JournalExists, match="--resume"):
        Journal(tmp_path, resume=False)
    j = Journal(tmp_path, resume=True)
    assert j.previous == 2 and j.seen("a.jpg", "aa") and not j.seen("c.jpg", None)
    assert not j.seen("b.jpg", None) and j.failed == {"b.jpg": "not found"}  # an error is tried again
    assert j.refused_before("b.jpg", "not found") and not j.refused_before("b.jpg", "permission denied")
    assert j.done_hashes == {"aa": "a.jpg"}
    j.close()
    assert (tmp_path / "results.jsonl").read_text().count("\n") == 2


def test_an_error_superseded_by_a_later_record_is_dropped_even_after_a_kill(tmp_path):
    """A retry run killed before it closed its journal leaves the error and its photo's new record; the
    next resume takes the new one and drops the error, keeping every other line as written."""
    j = Journal(tmp_path, resume=False)
    j.append({"source": "a.jpg", "sha256": "aa", "status": "error", "reason": "detection failed: out of memory"})
    j.append({"source": "b.jpg", "sha256": "bb", "status": "ok", "findings": []})
    j.append({"source": "a.jpg", "sha256": "aa", "status": "ok", "findings": []})  # the retry, then killed
    j._fh.close()  # noqa: SLF001 - no close(): as a killed process leaves it
    j = Journal(tmp_path, resume=True)
    assert j.seen("a.jpg", "aa") and j.failed == {} and j.done_hashes == {"bb": "b.jpg", "aa": "a.jpg"}
    j.close()
    assert [(r.source, r.status) for r in read_records(tmp_path / "results.jsonl")] == [("b.jpg", "ok"), ("a.jpg", "ok")]


def _empty_entries_zip(path: Path, count: int) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(count):
            zf.writestr(f"IMG_{i:06d}.jpg", b"")
    return path


def test_a_zip_of_too_many_entries_is_refused_before_its_directory_is_read(tmp_path, monkeypatch):
    """Opening a zip, Python reads its whole central directory into memory: 300,000 empty entries in a 29 MB upload
    took 390 MB and 6 s. The count is read from the end record (ZIP64's past 65,535) and the directory walked
    without keeping it, so a count the end record lies about is not believed."""
    from pipelines.triage import sources

    monkeypatch.setattr(sources, "MAX_ZIP_ENTRIES", 1000)
    at_limit = _empty_entries_zip(tmp_path / "at-limit.zip", 1000)
    over = _empty_entries_zip(tmp_path / "over.zip", 1001)
    lying = tmp_path / "lying.zip"
    data = bytearray(over.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = (10).to_bytes(2, "little") * 2  # entries on this disk, entries in all: 10
    lying.write_bytes(bytes(data))
    monkeypatch.setattr(sources, "MAX_ZIP_ENTRIES", 65_535)
    zip64 = _empty_entries_zip(tmp_path / "zip64.zip", 65_536)  # more than the plain end record counts
    assert zipfile.ZipFile(lying).namelist()[1000] == "IMG_001000.jpg"  # zipfile reads all 1001 whatever it says
    monkeypatch.setattr(sources, "MAX_ZIP_ENTRIES", 1000)

    items = expand_sources([at_limit, over, lying])
    assert sum(isinstance(i, PhotoSource) for i in items) == 1000
    reasons = _refusals(items)
    assert reasons[str(over)].startswith("too many entries: 1,001 in one zip, more than 1,000 are not read"), reasons
    assert reasons[str(lying)].startswith("too many entries: more than 1,000 (it declares 10) in one zip"), reasons
    monkeypatch.setattr(sources, "MAX_ZIP_ENTRIES", 65_535)
    assert _refusals(expand_sources([zip64]))[str(zip64)].startswith("too many entries: 65,536 in one zip")


def test_a_resumed_runs_rate_and_eta_are_those_of_the_photos_it_judges_not_of_its_skips(tmp_path, monkeypatch, bus_jpg,
                                                                                            zidane_jpg, onnx_detector):
    """A resume skips the photos recorded earlier by the thousand a second, and the bar's rate and ETA counted them:
    1,013 skipped of 2,105 made a resume say 64.8 photos/s and ETA 0:00:16 for its first minute, 6 minutes of
    photos still to judge. The skips are counted in done/total and said in the notes, the pace is this run's records."""
    import io

    from rich.console import Console

    from pipelines.triage import run_triage
    from pipelines.triage import pipeline

    day, settings = _triaged_folder(tmp_path, {"a_bus.jpg": bus_jpg, "b_people.jpg": zidane_jpg}, onnx_detector)
    phone_photo(bus_jpg, day / "c_bus_later.jpg", taken=datetime(2024, 6, 3, 9, 0))
    bars = []
    monkeypatch.setattr(pipeline, "progress_bar", lambda real=pipeline.progress_bar, **kw: bars.append(real(**kw)) or bars[-1])
    run_triage([day], settings.model_copy(update={"resume": True}), detector=onnx_detector, show_progress=False)
    [task] = bars[0].tasks
    assert (task.completed, task.total) == (3, 3)
    assert task.fields["pace"].done == 1 and task.fields["notes"].endswith(", 2 recorded earlier")

    ticks = iter([0.0, 1.0, 2.0, 3.0])  # four photos judged a second apart, 50 skipped before them at once
    pace = pipeline.Pace(clock=lambda: next(ticks))
    console = Console(file=io.StringIO(), width=200)
    bar = pipeline.progress_bar(console=console)
    shown = bar.add_task("triage", total=100, notes="", pace=pace)
    bar.update(shown, advance=50)
    for _ in range(4):
        pace.tick()
        bar.update(shown, advance=1)
    console.print(bar.make_tasks_table(bar.tasks))
    line = console.file.getvalue()
    assert "54/100" in line and "1.0 photos/s" in line and "ETA 0:00:46" in line, line


def test_a_run_whose_stderr_is_not_a_terminal_logs_its_progress(tmp_path, monkeypatch, caplog, bus_jpg, zidane_jpg,
                                                                 onnx_detector):
    """rich draws its bar only on a terminal: a run under nohup, cron or systemd, its stderr a log file, said nothing
    from its start to its summary (13 minutes for 2,000 photos). It logs a line every PLAIN_PROGRESS_S (here every
    input) and one at the end; --no-progress (show_progress=False) none."""
    import logging

    from pipelines.triage import pipeline, run_triage

    day = tmp_path / "day"
    day.mkdir()
    shutil.copy(bus_jpg, day / "a_bus.jpg")
    shutil.copy(zidane_jpg, day / "b_people.jpg")
    (day / "c_empty.jpg").write_bytes(b"")
    monkeypatch.setattr(pipeline, "PLAIN_PROGRESS_S", 0.0, raising=False)  # every input
    settings = TriageSettings(out=tmp_path / "out", cases=False, verifier="none", ocr="off", workers=1)
    with caplog.at_level(logging.INFO, logger="pipelines.triage.pipeline"):
        run_triage([day], settings, detector=onnx_detector, show_progress=True)  # pytest's stderr is no terminal
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("triage: ")]
    assert [line.split(" inputs")[0] for line in lines] == ["triage: 1/3", "triage: 2/3", "triage: 3/3"], lines
    assert lines[-1].startswith("triage: 3/3 inputs (100%), ") and "ETA 0:00:00; 1 with violations, 1 error/duplicate" in lines[-1]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipelines.triage.pipeline"):
        run_triage([day], settings.model_copy(update={"out": tmp_path / "quiet"}), detector=onnx_detector, show_progress=False)
    assert not [r for r in caplog.records if r.getMessage().startswith("triage: ")]


def test_a_resume_counts_a_photo_deleted_from_a_folder_as_no_longer_there(tmp_path, bus_jpg, zidane_jpg, onnx_detector):
    """docs/triage.md: a photo judged earlier that is no longer there keeps its result and the summary says how many.
    It said so only of a photo named on the command line: one deleted from a folder given again (a wrong shot the
    inspector removed) kept its result and its case in silence, counted nowhere, not even as recorded earlier."""
    from pipelines.triage import run_triage

    day, settings = _triaged_folder(tmp_path, {"bus.jpg": bus_jpg, "people.jpg": zidane_jpg}, onnx_detector)
    out = settings.out
    (day / "people.jpg").unlink()
    stats = run_triage([day], settings.model_copy(update={"resume": True}), detector=onnx_detector,
                       show_progress=False).stats
    assert (stats.recorded, stats.skipped, stats.gone) == (0, 2, 1)
    assert [json.loads(line)["source"] for line in (out / "results.jsonl").read_text().splitlines()] == [
        str(day / "bus.jpg"), str(day / "people.jpg")]  # its result is kept


def _triaged_folder(tmp_path, photos: dict, detector) -> tuple:
    """A folder `day` of `photos` (name -> file), triaged once into `out` (no cases, detector classes alone): the
    folder and the run's settings, for a resume."""
    from pipelines.triage import run_triage

    day = tmp_path / "day"
    day.mkdir()
    for name, src in photos.items():
        shutil.copy(src, day / name)
    settings = TriageSettings(out=tmp_path / "out", cases=False, verifier="none", ocr="off", workers=1)
    run_triage([day], settings, detector=detector, show_progress=False)
    return day, settings


def test_a_full_disk_stops_the_run_naming_the_file_and_the_resume_finishes_it(tmp_path, bus_jpg, zidane_jpg, onnx_detector):
    """A month's photos filling the disk of --out: each photo after the first failed thumbnail was recorded as an
    `internal error` with a traceback in the log, until the journal's own write failed and the command died with a
    traceback (exit 1, which says no photo could be read). The write that fails stops the run, naming the file and
    the reason (`OutputUnwritable`); what was recorded stays, and the resume judges the rest."""
    from pipelines.triage import run_triage
    from pipelines.triage.journal import OutputUnwritable

    day = tmp_path / "day"
    day.mkdir()
    shutil.copy(bus_jpg, day / "a_bus.jpg")
    shutil.copy(zidane_jpg, day / "b_people.jpg")
    settings = TriageSettings(out=tmp_path / "out", cases=False, verifier="none", ocr="off", workers=1)
    thumb = settings.out / "thumbs" / f"{hashlib.sha256(bus_jpg.read_bytes()).hexdigest()[:16]}.jpg"
    thumb.parent.mkdir(parents=True)
    thumb.symlink_to("/dev/full")  # every write to it: ENOSPC, as on a full disk
    with pytest.raises(OutputUnwritable, match=f"^cannot write {thumb}: No space left on device$"):
        run_triage([day], settings, detector=onnx_detector, show_progress=False)
    assert not (settings.out / "results.jsonl").read_text()  # the bus not recorded as an error, nothing after it
    thumb.unlink()
    stats = run_triage([day], settings.model_copy(update={"resume": True}), detector=onnx_detector, show_progress=False).stats
    records = [json.loads(line) for line in (settings.out / "results.jsonl").read_text().splitlines()]
    assert (stats.recorded, [r["status"] for r in records]) == (2, ["ok", "ok"])
    assert records[0]["findings"] and thumb.stat().st_size > 0


@pytest.mark.parametrize("columns", [80, 100])
def test_the_progress_bar_keeps_its_count_rate_and_eta_whole_on_a_narrow_terminal(columns):
    """On an 80-column terminal a resumed run's bar read `triage     ETA  120 with violations, …`: rich cut every
    column alike, the count, rate and ETA to nothing, for the running notes (100 columns: `170…`, `0:0…`). The
    figures stay whole and the notes give way, cut with an ellipsis."""
    import io

    from rich.console import Console

    from pipelines.triage.pipeline import Pace, progress_bar

    screen = io.StringIO()
    bar = progress_bar(Console(file=screen, width=columns, force_terminal=True, color_system=None))
    clock = iter(n / 3.0 for n in range(1000))  # 3 photos a second: the 405 to go take 2:15
    pace = Pace(clock=lambda: next(clock))
    task = bar.add_task("triage", total=2105, pace=pace,
                        notes="120 with violations, 12 errors/duplicates, 1530 recorded earlier")
    for _ in range(170):
        pace.tick()
    bar.update(task, completed=1700)
    bar.console.print(bar.get_renderable())
    [line] = screen.getvalue().splitlines()
    assert "1700/2105" in line and "3.0 photos/s" in line and "ETA 0:02:15" in line and line.endswith("…")
