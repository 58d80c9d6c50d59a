"""Load the input tables (CSV or Parquet, by extension) and validate them.

Each rule that fails raises :class:`InputError` naming the file, the 1-based data
row and the column, so the CLI can print it and exit with code 2 before anything
is written.
"""
from __future__ import annotations

import io
from pathlib import Path

import polars as pl

from shardplan.schema import HISTORY_COLUMNS, HOST_COLUMNS, REQUEST_COLUMNS, RESOURCES, Column, capacity_expr

BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "1.0": True,
              "0.0": False}
"""How a CSV cell reads as a boolean column's value (case-insensitive)."""


class InputError(ValueError):
    """A bad input file: which file, which row (1-based data row), which column, what rule."""

    def __init__(self, file: str | Path, message: str, row: int | None = None, column: str | None = None):
        self.file = str(file)
        self.row = row
        self.column = column
        self.message = message
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(": ".join([", ".join(where), message]))


def read_table(path: str | Path) -> pl.DataFrame:
    """Read a CSV (all columns as text, so types are checked here) or a Parquet file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            return pl.read_parquet(path)
        except Exception as exc:  # polars raises several error types for bad files
            raise InputError(path, f"not a readable Parquet file ({exc.__class__.__name__}: {exc})") from exc
    if suffix in (".csv", ".txt"):
        raw = path.read_bytes()
        if not raw.strip():
            raise InputError(path, "the file is empty")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            raise InputError(path, f"undecodable bytes (not UTF-8) at line {line}, byte {exc.start}",
                             row=max(line - 1, 0) or None) from exc
        try:
            return pl.read_csv(io.StringIO(text), infer_schema=False, null_values=[""])
        except Exception as exc:
            raise InputError(path, f"not a readable CSV file ({exc})") from exc
    raise InputError(path, f"unknown file type '{path.suffix}' (expected .csv or .parquet)")


def _cast_column(frame: pl.DataFrame, column: Column, file: Path) -> pl.Series:
    series = frame.get_column(column.name)
    if series.dtype == pl.Utf8 and column.dtype is not str:
        series = series.str.strip_chars()
    if column.dtype is str:
        cast = series.cast(pl.Utf8, strict=False)
    elif column.dtype is bool:
        if series.dtype == pl.Boolean:
            return series.alias(column.name)
        text = series.cast(pl.Utf8, strict=False).str.to_lowercase()
        cast = text.replace_strict(BOOL_WORDS, default=None, return_dtype=pl.Boolean)
        bad = text.is_not_null() & cast.is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise InputError(file, f"expected {column.describe()}, got {series[row]!r}", row + 1, column.name)
        return cast.alias(column.name)
    elif column.dtype is int:
        cast = series.cast(pl.Float64, strict=False)
        bad_int = cast.is_not_null() & ((cast != cast.floor()) | cast.is_infinite())
        bad = (series.is_not_null() & cast.is_null()) | bad_int
        if bad.any():
            row = int(bad.arg_true()[0])
            raise InputError(file, f"expected {column.describe()}, got {series[row]!r}", row + 1, column.name)
        cast = cast.cast(pl.Int64)
    else:
        cast = series.cast(pl.Float64, strict=False)
    bad = series.is_not_null() & cast.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(file, f"expected {column.describe()}, got {series[row]!r}", row + 1, column.name)
    if column.dtype is float:
        nonfinite = cast.is_nan() | cast.is_infinite()
        if nonfinite.any():
            row = int(nonfinite.arg_true()[0])
            raise InputError(file, f"expected a finite number, got {series[row]!r}", row + 1, column.name)
    return cast.alias(column.name)


def validate_table(frame: pl.DataFrame, columns: tuple[Column, ...], file: str | Path, key: str | None) -> pl.DataFrame:
    """Check types, ranges, allowed values, missing values and the unique key; fill defaults."""
    file = Path(file)
    if frame.height == 0:
        raise InputError(file, "the table has no rows")
    known = {c.name for c in columns}
    missing = [c.name for c in columns if c.required and c.name not in frame.columns]
    if missing:
        raise InputError(file, f"required column missing (expected {', '.join(missing)})", column=missing[0])
    out: list[pl.Series] = []
    for column in columns:
        if column.name not in frame.columns:
            out.append(pl.Series(column.name, [column.default] * frame.height, dtype=column.polars_dtype))
            continue
        series = _cast_column(frame, column, file)
        if column.dtype is str:
            series = series.str.strip_chars()
            series = series.set(series == "", None) if (series == "").any() else series
        if series.null_count():
            if column.default is not None:
                series = series.fill_null(column.default)
            elif not column.nullable:
                row = int(series.is_null().arg_true()[0])
                raise InputError(file, f"missing value (expected {column.describe()})", row + 1, column.name)
        if column.minimum is not None:
            bad = series < column.minimum
            if bad.any():
                row = int(bad.arg_true()[0])
                raise InputError(file, f"expected {column.describe()}, got {series[row]}", row + 1, column.name)
        if column.maximum is not None:
            bad = series > column.maximum
            if bad.any():
                row = int(bad.arg_true()[0])
                raise InputError(file, f"expected {column.describe()}, got {series[row]}", row + 1, column.name)
        if column.allowed is not None:
            bad = series.is_not_null() & ~series.is_in(list(column.allowed))
            if bad.any():
                row = int(bad.arg_true()[0])
                raise InputError(file, f"unknown value {series[row]!r}, expected {column.describe()}", row + 1, column.name)
        out.append(series)
    table = pl.DataFrame(out)
    extra = [c for c in frame.columns if c not in known]
    if extra:
        table = table.hstack(frame.select(extra))
    if key is not None:
        dup = table.get_column(key).is_duplicated()
        if dup.any():
            rows = dup.arg_true()
            raise InputError(file, f"duplicate id {table[key][int(rows[1])]!r} (first at row {int(rows[0]) + 1})",
                             int(rows[1]) + 1, key)
    return table


def load_hosts(path: str | Path) -> pl.DataFrame:
    """The hardware catalogue, validated; a rack must lie in exactly one zone and load fit capacity."""
    hosts = validate_table(read_table(path), HOST_COLUMNS, path, key="host_id")
    return check_hosts(hosts, path)


def check_hosts(hosts: pl.DataFrame, path: str | Path) -> pl.DataFrame:
    """Cross-row rules of the hosts table (also used on tables built in code)."""
    zones_per_rack = hosts.group_by("rack").agg(pl.col("zone").n_unique().alias("n"))
    bad_racks = zones_per_rack.filter(pl.col("n") > 1).get_column("rack").to_list()
    if bad_racks:
        rack = sorted(bad_racks)[0]
        indexed = hosts.with_row_index("_row").filter(pl.col("rack") == rack)
        first_zone = indexed["zone"][0]
        row = int(indexed.filter(pl.col("zone") != first_zone)["_row"][0])
        raise InputError(path, f"rack {rack!r} lies in more than one zone ({first_zone!r} and {hosts['zone'][row]!r})",
                         row + 1, "zone")
    for resource in RESOURCES:  # invariant 2 holds for no plan on a host already loaded past its capacity
        over = hosts.with_row_index("_row").filter(pl.col(f"used_{resource}") > capacity_expr(resource) + 1e-9)
        if over.height:
            row = over.row(0, named=True)
            raise InputError(path, f"host {row['host_id']!r}: used_{resource} {row[f'used_{resource}']} exceeds its "
                             f"capacity {over.select(capacity_expr(resource)).item(0, 0)}", int(row["_row"]) + 1,
                             f"used_{resource}")
    return hosts


def load_requests(path: str | Path) -> pl.DataFrame:
    """VM requests of the planning window, validated with defaults filled in."""
    requests = validate_table(read_table(path), REQUEST_COLUMNS, path, key="request_id")
    indexed = requests.with_row_index("_row")
    bad = indexed.filter((pl.col("gpu") > 0) & (pl.col("vcpu") == 0))
    if bad.height:
        raise InputError(path, "a request with GPUs needs at least one vcpu (GPUs sit beside its compute)",
                         int(bad["_row"][0]) + 1, "vcpu")
    over = indexed.filter(pl.col("untouched_ram_gib").fill_null(0) > pl.col("ram_gib"))
    if over.height:
        raise InputError(path, f"untouched_ram_gib {over['untouched_ram_gib'][0]} exceeds the request's ram_gib "
                               f"{over['ram_gib'][0]}", int(over["_row"][0]) + 1, "untouched_ram_gib")
    return requests


def load_history(path: str | Path) -> pl.DataFrame:
    """History of VM usage for forecasting, with `ts` parsed as a UTC timestamp."""
    raw = read_table(path)
    native_ts = None
    if "ts" in raw.columns and isinstance(raw.schema["ts"], pl.Datetime):
        native_ts = raw.get_column("ts")
        native_ts = (native_ts.dt.replace_time_zone("UTC") if native_ts.dtype.time_zone is None
                     else native_ts.dt.convert_time_zone("UTC")).dt.cast_time_unit("us")
        raw = raw.with_columns(pl.col("ts").cast(pl.Utf8))
    table = validate_table(raw, HISTORY_COLUMNS, path, key=None)
    if native_ts is not None:
        return table.with_columns(native_ts.alias("ts"))
    parsed = table.get_column("ts").str.to_datetime(time_zone="UTC", strict=False, time_unit="us")
    bad = parsed.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        raise InputError(path, f"expected a timestamp, got {table['ts'][row]!r}", row + 1, "ts")
    return table.with_columns(parsed.alias("ts"))


TOPOLOGY_COLUMNS: tuple[Column, ...] = (
    Column("from", str), Column("to", str),
    Column("latency_us", float, minimum=1e-9), Column("bandwidth_gbps", float, minimum=1e-9),
)
"""The `topology` table: one row per rack pair (two racks of one zone, in either order) or per zone (the zone
named twice: the default for the pairs of its racks that no row names)."""


def load_topology(path: str | Path, hosts: pl.DataFrame) -> tuple[tuple[str, str, float, float], ...]:
    """The distances between racks, validated against the hosts' racks and zones: rows (from, to, latency_us,
    bandwidth_gbps), as PlanOptions.topology holds them."""
    return check_topology(validate_table(read_table(path), TOPOLOGY_COLUMNS, path, key=None), hosts, path)


def check_topology(table: pl.DataFrame, hosts: pl.DataFrame, path: str | Path) -> tuple[tuple[str, str, float, float], ...]:
    """Cross-table rules of the topology: every name a rack or a zone of the hosts, a rack pair inside one
    zone (a request's parts lie in one zone, invariant 7), a zone only paired with itself, a rack not with
    itself (same-rack spreading is priced per extra host), no pair twice."""
    zone_of = dict(zip(hosts["rack"].to_list(), hosts["zone"].to_list()))
    zones = set(hosts["zone"].to_list())
    seen: dict[tuple[str, str], int] = {}
    rows = []
    for i, row in enumerate(table.select("from", "to", "latency_us", "bandwidth_gbps").iter_rows()):
        a, b, latency, bandwidth = row
        for column, name in (("from", a), ("to", b)):
            if name not in zone_of and name not in zones:
                raise InputError(path, f"{name!r} is neither a rack nor a zone of the hosts", i + 1, column)
        if a in zone_of and b in zone_of:
            if a == b:
                raise InputError(path, f"rack {a!r} paired with itself (spreading inside a rack is priced per "
                                       f"extra host, not by the topology)", i + 1, "to")
            if zone_of[a] != zone_of[b]:
                raise InputError(path, f"racks {a!r} ({zone_of[a]}) and {b!r} ({zone_of[b]}) lie in different zones; "
                                       f"a request's parts lie in one zone, so the pair would price nothing",
                                 i + 1, "to")
        elif a in zone_of or b in zone_of:
            raise InputError(path, f"{a!r} and {b!r}: a row pairs two racks or names one zone twice", i + 1, "to")
        elif a != b:
            raise InputError(path, f"zones {a!r} and {b!r}: a request's parts lie in one zone, so a zone is only "
                                   f"paired with itself (the default for its racks)", i + 1, "to")
        key = (min(a, b), max(a, b))
        if key in seen:
            raise InputError(path, f"the pair {a!r}–{b!r} is given twice (first at row {seen[key]})", i + 1, "from")
        seen[key] = i + 1
        rows.append((a, b, float(latency), float(bandwidth)))
    return tuple(rows)
