"""A plan directory's files, and reading them back (DESIGN.md "Plan export"): the one reader the
planner (check, explain, diff) and the executors (apply) share. Writing is planner.report.export."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from shardplan.schema import (
    CURRENT_SCHEMA,
    HOST_COLUMNS,
    MOVES_SCHEMA,
    REQUEST_COLUMNS,
    REQUESTS_OUT_OPTIONAL,
    REQUESTS_OUT_SCHEMA,
    RESERVATIONS_SCHEMA,
    SHARDS_SCHEMA,
    Column,
    hosts_out_schema,
)

PLAN_METADATA_KEY = "shardplan.plan"
"""Parquet key-value metadata key that carries the plan.json text."""

SHARDS_FILE = "shards.parquet"
REQUESTS_OUT_FILE = "requests.parquet"
HOSTS_OUT_FILE = "hosts.parquet"
RESERVATIONS_FILE = "reservations.parquet"
PLAN_FILE = "plan.json"
FILTERS_FILE = "filters.parquet"
INPUT_HOSTS_FILE = "inputs/hosts.parquet"
INPUT_REQUESTS_FILE = "inputs/requests.parquet"
INPUT_CURRENT_FILE = "inputs/current.parquet"
MOVES_FILE = "moves.parquet"
INPUT_HISTORY_FILE = "inputs/history.parquet"   # nightly: the hourly demand per (user, app type) it forecast from
REPORT_FILE = "report.html"
ADMISSIONS_FILE = "admissions.parquet"   # shardplan admit: one row per request admitted during the day
CLAIMS_FILE = "claims.parquet"           # shardplan admit: what each admitted request took from each block



class PlanExportError(ValueError):
    """A plan that cannot be written: which table, which column, what is wrong."""


PLAN_FILES = ("shards.parquet", "requests.parquet", "hosts.parquet", "reservations.parquet", "moves.parquet",
              "filters.parquet",
              "admissions.parquet", "claims.parquet", "forecast.parquet", "report.html", "plan.json", "inputs/hosts.parquet", "inputs/requests.parquet",
              "inputs/current.parquet", "inputs/history.parquet")
"""Every file a plan directory may hold: what --force replaces and what counts as stale."""


class PlanDirError(ValueError):
    """A plan directory that cannot be read: which file and what is missing or malformed."""


@dataclass(frozen=True)
class PlanDir:
    """A plan directory read back: the inputs it was made from and every exported table."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    hosts_out: pl.DataFrame
    reservations: pl.DataFrame | None
    plan: dict
    path: Path | None = None
    current: pl.DataFrame | None = None   # inputs/current.parquet: what ran when the plan was made (re-planning)
    moves: pl.DataFrame | None = None     # moves.parquet


