"""Write a plan directory (DESIGN.md "Plan export"); reading it back is shardplan.plandir.

Every table is cast to its schema in :mod:`shardplan.schema` and serialised in memory
before the first file is written; each file then lands under a temporary name in
the same folder and is renamed into place, so a failure leaves no partial plan.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from shardplan.files import write_all_atomically, write_atomically
from shardplan.plandir import (  # noqa: F401
    FILTERS_FILE,
    HOSTS_OUT_FILE,
    INPUT_CURRENT_FILE,
    INPUT_HOSTS_FILE,
    INPUT_REQUESTS_FILE,
    MOVES_FILE,
    PLAN_FILE,
    PLAN_FILES,
    PLAN_METADATA_KEY,
    REQUESTS_OUT_FILE,
    RESERVATIONS_FILE,
    SHARDS_FILE,
    PlanDir,
    PlanDirError,
    PlanExportError,
    cast_to_schema,
    conform_inputs,
    read_plan_dir,
    read_plan_metadata,
)
from shardplan.schema import (
    CURRENT_SCHEMA,
    FILTERS_SCHEMA,
    HOST_COLUMNS,
    MOVES_SCHEMA,
    REQUEST_COLUMNS,
    REQUEST_STATUSES,
    REQUESTS_OUT_OPTIONAL,
    REQUESTS_OUT_SCHEMA,
    RESERVATIONS_SCHEMA,
    RESOURCES,
    SHARD_ROLES,
    SHARDS_SCHEMA,
    capacity_expr,
    hosts_out_schema,
)


class OutDirError(ValueError):
    """An output directory that cannot take a plan: not writable, or holding a plan without --force."""


def prepare_out_dir(out_dir: str | Path, force: bool = False) -> Path:
    """Check, before any solving, that `out_dir` can take a plan: a directory (or creatable one) we can
    write to, holding no plan unless `force`. Creates nothing."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutDirError(f"--out {out}: exists and is not a directory")
    held = [name for name in PLAN_FILES if (out / name).exists()]
    if held and not force:
        raise OutDirError(f"--out {out}: already holds a plan ({', '.join(held[:3])}{' …' if len(held) > 3 else ''}); "
                          "pass --force to replace it, or choose another directory")
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutDirError(f"--out {out}: {existing} is not writable")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OutDirError(f"--out {out}: cannot write in {existing} ({exc.strerror})") from exc
    return out


def remove_stale(out_dir: Path, written: set[str]) -> None:
    """Plan files of an earlier run that this run did not write (they must not pass for this plan's)."""
    for name in PLAN_FILES:
        if name not in written and (out_dir / name).exists():
            (out_dir / name).unlink()


def empty_reservations() -> pl.DataFrame:
    """A reservations table with no blocks (so sums over it need no special case)."""
    return pl.DataFrame(schema=RESERVATIONS_SCHEMA)


def reserved_peak(reservations: pl.DataFrame, suffix: str = "") -> pl.DataFrame:
    """Per host: the most each resource's reservations hold at any one time (columns `<resource><suffix>`) and
    `_reservations` (rows). Rows of one window are held together; rows of windows that do not overlap are
    not; a row without a window holds all the time. The peak of a sum of intervals is reached at some
    interval's start, so it is the largest sum over the rows' starts."""
    rows = reservations.select("host_id", "window_start", "window_end", *RESOURCES)
    always = rows.filter(pl.col("window_start").is_null() | pl.col("window_end").is_null())
    timed = rows.filter(pl.col("window_start").is_not_null() & pl.col("window_end").is_not_null())
    instants = timed.select("host_id", pl.col("window_start").alias("_at")).unique()
    at_instants = (instants.join(timed, on="host_id", how="inner")
                   .filter((pl.col("window_start") <= pl.col("_at")) & (pl.col("_at") < pl.col("window_end")))
                   .group_by("host_id", "_at").agg(pl.col(r).sum() for r in RESOURCES)
                   .group_by("host_id").agg(pl.col(r).max() for r in RESOURCES))
    constant = always.group_by("host_id").agg(pl.col(r).sum() for r in RESOURCES)
    counts = reservations.group_by("host_id").agg(pl.len().alias("_reservations"))
    return (pl.concat([at_instants, constant], how="vertical_relaxed")
            .group_by("host_id").agg(pl.col(r).sum().alias(f"{r}{suffix}") for r in RESOURCES)
            .join(counts, on="host_id", how="left"))


