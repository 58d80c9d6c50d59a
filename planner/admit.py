"""Admission during the day: requests that arrive after the nightly plan are placed into it, one at a time.

`shardplan admit PLAN_DIR --requests FILE --at TIME --out DIR` (and :func:`admit` in code, which the
pre-allocation replay calls) edits a plan directory the way a cloud's online scheduler does, greedily
and in arrival order, while honouring every invariant of the plan:

1. **Release.** Admitted requests whose `ends_at` ≤ TIME leave: their shards go, and what they took from
   reservation blocks goes back to the blocks' windows that have not ended. Reservation rows whose
   window ended by TIME hold nothing any more and are dropped.
2. **Hit.** A request whose (user_id, app_type) holds blocks is placed, if it can be, inside them: on
   the blocks' hosts, with vcpu, RAM and GPUs taken from the blocks (storage and network from the
   host's free room). What a block can give is the least it holds over the windows the request lives
   in (from TIME to its `ends_at`, else to the end of the plan's windows), so that no window's
   reservation is overdrawn.
3. **Partial hit.** Else it may take what its blocks can give and the rest from free capacity on the
   same placement: on the blocks' hosts first, else anywhere (the blocks' hosts tried first).
4. **Miss.** Else it is placed in free capacity only: capacity less the existing load, the shards and,
   in every window the request lives in, what the reservations still hold.
5. **Unplaced**, with its reason, when none of these fits.

The placement of one request is the engine's greedy sharded best fit (`first_fit`, with the plan's
options: max_shards, zone, storage racks, remote memory, performance needs). Written back: the plan's
tables with the admitted requests (inputs/requests.parquet, shards.parquet, requests.parquet), the
blocks' remaining amounts (reservations.parquet), `admissions.parquet` (one row per admitted request:
when, until, outcome, what came from reservations) and `claims.parquet` (what each request took from
each block in each window). The result is checked against the invariants before anything is written.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import polars as pl

from shardplan.models.problem import GPU, NET_UNITS_PER_GBPS, RAM, VCPU, Assignment, skew_ratio
from shardplan.planner.engine import KIND_COLUMN, assemble
from shardplan.planner.report.export import empty_reservations
from shardplan.planner.search.baselines import first_fit
from shardplan.planner.search.candidates import build_fleet, remote_memory, request_arrays
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import (
    REQUEST_COLUMNS,
    REQUESTS_OUT_OPTIONAL,
    REQUESTS_OUT_SCHEMA,
    RESERVATIONS_SCHEMA,
    RESOURCES,
)

UTC = pl.Datetime("us", "UTC")
OUTCOMES: tuple[str, ...] = ("hit", "partial", "miss", "unplaced")
CLAIMED = ("vcpu", "ram_gib", "gpu")
"""What a reservation block gives a request (blocks hold no storage or network)."""
ADMISSIONS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8, "user_id": pl.Utf8, "app_type": pl.Utf8, "admitted_at": UTC, "ends_at": UTC,
    "released_at": UTC, "outcome": pl.Utf8, "vcpu": pl.Int64, "ram_gib": pl.Int64, "gpu": pl.Int64,
    "reserved_vcpu": pl.Int64, "reserved_ram_gib": pl.Int64, "reserved_gpu": pl.Int64, "reason": pl.Utf8,
}
"""admissions.parquet: one row per admitted request; reserved_*: what it took from reservation blocks."""
CLAIMS_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.Utf8, "reservation_id": pl.Utf8, "host_id": pl.Utf8, "window_start": UTC, "window_end": UTC,
    "vcpu": pl.Int64, "ram_gib": pl.Int64, "gpu": pl.Int64, "released_at": UTC,
}
"""claims.parquet: what a request took from one block row (a block in one window)."""
ENDS_AT = "ends_at"
"""Optional column of the arriving requests: when the request leaves (UTC); null or absent: it stays."""


class AdmitError(ValueError):
    """Arriving requests that cannot be admitted into this plan (an id it already holds, a bad ends_at)."""


@dataclass
class Ledger:
    """A plan as admission edits it: the tables of its directory plus admissions and claims."""

    hosts: pl.DataFrame
    requests: pl.DataFrame          # inputs/requests.parquet (with the kind column when blocks exist)
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    reservations: pl.DataFrame      # what each block row still holds
    plan: dict
    admissions: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ADMISSIONS_SCHEMA))
    claims: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=CLAIMS_SCHEMA))

    @classmethod
    def from_plan_dir(cls, plan_dir) -> "Ledger":
        """A ledger from a PlanDir (shardplan.plandir.read_plan_dir) and its admissions / claims files."""
        from shardplan.plandir import ADMISSIONS_FILE, CLAIMS_FILE, cast_to_schema

        def extra(name: str, schema: dict) -> pl.DataFrame:
            path = None if plan_dir.path is None else plan_dir.path / name
            if path is None or not path.is_file():
                return pl.DataFrame(schema=schema)
            return cast_to_schema(pl.read_parquet(path), schema, name)

        return cls(plan_dir.hosts, plan_dir.requests, plan_dir.shards, plan_dir.requests_out,
                   plan_dir.reservations if plan_dir.reservations is not None else empty_reservations(),
                   dict(plan_dir.plan), extra(ADMISSIONS_FILE, ADMISSIONS_SCHEMA), extra(CLAIMS_FILE, CLAIMS_SCHEMA))

    def options(self) -> PlanOptions:
        """The plan's options (plan.json `options`), defaults for what it does not record."""
        return PlanOptions.recorded(self.plan.get("options"))


