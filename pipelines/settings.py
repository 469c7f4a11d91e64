"""Deployment settings: case store, evidence signing and storage, dispatch targets, the judgement's
defaults (rules, tracking, triage), analytics, the city workflows (cityops), the API service and the Ray
cluster (`--ray`).

One YAML/JSON file (`--config`, or `$STREETWATCH_CONFIG`) with one section per concern; every
section has working defaults (SQLite under `streetwatch-data/`, local evidence folder, no dispatch
targets), so a bare checkout runs without one. Secrets (HMAC key, S3 keys, dispatch tokens) are
never in the file: it names the environment variables that hold them; a PostgreSQL case store's
password is read by its client from $PGPASSWORD or ~/.pgpass, so `cases.url` need not carry it. `rules:` and `tracking:`
are the defaults of every camera; a camera in the cameras file changes the fields it sets
(`detect.config_io.overlay`). The top-level `timezone` is the city's: every section with a `timezone`
of its own that the file leaves unset follows it. `streetwatch config schema` writes this file's JSON schema.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, HttpUrl, model_validator

from detect.config_io import ConfigError, ConfigModel, load_model
from detect.evidence.config import EvidenceConfig
from detect.rules import RuleSettings
from detect.scenes import TimeZoneName
from detect.taxonomy import Taxonomy, ZoneKind, load_taxonomy
from detect.tracking import TrackingConfig
from pipelines.analytics.config import AnalyticsConfig
from pipelines.cases.store import DEFAULT_URL, CaseStore, PoolLimits, check_store_url, sqlite_file
from pipelines.dispatch.config import DispatchConfig
from pipelines.evidence_store import EvidenceStoreConfig, endpoint_named_by_setting, paths_named_by_setting

CONFIG_ENV = "STREETWATCH_CONFIG"
URL_KEY_ENV = "STREETWATCH_API_URL_KEY"
Section = TypeVar("Section", bound=ConfigModel)


class CaseStoreConfig(ConfigModel):
    url: Annotated[str, AfterValidator(check_store_url)] = Field(DEFAULT_URL, title="Database URL",
                     description="SQLAlchemy URL: sqlite:///path.db (default, WAL) or postgresql+psycopg://user@host/db "
                                 "(the password: $PGPASSWORD or ~/.pgpass where the command runs, not this file).",
                     min_length=1)
    pool_size: int = Field(PoolLimits.pool_size, title="Connections kept", ge=1, le=1000,
                           description="Connections to the database each process keeps open once opened.")
    max_overflow: int = Field(PoolLimits.max_overflow, title="Connections beyond them", ge=0, le=1000,
                              description="Connections opened beyond pool_size while all are in use, closed when "
                                          "returned: pool_size + max_overflow is the most a process holds at once "
                                          "(serve: 40 worker threads and its background jobs).")
    pool_timeout: float = Field(PoolLimits.pool_timeout, title="Wait for a connection (s)", gt=0, le=3600,
                                description="Seconds a request waits for a free connection before it fails.")
    rejected_evidence_keep_days: int = Field(
        0, title="Rejected cases' evidence retention", ge=0, le=36500,
        description="Days the evidence bundle of a rejected case (rejected in review, withdrawn, voided by its platform: "
                    "the faces and plates of people who did nothing wrong) is kept after its rejection: then every file "
                    "of it is removed from the evidence store, by serve hourly and `streetwatch cases prune-evidence`; "
                    "the case and its digest stay, marked (details.evidence_removed_at). Run `streetwatch data "
                    "export-reviews` before: it takes rejected cases' pictures as hard negatives. 0: kept for ever.")

    def pool(self) -> PoolLimits:
        """The store's pool limits as set here."""
        return PoolLimits(self.pool_size, self.max_overflow, self.pool_timeout)

    def open(self) -> CaseStore:
        """The case store at `url` with the pool set here."""
        return CaseStore(self.url, pool=self.pool())


def ocr_from_yaml(value: Any) -> Any:
    """YAML 1.1 reads an unquoted `off` (also `no`, `false`) as a boolean: that is the mode `off`.
    An unquoted `on`/`yes`/`true` could mean auto or all, so it is refused with the choices."""
    if value is False:
        return "off"
    if value is True:
        raise ValueError("write auto, all or off (an unquoted on/yes/true is read as a yes/no value in YAML; "
                         "quote it or name the mode)")
    return value


