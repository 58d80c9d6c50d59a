"""What runs now, as tables (DESIGN.md "What runs now, and re-planning against it").

`load_current` reads and validates a current placement (a plan directory's shards.parquet, or any
table with the shards columns) against tonight's hosts and requests. `must_move` says which running
requests cannot stay where they are, and why; the planner and the checker (invariant 11) both use it,
so they agree on what counts as a mandatory move. `compare` turns a current placement and a plan's
shards into moves.parquet rows and plan.json's `migration` counts, by DESIGN.md's definition of a
move (the multiset of a request's parts differs; renumbering shards is not a move).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shardplan.models.problem import part_ram_cap, skew_ratio
from shardplan.planner.validate.inputs import InputError, read_table, validate_table
from shardplan.schema import CURRENT_SCHEMA, MOVES_SCHEMA, SHARD_ROLES, Column, free_expr, tier_rank

CURRENT_COLUMNS: tuple[Column, ...] = (
    Column("request_id", str),
    Column("shard", int, minimum=0),
    Column("host_id", str),
    Column("replica", int, minimum=0),
    Column("vcpu", int, minimum=0),
    Column("ram_gib", int, minimum=0),
    Column("storage_gib", int, minimum=0),
    Column("net_gbps", float, minimum=0),
    Column("gpu", int, minimum=0),
    Column("role", str, allowed=SHARD_ROLES),
)
"""The current placement's columns: those of shards.parquet, validated like every input."""

PART_KEY = ("host_id", "replica", "vcpu", "ram_gib", "storage_gib", "gpu")
"""What identifies a part when comparing placements (DESIGN.md: shard numbers and net do not)."""


@dataclass(frozen=True)
class CurrentPlacement:
    """The running requests' parts (tonight's requests only), where they came from, and who left."""

    shards: pl.DataFrame          # CURRENT_SCHEMA, running requests only
    source: str
    departed: tuple[str, ...]     # request ids in the current placement that tonight's table lacks

    @property
    def running(self) -> list[str]:
        return self.shards["request_id"].unique(maintain_order=True).to_list()

    def summary(self) -> dict[str, object]:
        return {"source": self.source, "running_requests": len(self.running), "running_parts": self.shards.height,
                "departed_requests": len(self.departed)}


def empty_current() -> pl.DataFrame:
    return pl.DataFrame(schema=CURRENT_SCHEMA)


def current_file(previous: Path | None, current: Path | None) -> Path | None:
    """The table `--previous DIR` (its shards.parquet) or `--current FILE` names; both is an error."""
    if previous is not None and current is not None:
        raise InputError(current, "give either --previous DIR or --current FILE, not both")
    if previous is not None:
        if not Path(previous).is_dir():
            raise InputError(previous, "--previous: not a plan directory (no such folder)")
        return Path(previous) / "shards.parquet"
    return None if current is None else Path(current)


def load_current(path: str | Path, hosts: pl.DataFrame, requests: pl.DataFrame) -> CurrentPlacement:
    """Validate a current placement: types and ranges, unique (request, shard), hosts that exist tonight,
    and amounts that agree with tonight's requests; raises InputError naming file, row and column."""
    return check_current(read_table(path), hosts, requests, path)


def check_current(raw: pl.DataFrame, hosts: pl.DataFrame, requests: pl.DataFrame, path: str | Path
                  ) -> CurrentPlacement:
    """`load_current` on a table already read (also what a what-if hands over)."""
    if raw.height == 0:
        return CurrentPlacement(empty_current(), str(path), ())
    table = validate_table(raw, CURRENT_COLUMNS, path, key=None).select(list(CURRENT_SCHEMA))
    indexed = table.with_row_index("_row")
    _first_repeat(indexed, ("request_id", "shard"), path, "shard",
                  lambda row, first: f"request {row['request_id']!r} has shard {row['shard']} twice (first at row "
                                     f"{first + 1})")
    unknown = indexed.filter(~pl.col("host_id").is_in(hosts["host_id"].implode()))
    if unknown.height:
        row = unknown.row(0, named=True)
        raise InputError(path, f"host {row['host_id']!r} is not in tonight's hosts table", int(row["_row"]) + 1,
                         "host_id")
    _check_rows(indexed, path)
    tonight = set(requests["request_id"].to_list())
    running = indexed.filter(pl.col("request_id").is_in(list(tonight)))
    departed = tuple(sorted(set(table["request_id"].to_list()) - tonight))
    _check_amounts(running, requests, path)
    return CurrentPlacement(running.drop("_row"), str(path), departed)