def cast_to_schema(frame: pl.DataFrame, schema: dict[str, pl.DataType], table: str,
                   optional: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    """The frame's columns of `schema`, in its order and types, then those of `optional` (null where the
    frame lacks them: a plan written before they existed); refuses lossy casts (0.5 gpu → 0)."""
    missing = [name for name in schema if name not in frame.columns]
    if missing:
        raise PlanExportError(f"{table}: missing column(s) {', '.join(missing)}")
    columns: list[pl.Series] = []
    for name, dtype in schema.items():
        series = frame.get_column(name)
        columns.append(_cast_series(series, dtype, table))
    for name, dtype in (optional or {}).items():
        columns.append(_cast_series(frame.get_column(name), dtype, table) if name in frame.columns
                       else pl.Series(name, [None] * frame.height, dtype=dtype))
    return pl.DataFrame(columns) if columns else pl.DataFrame(schema={**schema, **(optional or {})})


def _cast_series(series: pl.Series, dtype: pl.DataType, table: str) -> pl.Series:
    if series.dtype == dtype:
        return series
    if isinstance(dtype, pl.Datetime):
        if series.dtype == pl.Utf8:
            series = series.str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
        elif isinstance(series.dtype, pl.Datetime):
            series = (series.dt.replace_time_zone("UTC") if series.dtype.time_zone is None
                      else series.dt.convert_time_zone("UTC"))
    if dtype.is_integer() and series.dtype.is_float():
        fractional = series.is_not_null() & (series != series.floor())
        if fractional.any():
            row = int(fractional.arg_true()[0])
            raise PlanExportError(f"{table}: row {row + 1}, column '{series.name}': "
                                  f"expected a whole number, got {series[row]}")
    try:
        cast = series.cast(dtype, strict=True)
    except Exception as exc:  # polars raises InvalidOperationError / ComputeError for bad casts
        raise PlanExportError(f"{table}: column '{series.name}' cannot be read as {dtype} ({exc})") from exc
    lost = cast.is_null() & series.is_not_null()
    if lost.any():
        row = int(lost.arg_true()[0])
        raise PlanExportError(f"{table}: row {row + 1}, column '{series.name}': cannot read {series[row]!r} as {dtype}")
    return cast


def conform_inputs(frame: pl.DataFrame, columns: tuple[Column, ...], table: str) -> pl.DataFrame:
    """Known input columns in schema types with defaults filled; extra columns kept after them."""
    out: list[pl.Series] = []
    for column in columns:
        if column.name in frame.columns:
            series = _cast_series(frame.get_column(column.name), column.polars_dtype, table)
            if column.default is not None and series.null_count():
                series = series.fill_null(column.default)
        elif column.required:
            raise PlanExportError(f"{table}: missing column {column.name}")
        else:
            series = pl.Series(column.name, [column.default] * frame.height, dtype=column.polars_dtype)
        out.append(series)
    known = {column.name for column in columns}
    extra = [name for name in frame.columns if name not in known]
    conformed = pl.DataFrame(out)
    return conformed.hstack(frame.select(extra)) if extra else conformed


def read_plan_metadata(path: str | Path) -> dict:
    """The plan.json a single parquet file of a plan directory carries in its key-value metadata."""
    metadata = pq.read_schema(path).metadata or {}
    text = metadata.get(PLAN_METADATA_KEY.encode())
    if text is None:
        raise PlanDirError(f"{path}: no '{PLAN_METADATA_KEY}' key in the parquet metadata")
    return json.loads(text)


PLAN_DIR_FILES = (PLAN_FILE, SHARDS_FILE, REQUESTS_OUT_FILE, HOSTS_OUT_FILE, INPUT_HOSTS_FILE, INPUT_REQUESTS_FILE)
"""What a plan directory written by shardplan always holds."""


def read_plan_dir(path: str | Path, required: tuple[str, ...] = PLAN_DIR_FILES,
                  optional: tuple[str, ...] | None = None) -> PlanDir:
    """Read a plan directory; errors name the missing or bad file. Beside `required`, the files in `optional`
    (default: every other one) are read when present (an executor needs only shards.parquet and
    inputs/hosts.parquet, and inputs/requests.parquet if there); tables not read are empty, plan.json {}."""
    root = Path(path)
    if not root.is_dir():
        raise PlanDirError(f"{root}: not a plan directory (no such folder)")
    missing = [name for name in required if not (root / name).is_file()]
    if missing:
        raise PlanDirError(f"{root}: plan directory is missing {', '.join(missing)}")
    wanted = set(required) | (set(optional) if optional is not None
                              else set(PLAN_DIR_FILES) | {RESERVATIONS_FILE, INPUT_CURRENT_FILE, MOVES_FILE})
    present = lambda name: name in wanted and (root / name).is_file()  # noqa: E731
    plan: dict = {}
    if present(PLAN_FILE):
        try:
            plan = json.loads((root / PLAN_FILE).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise PlanDirError(f"{root / PLAN_FILE}: not valid JSON ({exc})") from exc
        if not isinstance(plan, dict):
            raise PlanDirError(f"{root / PLAN_FILE}: expected a JSON object, got {type(plan).__name__}")

    def table(name: str, schema: dict[str, pl.DataType], optional: dict | None = None) -> pl.DataFrame:
        return (_read_table(root, name, schema, optional) if present(name)
                else pl.DataFrame(schema={**schema, **(optional or {})}))

    def inputs(name: str, columns: tuple[Column, ...]) -> pl.DataFrame:
        if present(name):
            return _read_inputs(root, name, columns)
        return pl.DataFrame(schema={c.name: c.polars_dtype for c in columns})

    return PlanDir(
        hosts=inputs(INPUT_HOSTS_FILE, HOST_COLUMNS),
        requests=inputs(INPUT_REQUESTS_FILE, REQUEST_COLUMNS),
        shards=table(SHARDS_FILE, SHARDS_SCHEMA),
        requests_out=table(REQUESTS_OUT_FILE, REQUESTS_OUT_SCHEMA, REQUESTS_OUT_OPTIONAL),
        hosts_out=table(HOSTS_OUT_FILE, hosts_out_schema()),
        reservations=_read_table(root, RESERVATIONS_FILE, RESERVATIONS_SCHEMA) if present(RESERVATIONS_FILE) else None,
        plan=plan,
        path=root,
        current=_read_table(root, INPUT_CURRENT_FILE, CURRENT_SCHEMA) if present(INPUT_CURRENT_FILE) else None,
        moves=_read_table(root, MOVES_FILE, MOVES_SCHEMA) if present(MOVES_FILE) else None,
    )


def _read_parquet(root: Path, name: str) -> pl.DataFrame:
    try:
        return pl.read_parquet(root / name)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise PlanDirError(f"{root / name}: not a readable Parquet file ({exc})") from exc


def _read_table(root: Path, name: str, schema: dict[str, pl.DataType],
                optional: dict[str, pl.DataType] | None = None) -> pl.DataFrame:
    try:
        return cast_to_schema(_read_parquet(root, name), schema, str(root / name), optional)
    except PlanExportError as exc:
        raise PlanDirError(str(exc)) from exc


def _read_inputs(root: Path, name: str, columns: tuple[Column, ...]) -> pl.DataFrame:
    try:
        return conform_inputs(_read_parquet(root, name), columns, str(root / name))
    except PlanExportError as exc:
        raise PlanDirError(str(exc)) from exc