#: The OCR mode as files write it (`ocr: off` unquoted included); `pipelines.triage.text.OcrMode` by value. The
#: schema (`config schema`) takes false too, as the loader does: an editor reading YAML 1.1 sees `off` as false.
OcrSetting = Annotated[Literal["auto", "all", "off"],
                       BeforeValidator(ocr_from_yaml, json_schema_input_type=Literal["auto", "all", "off", False])]


def cors_origin(value: str) -> str:
    """An origin as a browser sends it in `Origin` (`https://host[:port]`, scheme and host in lower case), or `*`.

    The CORS middleware compares the header with each entry as text: one written with a path, a trailing '/' or
    no scheme never matched, so the API stayed closed to the site it was listed for, without a word. A lone
    trailing '/' (an address pasted from the browser) is dropped; a longer path or no scheme is refused."""
    if value == "*":
        return value
    parts = urlsplit(value.strip())
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port that is not a number
        port, parts = "", parts._replace(netloc="")
    web = parts.scheme.lower() in ("http", "https") and parts.hostname
    if not web or parts.username is not None or parts.path not in ("", "/") or parts.query or parts.fragment or value.endswith(("?", "#")):
        example = f"{parts.scheme.lower()}://{parts.hostname}{port}" if web else "https://review.example.gov.cn"
        raise ValueError(f"{value!r} is not an origin: write scheme://host[:port] as browsers send it, with no path "
                         f"(e.g. {example!r})")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


class TriageOptions(ConfigModel):
    """How photos are triaged: detector, OCR, zones, grouping, report (the `triage:` settings section)."""

    model: str | None = Field(
        None, title="Model", description="Model id or weight file; none: the promoted model (`streetwatch models promote`), else yolo11n.")
    backend: str = Field("onnx", title="Backend", description="onnx or torch.")
    device: str = Field("cpu", title="Device", description="cpu or cuda[:N].")
    conf: float = Field(0.25, title="Detector confidence", description="Detections below this are dropped before the rules.", ge=0, le=1)
    imgsz: int = Field(640, title="Input size", description="Network input size; photos are decoded straight to about this size. The verifier judges only at the size its heads were trained at (640 for street-v7).", gt=0, multiple_of=32)
    workers: int = Field(
        default_factory=lambda: min(8, os.cpu_count() or 1), title="Workers",
        description="Threads that each read, decode and detect photos (parallel inference streams); default one per core, at most 8.",
        ge=1, le=64,
    )
    ocr: OcrSetting = Field(
        "auto", title="OCR", description="Read text and phone numbers: auto (the tiles the verifier finds posting-like, photos with text-bearing detections), all, or off "
        "(`pipelines.triage.text.OcrMode`); `off` may be left unquoted."
    )
    verifier: str | None = Field(
        None, title="Verifier",
        description="Verifier id or card (models/verifiers/, docs/verifier.md); none = judge by detector classes alone; default: the promoted one.")
    phone_region: str = Field(
        "CN", title="Phone region", description="ISO 3166 region whose phone numbers are read without a country code (CN, HK, TW, GB ...).",
        min_length=2, max_length=2)
    ocr_max_side: int = Field(1600, title="OCR resolution", description="Long side of the decode that OCR reads.", ge=320, le=8192)
    timezone: TimeZoneName = Field("Asia/Shanghai", title="Time zone", description="Zone of EXIF times that carry no UTC offset and of times in file names "
                          "(IMG_20231129_101522.jpg), and of the report; default: the settings' `timezone`.")
    scene_zones: Path | None = Field(None, title="City zones", description="GeoJSON of city-wide zones (no-parking streets, vending points) for photos with GPS.")
    grid: Path | None = Field(None, title="Grid cells", description="GeoJSON of 单元网格 polygons with an `id` property.")
    group_window_s: float = Field(1800, title="Grouping window", description="Photos of one type taken at most this many seconds apart may be one case.", ge=0)
    group_radius_m: float = Field(30, title="Grouping radius", description="...and, when both have GPS, at most this many metres apart.", ge=0)
    group_phash_bits: int = Field(
        12, title="Grouping hash distance", description="...or, without GPS, perceptual hashes differing in at most this many of 64 bits.", ge=0, le=64
    )
    group_span_m: float = Field(
        60, title="Grouping span", description="A case's photos with GPS lie at most this many metres from its first one with GPS: "
        "frames along a street, each within the radius of the next, are several cases, not one.", ge=0)
    thumb_side: int = Field(360, title="Thumbnail size", description="Long side of report thumbnails in pixels.", ge=64, le=2048)
    report_max_cases: int = Field(
        1000, title="Cases with thumbnails", description="The report embeds thumbnails for this many top cases; the rest are listed without.", ge=0
    )
    cases: bool | None = Field(
        None, title="Write cases",
        description="Write candidate cases with evidence bundles to the case store: true, false, or null = when an evidence key is set.",
    )

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class JobTriageOptions(TriageOptions):
    """How upload jobs are triaged: as `streetwatch triage`, with 2 workers per job (jobs share the cores)."""

    workers: int = Field(2, title="Workers per job", description="Decode+detect threads of one job.", ge=1, le=64)


