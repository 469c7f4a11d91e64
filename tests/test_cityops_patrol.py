"""Patrol-vehicle video: a clip made from the demo's road view and real bus, with a GPS track written here."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import gpxpy.gpx
import numpy as np
import pynmea2
import pytest
import srt

from detect.frames import distance_m
from pipelines.cases import CaseStore, NewCase
from benchmarks.media import BUS_BOX, Sprite, cut, write_clip
from pipelines.cityops.patrol import CannotResume, PatrolError, run_patrol, sample_video
from pipelines.cityops.tracks import TrackError, load_track
from streetwatch.demo.media import road_view
from tests.cctv_helpers import pattern_video, played_picture, retagged_copy, rotated_copy, ts_copy
from pipelines.settings import Settings
from pipelines.triage import TriageSettings
from pipelines.triage.grouping import within_span

TZ = ZoneInfo("Asia/Shanghai")
START = datetime(2026, 11, 20, 1, 0, tzinfo=UTC)  # 09:00 local
ORIGIN = (30.2700, 120.1550)
SPEED = 5.0  # metres per second, due north
KEY = "patrol-test-key-0123456789abcdef"


def _fixes(start: datetime, seconds: int, east_m: float = 0.0) -> list[tuple[datetime, float, float]]:
    return [(start + timedelta(seconds=s), ORIGIN[0] + SPEED * s / 111_195, ORIGIN[1] + east_m / 96_000) for s in range(seconds + 1)]


def write_gpx(path: Path, fixes) -> Path:
    gpx = gpxpy.gpx.GPX()
    seg = gpxpy.gpx.GPXTrackSegment([gpxpy.gpx.GPXTrackPoint(lat, lon, time=t) for t, lat, lon in fixes])
    gpx.tracks.append(gpxpy.gpx.GPXTrack())
    gpx.tracks[0].segments.append(seg)
    path.write_text(gpx.to_xml(), encoding="utf-8")
    return path


def write_nmea(path: Path, fixes) -> Path:
    lines = []
    for t, lat, lon in fixes:
        dm = lambda v, w: f"{int(v):0{w}d}{(v - int(v)) * 60:07.4f}"  # noqa: E731
        msg = pynmea2.RMC("GP", "RMC", (t.strftime("%H%M%S.00"), "A", dm(lat, 2), "N", dm(lon, 3), "E", "9.7", "0.0",
                                         t.strftime("%d%m%y"), "", ""))
        lines += [str(msg), "$GPGSV,garbage-line-the-parser-skips"]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def write_srt(path: Path, fixes, start: datetime, *, wall_clock: bool = True) -> Path:
    """DJI-style subtitles: one block per second with the local time (unless not `wall_clock`) and [latitude: ..] [longitude: ..]."""
    blocks = [srt.Subtitle(i + 1, t - start, t - start + timedelta(seconds=1),
                           f"FrameCnt: {i}\n" + (f"{t.astimezone(TZ):%Y-%m-%d %H:%M:%S}.000\n" if wall_clock else "")
                           + f"[latitude: {lat:.7f}] [longitude: {lon:.7f}] [rel_alt: 1.2]")
              for i, (t, lat, lon) in enumerate(fixes)]
    path.write_text(srt.compose(blocks), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory, bus_jpg) -> Path:
    """30 s at 2 fps: the parked bus is in view for the first 12 s of the drive, then an empty kerb."""
    folder = tmp_path_factory.mktemp("patrol")
    bus = Sprite(cut(bus_jpg, BUS_BOX), x=0.5, bottom=0.95, height=0.55, start_s=0, end_s=12)
    write_clip(folder / "drive.mp4", road_view(bus_jpg, (640, 360)), [bus], 30, fps=2, start=START, osd=False)
    return folder / "drive.mp4"


def _grid(path: Path) -> Path:
    lat0, lon0 = ORIGIN
    ring = [[lon0 - 0.001, lat0 - 0.001], [lon0 + 0.001, lat0 - 0.001], [lon0 + 0.001, lat0 + 0.003], [lon0 - 0.001, lat0 + 0.003],
            [lon0 - 0.001, lat0 - 0.001]]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": {"id": "330106002003"}}]}))
    return path


def _deployment(tmp: Path) -> Settings:
    return Settings(cases={"url": f"sqlite:///{tmp}/cases.db"},
                    evidence_store={"local_root": str(tmp / "evidence"), "spool_dir": str(tmp / "spool")})


def test_gpx_nmea_and_srt_tracks_give_the_same_positions(tmp_path):
    fixes = _fixes(START, 30)
    gpx = load_track(write_gpx(tmp_path / "t.gpx", fixes), TZ)
    nmea = load_track(write_nmea(tmp_path / "t.nmea", fixes), TZ)
    subs = load_track(write_srt(tmp_path / "t.srt", fixes, START), TZ)
    assert len(gpx.fixes) == len(nmea.fixes) == len(subs.fixes) == 31 and subs.start == START
    for s in (0.0, 7.5, 29.0):
        a, b, c = gpx.at(START + timedelta(seconds=s)), nmea.at(START + timedelta(seconds=s)), subs.at(s)
        assert abs(a.lat - b.lat) < 1e-5 and abs(a.lon - b.lon) < 1e-5 and abs(a.lat - c.lat) < 1e-6
    assert gpx.at(START - timedelta(seconds=1)) is None and subs.at(31.5) is None


def test_broken_fixes_are_skipped_not_fatal_or_placed(tmp_path):
    """Checksummed RMC lines with an unreadable date or time crashed the reader (TypeError); ones with
    no position (0, 0) or an impossible one (99°N), and such GPX points, were placed on the map."""
    fixes = _fixes(START, 10)
    path = write_nmea(tmp_path / "t.nmea", fixes)
    broken = [("020003.50", "A", "3016.2000", "N", "12009.3000", "E", "9.7", "0.0", "320325", "", ""),  # 32 March
              ("256104.50", "A", "3016.2000", "N", "12009.3000", "E", "9.7", "0.0", "201126", "", ""),  # 25:61
              ("010004.50", "A", "", "N", "", "E", "9.7", "0.0", "201126", "", ""),  # no position yet
              ("010005.50", "A", "9959.0000", "N", "12009.3000", "E", "9.7", "0.0", "201126", "", "")]  # 99.98°N
    lines = path.read_text().splitlines() + [str(pynmea2.RMC("GP", "RMC", b)) for b in broken]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    track = load_track(path, TZ)
    assert len(track.fixes) == 11 and all(30 < f.lat < 31 and 120 < f.lon < 121 for f in track.fixes)

    gpx = write_gpx(tmp_path / "t.gpx", [*fixes[:5], (START + timedelta(seconds=5.5), 300.27, ORIGIN[1]), *fixes[5:]])
    track = load_track(gpx, TZ)
    assert len(track.fixes) == 11 and all(30 < f.lat < 31 for f in track.fixes)


def _gpslogger_gpx(fixes, untimed: set[int] = frozenset()) -> str:
    """A track as GPSLogger for Android writes it (GPX 1.0, one line); the points numbered in `untimed` without <time>."""
    points = "".join(f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>12.0</ele>'
                     + ("" if i in untimed else f"<time>{t:%Y-%m-%dT%H:%M:%S}.000Z</time>")
                     + "<course>0.0</course><speed>5.0</speed><src>gps</src><sat>9</sat></trkpt>" for i, (t, lat, lon) in enumerate(fixes))
    return ('<?xml version="1.0" encoding="UTF-8" standalone="yes" ?><gpx version="1.0" creator="GPSLogger 131 - '
            'http://gpslogger.mendhak.com/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns="http://www.topografix.com/GPX/1/0" '
            'xsi:schemaLocation="http://www.topografix.com/GPX/1/0 http://www.topografix.com/GPX/1/0/gpx.xsd">'
            f"<time>{fixes[0][0]:%Y-%m-%dT%H:%M:%S}.000Z</time><trk><trkseg>{points}</trkseg></trk></gpx>")


def test_a_gpx_point_without_time_is_skipped_and_said(tmp_path, clip):
    """One point without <time> refused the whole track; it is skipped, and the run says how many were."""
    path = tmp_path / "drive.gpx"
    path.write_text(_gpslogger_gpx(_fixes(START, 30), untimed={7}), encoding="utf-8")
    track = load_track(path, TZ)
    assert len(track.fixes) == 30
    sampled = sample_video(clip, track, tmp_path / "frames", every_m=1000, every_s=5, tz=TZ)
    assert sampled.messages == [f"{path}: 1 of 31 track points have no <time> (the first at 30.2703148, 120.155) and were "
                                "skipped; the frames are placed on the others"] and sampled.skipped == 0

    path.write_text(_gpslogger_gpx(_fixes(START, 30), untimed=set(range(31))), encoding="utf-8")
    with pytest.raises(TrackError, match=r"drive\.gpx: none of its 31 track points has a <time>"):
        load_track(path, TZ)


def test_gpx_waypoints_and_routes_are_not_a_track(tmp_path):
    """A GPX of waypoints or a planned route (what a map app exports as 'favourites' or 'route') said 'no GPS fixes in
    the file'; it says what the file holds and what a patrol needs."""
    head = ('<?xml version="1.0" encoding="UTF-8"?>\n<gpx version="1.1" creator="OsmAnd~ 4.6.8" xmlns="http://www.topografix.com/GPX/1/1" '
            'xmlns:osmand="https://osmand.net" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xsi:schemaLocation="http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd">\n'
            '  <metadata>\n    <name>favourites</name>\n  </metadata>\n')
    (tmp_path / "favourites.gpx").write_text(head + "".join(
        f'  <wpt lat="{lat:.6f}" lon="{lon:.6f}">\n    <name>{name}</name>\n    <type>城管</type>\n  </wpt>\n'
        for name, (_, lat, lon) in zip(("文三路口", "学院路口"), _fixes(START, 1))) + "</gpx>\n", encoding="utf-8")
    with pytest.raises(TrackError, match=r"favourites\.gpx: no track points \(<trkpt>\), only 2 waypoint\(s\) \(<wpt>\), places without "
                                         r"the times they were passed: a patrol needs the recorded track, <trk> with <trkpt>"):
        load_track(tmp_path / "favourites.gpx", TZ)
    (tmp_path / "route.gpx").write_text(head + '  <rte>\n    <name>巡查路线</name>\n' + "".join(
        f'    <rtept lat="{lat:.6f}" lon="{lon:.6f}"/>\n' for _, lat, lon in _fixes(START, 4)) + "  </rte>\n</gpx>\n", encoding="utf-8")
    with pytest.raises(TrackError, match=r"route\.gpx: no track points \(<trkpt>\), only 1 route\(s\) \(<rte>\) of 5 point\(s\)"):
        load_track(tmp_path / "route.gpx", TZ)