@dataclass(frozen=True)
class AdmitSummary:
    """What one admission call did (plan.json `admissions` holds the running totals)."""

    at: datetime
    released: int
    expired_rows: int
    outcomes: dict[str, int]
    asked: dict[str, int]
    from_reservations: dict[str, int]

    def to_dict(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "released": self.released, "expired_reservation_rows": self.expired_rows,
                "outcomes": self.outcomes, "asked": self.asked, "from_reservations": self.from_reservations}


def as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def arrival_ends(arrivals: pl.DataFrame, at: datetime, source: str = "requests") -> list[datetime | None]:
    """The `ends_at` of each arriving request (None: stays), parsed as UTC; an end not after `at` is refused,
    naming the row and column."""
    if ENDS_AT not in arrivals.columns:
        return [None] * arrivals.height
    column = arrivals.get_column(ENDS_AT)
    if column.dtype == pl.Utf8:
        parsed = column.str.strip_chars().str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
        bad = column.is_not_null() & (column.str.strip_chars() != "") & parsed.is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            raise AdmitError(f"{source}, row {row + 1}, column '{ENDS_AT}': expected an ISO timestamp, "
                             f"got {column[row]!r}")
        column = parsed
    elif isinstance(column.dtype, pl.Datetime):
        column = (column.dt.replace_time_zone("UTC") if column.dtype.time_zone is None
                  else column.dt.convert_time_zone("UTC")).dt.cast_time_unit("us")
    else:
        raise AdmitError(f"{source}, column '{ENDS_AT}': expected timestamps, got {column.dtype}")
    ends = column.to_list()
    for row, end in enumerate(ends):
        if end is not None and end <= at:
            raise AdmitError(f"{source}, row {row + 1}, column '{ENDS_AT}': {end.isoformat()} is not after "
                             f"--at {at.isoformat()}")
    return ends


# --- release and expiry -------------------------------------------------------------------------