def host_usage(hosts: pl.DataFrame, shards: pl.DataFrame, reservations: pl.DataFrame | None = None) -> pl.DataFrame:
    """hosts.parquet: capacity (vcpu = floor(vcpu × overcommit)), used (existing + shards), reserved (the most its
    reservations hold at one time: :func:`reserved_peak`), active."""
    hosts = conform_inputs(hosts, HOST_COLUMNS, "hosts")
    reservations = empty_reservations() if reservations is None else reservations
    shard_load = shards.group_by("host_id").agg(
        *[pl.col(r).sum().alias(f"_shard_{r}") for r in RESOURCES], pl.len().alias("_shards"))
    reserved = reserved_peak(reservations, "_reserved")
    joined = (hosts.join(shard_load, on="host_id", how="left")
              .join(reserved, on="host_id", how="left")
              .with_columns(pl.col("_shards", "_reservations").fill_null(0)))
    capacity = {r: capacity_expr(r) for r in RESOURCES}
    existing_load = pl.any_horizontal([pl.col(f"used_{r}") > 0 for r in RESOURCES])
    columns: list[pl.Expr] = [
        pl.col("host_id"),
        ((pl.col("_shards") > 0) | (pl.col("_reservations") > 0) | existing_load).alias("active"),
    ]
    for resource in RESOURCES:
        columns += [
            capacity[resource].alias(f"{resource}_capacity"),
            (pl.col(f"used_{resource}") + pl.col(f"_shard_{resource}").fill_null(0)).alias(f"{resource}_used"),
            pl.col(f"{resource}_reserved").fill_null(0),
        ]
    return cast_to_schema(joined.select(columns), hosts_out_schema(), HOSTS_OUT_FILE)