class ServiceConfig(ConfigModel):
    """`service:` in the settings file (`streetwatch serve`). Every field has a working default for one machine."""

    data_dir: Path = Field(Path("streetwatch-data/service"), title="Data folder",
                           description="Upload jobs live here (jobs/<id>/input, jobs/<id>/out), and uploads spool here while "
                                       "received (uploads/, not the system's temporary folder); never named by a client. `streetwatch watch` keeps "
                                       "its cameras' rules states in watch/ when its cameras file's folder is not writable.")
    max_upload_bytes: int = Field(512 * 2**20, title="Upload limit",
                                  description="Largest upload request (all files together); refused with 413 before it fills the disk.", gt=0)
    max_upload_files: int = Field(1000, title="Files per upload", description="Most files in one upload request.", ge=1)
    job_concurrency: int = Field(1, title="Concurrent jobs",
                                 description="Triage jobs running at once (each uses `triage.workers` threads); the rest wait in order.", ge=1, le=16)
    export_concurrency: int = Field(2, title="Concurrent exports",
                                    description="Case and call-out exports (CSV, Excel), scores workbooks and map views (layers, a cell's or "
                                                "zone's cases) running at once, each on a worker thread of its own; the rest wait in order without holding one of the threads every "
                                                "other request needs.", ge=1, le=16)
    export_queue: int = Field(20, title="Exports waiting",
                              description="Exports and map views that may wait for one of those threads; one more is answered 503 with "
                                          "Retry-After.", ge=0, le=1000)
    triage: JobTriageOptions = Field(default_factory=JobTriageOptions, title="Triage", description="How upload jobs are triaged.")
    cameras_file: Path | None = Field(None, title="Cameras file",
                                      description="The cameras file `streetwatch watch --cameras` runs (cameras and their scene files).")
    camera_events: Path | None = Field(None, title="Camera events",
                                       description="The JSON-lines file `streetwatch watch --events` appends to: camera status and health are read from it.")
    snapshot_dir: Path | None = Field(None, title="Snapshot folder",
                                      description="Folder where a watcher writes the latest frame per camera as <camera id>.jpg.")
    photo_url_hosts: list[str] | None = Field(
        None, title="Photo URL hosts",
        description="Hosts (`host` or `host:port`) whose disposal-photo URLs the service fetches (POST .../disposal-photo "
                    "{\"url\"}); default: the hosts of the dispatch targets' URLs, the platforms that send them. Any other "
                    "URL, or a redirect off these hosts, is refused, so a token holder cannot make the service read its own network.")
    cors_origins: list[Annotated[str, AfterValidator(cors_origin)]] = Field(
        default_factory=list, title="CORS origins",
        description="Origins allowed to call the API from a browser, as browsers send them: `https://host[:port]` with no "
                    "path (a trailing '/' is dropped), or `*` (default: none; the pages are same-origin).")
    url_key_env: str = Field(URL_KEY_ENV, title="URL key variable",
                             description="Environment variable with the key signing evidence links and a local store's attachment URLs "
                                         "(set it for `serve` and `dispatch run` alike, one secret for every server process of a site); unset: a random "
                                         "key per process for evidence links, which another process refuses, and attachment URLs unsigned "
                                         "(each a warning at start-up).")
    url_expiry_s: int = Field(900, title="Evidence URL lifetime", description="Seconds a signed evidence URL stays valid.", gt=0, le=7 * 24 * 3600)
    default_page_size: int = Field(50, title="Page size", description="Cases per page when the client does not say.", ge=1, le=500)
    spool_retry_s: float = Field(600.0, title="Evidence spool retry",
                                 description="Seconds between the service's retries of the evidence spool (bundles storage could not "
                                             "take, ones signed with a key rotated away), jobs or none: each job retries it too.", gt=0)
    jobs_keep_days: int = Field(30, title="Job retention",
                                description="Days a finished upload or patrol job (done or failed) is kept after it finished: its "
                                            "folder (the photos or video as uploaded, its report) is then removed, at start-up and "
                                            "hourly, and its id answers 404 saying so. Its cases' evidence lives in the evidence "
                                            "store and stays. 0: kept for ever.", ge=0)
    store_wait_s: float = Field(300.0, title="Case store wait",
                                description="Seconds an upload job (photos or a patrol video) that finds the case store "
                                            "unreachable (a database restarted) waits for it, showing 等待案件库恢复…, before it "
                                            "fails asking for the upload again; once the store is back it goes on where it was "
                                            "(photos or frames judged are not judged again, cases recorded not recorded twice). "
                                            "0: fail at once.", ge=0)
    reopen_within_days: int = Field(7, title="Reopen window",
                                    description="Days after a rejection in review during which a reviewer may reopen the case "
                                                "(POST /cases/{id}/reopen: a mis-click undone); later it stays rejected.", ge=1, le=365)

    def url_key(self) -> bytes | None:
        value = os.environ.get(self.url_key_env)
        return value.encode() if value else None

    def own_link_key(self) -> str | None:
        """Why the evidence links `serve` hands out open on this process only, or None when the URL key is set. Without
        it each process signs them with a random key of its own, and `serve` started without a word: behind a balancer
        the other process of the site refused half of a case's images (403 bad signature), and a restart every link
        already open on a review page. `serve` logs this at start-up."""
        if self.url_key():
            return None
        return (f"${self.url_key_env} (service.url_key_env) is not set: evidence links are signed with a random key of "
                "this process, so another server process of this site refuses them (403 bad signature) and a restart "
                "ends every one handed out; set it to one secret for every `streetwatch serve` of the site and "
                "`streetwatch dispatch run`")

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def patrol_dir(self) -> Path:
        return self.data_dir / "patrol"

    @property
    def upload_spool(self) -> Path:
        """Where an upload's files spool while it is received (`api.uploads.multipart_parser`): on the data disk, beside
        the jobs they are copied into, not in the system's temporary folder."""
        return self.data_dir / "uploads"