def release(ledger: Ledger, at: datetime) -> tuple[Ledger, int, int]:
    """Requests whose ends_at ≤ at leave (their claims go back to rows whose window has not ended), then rows
    whose window ended by `at` are dropped. Returns the ledger, how many left, how many rows expired."""
    admissions = ledger.admissions
    leaving = admissions.filter(pl.col("released_at").is_null() & pl.col("ends_at").is_not_null()
                                & (pl.col("ends_at") <= pl.lit(at, UTC)))
    reservations = ledger.reservations
    claims = ledger.claims
    if leaving.height:
        ids = leaving["request_id"].implode()
        back = (claims.filter(pl.col("request_id").is_in(ids) & pl.col("released_at").is_null()
                              & (pl.col("window_end") > pl.lit(at, UTC)))
                .group_by("reservation_id", "window_start").agg(pl.col(r).sum().alias(f"_back_{r}") for r in CLAIMED))
        reservations = (reservations.join(back, on=["reservation_id", "window_start"], how="left", nulls_equal=True)
                        .with_columns((pl.col(r) + pl.col(f"_back_{r}").fill_null(0)).alias(r) for r in CLAIMED)
                        .select(reservations.columns))
        claims = claims.with_columns(pl.when(pl.col("request_id").is_in(ids) & pl.col("released_at").is_null())
                                     .then(pl.lit(at, UTC)).otherwise(pl.col("released_at")).alias("released_at"))
        admissions = admissions.with_columns(
            pl.when(pl.col("request_id").is_in(ids) & pl.col("released_at").is_null())
            .then(pl.lit(at, UTC)).otherwise(pl.col("released_at")).alias("released_at"))
        ledger = dataclasses.replace(
            ledger, shards=ledger.shards.filter(~pl.col("request_id").is_in(ids)),
            requests=ledger.requests.filter(~pl.col("request_id").is_in(ids)),
            requests_out=ledger.requests_out.filter(~pl.col("request_id").is_in(ids)))
    expired = reservations.filter(pl.col("window_end").is_not_null() & (pl.col("window_end") <= pl.lit(at, UTC)))
    reservations = reservations.filter(pl.col("window_end").is_null() | (pl.col("window_end") > pl.lit(at, UTC)))
    return (dataclasses.replace(ledger, reservations=reservations, claims=claims, admissions=admissions),
            leaving.height, expired.height)


# --- the room a request may use -----------------------------------------------------------------


@dataclass
class _Room:
    """Arrays over hosts and block rows for one admission call, kept up to date request by request."""

    fleet: object
    host_index: dict[str, int]
    load: np.ndarray                 # (H, 5) existing load + shards, solver units
    rows: pl.DataFrame               # reservations with _row, _host, _window
    held: np.ndarray                 # (B, 3) what each row still holds (vcpu, ram_gib, gpu)
    windows: list[tuple[datetime, datetime]]
    row_window: np.ndarray           # (B,) window index, -1: no window (held all the time)
    row_host: np.ndarray             # (B,)
    block_rows: dict[str, list[int]]  # reservation_id → its rows
    group_blocks: dict[tuple[str, str], list[str]]

    @classmethod
    def build(cls, ledger: Ledger) -> "_Room":
        fleet = build_fleet(ledger.hosts)
        host_index = {h: i for i, h in enumerate(fleet.host_ids)}
        load = fleet.capacity - fleet.free + shard_load(ledger.shards, host_index)
        rows = ledger.reservations.with_row_index("_row")
        bounds = (rows.filter(pl.col("window_start").is_not_null() & pl.col("window_end").is_not_null())
                  .select("window_start", "window_end").unique().sort("window_start", "window_end"))
        windows = list(bounds.iter_rows())
        index = {w: i for i, w in enumerate(windows)}
        row_window = np.array([index.get((s, e), -1) if s is not None and e is not None else -1
                               for s, e in zip(rows["window_start"].to_list(), rows["window_end"].to_list())],
                              dtype=np.int64)
        row_host = np.array([host_index[h] for h in rows["host_id"].to_list()], dtype=np.int64)
        held = rows.select(CLAIMED).to_numpy().astype(np.int64).reshape(-1, len(CLAIMED))
        block_rows: dict[str, list[int]] = {}
        for i, rid in enumerate(rows["reservation_id"].to_list()):
            block_rows.setdefault(rid, []).append(i)
        group_blocks: dict[tuple[str, str], list[str]] = {}
        for rid, user, app in rows.select("reservation_id", "user_id", "app_type").unique(maintain_order=True).iter_rows():
            group_blocks.setdefault((user, app), []).append(rid)
        return cls(fleet, host_index, load, rows, held, windows, row_window, row_host, block_rows, group_blocks)

    def lives_in(self, at: datetime, end: datetime | None) -> np.ndarray:
        """Indices of the windows a request living [at, end) overlaps (end None: to the last window)."""
        return np.array([i for i, (s, e) in enumerate(self.windows) if e > at and (end is None or s < end)],
                        dtype=np.int64)

    def reserved_load(self, windows: np.ndarray) -> np.ndarray:
        """(H, 3): the most the rows hold on each host in any of `windows` (rows without a window: always)."""
        out = np.zeros((self.fleet.n_hosts, len(CLAIMED)), dtype=np.int64)
        always = self.row_window < 0
        np.add.at(out, self.row_host[always], self.held[always])
        if len(windows):
            per = np.zeros((len(windows), self.fleet.n_hosts, len(CLAIMED)), dtype=np.int64)
            for k, w in enumerate(windows):
                mine = self.row_window == w
                np.add.at(per[k], self.row_host[mine], self.held[mine])
            out += per.max(axis=0)
        return out

    def free(self, windows: np.ndarray) -> np.ndarray:
        """(H, 5) room no one holds over `windows`: capacity − load − what reservations hold."""
        free = self.fleet.capacity - self.load
        free[:, [VCPU, RAM, GPU]] -= self.reserved_load(windows)
        return np.clip(free, 0, None)

    def claimable(self, user: str, app: str, windows: np.ndarray) -> dict[str, tuple[int, np.ndarray]]:
        """Per block of the group: (host, what it can give over `windows`: the least its rows hold there;
        nothing when it has no row in one of them, or when there is no window left)."""
        out = {}
        for rid in self.group_blocks.get((user, app), []):
            rows = self.block_rows[rid]
            timeless = [i for i in rows if self.row_window[i] < 0]
            if timeless:
                out[rid] = (int(self.row_host[timeless[0]]), self.held[timeless].sum(axis=0))
                continue
            if len(windows) == 0:
                continue
            by_window = {int(self.row_window[i]): i for i in rows}
            if any(int(w) not in by_window for w in windows):
                continue
            give = np.min(np.stack([self.held[by_window[int(w)]] for w in windows]), axis=0)
            if give.any():
                out[rid] = (int(self.row_host[rows[0]]), give)
        return out