def test_an_nmea_log_of_gga_only_asks_for_rmc(tmp_path):
    """A receiver logging only GGA (time of day, no date) was 'no GPS fixes in the file'; it names the missing RMC."""
    lines = []
    for t, lat, lon in _fixes(START, 5):
        dm = lambda v, w: f"{int(v):0{w}d}{(v - int(v)) * 60:07.4f}"  # noqa: E731
        lines += [str(pynmea2.GGA("GP", "GGA", (t.strftime("%H%M%S.00"), dm(lat, 2), "N", dm(lon, 3), "E", "1", "09", "0.9",
                                                 "12.3", "M", "7.1", "M", "", ""))),
                  str(pynmea2.GSA("GP", "GSA", ("A", "3", "02", "05", "12", "13", "15", "18", "20", "25", "29", "", "", "", "1.6", "0.9", "1.3")))]
    (tmp_path / "ublox.nmea").write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    with pytest.raises(TrackError, match=r"ublox\.nmea: no RMC sentences, the ones with a date: its 6 GGA sentence\(s\) give the "
                                         r"time of day but no date"):
        load_track(tmp_path / "ublox.nmea", TZ)


def test_an_nmea_log_without_a_fix_says_the_receiver_never_had_one(tmp_path):
    """A receiver that never got a fix logs RMC sentences of status V (no position): that was the generic 'no GPS fixes
    in the file', as if the file were of the wrong kind; it names its RMC sentences and their status."""
    lines = []
    for t, _, _ in _fixes(START, 4):
        lines += [str(pynmea2.RMC("GP", "RMC", (t.strftime("%H%M%S.00"), "V", "", "", "", "", "", "", t.strftime("%d%m%y"), "", "", "N"))),
                  str(pynmea2.GSV("GP", "GSV", ("1", "1", "00")))]
    (tmp_path / "indoors.nmea").write_text("\r\n".join(lines) + "\r\n", encoding="ascii")
    with pytest.raises(TrackError, match=r"indoors\.nmea: its 5 RMC sentence\(s\) are all without a fix \(status V\): the receiver "
                                         r"never had a position while it logged"):
        load_track(tmp_path / "indoors.nmea", TZ)