class WarnRule(ConfigModel):
    """Which first detections become a warning instead of a case, and when the camera looks again."""

    types: list[str] = Field(title="Violation types", description="Types warned first, e.g. shopfront_spillover, illegal_parking.", min_length=1)
    zone_kinds: list[ZoneKind] = Field(
        default_factory=list, title="Zone kinds", description="Only in zones of these kinds (empty: any zone).")
    recheck_after_s: float = Field(
        600.0, title="Re-check after", description="Seconds (media time) between the warning and the camera's re-check.", gt=0)


class WarnConfig(ConfigModel):
    """Warn, re-check, then a case (CCTV): off unless `rules` are given."""

    rules: list[WarnRule] = Field(default_factory=list, title="Warn first", description="Types and zone kinds warned before a case.")
    webhook_url: HttpUrl | None = Field(
        None, title="Notification webhook",
        description="Each warning is POSTed here as JSON (an SMS / WeCom / DingTalk gateway relays it to the shop); unset: recorded only.")
    token_env: str | None = Field(None, title="Token variable", description="Environment variable whose value is sent as `Authorization: Bearer`.")
    timeout_s: float = Field(5.0, title="Timeout", description="Seconds per webhook request.", gt=0)
    attempts: int = Field(3, title="Attempts", description="Webhook attempts (exponential back-off between them) before the warning is marked not notified.", ge=1, le=10)
    images_dir: Path = Field(Path("streetwatch-data/warnings"), title="Warning images",
                             description="Where the annotated warning frames are kept (shown in the service).")
    images_keep_days: int = Field(
        90, title="Warning image retention",
        description="Days a decided warning's frame (complied, escalated or lapsed) is kept after its re-check: a camera's "
        "frame of the street and whoever passed, no longer needed once decided (an escalated warning's frame is in its "
        "case's evidence). `serve` removes it at start-up and hourly; the warning itself stays. 0: kept for ever.", ge=0)
    resume_within_s: float = Field(
        86400.0, title="Resume after a restart",
        description="A watcher started again resumes the warnings still waiting for their re-check, unless the re-check was due more "
        "than this many seconds before the camera's first frame (those are marked lapsed; 0: only those not yet due).", ge=0)