def shard_load(shards: pl.DataFrame, host_index: dict[str, int]) -> np.ndarray:
    """(H, 5) what shards rows take on each host, in solver units (network rounded up, as the engine does)."""
    load = np.zeros((len(host_index), len(RESOURCES)), dtype=np.int64)
    per_host = shards.group_by("host_id").agg(pl.col(r).sum() for r in RESOURCES)
    for row in per_host.iter_rows(named=True):
        load[host_index[row["host_id"]]] += np.array(
            [row["vcpu"], row["ram_gib"], row["storage_gib"], math.ceil(row["net_gbps"] * NET_UNITS_PER_GBPS - 1e-9),
             row["gpu"]], dtype=np.int64)
    return load


def _place(room: _Room, one: pl.DataFrame, free: np.ndarray, options: PlanOptions,
           first: np.ndarray | None = None) -> Assignment:
    """The engine's greedy best fit for one request on `free`; `first`: hosts tried before the others."""
    req = request_arrays(one)
    fleet = dataclasses.replace(room.fleet, free=free, held=None)
    if first is not None:
        fleet = dataclasses.replace(fleet, active=first)
    max_shards = req["max_shards"] if options.mode == "sharded" else np.ones_like(req["max_shards"])
    return first_fit(fleet, req["demand"], req["tier"], req["gpu_model"], max_shards, req["replicas"],
                     req["low_latency"], np.array([0]), options.mode == "sharded", options.min_local_ram_gib_per_vcpu,
                     best_fit=True, min_cpu=req["min_cpu"], min_iops=req["min_iops"],
                     remote=remote_memory(one, options), skew=skew_ratio(options.max_ram_skew))


def _with(one: pl.DataFrame, **values) -> pl.DataFrame:
    return one.with_columns(pl.lit(v, dtype=one.schema[k]).alias(k) for k, v in values.items())


def _usage(room: _Room, one: pl.DataFrame, assignment: Assignment, options: PlanOptions) -> np.ndarray:
    """(H, 5) what the assignment's shards take on each host, in solver units."""
    shards, _ = assemble(room.fleet, one, assignment, options, None)
    return shard_load(shards, room.host_index)


