"""Executor plugin interface, the part and host records it works on, and the registry.

Executors register by name in the entry-point group ``shardplan.executors``, so a
plugin can live outside this package; callers ask an executor what it ``supports``
instead of testing its name.
"""
from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import ClassVar

import polars as pl

from shardplan.plandir import INPUT_HOSTS_FILE, INPUT_REQUESTS_FILE, SHARDS_FILE, PlanDirError, read_plan_dir
from shardplan.schema import RESOURCES, SHARDS_SCHEMA, free_expr

ENTRY_POINT_GROUP = "shardplan.executors"
PART_COLUMNS: tuple[str, ...] = tuple(SHARDS_SCHEMA)
CAPACITY_SLACK = 1e-9  # float tolerance when comparing fractional vcpu / net_gbps against capacity


class ExecutorError(RuntimeError):
    """An action could not be applied; the message names the host and the part."""


class HostUnavailable(ExecutorError):
    """The host is down, unreachable or refuses connections."""


class UnknownExecutor(LookupError):
    """No executor of that name is registered in the entry-point group."""


@dataclass(frozen=True)
class Part:
    """One placed part of a request on one host, in the shards.parquet columns.

    ``complete`` is False for a storage part that is allocated but not yet filled
    and verified (it does not count as a copy of the request's storage).
    """

    request_id: str
    shard: int
    host_id: str
    replica: int
    vcpu: int
    ram_gib: int
    storage_gib: int
    net_gbps: float
    gpu: int
    role: str
    complete: bool = True

    @property
    def key(self) -> tuple[str, int]:
        """The part's identity in a plan: (request_id, shard)."""
        return (self.request_id, self.shard)

    @property
    def place(self) -> tuple[str, int, str]:
        """The part's identity in a cluster, where a move briefly holds it on two hosts."""
        return (self.request_id, self.shard, self.host_id)

    @property
    def holds_storage(self) -> bool:
        return self.storage_gib > 0

    @property
    def label(self) -> str:
        return f"{self.request_id}/p{self.shard}@{self.host_id}"

    @property
    def domain_name(self) -> str:
        """Name of the part's VM domain (DESIGN: ``<request_id>-p<shard>``)."""
        return f"{self.request_id}-p{self.shard}"

    def demand(self) -> dict[str, float]:
        return {resource: getattr(self, resource) for resource in RESOURCES}

    def same_shape(self, other: "Part") -> bool:
        """Same sizes, replica index and role (host and completeness aside)."""
        return all(getattr(self, c) == getattr(other, c) for c in PART_COLUMNS if c not in ("request_id", "shard", "host_id"))

    def to_row(self) -> dict[str, object]:
        return {c: getattr(self, c) for c in PART_COLUMNS}

    def to_record(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, object]) -> "Part":
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in names}
        return cls(
            request_id=str(values["request_id"]), shard=int(values["shard"]), host_id=str(values["host_id"]),
            replica=int(values["replica"]), vcpu=int(values["vcpu"]), ram_gib=int(values["ram_gib"]),
            storage_gib=int(values["storage_gib"]), net_gbps=float(values["net_gbps"]), gpu=int(values["gpu"]),
            role=str(values["role"]), complete=bool(values.get("complete", True)),
        )

    def with_changes(self, **changes: object) -> "Part":
        record = self.to_record()
        record.update(changes)
        return Part.from_record(record)


@dataclass(frozen=True)
class HostSpec:
    """A host as executors see it: failure domains and the capacity a plan may use."""

    host_id: str
    zone: str
    rack: str
    vcpu: float
    ram_gib: float
    storage_gib: float
    net_gbps: float
    gpu: float
    status: str = "up"
    libvirt_uri: str | None = None
    storage_type: str | None = None
    """Storage tier (nvme, ssd, hdd); a staging host for a storage copy must be on the same tier or better."""
    gpu_model: str | None = None
    """GPU model; a staging host for a GPU part must carry the same model."""

    def capacity(self) -> dict[str, float]:
        """Capacity left for plan parts: vcpu × overcommit minus existing load, per resource."""
        return {resource: getattr(self, resource) for resource in RESOURCES}

    def to_record(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, object]) -> "HostSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


@dataclass(frozen=True)
class TargetPlan:
    """What an apply must end in: the plan's parts, its hosts and each request's replica count."""

    plan_dir: Path
    parts: tuple[Part, ...]
    hosts: dict[str, HostSpec]
    replicas: dict[str, int]
    plan_hash: str


def hosts_from_frame(hosts: pl.DataFrame) -> dict[str, HostSpec]:
    """HostSpecs from an input hosts table (DESIGN.md columns; optional ones defaulted)."""
    defaults = {"vcpu_overcommit": 1.0, "status": "up", "libvirt_uri": None, "used_vcpu": 0, "used_ram_gib": 0,
                "used_storage_gib": 0, "used_net_gbps": 0.0, "used_gpu": 0, "storage_type": None, "gpu_model": None}
    frame = hosts.with_columns([pl.lit(value).alias(name) for name, value in defaults.items() if name not in hosts.columns])
    frame = frame.with_columns(
        pl.col("vcpu_overcommit").fill_null(1.0), pl.col("status").fill_null("up"),
        *[pl.col(f"used_{r}").fill_null(0) for r in RESOURCES],
    ).select(
        "host_id", "zone", "rack",
        *[free_expr(r).cast(pl.Float64).alias(r) for r in RESOURCES],
        "status", pl.col("libvirt_uri").cast(pl.Utf8), pl.col("storage_type").cast(pl.Utf8), pl.col("gpu_model").cast(pl.Utf8),
    )
    return {row["host_id"]: HostSpec(**row) for row in frame.iter_rows(named=True)}