class CityOpsConfig(ConfigModel):
    """The `cityops:` section (docs/city-operations.md): warnings before cases, the call-out list's months and
    squads, patrol sampling. Kept here, not in `pipelines.cityops`, because the city workflows build on triage,
    which reads these settings."""

    timezone: TimeZoneName = Field("Asia/Shanghai", title="Time zone",
                                   description="Zone in which call-out months are counted; default: the settings' `timezone`.")
    grid: Path | None = Field(
        None, title="Grid cells", description="GeoJSON of 单元网格 (as for triage) with a `squad` property: call-out counts per squad.")
    warn: WarnConfig = Field(default_factory=WarnConfig, title="Warnings", description="Warn, re-check, then a case.")
    patrol_every_m: Annotated[float, Field(gt=0)] = Field(
        10.0, title="Patrol sampling distance", description="Patrol video: a frame every this many metres driven.")
    patrol_every_s: Annotated[float, Field(gt=0)] = Field(
        5.0, title="Patrol sampling time", description="Patrol video: and at least one frame this many seconds (a stopped car still looks).")


class ClusterConfig(ConfigModel):
    """The `cluster:` section: how `triage --ray` and `watch --ray` use a Ray cluster (docs/scale-out.md). Kept
    here, not in `pipelines.cluster`, because that package builds on the pipelines that read these settings."""

    dashboard: bool = Field(
        False, title="Ray dashboard", description="Start Ray's dashboard with `--ray local` (needs the `ray[default]` install); "
        "a cluster started with `ray start` has its own.")
    dashboard_host: str = Field("127.0.0.1", title="Dashboard address", description="Address the dashboard of `--ray local` binds.",
                                min_length=1)
    dashboard_port: int = Field(8265, title="Dashboard port", description="Port of the dashboard of `--ray local`.", ge=1, le=65535)
    local_cpus: int | None = Field(
        None, title="Local CPUs", description="CPUs the `--ray local` cluster offers (default: every core of this machine).", ge=1)
    local_gpus: int | None = Field(
        None, title="Local GPUs", description="GPUs the `--ray local` cluster offers (default: those Ray finds).", ge=0)
    object_store_mb: int | None = Field(
        None, title="Object store", description="Megabytes of shared memory for the `--ray local` object store (default: Ray's, 30% of RAM).",
        ge=64)
    namespace: str = Field("streetwatch", title="Namespace", description="Ray namespace of this deployment's jobs and actors.",
                           min_length=1)
    photos_per_batch: int = Field(
        4, title="Photos per batch", description="Triage: photos per actor call (on GPU clusters, per detector call: a GPU batch).", ge=1, le=256)
    keep_actors_s: float = Field(
        300.0, title="Keep triage actors", description="Triage: seconds the actors of a run (each holding a loaded detector) stay "
        "up after their last photo, so the next `triage --ray` on the same cluster with the same model settings starts at once; "
        "an idle one also stops when a run of other settings needs its CPUs or GPU. 0: they stop with the run.", ge=0)
    inference_actors: int | None = Field(
        None, title="Inference actors", description="Detector + verifier actors (triage) or shared inference actors (watch); "
        "default: one per GPU on a cluster with GPUs, else one per CPU (triage) or one per node (watch).", ge=1)
    cameras_per_owner: int = Field(
        4, title="Cameras per owner", description="Watch: cameras one owner actor reads, tracks and judges.", ge=1, le=256)
    checkpoint_s: float = Field(
        10.0, title="Checkpoint interval", description="Watch: media seconds between saved rules states of a camera; a camera "
        "restarted elsewhere carries on from its last one.", gt=0)
    max_restarts: int = Field(
        10, title="Restarts per owner", description="Watch: times a failed owner's cameras are started again before they are "
        "reported failed.", ge=0)
    stop_wait_s: float = Field(
        60.0, title="Owners' stop wait", description="Watch: seconds a graceful stop waits for the owners to judge their "
        "queued frames and checkpoint their cameras; an owner slower than that is named in the log with each of its cameras "
        "and the state the state file keeps for it (its latest checkpoint in the cluster, not its state at the stop).", gt=0)