def test_patrol_video_becomes_one_case_and_a_second_patrol_does_not_double_it(tmp_path, clip, onnx_detector, monkeypatch):
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    deployment = _deployment(tmp_path)
    grid = _grid(tmp_path / "grid.geojson")
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    # a bus driving on the road is no parking violation to the verifier: this test pins the patrol's
    # sampling, placing and case grouping on the detector classes alone (`verifier: none`)
    settings = TriageSettings(out=tmp_path / "p1", grid=grid, cases=True, ocr="off", verifier="none")
    first = run_patrol(clip, track, settings, every_m=10, every_s=5, detector=onnx_detector, deployment=deployment,
                       show_progress=False)

    s = first.summary
    assert s["frames"] == 15 and s["skipped_without_position"] == 0 and s["messages"] == []  # 150 m driven, a frame per 10 m
    assert s["video_span"] == ("2026-11-20 09:00:00", "2026-11-20 09:00:29")
    parking = [g for g in first.triage.groups if g.type == "illegal_parking"]
    assert len(parking) == 1 and len(parking[0].members) >= 4  # the bus in successive frames: one case
    store = CaseStore(deployment.cases.url)
    [case] = [c for c in store.list() if c.violation_type == "illegal_parking"]
    assert case.grid_cell == "330106002003" and case.source_id == "patrol:drive" and case.id in s["cases"]
    assert 30.2700 <= case.lat <= 30.2706 and abs(case.lon - ORIGIN[1]) < 1e-6
    assert case.first_seen_at == START and case.opened_at < START + timedelta(seconds=12)

    # An hour later another car drives the same street 3 m further east: the bus is still there.
    later = START + timedelta(hours=1)
    track2 = write_gpx(tmp_path / "drive2.gpx", _fixes(later, 30, east_m=3))
    second = run_patrol(clip, track2, settings.model_copy(update={"out": tmp_path / "p2"}), every_m=10, every_s=5, start=later,
                        detector=onnx_detector, deployment=deployment, show_progress=False)
    assert [a["case_id"] for a in second.already_open] == [case.id] and second.summary["cases"] == []
    assert len([c for c in store.list() if c.violation_type == "illegal_parking"]) == 1
    # The other car's video has the same name: its batch is its own (patrol:drive, shared, let a resume of one withdraw
    # the other's cases), chosen as triage's is and kept in its folder for its resumes.
    assert [json.loads((tmp_path / p / "batch.json").read_text())["batch_id"] for p in ("p1", "p2")] == [
        "patrol:drive", "patrol:drive-2"]


@pytest.mark.slow  # 4-5 s: 16 frames judged and 5 evidence bundles signed
def test_a_street_of_violations_is_several_cases_and_a_case_open_at_its_start_takes_only_its_own(tmp_path, bus_jpg, onnx_detector,
                                                                                                  monkeypatch):
    """QA: 30 s at 10 m/s with a violation in view the whole way (frames 10 m apart over 300 m; here 20 m apart, half
    the frames to judge), each frame within the 30 m radius of the next, was one group; a camera case open at its start made the whole stretch 'already
    open' and nothing further on got a case. A group now spans at most `group_span_m` (60 m), and a case open near
    one group's place takes that group alone."""
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    deployment = _deployment(tmp_path)
    store = CaseStore(deployment.cases.url)
    camera = store.create_case(NewCase(violation_type="illegal_parking", source_kind="camera", source_id="cam-07",
                                       lat=ORIGIN[0] + 20 / 111_195, lon=ORIGIN[1]))  # 20 m along the street
    bus = Sprite(cut(bus_jpg, BUS_BOX), x=0.5, bottom=0.95, height=0.55, start_s=0, end_s=31)
    write_clip(tmp_path / "street.mp4", road_view(bus_jpg, (640, 360)), [bus], 31, fps=2, start=START, osd=False)
    track = write_gpx(tmp_path / "street.gpx", [(START + timedelta(seconds=s), ORIGIN[0] + 10 * s / 111_195, ORIGIN[1])
                                                for s in range(31)])
    settings = TriageSettings(out=tmp_path / "p", cases=True, ocr="off", verifier="none")
    run = run_patrol(tmp_path / "street.mp4", track, settings, every_m=20, every_s=5, detector=onnx_detector,
                     deployment=deployment, show_progress=False)

    assert run.summary["frames"] == 16
    parking = [g for g in run.triage.groups if g.type == "illegal_parking"]
    assert len(parking) >= 4 and sum(len(g.members) for g in parking) >= 12
    assert all(within_span(g.members, 60) for g in parking)
    taken = [g for g in parking if distance_m(g.placed, camera) <= 30]  # the group placed at the camera's spot alone
    assert len(taken) == 1 and [a["case_id"] for a in run.already_open] == [camera.id]
    made = [c for c in store.list() if c.violation_type == "illegal_parking" and c.id != camera.id]
    assert len(made) == len(parking) - 1 and sorted(c.id for c in made) == sorted(run.summary["cases"])
    assert max(distance_m(c, camera) for c in made) > 200  # the far end of the street has its case