def _first_repeat(indexed: pl.DataFrame, key: tuple[str, ...], path, column: str, message) -> None:
    """The first row (in file order) that repeats `key`, named with the row it repeats."""
    seen = indexed.with_columns(pl.col("_row").min().over(list(key)).alias("_first"))
    repeat = seen.filter(pl.col("_row") > pl.col("_first")).sort("_row")
    if repeat.height:
        row = repeat.row(0, named=True)
        raise InputError(path, message(row, int(row["_first"])), int(row["_row"]) + 1, column)


def _check_rows(indexed: pl.DataFrame, path) -> None:
    """Rows as shards.parquet writes them: compute-side parts (vcpu, RAM, GPU, NIC) and storage copies in
    rows of their own, compute rows with replica 0, one compute row per request and host, one copy per
    replica index and per host."""
    both = indexed.filter((pl.col("storage_gib") > 0) & ((pl.col("vcpu") + pl.col("ram_gib") + pl.col("gpu")) > 0))
    if both.height:
        row = both.row(0, named=True)
        raise InputError(path, f"request {row['request_id']!r}: a row holds a storage copy and compute or memory; "
                         "they go in rows of their own", int(row["_row"]) + 1, "storage_gib")
    compute = indexed.filter(pl.col("storage_gib") == 0)
    bad = compute.filter(pl.col("replica") != 0)
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(path, f"request {row['request_id']!r}: replica {row['replica']} on a row without "
                         "storage (compute, memory and GPU parts are replica 0)", int(row["_row"]) + 1, "replica")
    _first_repeat(compute, ("request_id", "host_id"), path, "host_id",
                  lambda row, first: f"request {row['request_id']!r} has two compute-side rows on host "
                                     f"{row['host_id']!r} (first at row {first + 1}); one part per host")
    copies = indexed.filter(pl.col("storage_gib") > 0)
    _first_repeat(copies, ("request_id", "replica"), path, "replica",
                  lambda row, first: f"request {row['request_id']!r} has storage replica {row['replica']} twice "
                                     f"(first at row {first + 1})")
    _first_repeat(copies, ("request_id", "host_id"), path, "host_id",
                  lambda row, first: f"request {row['request_id']!r} has two storage copies on host "
                                     f"{row['host_id']!r} (first at row {first + 1})")