class TaxonomyFiles(ConfigModel):
    """Which violation types and city code tables this deployment uses (docs/rules.md)."""

    path: Path | None = Field(None, title="Taxonomy file",
                              description="Violation types, evidence classes and thresholds (default: the shipped detect/taxonomy.yaml).")
    city_codes: list[Path] = Field(
        default_factory=list, title="City code files",
        description="Each adds one city's 大类/小类 codes (`streetwatch config schema city-codes`; example: "
        "docs/examples/city-codes-hangzhou.yaml); a dispatch target or the evidence picks a city by its key.")


class Settings(ConfigModel):
    """The deployment settings file."""

    timezone: TimeZoneName = Field(
        "Asia/Shanghai", title="City time zone",
        description="The city's IANA zone: the `timezone` of every section that sets none (triage and service.triage: EXIF and "
        "file-name times, the report; analytics: days and months, the pages' clock; cityops: call-out months; evidence: "
        "local times in bundles) and of every camera scene file that names none (its schedules, a naive replay start_time), so one "
        "line moves them all; a section's (a scene's) own value still wins.")
    cases: CaseStoreConfig = Field(default_factory=CaseStoreConfig, title="Case store", description="Where cases live.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, title="Evidence",
                                     description="Bundle contents, time zone, signing key source, privacy copies.")
    evidence_store: EvidenceStoreConfig = Field(default_factory=EvidenceStoreConfig, title="Evidence store",
                                                description="Local folder or S3-compatible storage for bundles.")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig, title="Dispatch",
                                     description="Dispatch targets (cn-dcm, open311) and delivery behaviour.")
    rules: RuleSettings = Field(default_factory=RuleSettings, title="Rules",
                                description="Violation lifecycle knobs for photos and, as defaults, for every camera (a camera's `rules` changes the fields it sets).")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, title="Tracking",
                                     description="Tracker defaults for every camera (a camera's `tracking` changes the fields it sets; `frame_rate` follows its `analysis_fps`).")
    triage: TriageOptions = Field(default_factory=TriageOptions, title="Triage",
                                  description="Defaults of `streetwatch triage` (its flags change them per run).")
    analytics: AnalyticsConfig = Field(default_factory=AnalyticsConfig, title="Analytics",
                                       description="Scores, reports, exports and the map: grid and zone files, sheet, reports folder.")
    cityops: CityOpsConfig = Field(default_factory=CityOpsConfig, title="City workflows",
                                   description="Warnings before cases, call-out list, patrol video (docs/city-operations.md).")
    service: ServiceConfig = Field(default_factory=ServiceConfig, title="API service",
                                   description="`streetwatch serve`: uploads, jobs, cameras, limits (see docs/service.md).")
    taxonomy: TaxonomyFiles = Field(default_factory=TaxonomyFiles, title="Taxonomy",
                                    description="The violation taxonomy and the city code files merged into it.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, title="Ray cluster",
                                   description="`triage --ray` and `watch --ray`: the local cluster, actors, checkpoints (docs/scale-out.md).")

    @model_validator(mode="after")
    def _sections_follow_the_city_zone(self) -> Settings:
        """A city outside UTC+8 that set one section's zone and forgot the others got a call-out export, a city
        page and a triage report in different zones: a section's unset `timezone` is the city's."""
        for name in ("triage", "analytics", "cityops", "evidence"):
            section = getattr(self, name)
            if (zoned := self._in_city_zone(section)) is not section:
                setattr(self, name, zoned)
        jobs = self._in_city_zone(self.service.triage)
        if jobs is not self.service.triage:
            self.service = self.service.model_copy(update={"triage": jobs})
        return self

    def _in_city_zone(self, section: Section) -> Section:
        """`section`, or when it sets no `timezone` a copy in the city's (a caller's object is left as it is),
        marked as set so that `model_dump(exclude_unset=True)`, how `streetwatch triage` lays its flags over
        the file, carries it."""
        if "timezone" in section.model_fields_set:
            return section
        return section.model_copy(update={"timezone": self.timezone})

    def load_taxonomy(self, city_files: Iterable[Path] = ()) -> Taxonomy:
        """The taxonomy with this deployment's city code files merged (and `city_files`: `rules taxonomy --city-file`),
        checked against the cities the dispatch targets and the evidence name (a missing table is an error at start,
        not at the first case)."""
        taxonomy = load_taxonomy(self.taxonomy.path, [str(p) for p in (*self.taxonomy.city_codes, *city_files)])
        wanted = {f"dispatch.targets.{name}.city": t.city for name, t in self.dispatch.targets.items()}
        wanted["evidence.city"] = self.evidence.city
        for where, city in wanted.items():
            taxonomy.require_city(city, where, "add its file to taxonomy.city_codes")
        return taxonomy

    def named_by_setting(self, text: str, named: Callable[[str], str] = str,
                         files: Iterable[tuple[str, Path]] = ()) -> str:
        """`text` with the evidence folders, key files and input files named by their settings, the one way the API
        and pages name them (it never shows a server path): a failed upload's reason names the folder it could not
        write (`cannot write evidence to /srv/.../evidence/SW1: ...`), a stored bundle's reference is a `file://` URI,
        a key file unreadable since start-up stops a job's cases with an error naming it, a grid file edited into one
        that cannot be read is refused naming it; they read `evidence_store.local_root/SW1`,
        `evidence.hmac_key_file: ...`, `service.triage.grid: ...`; the S3 server's address reads
        `evidence_store.s3.endpoint` (`endpoint_named_by_setting`). `named`: how the paths stand in `text` (markupsafe's
        `escape` for HTML); `files`: (name, file) of files no setting names itself, as the cameras file names each
        camera's scene (`api.config.named_files`)."""
        store = self.evidence_store
        text = paths_named_by_setting(text, [("evidence_store.local_root", store.local_root),
                                             ("evidence_store.spool_dir", store.spool_dir), *self.evidence.key_files(),
                                             *self.input_files(), *files], named)
        return endpoint_named_by_setting(text, store.s3.endpoint) if store.s3 is not None else text

    def input_files(self) -> list[tuple[str, Path]]:
        """(settings field, file) of every file set that `INPUT_FILES` names, a list's by its index
        (`taxonomy.city_codes.0`): what `load_settings` finds missing, and the API names by its field."""
        files = []
        for dotted in INPUT_FILES:
            value: Any = self
            for part in dotted.split("."):
                value = getattr(value, part, None)
            for i, file in enumerate(value if isinstance(value, list) else [value]):
                if file is not None:
                    files.append((f"{dotted}.{i}" if isinstance(value, list) else dotted, Path(file)))
        return files

    def unsigned_attachments(self) -> str | None:
        """Why a dispatched case's attachments are open to anyone who knows its id, or None when they are not.

        A local evidence store's attachment URLs are signed by `service.url_key_env`'s key, read by both
        `dispatch run` (signs) and `serve` (checks). Without it each process would have its own random key,
        so they stay unsigned, as before, rather than break; both commands log this at start-up."""
        store = self.evidence_store
        if store.backend != "local" or not store.public_base_url or self.service.url_key():
            return None
        return (f"evidence_store.public_base_url is set but ${self.service.url_key_env} (service.url_key_env) is not: "
                "attachment URLs sent to dispatch platforms carry no signature or expiry, and /attachments serves a "
                "dispatched case's photos to anyone who knows its id; set it to one secret for `streetwatch serve` and "
                "`streetwatch dispatch run`")

    def unreachable_attachments(self) -> str | None:
        """Why the dispatch targets cannot open a case's photos, or None when they can. A local evidence store without
        `public_base_url` hands out `file://` URLs of this machine: cn-dcm sent them as its attachments and Open311
        left out `media_url` (only an http(s) URL is any use), both without a word, and the platform's staff saw a
        case with no photo. `dispatch run` logs this at start-up when it has targets to send to."""
        store = self.evidence_store
        if store.backend != "local" or store.public_base_url or not self.dispatch.targets:
            return None
        return ("evidence_store.public_base_url is not set: the photos sent with each case are file:// paths on this "
                "machine, which no dispatch platform can open (cn-dcm's attachments; Open311 gets no media_url); set it "
                "to where `streetwatch serve` publishes the evidence folder (<api>/attachments), or use backend: s3")

    def unread_url_expiry(self) -> str | None:
        """Why `evidence_store.s3.url_expiry_s`, which the settings file sets, changes nothing; None when it sets none.
        The release before gave the review pages' S3 links that lifetime (its example's 7 days: a link copied off a review
        PC opened unblurred faces and plates for a week); they live `service.url_expiry_s` now, and a dispatch target's
        attachments their `attachment_expiry_s` as before. A file written from that example sets it: `serve` logs this at
        start-up, so a city that chose a lifetime for its review links learns which setting gives it now."""
        s3 = self.evidence_store.s3
        if s3 is None or "url_expiry_s" not in s3.model_fields_set:
            return None
        return (f"evidence_store.s3.url_expiry_s ({s3.url_expiry_s} s) is no longer read: the review pages' evidence links "
                f"live service.url_expiry_s ({self.service.url_expiry_s} s) and a dispatch target's attachments its "
                "attachment_expiry_s; set those, and remove it from the settings file")

    def photo_url_hosts(self) -> list[str]:
        """Where disposal photos may be fetched from: `service.photo_url_hosts`, else the hosts (with
        their ports) of the dispatch targets' URLs."""
        if self.service.photo_url_hosts is not None:
            return list(self.service.photo_url_hosts)
        return sorted({f"{t.url.host}:{t.url.port}" if t.url.port else str(t.url.host) for t in self.dispatch.targets.values()})