def _from_blocks(room: _Room, one: pl.DataFrame, free: np.ndarray, in_blocks: np.ndarray,
                 options: PlanOptions) -> tuple[Assignment, bool]:
    """As much of the request as its blocks give, placed in them (with its storage and network from the
    hosts' free room), then the rest in free capacity of the same zone within the shards left; the two
    placements merged per host. Returns the assignment (placed False when the blocks take none of it) and
    whether the blocks held all of it (a hit)."""
    row = one.row(0, named=True)
    give = in_blocks[:, [VCPU, RAM, GPU]].sum(axis=0)
    first_v, first_m, first_g = (min(int(row[k]), int(g)) for k, g in zip(CLAIMED, give))
    if first_v == 0 and first_g > 0:
        first_g = 0
    if first_v == 0 and first_m == 0:
        return Assignment.empty(1), False
    untouched = row.get("untouched_ram_gib")
    part = _with(one, vcpu=first_v, ram_gib=first_m, gpu=first_g,
                 **({} if untouched is None else {"untouched_ram_gib": min(float(untouched), first_m)}))
    only = free.copy()
    only[:, [VCPU, RAM, GPU]] = in_blocks[:, [VCPU, RAM, GPU]]
    first = _place(room, part, only, options)
    if not first.placed[0]:
        return first, False
    rest_v, rest_m, rest_g = row["vcpu"] - first_v, row["ram_gib"] - first_m, row["gpu"] - first_g
    if rest_v == 0 and rest_m == 0 and rest_g == 0:
        return first, True
    hosts = {p[0] for p in first.parts[0]}
    left_shards = int(row["max_shards"]) - len(hosts)
    if left_shards <= 0:
        return Assignment.empty(1), False
    zone = room.fleet.zone[next(iter(hosts))]
    room_left = np.clip(free - _usage(room, part, first, options), 0, None)
    room_left[room.fleet.zone != zone] = 0
    rest = _with(one, vcpu=rest_v, ram_gib=rest_m, gpu=rest_g, storage_gib=0, net_gbps=0.0, max_shards=left_shards,
                 **({} if untouched is None else {"untouched_ram_gib": max(float(untouched) - first_m, 0.0)}))
    if rest_v == 0 and rest_g == 0:
        rest = _with(rest, vcpu=0)
    second = _place(room, rest, room_left, options)
    if not second.placed[0]:
        return Assignment.empty(1), False
    merged: dict[int, list[int]] = {}
    for h, v, m, n, g in [*first.parts[0], *second.parts[0]]:
        total = merged.setdefault(h, [0, 0, 0, 0])
        for i, x in enumerate((v, m, n, g)):
            total[i] += x
    combined = Assignment.empty(1)
    combined.placed[0] = True
    combined.parts[0] = [(h, v, m, n, g) for h, (v, m, n, g) in sorted(merged.items())]
    combined.storage_hosts[0] = list(first.storage_hosts[0])
    within = free.copy()
    within[:, [VCPU, RAM, GPU]] += in_blocks[:, [VCPU, RAM, GPU]]
    if (_usage(room, one, combined, options) > within).any():   # remote traffic of the whole, at its rate
        return Assignment.empty(1), False
    return combined, False


def _take(room: _Room, parts: list, blocks: dict[str, tuple[int, np.ndarray]], windows: np.ndarray
          ) -> dict[str, np.ndarray]:
    """Take each part's vcpu, RAM and GPUs from the group's blocks on its host (in block order) as far as they
    give; every row of a taken block over `windows` (or its timeless rows) holds that much less."""
    taken: dict[str, np.ndarray] = {}
    give = {rid: g.copy() for rid, (_, g) in blocks.items()}
    for h, v, m, _n, g in parts:
        need = np.array([v, m, g], dtype=np.int64)
        for rid, (host, _) in blocks.items():
            if host != h or not need.any():
                continue
            amount = np.minimum(need, give[rid])
            if amount.any():
                taken[rid] = taken.get(rid, np.zeros(3, dtype=np.int64)) + amount
                give[rid] -= amount
                need -= amount
    live = set(windows.tolist())
    for rid, amount in taken.items():
        rows = room.block_rows[rid]
        timeless = [i for i in rows if room.row_window[i] < 0]
        targets = timeless or [i for i in rows if int(room.row_window[i]) in live]
        left = amount.copy()
        for i in targets:
            if timeless:   # timeless rows: take from them in turn
                step = np.minimum(left, room.held[i])
                room.held[i] -= step
                left -= step
            else:          # one row per window: each window holds that much less
                room.held[i] -= amount
    return taken