def _check_amounts(running: pl.DataFrame, requests: pl.DataFrame, path: str | Path) -> None:
    """A running request's parts must add up to what tonight's table asks of it (vcpu, RAM, GPU), each
    storage copy must hold its storage_gib, and it must have as many copies as replicas."""
    if running.height == 0:
        return
    asked = requests.select("request_id", "vcpu", "ram_gib", "gpu", "storage_gib", "replicas")
    sums = (running.group_by("request_id", maintain_order=True)
            .agg(pl.col("_row").min(), pl.col("vcpu").sum(), pl.col("ram_gib").sum(), pl.col("gpu").sum(),
                 (pl.col("storage_gib") > 0).sum().alias("copies"))
            .join(asked, on="request_id", suffix="_asked"))
    for column in ("vcpu", "ram_gib", "gpu"):
        bad = sums.filter(pl.col(column) != pl.col(f"{column}_asked"))
        if bad.height:
            row = bad.row(0, named=True)
            raise InputError(path, f"request {row['request_id']!r} holds {row[column]} {column} in the current "
                             f"placement but tonight's requests ask for {row[f'{column}_asked']}",
                             int(row["_row"]) + 1, column)
    copies = running.filter(pl.col("storage_gib") > 0).join(asked, on="request_id", suffix="_asked")
    bad = copies.filter(pl.col("storage_gib") != pl.col("storage_gib_asked"))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(path, f"request {row['request_id']!r}: a storage copy of {row['storage_gib']} GiB, but "
                         f"tonight's requests ask for {row['storage_gib_asked']} GiB", int(row["_row"]) + 1,
                         "storage_gib")
    bad = copies.filter(pl.col("replica") >= pl.col("replicas"))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(path, f"request {row['request_id']!r}: replica {row['replica']}, but tonight's requests ask "
                         f"for {row['replicas']} replicas (0..{row['replicas'] - 1})", int(row["_row"]) + 1, "replica")
    bad = sums.filter((pl.col("storage_gib") > 0) & (pl.col("copies") != pl.col("replicas")))
    if bad.height:
        row = bad.row(0, named=True)
        raise InputError(path, f"request {row['request_id']!r} has {row['copies']} storage copies in the current "
                         f"placement but tonight's requests ask for {row['replicas']} replicas",
                         int(row["_row"]) + 1, "replica")


# --- mandatory moves ----------------------------------------------------------------------------------


def must_move(hosts: pl.DataFrame, requests: pl.DataFrame, current: pl.DataFrame,
              whole: bool = False, min_local_ram_gib_per_vcpu: float = 0.5,
              max_ram_skew: float | None = None, remote_cap: pl.DataFrame | None = None) -> dict[str, str]:
    """Running requests that cannot stay where they are, with the reason (a person can act on it):
    a part on a host that is no longer `up`; a host that can no longer hold the parts it held (its
    existing load grew: the lowest-priority, then largest, running requests there must move until the
    rest fit); a copy on a tier below the request's, a GPU of another model, more hosts than max_shards;
    a compute part on a host slower than its min_cpu_score, a copy on storage below its min_storage_iops;
    in whole-VM mode, a request split over several hosts or without a copy beside its VM; and any part
    that would break an invariant where it is (copies sharing a rack, parts in two zones, less local
    RAM per vcpu than the option asks or more than max_ram_skew × its vcpu share, more remote memory than
    its rule allows, GPUs without a vcpu beside them): keeping such a request is no valid plan. The checker
    applies the same rule. `remote_cap` (request_id, remote_cap: the most GiB it may hold remotely, by the
    plan's remote-memory pricing) is that rule; without it, flat pricing's: none for latency class low."""
    if current.height == 0:
        return {}
    reasons: dict[str, str] = {}
    info = hosts.select("host_id", "status", "storage_type", "gpu_model", "rack", "zone",
                        *[c for c in ("cpu_score", "storage_iops") if c in hosts.columns])
    needs = [c for c in ("min_cpu_score", "min_storage_iops") if c in requests.columns]
    parts = current.join(info, on="host_id", how="left").join(
        requests.select("request_id", "priority", "max_shards", "latency_class", *needs,
                        pl.col("vcpu").alias("request_vcpu"), pl.col("ram_gib").alias("request_ram"),
                        pl.col("storage_type").alias("wants_tier"), pl.col("gpu_model").alias("wants_gpu")),
        on="request_id", how="left")
    for row in parts.filter(pl.col("status") != "up").sort("request_id", "shard").iter_rows(named=True):
        reasons.setdefault(row["request_id"], f"host {row['host_id']} {row['status']}")
    for row in parts.filter(pl.col("storage_gib") > 0).iter_rows(named=True):
        if tier_rank(row["storage_type"]) < tier_rank(row["wants_tier"]):
            reasons.setdefault(row["request_id"], f"host {row['host_id']} is {row['storage_type']}, below its "
                                                  f"{row['wants_tier']} tier")
    for row in parts.filter((pl.col("gpu") > 0) & pl.col("wants_gpu").is_not_null()).iter_rows(named=True):
        if row["gpu_model"] != row["wants_gpu"]:
            reasons.setdefault(row["request_id"], f"host {row['host_id']} has {row['gpu_model']} GPUs, not "
                                                  f"{row['wants_gpu']}")
    if {"min_cpu_score", "cpu_score", "min_storage_iops", "storage_iops"} <= set(parts.columns):
        slow_cpu, slow_iops = below_needs(parts)
        for row in slow_cpu.sort("request_id", "shard").iter_rows(named=True):
            reasons.setdefault(row["request_id"], f"host {row['host_id']} has cpu_score {row['cpu_score']:g}, below "
                                                  f"its min_cpu_score {row['min_cpu_score']:g}")
        for row in slow_iops.sort("request_id", "shard").iter_rows(named=True):
            reasons.setdefault(row["request_id"], f"host {row['host_id']} has storage_iops {row['storage_iops']:g}, "
                                                  f"below its min_storage_iops {row['min_storage_iops']:g}")
    compute = parts.filter(pl.col("storage_gib") == 0).group_by("request_id").agg(
        pl.col("host_id").n_unique().alias("hosts"), pl.col("max_shards").first())
    for row in compute.filter(pl.col("hosts") > (1 if whole else pl.col("max_shards"))).iter_rows(named=True):
        reasons.setdefault(row["request_id"], f"spans {row['hosts']} hosts, more than "
                                              f"{'whole-VM mode allows' if whole else 'its max_shards'}")
    _breaks_invariants(parts, whole, min_local_ram_gib_per_vcpu, reasons, max_ram_skew, remote_cap)
    _over_capacity(hosts, parts, reasons)
    return dict(sorted(reasons.items()))