def parts_from_frame(shards: pl.DataFrame) -> tuple[Part, ...]:
    """Parts from a shards.parquet table (every part complete: it is a plan, not a state)."""
    frame = shards.select([pl.col(c).cast(t) for c, t in SHARDS_SCHEMA.items()]).sort("request_id", "shard")
    return tuple(Part(**row) for row in frame.iter_rows(named=True))


def parts_frame(parts: list[Part] | tuple[Part, ...]) -> pl.DataFrame:
    """Parts as a table in the shards.parquet columns, sorted by request, shard and host."""
    rows = [p.to_row() for p in parts]
    return pl.DataFrame(rows, schema=SHARDS_SCHEMA).sort("request_id", "shard", "host_id")


def load_target(plan_dir: str | Path) -> TargetPlan:
    """A plan directory as an executor's target: shards.parquet and inputs/hosts.parquet, and
    inputs/requests.parquet for the copies each request keeps (shardplan.plandir reads them)."""
    plan_dir = Path(plan_dir)
    read = read_plan_dir(plan_dir, required=(SHARDS_FILE, INPUT_HOSTS_FILE), optional=(INPUT_REQUESTS_FILE,))
    shards_path = plan_dir / SHARDS_FILE
    shards = read.shards
    duplicated = shards.filter(pl.struct("request_id", "shard").is_duplicated())
    if duplicated.height:
        row = duplicated.row(0, named=True)
        raise PlanDirError(f"{shards_path}: request {row['request_id']!r} has shard {row['shard']} more than once")
    parts = parts_from_frame(shards)
    hosts = hosts_from_frame(read.hosts)
    unknown = sorted({p.host_id for p in parts} - set(hosts))
    if unknown:
        raise PlanDirError(f"{shards_path}: host(s) not in inputs/hosts.parquet: {', '.join(unknown)}")
    replicas = dict(read.requests.select("request_id", pl.col("replicas").cast(pl.Int64)).iter_rows())
    for part in parts:  # a request missing from the inputs keeps as many copies as the plan gives it
        if part.request_id not in replicas:
            replicas[part.request_id] = 1 + max((p.replica for p in parts if p.request_id == part.request_id), default=0)
    digest = hashlib.sha256(parts_frame(parts).write_csv().encode()).hexdigest()[:16]
    return TargetPlan(plan_dir=plan_dir, parts=parts, hosts=hosts, replicas=replicas, plan_hash=digest)


class ActionKind(StrEnum):
    CREATE = "create_part"
    RESIZE = "resize_part"
    COPY = "copy_replica"
    DELETE = "delete_part"


@dataclass(frozen=True)
class Action:
    """One idempotent step. ``part`` is the part as the action leaves it (for a delete, the part removed)."""

    seq: int
    kind: ActionKind
    part: Part
    reason: str
    previous: Part | None = None
    """resize: the part before the change."""
    move_from: str | None = None
    """create/copy/delete that belong to a move: the host the part leaves."""

    def describe(self) -> str:
        return f"{self.kind.value:<13} {self.part.label:<24} {self.reason}"

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "kind": self.kind.value, "part": self.part.to_record(),
                           "reason": self.reason, "move_from": self.move_from,
                           "previous": None if self.previous is None else self.previous.to_record()})

    @classmethod
    def from_json(cls, text: str) -> "Action":
        record = json.loads(text)
        return cls(seq=record["seq"], kind=ActionKind(record["kind"]), part=Part.from_record(record["part"]),
                   reason=record["reason"], move_from=record["move_from"],
                   previous=None if record["previous"] is None else Part.from_record(record["previous"]))

    def frees(self) -> bool:
        """Deletes and shrinking resizes only give capacity back."""
        if self.kind is ActionKind.DELETE:
            return True
        if self.kind is ActionKind.RESIZE and self.previous is not None:
            return all(getattr(self.part, r) <= getattr(self.previous, r) for r in RESOURCES)
        return False


class Executor(ABC):
    """Applies actions to a cluster; every action is idempotent (re-running a done action is a no-op)."""

    name: ClassVar[str] = ""
    supports: ClassVar[frozenset[str]] = frozenset()
    """Capabilities callers may ask about: ``fault_injection``, ``storage_copy``, ``persistent_state``."""

    def __init__(self, state_path: str | Path, hosts: dict[str, HostSpec] | None = None) -> None:
        self.state_path = Path(state_path)
        self.hosts = dict(hosts or {})

    @abstractmethod
    def current_parts(self) -> list[Part]:
        """Every part the cluster holds now, complete or still being filled."""

    @abstractmethod
    def apply(self, action: Action) -> None:
        """Carry out one action; a no-op when its effect is already there."""

    def close(self) -> None:
        """Release connections and files."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def registered_executors() -> dict[str, EntryPoint]:
    """Executors found in the entry-point group, by name (re-read each call so new plugins show up)."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def executor_class(name: str) -> type[Executor]:
    """The executor class registered under ``name``."""
    found = registered_executors()
    if name not in found:
        known = ", ".join(sorted(found)) or "none (is shardplan installed? pip install -e .)"
        raise UnknownExecutor(f"no executor named {name!r}; registered: {known}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise UnknownExecutor(f"entry point {name!r} ({found[name].value}) is not an Executor subclass")
    return cls