def admit(ledger: Ledger, arrivals: pl.DataFrame, at: datetime, ends: list[datetime | None] | None = None,
          options: PlanOptions | None = None) -> tuple[Ledger, AdmitSummary]:
    """Release what has ended by `at`, then admit `arrivals` (validated requests rows) in their order, each as
    a hit, partial hit, miss or unplaced (module docstring). Returns the edited ledger (not yet checked or
    written) and a summary."""
    at = as_utc(at)
    options = options or ledger.options()
    ends = arrival_ends(arrivals, at) if ends is None else ends
    clash = arrivals.join(ledger.requests.select("request_id"), on="request_id", how="semi")
    if clash.height:
        raise AdmitError(f"request id {clash['request_id'][0]!r} is already in the plan")
    ledger, released, expired = release(ledger, at)
    room = _Room.build(ledger)
    columns = [c.name for c in REQUEST_COLUMNS]
    arrivals = arrivals.select(columns)
    shard_rows, out_rows, admissions, claims = [], [], [], []
    counts = dict.fromkeys(OUTCOMES, 0)
    asked = dict.fromkeys(CLAIMED, 0)
    from_blocks = dict.fromkeys(CLAIMED, 0)
    for r in range(arrivals.height):
        one = arrivals.slice(r, 1)
        row = one.row(0, named=True)
        end = ends[r]
        windows = room.lives_in(at, end)
        free = room.free(windows)
        blocks = room.claimable(row["user_id"], row["app_type"], windows)
        in_blocks = np.zeros_like(free)
        for host, give in blocks.values():
            in_blocks[host, [VCPU, RAM, GPU]] += give
        outcome, assignment = "unplaced", None
        if blocks:
            assignment, whole = _from_blocks(room, one, free, in_blocks, options)
            outcome = "hit" if whole else ("partial" if assignment.placed[0] else "unplaced")
            if not assignment.placed[0]:   # its blocks and the free room of their hosts, then anywhere
                has_block = in_blocks.any(axis=1)
                near = free + in_blocks
                near[np.ix_(~has_block, [VCPU, RAM, GPU])] = 0
                assignment = _place(room, one, near, options)
                if not assignment.placed[0]:
                    assignment = _place(room, one, free + in_blocks, options, first=has_block)
                outcome = "partial" if assignment.placed[0] else "unplaced"
        if assignment is None or not assignment.placed[0]:
            assignment = _place(room, one, free, options)
            outcome = "miss" if assignment.placed[0] else "unplaced"
        taken: dict[str, np.ndarray] = {}
        if assignment.placed[0] and outcome in ("hit", "partial"):
            taken = _take(room, assignment.parts[0], blocks, windows)
            if not taken:
                outcome = "miss"
        shards, out = assemble(room.fleet, one, assignment, options, None)
        if outcome == "unplaced":
            out = out.with_columns(pl.lit("capacity: no room in its reservations or in free capacity within "
                                          "max_shards, zone, replica-rack and performance limits").alias("reason"))
        room.load += shard_load(shards, room.host_index)
        shard_rows.append(shards)
        out_rows.append(out)
        total = sum(taken.values(), np.zeros(3, dtype=np.int64))
        counts[outcome] += 1
        for i, name in enumerate(CLAIMED):
            asked[name] += int(row[name])
            from_blocks[name] += int(total[i])
        admissions.append({"request_id": row["request_id"], "user_id": row["user_id"], "app_type": row["app_type"],
                           "admitted_at": at, "ends_at": end, "released_at": None, "outcome": outcome,
                           "vcpu": row["vcpu"], "ram_gib": row["ram_gib"], "gpu": row["gpu"],
                           "reserved_vcpu": int(total[0]), "reserved_ram_gib": int(total[1]),
                           "reserved_gpu": int(total[2]), "reason": out["reason"][0]})
        live = set(windows.tolist())
        for rid, amount in taken.items():
            rows = room.block_rows[rid]
            for i in rows:
                w = int(room.row_window[i])
                if w >= 0 and w not in live:
                    continue
                start, stop = (None, None) if w < 0 else room.windows[w]
                claims.append({"request_id": row["request_id"], "reservation_id": rid,
                               "host_id": room.fleet.host_ids[int(room.row_host[i])], "window_start": start,
                               "window_end": stop, "vcpu": int(amount[0]), "ram_gib": int(amount[1]),
                               "gpu": int(amount[2]), "released_at": None})
                if w < 0:
                    break
    reservations = room.rows.drop("_row").with_columns(
        *(pl.Series(name, room.held[:, i], dtype=RESERVATIONS_SCHEMA[name]) for i, name in enumerate(CLAIMED)))
    new_requests = arrivals.with_columns(pl.lit("request").alias(KIND_COLUMN)).select(
        pl.col(c) if c in arrivals.columns or c == KIND_COLUMN else pl.lit(None).alias(c)
        for c in ledger.requests.columns).cast(ledger.requests.schema)
    out_schema = {**REQUESTS_OUT_SCHEMA, **REQUESTS_OUT_OPTIONAL}
    requests_out = pl.concat([ledger.requests_out.select(list(out_schema)).cast(out_schema),
                              *(o.select(list(out_schema)).cast(out_schema) for o in out_rows)], how="vertical")
    summary = AdmitSummary(at, released, expired, counts, asked, from_blocks)
    edited = dataclasses.replace(
        ledger, requests=pl.concat([ledger.requests, new_requests], how="vertical"),
        shards=pl.concat([ledger.shards, *(s.cast(ledger.shards.schema) for s in shard_rows)], how="vertical"),
        requests_out=requests_out, reservations=reservations.select(list(RESERVATIONS_SCHEMA)),
        admissions=pl.concat([ledger.admissions, pl.DataFrame(admissions, schema=ADMISSIONS_SCHEMA)], how="vertical"),
        claims=pl.concat([ledger.claims, pl.DataFrame(claims, schema=CLAIMS_SCHEMA)], how="vertical"),
        plan=_plan_json(ledger.plan, summary))
    return edited, summary