def below_needs(parts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Invariant 10's rule, for the planner and the checker alike: of shards-shaped rows beside their host's
    cpu_score and storage_iops and their request's needs, (compute parts on hosts slower than min_cpu_score,
    storage copies on storage below min_storage_iops)."""
    needs = parts.with_columns(pl.col("min_cpu_score").fill_null(0.0), pl.col("min_storage_iops").fill_null(0.0))
    return (needs.filter((pl.col("vcpu") > 0) & (pl.col("cpu_score") < pl.col("min_cpu_score") - 1e-9)),
            needs.filter((pl.col("storage_gib") > 0) & (pl.col("storage_iops") < pl.col("min_storage_iops") - 1e-9)))


def _breaks_invariants(parts: pl.DataFrame, whole: bool, ratio: float, reasons: dict[str, str],
                       skew: float | None = None, remote_cap: pl.DataFrame | None = None) -> None:
    """Running requests whose parts, left where they are, would break invariants 4–7 tonight."""
    copies = parts.filter(pl.col("storage_gib") > 0)
    for row in copies.group_by("request_id", "rack").len().filter(pl.col("len") > 1).sort("request_id").iter_rows(
            named=True):
        reasons.setdefault(row["request_id"], f"{row['len']} storage copies share rack {row['rack']}")
    for row in parts.group_by("request_id").agg(pl.col("zone").n_unique().alias("zones")).filter(
            pl.col("zones") > 1).sort("request_id").iter_rows(named=True):
        reasons.setdefault(row["request_id"], f"parts in {row['zones']} zones")
    per_host = parts.filter(pl.col("storage_gib") == 0).group_by("request_id", "host_id").agg(
        pl.col("vcpu").sum(), pl.col("ram_gib").sum(), pl.col("gpu").sum(), pl.col("latency_class").first(),
        pl.col("request_vcpu").first(), pl.col("request_ram").first())
    for row in per_host.sort("request_id", "host_id").iter_rows(named=True):
        cap = (None if row["request_vcpu"] is None or row["request_ram"] is None
               else part_ram_cap(row["request_ram"], row["request_vcpu"], row["vcpu"], skew_ratio(skew)))
        if row["vcpu"] > 0 and row["ram_gib"] < ratio * row["vcpu"] - 1e-9:
            why = f"{row['ram_gib']} GiB beside {row['vcpu']} vcpu on {row['host_id']}, below {ratio:g} GiB per vcpu"
        elif cap is not None and row["ram_gib"] > cap:
            why = (f"{row['ram_gib']} GiB beside {row['vcpu']} of its {row['request_vcpu']} vcpu on {row['host_id']}, "
                   f"more than max_ram_skew {skew:g} × its share ({cap} GiB)")
        elif row["vcpu"] == 0 and row["gpu"] > 0:
            why = f"GPUs on {row['host_id']} without a vcpu beside them"
        else:
            continue
        reasons.setdefault(row["request_id"], why)
    if whole:
        compute = per_host.select("request_id", "host_id")
        beside = copies.join(compute, on=["request_id", "host_id"], how="semi")["request_id"].unique().to_list()
        for request_id in sorted(set(copies["request_id"].to_list()) - set(beside)):
            reasons.setdefault(request_id, "no storage copy beside its VM, which whole-VM mode asks")
    _too_much_remote(per_host, reasons, remote_cap)


def _too_much_remote(per_host: pl.DataFrame, reasons: dict[str, str], remote_cap: pl.DataFrame | None) -> None:
    """Running requests holding more remote memory (RAM on a host where they run no vcpu; `per_host`: their
    compute parts summed per host) than their rule allows (invariant 4); no `remote_cap`: flat pricing's
    rule, none for latency class low."""
    remote = (per_host.filter((pl.col("vcpu") == 0) & (pl.col("ram_gib") > 0)).group_by("request_id")
              .agg(pl.col("ram_gib").sum().alias("remote_gib"), pl.col("latency_class").first(),
                   pl.col("host_id").sort().first()))
    if remote_cap is None:
        remote = remote.with_columns(remote_cap=pl.when(pl.col("latency_class") == "low").then(0)
                                     .otherwise(pl.col("remote_gib")))
    else:
        remote = remote.join(remote_cap.select("request_id", "remote_cap"), on="request_id", how="left")
    for row in remote.filter(pl.col("remote_gib") > pl.col("remote_cap").fill_null(0)).sort("request_id").iter_rows(
            named=True):
        cap = row["remote_cap"] or 0
        reasons.setdefault(row["request_id"], f"remote memory on {row['host_id']}, which latency class low does not allow"
                           if cap == 0 and row["latency_class"] == "low" else
                           f"{row['remote_gib']} GiB of remote memory, more than the {cap} GiB its latency class "
                           f"{row['latency_class']} may hold remotely")


def _over_capacity(hosts: pl.DataFrame, parts: pl.DataFrame, reasons: dict[str, str]) -> None:
    """Hosts whose free capacity (capacity − existing load) no longer holds the running parts on them."""
    resources = ("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu")
    free = hosts.select("host_id", *[free_expr(r).alias(f"free_{r}") for r in resources])
    staying = parts.filter(~pl.col("request_id").is_in(list(reasons)))
    load = staying.group_by("host_id").agg(*[pl.col(r).sum() for r in resources]).join(free, on="host_id")
    over = load.filter(pl.any_horizontal(*[pl.col(r) > pl.col(f"free_{r}") + 1e-9 for r in resources]))
    for host in over.sort("host_id").iter_rows(named=True):
        on_host = (staying.filter(pl.col("host_id") == host["host_id"]).group_by("request_id")
                   .agg(*[pl.col(r).sum() for r in resources], pl.col("priority").first())
                   .with_columns(pl.sum_horizontal(*[pl.col(r) / max(float(host[f"free_{r}"]), 1.0)
                                                     for r in resources]).alias("_size"))
                   .sort(["priority", "_size", "request_id"], descending=[False, True, False]))
        used = {r: float(host[r]) for r in resources}
        for row in on_host.iter_rows(named=True):
            short = [r for r in resources if used[r] > float(host[f"free_{r}"]) + 1e-9]
            if not short:
                break
            reasons.setdefault(row["request_id"], f"host {host['host_id']} can no longer hold it "
                                                  f"({short[0]} {host[f'free_{short[0]}']:g} left)")
            for r in resources:
                used[r] -= float(row[r])


# --- comparing a plan with what runs ------------------------------------------------------------------


def part_multisets(shards: pl.DataFrame) -> dict[str, list[tuple]]:
    """Per request, the sorted list of its parts by PART_KEY."""
    out: dict[str, list[tuple]] = {}
    for row in shards.select("request_id", *PART_KEY).sort("request_id", *PART_KEY).iter_rows():
        out.setdefault(row[0], []).append(tuple(row[1:]))
    return out


def moved_requests(current: pl.DataFrame, shards: pl.DataFrame) -> set[str]:
    """Running requests whose parts differ between the current placement and the plan (DESIGN.md)."""
    before, after = part_multisets(current), part_multisets(shards)
    return {r for r, parts in before.items() if after.get(r) != parts}


def compare(current: pl.DataFrame, shards: pl.DataFrame, requests: pl.DataFrame,
            mandatory: dict[str, str], reasons: dict[str, str] | None = None) -> tuple[pl.DataFrame, dict]:
    """moves.parquet rows (one per running part that moved or was removed) and the migration counts.

    A part moved when no identical part (PART_KEY) of the request is in the plan. Kinds: mandatory (the
    request had to move: `mandatory` gives why), voluntary, eviction (an evictable request dropped),
    lost (a running request left unplaced that was not evictable, after a mandatory move). `reasons`
    gives, per voluntarily moved request, why the planner moved it."""
    reasons = reasons or {}
    evictable = dict(zip(requests["request_id"].to_list(), requests["evictable"].to_list()))
    placed = set(shards["request_id"].to_list())
    after = part_multisets(shards)
    new_hosts: dict[str, list[str]] = {}
    for row in shards.select("request_id", "host_id", "storage_gib").iter_rows():
        new_hosts.setdefault(row[0], []).append(row[1])
    rows: list[tuple] = []
    moved: set[str] = set()
    kinds: dict[str, str] = {}
    moved_gib = 0
    for request_id, group in current.sort("request_id", "shard").group_by("request_id", maintain_order=True):
        request_id = request_id[0]
        remaining = list(after.get(request_id, []))
        changed = []
        for row in group.iter_rows(named=True):
            key = tuple(row[k] for k in PART_KEY)
            if key in remaining:
                remaining.remove(key)
            else:
                changed.append(row)
        if not changed and not remaining:
            continue
        moved.add(request_id)
        if request_id not in placed:
            if request_id in mandatory:
                kind, why = "lost", f"{mandatory[request_id]}, and no room elsewhere"
            elif evictable.get(request_id):
                kind, why = "eviction", "evictable: its room went to higher-value requests"
            else:
                kind, why = "eviction", "dropped although running and not evictable"  # invariant 11 flags it
        elif request_id in mandatory:
            kind, why = "mandatory", mandatory[request_id]
        else:
            kind, why = "voluntary", reasons.get(request_id, "the planner found a better place")
        kinds[request_id] = kind
        for row in changed or group.iter_rows(named=True):
            to_host = None
            if request_id in placed:
                to_host = _new_host(row, remaining, new_hosts.get(request_id, []))
            if kind in ("voluntary", "mandatory"):
                moved_gib += int(row["ram_gib"]) + int(row["storage_gib"])
            rows.append((request_id, int(row["shard"]), row["host_id"], to_host, int(row["vcpu"]),
                         int(row["ram_gib"]), int(row["storage_gib"]), int(row["gpu"]), kind, why))
    moves = pl.DataFrame(rows, schema=MOVES_SCHEMA, orient="row")
    running = current["request_id"].n_unique()
    counts = {k: sum(1 for v in kinds.values() if v == k) for k in ("mandatory", "voluntary", "eviction", "lost")}
    migration = {
        "running_requests": int(running),
        "kept_requests": int(running - len(moved)),
        "moved_requests": counts["mandatory"] + counts["voluntary"],
        "evicted_requests": counts["eviction"],
        "lost_requests": counts["lost"],
        "mandatory_requests": counts["mandatory"],
        "voluntary_requests": counts["voluntary"],
        "disrupted_voluntary": counts["voluntary"] + sum(1 for r, v in kinds.items()
                                                         if v == "eviction" and r not in mandatory),
        "moved_parts": int(moves.filter(pl.col("kind").is_in(["mandatory", "voluntary"])).height),
        "moved_gib": int(moved_gib),
    }
    return moves, migration


def _new_host(row: dict, remaining: list[tuple], hosts: list[str]) -> str | None:
    """Where a moved part went: the plan's unmatched part of the same kind (storage copy or compute side),
    the same replica index first."""
    storage = row["storage_gib"] > 0
    for i, part in enumerate(remaining):
        if (part[4] > 0) == storage and (not storage or part[1] == row["replica"]):
            remaining.pop(i)
            return part[0]
    for i, part in enumerate(remaining):
        if (part[4] > 0) == storage:
            remaining.pop(i)
            return part[0]
    return hosts[0] if hosts else None


def move_reasons(hosts: pl.DataFrame, requests: pl.DataFrame, current: pl.DataFrame, shards: pl.DataFrame,
                 requests_moved: set[str]) -> dict[str, str]:
    """Why each voluntarily moved request moved, read from the plan: a request that took its place on a
    host it left (`made room for r0421 (priority 5) on h17`), a host it left that the plan empties
    (`consolidation: frees h03, saves 3.1 $/h`), else a cheaper or tighter plan."""
    def hosts_by_request(table: pl.DataFrame) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for request_id, host_id in table.select("request_id", "host_id").iter_rows():
            out.setdefault(request_id, set()).add(host_id)
        return out

    before, after = hosts_by_request(current), hosts_by_request(shards)
    newcomers: dict[str, list[str]] = {}
    for request_id, on in after.items():
        for host_id in on - before.get(request_id, set()):
            newcomers.setdefault(host_id, []).append(request_id)
    priority = dict(zip(requests["request_id"].to_list(), requests["priority"].to_list()))
    used_after = set(shards["host_id"].to_list())
    loaded = hosts.filter(pl.sum_horizontal(pl.col("^used_.*$")) > 0)["host_id"].to_list()
    cost = dict(zip(hosts["host_id"].to_list(), hosts["cost_per_hour"].to_list()))
    reasons: dict[str, str] = {}
    for request_id in sorted(requests_moved):
        left = sorted(before.get(request_id, set()) - after.get(request_id, set()))
        if not left:
            reasons[request_id] = "re-split across the hosts it was on"
            continue
        takers = [(-priority.get(x, 1), x, h) for h in left for x in newcomers.get(h, []) if x != request_id]
        freed = [h for h in left if h not in used_after and h not in loaded]
        if takers:
            _, taker, host_id = min(takers)
            reasons[request_id] = f"made room for {taker} (priority {priority.get(taker, 1)}) on {host_id}"
        elif freed:
            reasons[request_id] = f"consolidation: frees {freed[0]}, saves {cost[freed[0]]:.2f} $/h"
        else:
            reasons[request_id] = f"moved off {left[0]}: a cheaper or tighter plan"
    return reasons
