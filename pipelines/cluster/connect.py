"""Joining a Ray cluster, or starting one on this machine, the way streetwatch runs on it.

`--ray local` starts a one-machine cluster for this run and stops it at the end. Everything stays
on the loopback interface: Ray treats the machine as a single node when
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` is set before Ray is imported (its node address becomes
127.0.0.1 and its servers listen there, not on every interface); usage statistics are off
(`RAY_USAGE_STATS_ENABLED=0`); an actor's log lines reach the driver's stderr each as written (`RAY_DEDUP_LOGS=0`:
Ray merged lines alike but for their numbers, two cameras' among them) and without colour codes (`RAY_COLOR_PREFIX=0`);
the dashboard is off unless `cluster.dashboard` asks for it, and
then listens on `cluster.dashboard_host` (127.0.0.1 by default). The variables are defaults: a
value already in the environment wins.

`--ray ADDRESS` joins a running cluster (`ray start --head` on a machine, or a KubeRay
`RayCluster`); how its nodes listen is decided where they were started (docs/scale-out.md).

A run that spans several nodes needs stores that every node reaches: cases in PostgreSQL and
evidence on S3 (MinIO). `check_shared_stores` refuses SQLite and a local evidence folder there, with
the reason and the fix, before anything starts.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from pipelines.settings import ClusterConfig, Settings

log = logging.getLogger(__name__)

LOCAL = "local"
#: Ray reads it at import time; "0" makes a local cluster a loopback-only single node.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
USAGE_STATS_ENV = "RAY_USAGE_STATS_ENABLED"
DEDUP_LOGS_ENV = "RAY_DEDUP_LOGS"
"""Ray's driver-side merging of "similar" lines from several actors (numbers ignored): 'camera cam-01: rules state
restored …' from one owner hid the same line of cam-02 from another, printed later as '[repeated 2x across cluster]'."""
COLOR_PREFIX_ENV = "RAY_COLOR_PREFIX"
"""'0': the '(CameraOwner pid=…)' prefix of an actor's forwarded line without terminal colour codes (the log is a file)."""
AUTH_MODE_ENV = "RAY_AUTH_MODE"
"""Ray's token authentication: a head that found ~/.ray/auth_token turns it on, and refuses a driver without it."""
HEAD_NODE = "node:__internal_head__"
"""Ray's resource on the head node: actors that must outlive worker nodes ask for a sliver of it."""


class ClusterError(RuntimeError):
    """The cluster cannot be used as asked (unreachable, Ray not installed, stores one node cannot share)."""


@dataclass(frozen=True)
class ClusterInfo:
    """The cluster a run uses: where, how many live nodes, and their CPUs and GPUs (Ray's logical resources)."""

    address: str
    nodes: int
    cpus: float
    gpus: float

    @property
    def multi_node(self) -> bool:
        return self.nodes > 1

    def describe(self) -> dict:
        return {"address": self.address, "nodes": self.nodes, "cpus": self.cpus, "gpus": self.gpus}


def is_loopback(address: str) -> bool:
    """`local`, or an address on this machine's loopback interface (`127.0.0.1:6379`, `localhost:6379`)."""
    host = address.rsplit(":", 1)[0].strip("[]").lower()
    return address == LOCAL or host in ("localhost", "::1") or host.startswith("127.")


def prepare_environment(address: str) -> None:
    """The environment defaults above, set before Ray is imported (Ray reads them then).

    A cluster on 127.0.0.1 gets the loopback default too, not only `local`: without it Ray takes this
    machine's network address for the driver's, asks the cluster's GCS there, where nothing listens,
    and retries for ever without a word (a `ray start`/test cluster on loopback joined by address)."""
    os.environ.setdefault(USAGE_STATS_ENV, "0")
    os.environ.setdefault(DEDUP_LOGS_ENV, "0")
    os.environ.setdefault(COLOR_PREFIX_ENV, "0")
    if is_loopback(address):
        os.environ.setdefault(LOOPBACK_ENV, "0")
        if "ray" in sys.modules:
            import ray._private.ray_constants as constants

            if constants.ENABLE_RAY_CLUSTER:
                log.warning("Ray was imported before %s was set: this local cluster may listen beyond 127.0.0.1", LOOPBACK_ENV)