INPUT_FILES = ("taxonomy.path", "taxonomy.city_codes", "triage.scene_zones", "triage.grid", "service.cameras_file",
               "service.triage.scene_zones", "service.triage.grid", "cityops.grid", "analytics.grid", "analytics.zones",
               "analytics.sheet", "analytics.cutoffs")
"""Settings fields naming files the deployment reads (not folders or files it writes)."""


WINDOWS_PATH = re.compile(r"^[A-Za-z]:|\\")
"""A drive letter (`C:\\`, `D:/`) or a backslash: a path copied from a Windows machine."""


def windows_path(path: PurePath) -> bool:
    """Whether `path` is written the Windows way on a machine that reads paths as Linux does: there
    `C:\\streetwatch\\service` is one relative file name, so `serve` made a folder called that in the folder it ran in
    and kept its jobs there, and an input file such a path names was only 'not found'."""
    return os.name != "nt" and bool(WINDOWS_PATH.search(str(path)))


def windows_paths(value: Any, where: str = "") -> Iterator[tuple[str, PurePath | str]]:
    """(dotted field, path) of every path in `value` (settings, a section, a list or mapping of them) that `windows_path`
    finds, a SQLite URL's database file among them (`cases.url: sqlite:///C:\\streetwatch\\cases.db`, given whole)."""
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from windows_paths(getattr(value, name), f"{where}.{name}" if where else name)
    elif isinstance(value, dict | list):
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            yield from windows_paths(item, f"{where}.{key}")
    elif isinstance(value, PurePath) and windows_path(value):
        yield where, value
    elif isinstance(value, str) and (database := sqlite_file(value)) is not None and windows_path(PurePath(database)):
        yield where, value