def _plan_json(plan: dict, summary: AdmitSummary) -> dict:
    """plan.json with `admissions`: the running totals and the last call."""
    totals = dict(plan.get("admissions") or {})
    outcomes = {k: int((totals.get("outcomes") or {}).get(k, 0)) + v for k, v in summary.outcomes.items()}
    asked = {k: int((totals.get("asked") or {}).get(k, 0)) + v for k, v in summary.asked.items()}
    given = {k: int((totals.get("from_reservations") or {}).get(k, 0)) + v
             for k, v in summary.from_reservations.items()}
    return {**plan, "admissions": {"calls": int(totals.get("calls", 0)) + 1, "outcomes": outcomes, "asked": asked,
                                   "from_reservations": given, "last": summary.to_dict()}}


def check_ledger(ledger: Ledger) -> list:
    """The plan's invariants on the edited tables (planner.report.checker.check_plan)."""
    from shardplan.planner.report.checker import check_plan

    alive = ledger.admissions.filter(pl.col("released_at").is_null()).select("request_id", "ends_at")
    return check_plan(ledger.hosts, ledger.requests, ledger.shards, ledger.requests_out, ledger.plan.get("options"),
                      ledger.reservations, lifetimes=alive)


def write_ledger(ledger: Ledger, out_dir, keep: tuple[str, ...] = ()) -> None:
    """The edited plan directory, every file atomically (planner.report.export.write_plan_dir), with
    admissions.parquet and claims.parquet."""
    from shardplan.plandir import ADMISSIONS_FILE, CLAIMS_FILE
    from shardplan.planner.report.export import write_plan_dir

    write_plan_dir(out_dir, hosts=ledger.hosts, requests=ledger.requests, shards=ledger.shards,
                   requests_out=ledger.requests_out, plan_json=ledger.plan, reservations=ledger.reservations,
                   keep=keep, extra={ADMISSIONS_FILE: ledger.admissions, CLAIMS_FILE: ledger.claims})