def test_bad_tracks_are_named_and_what_can_be_placed_is_processed(tmp_path, clip, onnx_detector):
    settings = TriageSettings(out=tmp_path / "short", cases=False, ocr="off")
    short = write_gpx(tmp_path / "short.gpx", _fixes(START, 20))  # the track ends 10 s before the video
    result = run_patrol(clip, short, settings, every_m=10, every_s=5, detector=onnx_detector, deployment=_deployment(tmp_path),
                        show_progress=False)
    [message] = result.summary["messages"]
    assert "short.gpx: the track does not cover the whole video" in message
    assert "track covers 2026-11-20 09:00:00 - 2026-11-20 09:00:20, video runs 2026-11-20 09:00:00 - 2026-11-20 09:00:29" in message
    assert "9.5 s of video without a position" in message and result.summary["frames"] == 11
    assert result.triage.tally.ok == 11

    elsewhere = write_gpx(tmp_path / "yesterday.gpx", _fixes(START - timedelta(days=1), 30))
    with pytest.raises(PatrolError, match=r"yesterday\.gpx: the track does not cover the video's time span at all \(track 2026-11-19"):
        run_patrol(clip, elsewhere, settings.model_copy(update={"out": tmp_path / "b"}), every_m=10, every_s=5,
                   detector=onnx_detector, deployment=_deployment(tmp_path), show_progress=False)
    with pytest.raises(PatrolError, match=r"drive\.mp4: no GPS track: give --track FILE"):
        run_patrol(clip, None, settings.model_copy(update={"out": tmp_path / "c"}), every_m=10, every_s=5,
                   detector=onnx_detector, deployment=_deployment(tmp_path), show_progress=False)
    (tmp_path / "empty.nmea").write_text("$GPGSV,1,1,00*79\n")
    with pytest.raises(PatrolError, match=r"empty\.nmea: no GPS fixes in the file"):
        run_patrol(clip, tmp_path / "empty.nmea", settings.model_copy(update={"out": tmp_path / "d"}), every_m=10, every_s=5,
                   detector=onnx_detector, deployment=_deployment(tmp_path), show_progress=False)


def test_a_patrol_without_an_evidence_key_warns_once_that_it_writes_the_report_only(tmp_path, clip, onnx_detector, monkeypatch,
                                                                                    caplog):
    """With `cases` unset and no evidence key, the patrol's case writer warned `no candidate cases written, report
    only` and triage, given no writer, opened the case store again to warn the same line a second time."""
    monkeypatch.delenv("STREETWATCH_EVIDENCE_KEY", raising=False)
    settings = TriageSettings(out=tmp_path / "patrol-out", ocr="off", verifier="none")
    with caplog.at_level("WARNING"):
        result = run_patrol(clip, write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)), settings, every_m=100, every_s=15,
                            detector=onnx_detector, deployment=_deployment(tmp_path), show_progress=False)
    said = [r.getMessage() for r in caplog.records if "no candidate cases written" in r.getMessage()]
    assert len(said) == 1 and "STREETWATCH_EVIDENCE_KEY is not set" in said[0], said
    assert result.summary["frames"] > 0 and result.summary["cases"] == []


def test_a_second_run_into_the_same_folder_is_refused_before_sampling(tmp_path, clip, onnx_detector):
    """The default --out is one folder: a second patrol wrote its frames beside the first one's, then triage
    refused the folder asking for a --resume patrol does not have, and the frames of both runs stayed mixed."""
    settings = TriageSettings(out=tmp_path / "patrol-out", cases=False, ocr="off", verifier="none")
    run_patrol(clip, write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)), settings, every_m=10, every_s=5,
               detector=onnx_detector, deployment=_deployment(tmp_path), show_progress=False)
    frames = sorted(p.name for p in (tmp_path / "patrol-out" / "frames").iterdir())
    later = write_gpx(tmp_path / "later.gpx", _fixes(START + timedelta(seconds=10), 30))
    with pytest.raises(PatrolError, match=r"patrol-out: already holds a run \(frames, results\.jsonl\): pass --resume to take up a "
                                          r"stopped run, choose another --out"):
        run_patrol(clip, later, settings, every_m=10, every_s=5, detector=onnx_detector, deployment=_deployment(tmp_path),
                   show_progress=False)
    assert sorted(p.name for p in (tmp_path / "patrol-out" / "frames").iterdir()) == frames


def test_a_run_stopped_while_sampling_is_resumed_by_sampling_afresh(tmp_path, clip, onnx_detector):
    """`resume` (the service taking up a job after a restart): a run stopped while sampling had judged nothing, and
    its frames are sampled again; one that judged frames but kept no record of its sampling (sampled.json, from
    before runs could be resumed) is refused rather than its frames judged anew."""
    settings = TriageSettings(out=tmp_path / "out", cases=False, ocr="off", verifier="none")
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    frames = tmp_path / "out" / "frames"
    frames.mkdir(parents=True)
    (frames / "frame-00000-t00000.00.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut off")  # the frame being written when it stopped
    result = run_patrol(clip, track, settings, every_m=10, every_s=5, detector=onnx_detector, deployment=_deployment(tmp_path),
                        show_progress=False, resume=True)
    assert result.summary["frames"] == 15 and result.triage.tally.ok == 15 and result.triage.tally.errors == 0
    assert len(list(frames.iterdir())) == 15

    (tmp_path / "out" / "sampled.json").unlink()
    with pytest.raises(CannotResume, match=r"out: cannot be resumed: frames were judged \(results\.jsonl\) but the run kept no "
                                           r"sampled\.json of its sampling"):
        run_patrol(clip, track, settings, every_m=10, every_s=5, detector=onnx_detector, deployment=_deployment(tmp_path),
                   show_progress=False, resume=True)


