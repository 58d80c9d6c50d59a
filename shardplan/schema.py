"""Table schemas of DESIGN.md: the input tables and the plan export.

Every input column is described once (type, default, range, allowed values) and
the loader in :mod:`shardplan.planner.validate.inputs` validates against these descriptions, so an
error always names the file, the row and the column.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

RESOURCES: tuple[str, ...] = ("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu")
STORAGE_TIERS: tuple[str, ...] = ("hdd", "ssd", "nvme")  # ascending: nvme > ssd > hdd
HOST_STATUSES: tuple[str, ...] = ("up", "draining", "down")
LATENCY_CLASSES: tuple[str, ...] = ("low", "medium", "tolerant")
REQUEST_STATUSES: tuple[str, ...] = ("placed", "unplaced", "reserved")
SHARD_ROLES: tuple[str, ...] = ("compute", "memory", "storage", "gpu", "replica")


VCPU_CAPACITY_EPSILON = 1e-9
"""100 × 1.15 is 114.999… in floating point; the host still has 115 vcpu."""


def capacity_expr(resource: str) -> pl.Expr:
    """A host's capacity in one resource, the one rule every part of shardplan uses: vcpu is
    vcpu × vcpu_overcommit rounded down to whole vcpu; the others are the column itself."""
    if resource == "vcpu":
        return (pl.col("vcpu") * pl.col("vcpu_overcommit") + VCPU_CAPACITY_EPSILON).floor().cast(pl.Int64)
    return pl.col(resource)


def free_expr(resource: str) -> pl.Expr:
    """Capacity left for new load: capacity minus the existing load (`used_<resource>`), never below zero."""
    return (capacity_expr(resource) - pl.col(f"used_{resource}")).clip(0)


def tier_rank(tier: str | None) -> int:
    """0 for hdd (or no requirement), 1 for ssd, 2 for nvme."""
    return STORAGE_TIERS.index(tier) if tier else 0


@dataclass(frozen=True)
class Column:
    """One column of an input table and the rule it must satisfy."""

    name: str
    dtype: type  # int, float, str or bool
    required: bool = True
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[str, ...] | None = None
    nullable: bool = False

    @property
    def polars_dtype(self) -> pl.DataType:
        return {int: pl.Int64, float: pl.Float64, str: pl.Utf8, bool: pl.Boolean}[self.dtype]

    def describe(self) -> str:
        if self.dtype is bool:
            return "true or false"
        kind = {int: "an integer", float: "a number", str: "a string"}[self.dtype]
        if self.allowed:
            return "one of " + ", ".join(self.allowed)
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{kind} ≥ {self.minimum:g}"
        return kind


HOST_COLUMNS: tuple[Column, ...] = (
    Column("host_id", str),
    Column("host_class", str, required=False, default="general"),
    Column("zone", str),
    Column("rack", str),
    Column("vcpu", int, minimum=0),
    Column("ram_gib", int, minimum=0),
    Column("storage_gib", int, minimum=0),
    Column("storage_type", str, allowed=STORAGE_TIERS),
    Column("net_gbps", float, minimum=0),
    Column("gpu", int, minimum=0),
    Column("gpu_model", str, required=False, nullable=True),
    Column("cpu_score", float, required=False, default=1.0, minimum=0),
    Column("mem_bw_gbps", float, required=False, default=0.0, minimum=0),
    Column("storage_iops", float, required=False, default=0.0, minimum=0),
    Column("cost_per_hour", float, minimum=0),
    Column("vcpu_overcommit", float, required=False, default=1.0, minimum=1),
    Column("status", str, required=False, default="up", allowed=HOST_STATUSES),
    Column("used_vcpu", int, required=False, default=0, minimum=0),
    Column("used_ram_gib", int, required=False, default=0, minimum=0),
    Column("used_storage_gib", int, required=False, default=0, minimum=0),
    Column("used_net_gbps", float, required=False, default=0.0, minimum=0),
    Column("used_gpu", int, required=False, default=0, minimum=0),
    Column("libvirt_uri", str, required=False, nullable=True),
)

REQUEST_COLUMNS: tuple[Column, ...] = (
    Column("request_id", str),
    Column("user_id", str),
    Column("app_type", str),
    Column("vcpu", int, minimum=0),
    Column("ram_gib", int, minimum=0),
    Column("storage_gib", int, minimum=0),
    Column("gpu", int, minimum=0),
    Column("net_gbps", float, minimum=0),
    Column("storage_type", str, required=False, nullable=True, allowed=STORAGE_TIERS),
    Column("gpu_model", str, required=False, nullable=True),
    Column("priority", int, required=False, default=1, minimum=1),
    Column("max_shards", int, required=False, default=1, minimum=1),
    Column("replicas", int, required=False, default=1, minimum=1),
    Column("latency_class", str, required=False, default="medium", allowed=LATENCY_CLASSES),
    Column("evictable", bool, required=False, default=False),
    Column("min_cpu_score", float, required=False, default=0.0, minimum=0),
    Column("min_storage_iops", float, required=False, default=0.0, minimum=0),
    Column("untouched_ram_gib", int, required=False, nullable=True, minimum=0),
)

HISTORY_COLUMNS: tuple[Column, ...] = (
    Column("ts", str),  # parsed to a UTC datetime by the loader
    Column("vm_id", str),
    Column("user_id", str),
    Column("app_type", str),
    Column("vcpu", float, minimum=0),
    Column("ram_gib", float, minimum=0),
    Column("ram_alloc_gib", float, required=False, nullable=True, minimum=0),  # rented RAM (ram_gib: used)
    Column("cpu_util", float, required=False, nullable=True, minimum=0, maximum=1),
    Column("storage_gib", float, required=False, nullable=True, minimum=0),
    Column("net_gbps", float, required=False, nullable=True, minimum=0),
    Column("gpu", float, required=False, nullable=True, minimum=0),
)

# --- plan export (DESIGN.md "Plan export") -------------------------------------------

SHARDS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "shard": pl.Int64,
    "host_id": pl.Utf8,
    "replica": pl.Int64,
    "vcpu": pl.Int64,
    "ram_gib": pl.Int64,
    "storage_gib": pl.Int64,
    "net_gbps": pl.Float64,
    "gpu": pl.Int64,
    "role": pl.Utf8,
}

CURRENT_SCHEMA: dict[str, pl.DataType] = dict(SHARDS_SCHEMA)
"""The current placement (`--previous DIR`'s shards.parquet, or `--current FILE`): the shards columns."""

MOVE_KINDS: tuple[str, ...] = ("mandatory", "voluntary", "eviction", "lost")

MOVES_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "shard": pl.Int64,
    "from_host": pl.Utf8,
    "to_host": pl.Utf8,     # null when evicted or left unplaced
    "vcpu": pl.Int64,
    "ram_gib": pl.Int64,
    "storage_gib": pl.Int64,
    "gpu": pl.Int64,
    "kind": pl.Utf8,        # MOVE_KINDS
    "reason": pl.Utf8,
}
REQUESTS_OUT_OPTIONAL: dict[str, pl.DataType] = {
    "remote_ram_gib": pl.Int64,   # GiB held on hosts where the request runs no vcpu
    "slowdown": pl.Float64,       # modelled slowdown from touched remote memory (0.02 = 2%)
}
"""requests.parquet columns added after the first export: null when a plan written before them is read."""
"""moves.parquet: one row per running part that moved or was removed (DESIGN.md "What runs now")."""