def plan_json_text(plan_json: dict) -> str:
    """plan.json as text; non-finite numbers (an infinite gap) become null so any JSON reader accepts it."""
    try:
        return json.dumps(_finite(plan_json), indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PlanExportError(f"{PLAN_FILE}: cannot be written as JSON ({exc})") from exc


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _finite(dataclasses.asdict(value))
    if hasattr(value, "item"):  # numpy scalars
        return _finite(value.item())
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _parquet_bytes(frame: pl.DataFrame, plan_text: str | None) -> bytes:
    """Parquet in memory, plan.json under PLAN_METADATA_KEY in the Arrow schema's metadata when given (what
    read_plan_metadata reads; polars' own `metadata=` lands elsewhere, so this goes through pyarrow)."""
    table = frame.to_arrow()
    if plan_text is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[PLAN_METADATA_KEY.encode()] = plan_text.encode()
        table = table.replace_schema_metadata(metadata)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def _check_values(shards: pl.DataFrame, requests_out: pl.DataFrame, hosts: pl.DataFrame) -> None:
    bad_roles = shards.filter(~pl.col("role").is_in(list(SHARD_ROLES)) | pl.col("role").is_null())
    if bad_roles.height:
        raise PlanExportError(f"{SHARDS_FILE}: unknown role {bad_roles['role'][0]!r} "
                              f"(expected one of {', '.join(SHARD_ROLES)})")
    bad_status = requests_out.filter(~pl.col("status").is_in(list(REQUEST_STATUSES)) | pl.col("status").is_null())
    if bad_status.height:
        raise PlanExportError(f"{REQUESTS_OUT_FILE}: unknown status {bad_status['status'][0]!r} "
                              f"for request {bad_status['request_id'][0]!r} (expected one of {', '.join(REQUEST_STATUSES)})")
    unknown_hosts = shards.join(hosts, on="host_id", how="anti")
    if unknown_hosts.height:
        raise PlanExportError(f"{SHARDS_FILE}: request {unknown_hosts['request_id'][0]!r} has a shard on "
                              f"host {unknown_hosts['host_id'][0]!r}, which is not in the hosts input")


def write_plan_dir(out_dir: str | Path, *, hosts: pl.DataFrame, requests: pl.DataFrame, shards: pl.DataFrame,
                   requests_out: pl.DataFrame, plan_json: dict, reservations: pl.DataFrame | None = None,
                   keep: tuple[str, ...] = (), filters: pl.DataFrame | None = None,
                   current: pl.DataFrame | None = None, moves: pl.DataFrame | None = None,
                   extra: dict[str, pl.DataFrame] | None = None) -> None:
    """Write the plan directory; every file is built first, then each lands atomically (plan.json last);
    plan files of an earlier run that this one did not write are removed, but for `keep` (written next).
    Re-planning, `current` (what ran) lands in inputs/current.parquet and `moves` in moves.parquet."""
    out_dir = Path(out_dir)
    input_hosts = conform_inputs(hosts, HOST_COLUMNS, INPUT_HOSTS_FILE)
    input_requests = conform_inputs(requests, REQUEST_COLUMNS, INPUT_REQUESTS_FILE)
    shards = cast_to_schema(shards, SHARDS_SCHEMA, SHARDS_FILE)
    requests_out = cast_to_schema(requests_out, REQUESTS_OUT_SCHEMA, REQUESTS_OUT_FILE, REQUESTS_OUT_OPTIONAL)
    if reservations is not None:
        reservations = cast_to_schema(reservations, RESERVATIONS_SCHEMA, RESERVATIONS_FILE)
        unknown = reservations.join(input_hosts, on="host_id", how="anti")
        if unknown.height:
            raise PlanExportError(f"{RESERVATIONS_FILE}: reservation {unknown['reservation_id'][0]!r} is on "
                                  f"host {unknown['host_id'][0]!r}, which is not in the hosts input")
    _check_values(shards, requests_out, input_hosts)
    hosts_out = host_usage(input_hosts, shards, reservations)
    plan_text = plan_json_text(plan_json)

    contents: dict[str, bytes] = {
        INPUT_HOSTS_FILE: _parquet_bytes(input_hosts, plan_text),
        INPUT_REQUESTS_FILE: _parquet_bytes(input_requests, plan_text),
        SHARDS_FILE: _parquet_bytes(shards, plan_text),
        REQUESTS_OUT_FILE: _parquet_bytes(requests_out, plan_text),
        HOSTS_OUT_FILE: _parquet_bytes(hosts_out, plan_text),
    }
    if reservations is not None:
        contents[RESERVATIONS_FILE] = _parquet_bytes(reservations, plan_text)
    if filters is not None:
        contents[FILTERS_FILE] = _parquet_bytes(cast_to_schema(filters, FILTERS_SCHEMA, FILTERS_FILE), plan_text)
    if current is not None:
        contents[INPUT_CURRENT_FILE] = _parquet_bytes(cast_to_schema(current, CURRENT_SCHEMA, INPUT_CURRENT_FILE),
                                                      plan_text)
        contents[MOVES_FILE] = _parquet_bytes(cast_to_schema(moves if moves is not None else
                                                             pl.DataFrame(schema=MOVES_SCHEMA), MOVES_SCHEMA,
                                                             MOVES_FILE), plan_text)
    for name, frame in (extra or {}).items():   # further tables of the directory (admissions, claims)
        contents[name] = _parquet_bytes(frame, plan_text)
    contents[PLAN_FILE] = (plan_text + "\n").encode()
    write_all_atomically(out_dir, contents)
    remove_stale(out_dir, set(contents) | set(keep))


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path, plan_json: dict | None = None) -> None:
    """One Parquet file written atomically (temporary name beside it, then rename); plan.json in its metadata if given."""
    plan_text = None if plan_json is None else plan_json_text(plan_json)
    write_atomically(path, _parquet_bytes(frame, plan_text))