def connect(address: str, config: ClusterConfig) -> tuple[ClusterInfo, bool]:
    """Start (`local`) or join (`ADDRESS`) the cluster; returns it and whether this call started Ray
    here (and so must stop it). A driver already connected (tests) is used as it is."""
    local = address == LOCAL
    prepare_environment(address)
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray: pip install 'streetwatch[ray]'") from None
    started = False
    if not ray.is_initialized():
        kwargs = dict(namespace=config.namespace, logging_level=logging.WARNING, log_to_driver=True)
        try:
            if local:
                # address "local": always a new cluster, never one another process left running on this machine
                ray.init(address=LOCAL, num_cpus=config.local_cpus, num_gpus=config.local_gpus, _node_ip_address="127.0.0.1",
                         object_store_memory=config.object_store_mb * 2**20 if config.object_store_mb else None,
                         include_dashboard=config.dashboard, dashboard_host=config.dashboard_host,
                         dashboard_port=config.dashboard_port, **kwargs)
            else:
                check_reachable(address)
                ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError, auth_error_of(ray)) as exc:
            if local or isinstance(exc, ValueError):  # ValueError: an argument Ray refuses, not the cluster
                raise ClusterError(f"cannot {'start a local Ray cluster' if local else f'join the Ray cluster at {address}'}: {exc}") from None
            raise ClusterError(join_refused(address, exc)) from None
        started = True
    return describe_cluster(address), started


def auth_error_of(ray) -> type[Exception]:
    """Ray's AuthenticationError (a wrong token; Ray 2.5x before token authentication has none: RuntimeError)."""
    return getattr(ray.exceptions, "AuthenticationError", RuntimeError)


def join_refused(address: str, exc: Exception) -> str:
    """Why joining the cluster at `address` failed once something answered there (`check_reachable`), with the likely
    cause: Ray 2.60 says only `Failed to connect to Ray cluster at …` to a driver without token authentication that a
    head started with ~/.ray/auth_token requires, so `RAY_AUTH_MODE` is named, as this process has it."""
    mode = os.environ.get(AUTH_MODE_ENV)
    here = f"{AUTH_MODE_ENV} is {mode!r} here" if mode else f"{AUTH_MODE_ENV} is not set here"
    return (f"cannot join the Ray cluster at {address}: {exc}; the cluster may require token authentication ({here}): "
            f"set {AUTH_MODE_ENV}=token, with the same ~/.ray/auth_token, the same on every node and in the shell that "
            "runs streetwatch (docs/scale-out.md, Plain machines)")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse a HOST:PORT where nothing answers before Ray is asked: Ray retries a GCS that is not there
    for a minute and more, printing only its own retries. `auto` and `ray://` addresses are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ClusterError(f"cannot join the Ray cluster at {address}: nothing answers there "
                           f"({exc.strerror or exc}); check the head's address and port (ray status on the head)") from None


def describe_cluster(address: str = LOCAL) -> ClusterInfo:
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    resources = ray.cluster_resources()
    return ClusterInfo(address, len(alive), float(resources.get("CPU", 0)), float(resources.get("GPU", 0)))


@contextmanager
def joined(address: str, config: ClusterConfig) -> Iterator[ClusterInfo]:
    """`connect`, and at the end stop what this call started (a `--ray local` cluster)."""
    info, started = connect(address, config)
    try:
        yield info
    finally:
        if started:
            import ray

            ray.shutdown()


def check_shared_stores(settings: Settings, info: ClusterInfo, *, cases: bool = True, or_else: str | None = None) -> None:
    """Refuse stores one machine holds when the run spans several nodes and writes cases (`or_else`:
    another way out the command offers, named in the message)."""
    if not (cases and info.multi_node):
        return
    where = f"the Ray cluster at {info.address} has {info.nodes} nodes"
    alternatives = f"run on one machine (--ray local){f', or {or_else}' if or_else else ''}"
    url = settings.cases.url
    if url.startswith("sqlite"):
        raise ClusterError(
            f"cases.url is SQLite ({url}), a file on one machine, and {where}: every node's cases and the review queue "
            "must live in one database; set cases.url to PostgreSQL (postgresql+psycopg://user@host/db) in the --config "
            f"file, or {alternatives}")
    if settings.evidence_store.backend == "local":
        raise ClusterError(
            f"evidence_store.backend is local ({settings.evidence_store.local_root}), a folder on one machine, and {where}: "
            "evidence bundles must land in storage every node and the review service reach; set evidence_store.backend: s3 "
            f"(MinIO or any S3) in the --config file, or {alternatives}")


def absolute_paths(model: BaseModel, base: Path | None = None) -> BaseModel:
    """A copy of a settings model with every relative path made absolute against this process's
    folder, so actors resolve them the same way wherever their working folder is."""
    base = base or Path.cwd()
    update = {}
    for name, value in model:
        if isinstance(value, Path) and not value.is_absolute():
            update[name] = base / value
        elif isinstance(value, BaseModel):
            update[name] = absolute_paths(value, base)
    return model.model_copy(update=update) if update else model