def test_a_damaged_video_is_sampled_around_the_damage(tmp_path, clip):
    """Bytes lost in the middle of the file (a damaged card): the pictures that decode are sampled and
    the damage is reported; the decoder's error used to end the run with a traceback."""
    data = bytearray(clip.read_bytes())
    data[len(data) // 3: len(data) // 3 + len(data) // 4] = b"\xff" * (len(data) // 4)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    track = load_track(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)), TZ)
    sampled = sample_video(damaged, track, tmp_path / "frames", every_m=1000, every_s=5, tz=TZ)
    assert [float(p.stem.split("-t")[1]) for p in sampled.frames][-1] >= 25  # the end of the drive is there
    assert sampled.bad_packets > 0 and sampled.video_span[1] == "2026-11-20 09:00:29"
    [message] = sampled.messages
    assert message.startswith(f"{damaged}: {sampled.bad_packets} damaged packet(s) skipped")

    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(PatrolError, match=r"empty\.mp4: not a readable video"):
        sample_video(tmp_path / "empty.mp4", track, tmp_path / "f2", every_m=10, every_s=5, tz=TZ)


def test_a_portrait_phone_video_is_sampled_upright(tmp_path, clip):
    """The frames of a video with a display rotation (a phone held upright) are written as it plays."""
    from detect.imageio import read_image

    portrait = rotated_copy(clip, tmp_path / "portrait.mp4")
    track = load_track(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30)), TZ)
    sampled = sample_video(portrait, track, tmp_path / "frames", every_m=1000, every_s=30, tz=TZ, start=START)
    image = read_image(sampled.frames[0])
    played = played_picture(portrait, tmp_path)
    assert image.shape == played.shape == (640, 360, 3)
    assert np.abs(image.astype(int) - played).mean() < 4  # JPEG-encoded: the same picture, upright


def test_a_dashcam_ts_is_timed_from_its_first_frame(tmp_path, clip):
    """An MPEG-TS's timestamps start where its recorder's clock stood (here 101.4 s): its SRT's blocks and
    --start count from the first frame, which was placed at 101.4 s, so nothing matched the SRT."""
    video = ts_copy(clip, tmp_path / "drive.ts", 100)
    fixes = _fixes(START, 30)
    subs = load_track(write_srt(tmp_path / "drive.srt", fixes, START), TZ)
    sampled = sample_video(video, subs, tmp_path / "srt", every_m=1000, every_s=5, tz=TZ)
    assert sampled.frames[0].name == "frame-00000-t00000.00.jpg" and sampled.skipped == 0
    assert sampled.video_span == ("2026-11-20 09:00:00", "2026-11-20 09:00:29")

    gpx = load_track(write_gpx(tmp_path / "drive.gpx", fixes), TZ)
    sampled = sample_video(video, gpx, tmp_path / "gpx", every_m=1000, every_s=5, tz=TZ, start=START)
    assert sampled.video_span == ("2026-11-20 09:00:00", "2026-11-20 09:00:29") and sampled.skipped == 0


def test_a_creation_time_tag_of_a_clock_never_set_is_no_start_time(tmp_path, clip):
    """A dashcam whose clock was never set tags its files 2000-01-01 00:00 (or 1980, or a time to come): with an
    SRT that places the frames but names no time, every frame and case was dated so; now the run stops asking for
    --start, and a tag that can be the start is still used."""
    subs = load_track(write_srt(tmp_path / "drive.srt", _fixes(START, 30), START, wall_clock=False), TZ)
    assert subs.start is None
    for tag, why in (("2000-01-01T00:00:00Z", "a camera's clock never set"), ("1980-01-01T00:00:00Z", "is before 2000"),
                     ("2099-01-01T00:00:00Z", "is in the future")):
        video = retagged_copy(clip, tmp_path / "unset.mp4", tag)
        with pytest.raises(PatrolError, match=rf"unset\.mp4: no start time: 'creation_time tag': .*{why}; give --start"):
            sample_video(video, subs, tmp_path / "frames", every_m=1000, every_s=5, tz=TZ)
    sampled = sample_video(clip, subs, tmp_path / "frames", every_m=1000, every_s=5, tz=TZ)
    assert sampled.video_span == ("2026-11-20 09:00:00", "2026-11-20 09:00:29")


def test_patrol_command_with_a_dashcam_srt_beside_the_video(tmp_path, clip):
    import shutil
    import subprocess
    import sys

    from tests.conftest import REPO

    video = tmp_path / "cam" / "drive.mp4"
    video.parent.mkdir()
    shutil.copyfile(clip, video)
    write_srt(video.with_suffix(".srt"), _fixes(START, 30), START)
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "patrol", str(video), "--out", str(tmp_path / "out"),
                          "--no-cases", "--no-progress", "--ocr", "off", "--verifier", "none", "--every-m", "25"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "6 frames sampled along the track (0 skipped without a position)" in run.stdout
    summary = json.loads((tmp_path / "out" / "patrol.json").read_text())
    assert summary["track"].endswith("drive.srt") and summary["groups"] >= 1


def test_patrol_summary_says_what_became_of_the_evidence_spool(tmp_path, clip):
    """A patrol run retries the evidence spool (triage's `finish`), but its summary had no word of it, neither in
    patrol.json nor printed: with storage down its own bundle waited unsaid. It says it as triage does."""
    import subprocess
    import sys

    from tests.conftest import REPO

    blocked = tmp_path / "evidence"
    blocked.write_text("a file where the evidence folder should be: every upload fails")
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps(_deployment(tmp_path).model_dump(mode="json")), encoding="utf-8")
    run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "patrol", str(clip), "--track",
                          str(write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))), "--out", str(tmp_path / "out"),
                          "--config", str(config), "--cases", "--no-progress", "--ocr", "off", "--verifier", "none",
                          "--every-m", "25"], capture_output=True, text=True, cwd=REPO, timeout=300,
                         env={**os.environ, "STREETWATCH_EVIDENCE_KEY": KEY, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "patrol.json").read_text(encoding="utf-8"))
    spool = summary["spool"]
    assert summary["cases"] and (spool["uploaded"], spool["waiting"]) == (0, len(summary["cases"]))
    assert sorted(w["case_id"] for w in spool["waiting_cases"]) == sorted(summary["cases"])
    assert all(w["reason"].startswith("evidence upload failed, will retry: case ") for w in spool["waiting_cases"])
    n = len(summary["cases"])
    assert f"evidence spool: {n} bundle{'' if n == 1 else 's'} still waiting for the evidence store:" in run.stdout, run.stdout
    assert f"  {summary['cases'][0]}: evidence upload failed, will retry: " in run.stdout