def load_settings(path: str | Path | None = None) -> Settings:
    """The settings file given, else `$STREETWATCH_CONFIG`, else the defaults (one the variable names and that is
    not there is refused saying so: a stale variable is easy to forget).

    Every file the settings name for reading must exist when they are loaded: a missing one is an error
    naming the settings file and the field at start, not a bare `nope.geojson: file not found` from
    whichever command first opens it. A path written the Windows way is refused the same way (`windows_path`)."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        return Settings()
    if str(path) == os.environ.get(CONFIG_ENV) and not Path(path).exists():
        # commands take `--config` from the variable too (SettingsOpt): a bare 'file not found' named no origin
        raise ConfigError(f"{path}: file not found (the settings file the environment variable {CONFIG_ENV} names, "
                          "where the command runs: correct it, or unset it)")
    settings = load_model(Settings, path)
    missing = [f"{path}: {where}: {file}: a Windows path (drive letter or backslash); this machine reads paths as Linux "
               "does, where it is one file name in the folder the command runs in: write it with / (e.g. "
               f"{'sqlite:////srv/streetwatch/cases.db' if isinstance(file, str) else '/srv/streetwatch/...'})"
               for where, file in windows_paths(settings)]
    for where, file in settings.input_files():
        if not file.is_file() and not windows_path(file):
            missing.append(f"{path}: {where}: {file}: file not found (relative paths are read from the folder the "
                           f"command runs in, {Path.cwd()})")
    if missing:
        raise ConfigError("\n".join(missing))
    return settings