REQUESTS_OUT_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "status": pl.Utf8,
    "n_hosts": pl.Int64,
    "cost_per_hour": pl.Float64,
    "spread_penalty": pl.Float64,
    "reason": pl.Utf8,
}


def hosts_out_schema() -> dict[str, pl.DataType]:
    """host_id, active, then capacity/used/reserved per resource."""
    schema: dict[str, pl.DataType] = {"host_id": pl.Utf8, "active": pl.Boolean}
    for resource in RESOURCES:
        dtype = pl.Float64 if resource == "net_gbps" else pl.Int64
        schema[f"{resource}_capacity"] = dtype
        schema[f"{resource}_used"] = dtype
        schema[f"{resource}_reserved"] = dtype
    return schema


FILTERS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8,
    "role": pl.Utf8,       # compute or storage
    "filter": pl.Utf8,     # the filter's name (shardplan.planner.search.candidates.COMPUTE_FILTERS), or ranked_out
    "reason": pl.Utf8,
    "hosts": pl.Int64,     # hosts that filter dropped for the request (the first filter each failed)
}
"""filters.parquet: the candidate filters' drop counts the solver saw, per request."""

RESERVATIONS_SCHEMA: dict[str, pl.DataType] = {
    "reservation_id": pl.Utf8,
    "host_id": pl.Utf8,
    "user_id": pl.Utf8,
    "app_type": pl.Utf8,
    "vcpu": pl.Int64,
    "ram_gib": pl.Int64,
    "storage_gib": pl.Int64,
    "net_gbps": pl.Float64,
    "gpu": pl.Int64,
    "window_start": pl.Datetime("us", "UTC"),
    "window_end": pl.Datetime("us", "UTC"),
}