@pytest.mark.slow  # three patrol runs of a real video through the CLI
def test_patrol_command_resumes_a_stopped_run(tmp_path, clip):
    """`run_patrol(resume=True)` took up the service's jobs after a restart, but the command had no --resume: a run
    killed while judging could only be run again into another folder, judging every frame anew. `--resume` with the
    same --out takes it up, its frames not sampled again and each judged once, and refuses with the reason a folder
    that holds no run and a video or track that is not the stopped run's."""
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    out = tmp_path / "out"

    def command(*args: str, video: Path = clip, track: Path = track) -> list[str]:
        return [sys.executable, "-m", "streetwatch.cli", "patrol", str(video), "--track", str(track), "--no-cases", "--no-progress",
                "--ocr", "off", "--verifier", "none", "--every-m", "1", *args]  # every picture: 60 frames to judge

    def run(*args: str, **files: Path) -> subprocess.CompletedProcess:
        return subprocess.run(command(*args, **files), capture_output=True, text=True, cwd=REPO, timeout=300)

    with (tmp_path / "first.log").open("wb") as log:
        first = subprocess.Popen(command("--out", str(out)), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        results = out / "results.jsonl"
        deadline = time.monotonic() + 240
        while not (results.is_file() and results.read_bytes().count(b"\n")) and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        first.kill()  # as a power cut would: nothing is let finish
        first.wait()
    frames = {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    judged = results.read_bytes().count(b"\n")
    assert 0 < judged < len(frames) == 60, (judged, len(frames), (tmp_path / "first.log").read_text()[-2000:])

    nothing = run("--out", str(tmp_path / "elsewhere"), "--resume")
    assert nothing.returncode != 0 and (f"{tmp_path / 'elsewhere'}: nothing to resume: no patrol run was started there "
                                        "(no frames/, sampled.json or results.jsonl); run without --resume") in nothing.stderr, nothing.stderr
    other = ts_copy(clip, tmp_path / "other.ts", 0)
    for files, why in (({"video": other}, f"cannot be resumed with {other}: the stopped run there sampled another video ({clip})"),
                       ({"track": write_gpx(tmp_path / "later.gpx", _fixes(START, 30, east_m=3))},
                        f"cannot be resumed with {tmp_path / 'later.gpx'}: the stopped run there sampled another track ({track})")):
        refused = run("--out", str(out), "--resume", **files)
        assert refused.returncode != 0 and f"{out}: {why}" in refused.stderr, refused.stderr[-2000:]
    again = run("--out", str(out))
    assert again.returncode != 0 and "already holds a run (frames, results.jsonl): pass --resume" in again.stderr, again.stderr[-2000:]

    resumed = run("--out", str(out), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "60 frames sampled along the track (0 skipped without a position)" in resumed.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == frames  # not sampled again
    sources = [json.loads(line)["source"] for line in results.read_text(encoding="utf-8").splitlines()]
    assert len(sources) == len(set(sources)) == 60  # each judged once
    assert json.loads((out / "patrol.json").read_text(encoding="utf-8"))["frames"] == 60


def test_a_resume_with_other_sampling_values_is_refused_naming_both(tmp_path, clip):
    """--resume kept the stopped run's frames, sampled with its --every-m, --every-s and --start, whatever the resume
    passed, and the run then looked as if it had sampled with those. A value given that is not the stopped run's is
    refused naming both (the start as the frames were timed, here from the video's own tag); the same values, or none,
    take the run up, as does a sampled.json of an earlier release, which kept none to compare."""
    from typer.testing import CliRunner

    from pipelines.cityops.patrol import SAMPLED, sample_once
    from streetwatch.cli import app

    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    out = tmp_path / "out"
    stopped = sample_once(clip, load_track(track, TZ), out, resume=False, tz=TZ, every_m=10, every_s=5)  # sampling over
    assert stopped.sampling == {"every_m": 10, "every_s": 5, "start": START.isoformat()}  # no --start: the video's tag
    for args, why in ((["--every-m", "20"], "with --every-m 20: the stopped run there sampled its frames with --every-m 10; "
                                            "resume without --every-m (or with 10), or run into another --out"),
                      (["--every-s", "2.5"], "with --every-s 2.5: the stopped run there sampled its frames with --every-s 5; "),
                      (["--start", "2026-11-20 09:00:05"], "with --start 2026-11-20 09:00:05+08:00: the stopped run there timed its "
                                                           "frames from a first frame at 2026-11-20 09:00:00+08:00; resume without --start")):
        refused = CliRunner().invoke(app, ["patrol", str(clip), "--track", str(track), "--out", str(out), "--resume", "--no-cases",
                                           "--no-progress", "--timezone", "Asia/Shanghai", *args])
        assert refused.exit_code == 2 and f"{out}: cannot be resumed {why}" in refused.stderr, refused.stderr

    frames = {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    for given in ({"every_m": 10.0, "every_s": 5, "start": START.astimezone(TZ)}, {}):
        resumed = sample_once(clip, load_track(track, TZ), out, resume=True, tz=TZ, every_m=99, every_s=99, given=given)
        assert resumed.frames == stopped.frames and resumed.sampling == stopped.sampling
    kept = json.loads((out / SAMPLED).read_text(encoding="utf-8"))
    del kept["sampling"]  # as an earlier release kept it
    (out / SAMPLED).write_text(json.dumps(kept), encoding="utf-8")
    older = sample_once(clip, load_track(track, TZ), out, resume=True, tz=TZ, every_m=20, every_s=5, given={"every_m": 20})
    assert older.frames == stopped.frames and older.sampling is None
    assert {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == frames  # never sampled again


@pytest.mark.slow  # 8 s: three patrol CLI runs; the default suite's ~15-minute budget
def test_patrol_command_refuses_a_start_the_video_cannot_have(tmp_path, clip):
    """--start is read by the rule the service's form field is (`given_start`): a time in the future or before 2000
    would date every frame and case so."""
    import subprocess
    import sys

    from tests.conftest import REPO

    for start, why in (("2099-01-01 09:00:00", "'--start': 2099-01-01T09:00:00+08:00 is in the future"),
                       ("1999-12-31T23:00:00+00:00", "'--start': 1999-12-31T23:00:00+00:00 is before 2000")):
        run = subprocess.run([sys.executable, "-m", "streetwatch.cli", "patrol", str(clip), "--start", start, "--timezone", "Asia/Shanghai",
                              "--out", str(tmp_path / "out"), "--no-cases", "--no-progress"], capture_output=True, text=True, cwd=REPO, timeout=300)
        assert run.returncode != 0 and why in run.stderr, run.stderr[-2000:]
        assert not (tmp_path / "out").exists()


def test_a_video_of_frames_larger_than_a_photo_may_be_is_refused_at_the_start(tmp_path, monkeypatch):
    """A video declaring huge frames (16,384 x 16,384) was decoded frame by frame, 800 MB a picture, without the pixel
    limit every photo has; it is refused at the start naming the file, its frames' size and the limit (a real 320 x 240
    video here, the limit lowered below it), for the command and the service's job alike (both run run_patrol)."""
    from pipelines.cityops import patrol

    video = pattern_video(tmp_path / "huge.mp4", 320, 240, START.isoformat())
    track = write_gpx(tmp_path / "huge.gpx", _fixes(START, 30))
    monkeypatch.setattr(patrol, "MAX_FRAME_PIXELS", 320 * 240 - 1)
    settings = TriageSettings(out=tmp_path / "out", cases=False, ocr="off", verifier="none")
    with pytest.raises(PatrolError) as refused:
        run_patrol(video, track, settings, deployment=_deployment(tmp_path), show_progress=False)
    assert str(refused.value) == (f"{video}: frames of 320 x 240 pixels (76,800), more than the 76,799 a picture may have "
                                  "(a photo's limit): refused")
    assert list((tmp_path / "out" / "frames").glob("*.jpg")) == []
    monkeypatch.setattr(patrol, "MAX_FRAME_PIXELS", 320 * 240)  # at the limit: sampled
    sampled = sample_video(video, load_track(track, TZ), tmp_path / "ok", every_m=1000, every_s=1, tz=TZ)
    assert len(sampled.frames) >= 2


def test_patrol_with_cases_refuses_an_evidence_key_it_cannot_use_before_sampling(tmp_path, clip, monkeypatch):
    """A key variable shorter than 16 bytes, or a key file the settings name that does not load, was taken as no key:
    the patrol warned and ran report-only, every case unwritten. It is refused as triage refuses it (one check), naming
    the variable or the field, before a frame is sampled; --no-cases runs the report only."""
    from typer.testing import CliRunner

    from streetwatch.cli import app

    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"evidence:\n  hmac_key_file: {tmp_path / 'missing.key'}\n", encoding="utf-8")
    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", "short-key")
    for args, why in (([], "environment variable STREETWATCH_EVIDENCE_KEY: evidence key has 9 bytes; use at least 16"),
                      (["--config", str(settings)], "evidence.hmac_key_file: ")):
        out = tmp_path / f"out{len(args)}"
        refused = CliRunner().invoke(app, ["patrol", str(clip), "--track", str(track), "--out", str(out), "--no-progress", *args])
        assert refused.exit_code == 2 and why in refused.stderr and "--no-cases" in refused.stderr, refused.stderr
        assert not out.exists()


@pytest.mark.slow  # 8 s: a patrol process signalled mid-work
def test_patrol_stopped_while_judging_says_to_resume_as_triage_does(tmp_path, clip):
    """Ctrl-C or SIGTERM while patrol's triage judged its frames gave the generic 'interrupted (已中断)' line, which
    says nothing of --resume; it says what was recorded and to run again with --resume, as triage does."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"out-{sig.name}"
        results = out / "results.jsonl"
        proc = subprocess.Popen([sys.executable, "-m", "streetwatch.cli", "patrol", str(clip), "--track", str(track), "--out", str(out),
                                 "--no-cases", "--no-progress", "--ocr", "off", "--verifier", "none", "--every-m", "1"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not (results.is_file() and results.read_bytes().count(b"\n")) and proc.poll() is None:
            time.sleep(0.02)
        running = proc.poll() is None
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
        assert running, ("the run finished (or failed) before it could be stopped", stderr[-2000:])
        assert proc.returncode == 128 + sig and "Traceback" not in stderr, (sig, stderr[-2000:])
        assert stderr.splitlines()[-1] == (f"error: interrupted: the frames finished so far are in {results}; "
                                           "run the same command with --resume to continue"), stderr[-2000:]


@pytest.mark.slow  # two patrol runs of a real video stopped by signals, then resumed
def test_patrol_stopped_while_sampling_says_to_resume(tmp_path, bus_jpg):
    """Ctrl-C or SIGTERM while patrol still sampled its video gave the generic 'interrupted (已中断)' line, though
    --resume takes such a run up (it samples afresh); it says nothing was judged yet and to run again with --resume."""
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    seconds = 300  # every frame sampled (--every-s 0.1): long enough to be stopped half way
    video = tmp_path / "long.mp4"
    write_clip(video, road_view(bus_jpg, (640, 360)), [], seconds, fps=4, start=START, osd=False)
    track = write_gpx(tmp_path / "long.gpx", _fixes(START, seconds))
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"out-{sig.name}"
        proc = subprocess.Popen([sys.executable, "-m", "streetwatch.cli", "patrol", str(video), "--track", str(track), "--out", str(out),
                                 "--no-cases", "--no-progress", "--ocr", "off", "--verifier", "none", "--every-m", "0.1", "--every-s", "0.1"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while not any((out / "frames").glob("*.jpg")) and proc.poll() is None:
            time.sleep(0.02)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=300)
        assert not (out / "sampled.json").exists(), ("sampling was over before it could be stopped", stderr[-2000:])
        assert proc.returncode == 128 + sig and "Traceback" not in stderr, (sig, stderr[-2000:])
        assert stderr.splitlines()[-1] == (f"error: interrupted: stopped while sampling the video into {out / 'frames'}, before "
                                           "any frame was judged; run the same command with --resume to continue"), stderr[-2000:]
    resumed = subprocess.run([sys.executable, "-m", "streetwatch.cli", "patrol", str(video), "--track", str(track), "--out", str(out),
                              "--no-cases", "--no-progress", "--ocr", "off", "--verifier", "none", "--resume", "--every-m", "300", "--every-s", "120"],
                             cwd=REPO, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and (out / "sampled.json").is_file(), resumed.stderr[-2000:]


def test_patrol_stopped_before_judging_or_in_its_report_says_what_a_resume_does(tmp_path, clip, monkeypatch):
    """Ctrl-C or SIGTERM once sampling was over but before a frame was judged (the model loading), or once every frame
    was judged while the cases and the report were written, gave the generic 'interrupted (已中断)' line, which says
    nothing of --resume; each says what was done and to run again with --resume, and a resume does what it says:
    the frames kept and judged, or none judged again and the cases written once."""
    from typer.testing import CliRunner

    from pipelines.triage import run as triage_run
    from streetwatch.cli import app

    monkeypatch.setenv("STREETWATCH_EVIDENCE_KEY", KEY)
    config = tmp_path / "streetwatch.json"
    config.write_text(json.dumps(_deployment(tmp_path).model_dump(mode="json")), encoding="utf-8")
    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))

    def patrol(out: Path, *args: str):
        return CliRunner().invoke(app, ["patrol", str(clip), "--track", str(track), "--out", str(out), "--config", str(config),
                                        "--no-progress", "--ocr", "off", "--verifier", "none", "--every-m", "25", *args])

    def stop(*_args, **_kw):
        raise KeyboardInterrupt  # as Ctrl-C there

    def judged(out: Path) -> list[str]:
        return [json.loads(line)["source"] for line in (out / "results.jsonl").read_text(encoding="utf-8").splitlines()]

    out = tmp_path / "before"
    with monkeypatch.context() as m:
        m.setattr(triage_run, "triage_detector", stop)
        stopped = patrol(out, "--no-cases")
    assert stopped.exit_code == 130 and stopped.stderr.splitlines()[-1] == (
        f"error: interrupted: stopped once the video was sampled into {out / 'frames'} (kept, with sampled.json), before its "
        "frames were judged; run the same command with --resume to continue"), stopped.stderr
    frames = {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()}
    assert len(frames) == 6 and not (out / "results.jsonl").is_file()
    resumed = patrol(out, "--no-cases", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "frames").iterdir()} == frames and sorted(judged(out)) == sorted(
        str((out / "frames" / name).absolute()) for name in frames)

    out = tmp_path / "report"
    with monkeypatch.context() as m:
        m.setattr(triage_run, "write_report", stop)
        stopped = patrol(out, "--cases")
    assert stopped.exit_code == 130 and stopped.stderr.splitlines()[-1] == (
        f"error: interrupted: every frame is recorded in {out / 'results.jsonl'}; stopped while writing the cases and the report, "
        "which a resume writes without judging a frame again (only those that failed are tried again); run the same command "
        "with --resume to continue"), stopped.stderr
    records, store = judged(out), CaseStore(_deployment(tmp_path).cases.url)
    drafted = sorted(c.id for c in store.list())
    assert len(records) == 6 and drafted and not (out / "report.html").exists()
    resumed = patrol(out, "--cases", "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert judged(out) == records and (out / "report.html").is_file()  # no frame judged again
    assert sorted(json.loads((out / "patrol.json").read_text(encoding="utf-8"))["cases"]) == drafted == sorted(c.id for c in store.list())


def test_patrol_stopped_once_its_frames_were_judged_says_they_are_recorded(tmp_path, clip, monkeypatch):
    """Ctrl-C or SIGTERM in the step between judging the frames and writing the report (triage's `judge_copies`, the
    copies of inputs replaced since looked up) said the frames were kept 'before its frames were judged', when every
    one was; it says they are recorded, as a stop while judging does, and the resume judges none again."""
    from typer.testing import CliRunner

    from pipelines.triage.journal import Journal
    from streetwatch.cli import app

    track = write_gpx(tmp_path / "drive.gpx", _fixes(START, 30))
    out = tmp_path / "out"

    def patrol(*args: str):
        return CliRunner().invoke(app, ["patrol", str(clip), "--track", str(track), "--out", str(out), "--no-cases",
                                        "--no-progress", "--ocr", "off", "--verifier", "none", "--every-m", "25", *args])

    def stop(*_args, **_kw):
        raise KeyboardInterrupt  # as Ctrl-C there

    with monkeypatch.context() as m:
        m.setattr(Journal, "copies_of_changed", stop)
        stopped = patrol()
    assert stopped.exit_code == 130 and stopped.stderr.splitlines()[-1] == (
        f"error: interrupted: the frames finished so far are in {out / 'results.jsonl'}; run the same command with --resume "
        "to continue"), stopped.stderr
    records = (out / "results.jsonl").read_text(encoding="utf-8")
    assert len(records.splitlines()) == 6 and not (out / "report.html").exists()
    resumed = patrol("--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert (out / "results.jsonl").read_text(encoding="utf-8") == records and (out / "report.html").is_file()
