"""Vector bin packing and VM placement instances with known optima, solved by the engine in whole mode.

Each instance of ``shared/benchmarks/vbp`` (see its SOURCE.md) becomes a fleet of cost-1 hosts in one
zone and one rack (VMP set C: two host types) and one request per item; dimensions map to vcpu,
ram_gib, storage_gib, net_gbps, gpu in that order. ``shardplan.planner.engine.plan`` solves it, the checker
verifies the plan, and the bins used are compared with the known optimum and with the first-fit
decreasing baseline of the same run. Only Vectorpack d ∈ {3, 5} and VMP sets A, B, C, and only
instances with a known optimum.

    python -m benchmarks.vbp                 # stratified sample: 1 per (set, class, dims, n), 184 instances
    python -m benchmarks.vbp --sample 2      # 362 instances; --all: 560
    python -m benchmarks.vbp --sets New,"VMP C" --max-items 120 --sample 1 --time-limit 2
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from benchmarks.common import print_table, require_shared_dir, results_path, write_json_atomic
from shardplan.planner.engine import plan, run_ffd
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.candidates import build_fleet
from shardplan.planner.validate.inputs import check_hosts, validate_table
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS, RESOURCES

OPTIMA_FILE = Path("benchmarks/vbp/optima.csv")
CCILS_RESULTS_FILE = Path("benchmarks/vbp/vmp_paco/tables/ResultsForEachInstance.csv")
CCILS_DUPLICATES_FILE = Path("benchmarks/vbp/vmp_paco/duplicates.csv")

SETS: tuple[str, ...] = ("Panigrahy", "New", "Triplet", "VMP A", "VMP B", "VMP C")
VECTORPACK_DIMS: tuple[int, ...] = (3, 5)   # d = 10 is out of scope
TARGET_MEAN_GAP: dict[str, float] = {"Panigrahy": 0.01, "New": 0.03, "Triplet": 0.08, "VMP A": 0.01, "VMP B": 0.01}
"""Mean gap to the optimum each set must stay within; set C is judged against CCILS instead."""
CCILS_SET = "VMP C"

VCPU_COLUMN = RESOURCES.index("vcpu")


# --- instance files ------------------------------------------------------------------------------

@dataclass(frozen=True)
class BinType:
    """One kind of bin (host): capacity per dimension and how many exist (None: unlimited supply)."""

    capacity: tuple[int, ...]
    count: int | None = None


@dataclass(frozen=True)
class PackingInstance:
    """Items (n × d integer sizes) to pack into bins of the given types, minimising the bins used."""

    name: str
    bin_types: tuple[BinType, ...]
    items: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.items.shape[1])

    @property
    def n_items(self) -> int:
        return int(self.items.shape[0])


def parse_vbp(path: Path) -> PackingInstance:
    """VPSolver vector packing file: d, the d capacities, m item types, then per type d sizes and a count."""
    tokens = [int(t) for t in Path(path).read_text().split()]
    if len(tokens) < 2:
        raise ValueError(f"{path}: too short for a .vbp file")
    dims = tokens[0]
    if dims < 1 or len(tokens) < 2 + dims:
        raise ValueError(f"{path}: bad dimension count {dims}")
    capacity = tuple(tokens[1:1 + dims])
    n_types = tokens[1 + dims]
    body = tokens[2 + dims:]
    if len(body) != n_types * (dims + 1):
        raise ValueError(f"{path}: {n_types} item types of {dims} sizes and a count need "
                         f"{n_types * (dims + 1)} numbers, found {len(body)}")
    types = np.array(body, dtype=np.int64).reshape(n_types, dims + 1)
    if (types[:, dims] < 0).any():
        raise ValueError(f"{path}: negative item count")
    items = np.repeat(types[:, :dims], types[:, dims], axis=0)
    return PackingInstance(Path(path).stem, (BinType(capacity),), items)


def parse_vmp(path: Path) -> PackingInstance:
    """PACO-VMP file: name, host count(s), CPU and RAM capacity lines, n, then n lines `cpu ram x`.

    Sets A/B give one host type (count; cpu; ram on lines 2–4), set C two (`a,b`; `cpu,ram` of type a;
    `cpu,ram` of type b). The third VM column is not part of the problem and is ignored.
    """
    lines = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    numbers = lambda line: [int(x) for x in re.split(r"[,\s]+", line)]  # noqa: E731
    if len(lines) < 5:
        raise ValueError(f"{path}: too short for a .vmp file")
    counts = numbers(lines[1])
    if len(counts) == 1:
        bin_types = (BinType((numbers(lines[2])[0], numbers(lines[3])[0]), counts[0]),)
    else:
        capacities = [numbers(lines[2]), numbers(lines[3])]
        if len(counts) != 2 or any(len(c) != 2 for c in capacities):
            raise ValueError(f"{path}: expected two host types as `count_a,count_b` and `cpu,ram` lines")
        bin_types = tuple(BinType(tuple(c), n) for c, n in zip(capacities, counts))
    n_items = numbers(lines[4])[0]
    rows = [numbers(line)[:2] for line in lines[5:5 + n_items]]
    if len(rows) != n_items or any(len(r) != 2 for r in rows):
        raise ValueError(f"{path}: declares {n_items} VMs, found {len(rows)} complete lines")
    return PackingInstance(lines[0], bin_types, np.array(rows, dtype=np.int64).reshape(n_items, 2))


def read_instance(path: Path) -> PackingInstance:
    return parse_vmp(path) if Path(path).suffix == ".vmp" else parse_vbp(path)


def largest_first(instance: PackingInstance) -> PackingInstance:
    """Bin types by decreasing capacity (sum of shares of the largest capacity per dimension), stable.

    This is the catalogue order, which first fit follows: with set C's costs equal, a scheduler that
    filled the small hosts first would need about twice the optimum, whatever the solver does.
    """
    largest = np.maximum(np.max([t.capacity for t in instance.bin_types], axis=0), 1)
    size = [-(np.array(t.capacity) / largest).sum() for t in instance.bin_types]
    order = np.argsort(size, kind="stable")
    return PackingInstance(instance.name, tuple(instance.bin_types[i] for i in order), instance.items)


# --- tables for the engine -----------------------------------------------------------------------

@dataclass(frozen=True)
class Encoding:
    """Items and bin capacities in the engine's resource order (vcpu, ram_gib, storage_gib, net_gbps, gpu).

    `vcpu_scale` > 0 marks the exact re-encoding used when some item has no vcpu: the engine reads the
    RAM of a request without vcpu as remote memory (which costs NIC bandwidth) and forbids GPUs without
    vcpu, neither of which is part of vector packing. With K = vcpu_scale = n + 1, item vcpu
    becomes K·w + 1 and bin vcpu K·(C + 1) − 1. A bin of m ≤ n items then fits iff
    K·Σw + m ≤ K·(C + 1) − 1 ⟺ Σw ≤ C + (K − 1 − m)/K ⟺ Σw ≤ C, as sizes are integers and
    0 ≤ (K − 1 − m)/K < 1. Feasible packings, and so the optimum, are unchanged.
    """

    items: np.ndarray               # (n, 5)
    capacities: tuple[np.ndarray, ...]   # per bin type, (5,)
    vcpu_scale: int = 0


def unusable_reason(instance: PackingInstance) -> str | None:
    """Why the engine cannot take this instance as written (None: it can)."""
    if instance.dims > len(RESOURCES):
        return f"{instance.dims} dimensions, the engine has {len(RESOURCES)} resources"
    if (instance.items < 0).any():
        # some Caprara triplets have a size −1 or −2 so that the triple still sums to the capacity;
        # clamping it to 0 would make the triple overfull and raise the optimum above n/3
        return f"{int((instance.items < 0).any(axis=1).sum())} item(s) with a negative size"
    return None


def encode(instance: PackingInstance) -> Encoding:
    dims = instance.dims
    reason = unusable_reason(instance)
    if reason:
        raise ValueError(f"{instance.name}: {reason}")
    items = np.zeros((instance.n_items, len(RESOURCES)), dtype=np.int64)
    items[:, :dims] = instance.items
    capacities = []
    for bin_type in instance.bin_types:
        capacity = np.zeros(len(RESOURCES), dtype=np.int64)
        capacity[:dims] = bin_type.capacity
        capacities.append(capacity)
    if (items[:, VCPU_COLUMN] > 0).all():
        return Encoding(items, tuple(capacities))
    scale = instance.n_items + 1
    items[:, VCPU_COLUMN] = scale * items[:, VCPU_COLUMN] + 1
    for capacity in capacities:
        capacity[VCPU_COLUMN] = scale * (capacity[VCPU_COLUMN] + 1) - 1
    return Encoding(items, tuple(capacities), scale)


def _resource_columns(matrix: np.ndarray) -> dict[str, list]:
    return {name: (matrix[:, i].astype(float) if name == "net_gbps" else matrix[:, i]).tolist()
            for i, name in enumerate(RESOURCES)}


def host_table(encoding: Encoding, counts: list[int]) -> pl.DataFrame:
    """`counts[t]` hosts of each bin type, cost 1.0 each, all in zone z1 and rack r1 (one class per type)."""
    type_of = np.repeat(np.arange(len(counts)), counts)
    capacity = np.array([encoding.capacities[t] for t in type_of], dtype=np.int64).reshape(len(type_of), -1)
    label = [chr(ord("a") + int(t)) for t in type_of]
    frame = pl.DataFrame({
        "host_id": [f"bin-{kind}{i:04d}" for i, kind in enumerate(label)],
        "host_class": [f"type-{kind}" for kind in label],
        "zone": ["z1"] * len(type_of), "rack": ["r1"] * len(type_of),
        "storage_type": ["ssd"] * len(type_of), "cost_per_hour": [1.0] * len(type_of),
        **_resource_columns(capacity),
    })
    return check_hosts(validate_table(frame, HOST_COLUMNS, "hosts (vbp)", key="host_id"), "hosts (vbp)")


def request_table(encoding: Encoding) -> pl.DataFrame:
    """One whole-VM request per item."""
    n = encoding.items.shape[0]
    frame = pl.DataFrame({"request_id": [f"item-{i:04d}" for i in range(n)], "user_id": ["vbp"] * n,
                          "app_type": ["item"] * n, **_resource_columns(encoding.items)})
    return validate_table(frame, REQUEST_COLUMNS, "requests (vbp)", key="request_id")


def first_fit_bins(encoding: Encoding, counts: list[int], options: PlanOptions) -> int | None:
    """Bins the engine's own first-fit decreasing uses on a fleet of `counts` hosts; None if it fails.

    First fit opens hosts in catalogue order, so on the first k hosts of the same catalogue (per type)
    it makes exactly the same choices whenever it used at most k of them: offering that many hosts
    keeps the FFD baseline of the real run identical while keeping the CP-SAT model small.
    """
    hosts = host_table(encoding, counts)
    requests = request_table(encoding)
    assignment, _order = run_ffd(build_fleet(hosts), requests, options, sharded=False)
    if not assignment.placed.all():
        return None
    return len({part[0] for parts in assignment.parts for part in parts})


def solve_options(time_limit_s: float, workers: int = 2, deterministic: bool = False) -> PlanOptions:
    """Whole-VM placement; VBP items have no RAM-per-vcpu rule, and the instances' objective is bins alone, so
    no hot-spot term (a full bin is the aim). Wall-clock limits unless `deterministic`."""
    return PlanOptions(mode="whole", time_limit_s=time_limit_s, workers=workers, seed=0,
                       min_local_ram_gib_per_vcpu=0.0, deterministic=deterministic, hot_spot_price=0.0)


# --- the catalogue of instances --------------------------------------------------------------------

def set_key(name: str) -> str:
    """Case-, space- and punctuation-insensitive set name: 'VMP_C', 'vmp c' → 'vmpc'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def load_catalogue(shared: Path) -> pl.DataFrame:
    """optima.csv rows in scope (known optimum; Vectorpack d ∈ {3, 5}) with set, class, dims, nominal n, index."""
    optima = pl.read_csv(shared / OPTIMA_FILE, infer_schema_length=None)
    family = pl.col("instance").str.split("/").list.get(0)
    name = pl.col("instance").str.split("/").list.get(1)
    vector = name.str.extract_groups(r"^(class\w+?)_(\d+)_(\d+)_(\d+)$")
    vmp = name.str.extract_groups(r"^VMP_([ABC])(\d+)$")
    catalogue = (optima
                 .with_columns(family.alias("family"), name.alias("name"), vector.alias("_v"), vmp.alias("_m"))
                 .with_columns(
                     pl.when(pl.col("family") == "VMP").then(pl.lit("VMP ") + pl.col("_m").struct.field("1"))
                     .otherwise(pl.col("family")).alias("set"),
                     pl.when(pl.col("family") == "VMP").then(pl.lit(""))
                     .otherwise(pl.col("_v").struct.field("1")).alias("class"),
                     pl.when(pl.col("family") == "VMP").then(pl.col("n_items"))
                     .otherwise(pl.col("_v").struct.field("2").cast(pl.Int64)).alias("n"),
                     pl.when(pl.col("family") == "VMP").then(pl.col("_m").struct.field("2").cast(pl.Int64))
                     .otherwise(pl.col("_v").struct.field("4").cast(pl.Int64)).alias("index"))
                 .with_columns(
                     pl.when(pl.col("family") == "VMP").then(pl.col("set"))
                     .otherwise(pl.concat_str(pl.col("set"), pl.col("class"), pl.lit("d") + pl.col("dims").cast(pl.Utf8),
                                              separator=" ")).alias("class_label"))
                 .filter(pl.col("optimum_bins").is_not_null()
                         & ((pl.col("family") == "VMP") | pl.col("dims").is_in(list(VECTORPACK_DIMS))))
                 .drop("_v", "_m"))
    set_rank = pl.col("set").replace_strict({s: i for i, s in enumerate(SETS)}, default=len(SETS), return_dtype=pl.Int64)
    class_number = pl.col("class").str.extract(r"(\d+)$").cast(pl.Int64)
    return (catalogue.with_columns(set_rank.alias("_set_rank"), class_number.alias("_class_number"))
            .sort("_set_rank", "_class_number", "class", "dims", "n", "index")
            .drop("_set_rank", "_class_number"))


def ccils_results(shared: Path) -> pl.DataFrame:
    """Per stored VMP instance: the best and mean published CCILS TotalBest over its identical originals."""
    results = pl.read_csv(shared / CCILS_RESULTS_FILE, columns=["InstanceName", "TotalBest"],
                          schema_overrides={"TotalBest": pl.Int64})
    duplicates = (pl.read_csv(shared / CCILS_DUPLICATES_FILE)
                  .with_columns(pl.col("identical_original_instances").str.split(" ").alias("original"))
                  .explode("original"))
    return (duplicates.join(results, left_on="original", right_on="InstanceName", how="inner")
            .group_by("stored_instance").agg(pl.col("TotalBest").min().alias("ccils_best"),
                                             pl.col("TotalBest").mean().alias("ccils_mean"))
            .select((pl.lit("VMP/") + pl.col("stored_instance")).alias("instance"), "ccils_best", "ccils_mean"))


def select_instances(catalogue: pl.DataFrame, per_stratum: int | None, sets: list[str] | None = None,
                     max_items: int | None = None, shared: Path | None = None) -> tuple[pl.DataFrame, list[dict]]:
    """Filter by set and size, drop what the engine cannot take (when `shared` is given), then keep the
    first `per_stratum` (lowest index) of every (set, class, dims, n) stratum; None keeps all."""
    chosen = catalogue
    if sets:
        wanted = {set_key(s) for s in sets}
        unknown = wanted - {set_key(s) for s in SETS} - {"vmp"}
        if unknown:
            raise ValueError(f"unknown set(s) {sorted(unknown)}; choose from {', '.join(SETS)} (or VMP for all three)")
        keys = chosen["set"].map_elements(set_key, return_dtype=pl.Utf8)
        chosen = chosen.filter(keys.is_in(list(wanted)) | (("vmp" in wanted) & (pl.col("family") == "VMP")))
    if max_items is not None:
        chosen = chosen.filter(pl.col("n_items") <= max_items)
    dropped: list[dict] = []
    if shared is not None:
        chosen, dropped = drop_unusable(chosen, shared)
    if per_stratum is not None:
        chosen = chosen.group_by("set", "class", "dims", "n", maintain_order=True).head(per_stratum)
    return chosen, dropped


def drop_unusable(chosen: pl.DataFrame, shared: Path) -> tuple[pl.DataFrame, list[dict]]:
    """Instances the engine can take, and the others with the reason."""
    reasons = [unusable_reason(read_instance(shared / file)) for file in chosen["file"].to_list()]
    usable = pl.Series([r is None for r in reasons])
    dropped = [{"instance": name, "reason": reason}
               for name, reason in zip(chosen["instance"].to_list(), reasons) if reason is not None]
    return chosen.filter(usable), dropped


# --- one instance ---------------------------------------------------------------------------------

def solve_instance(entry: dict, instance: PackingInstance, options: PlanOptions) -> dict:
    """Size the fleet, plan, check; one JSON-ready row (failed=True when the plan is not a full packing)."""
    optimum = int(entry["optimum_bins"])
    row: dict = {"instance": entry["instance"], "set": entry["set"], "class": entry["class_label"],
                 "dims": int(entry["dims"]), "n": int(entry["n"]), "n_items": instance.n_items,
                 "optimum": optimum, "lower_bound": entry.get("lower_bound"),
                 "best_known_ub": entry.get("best_known_ub"), "ccils_best": entry.get("ccils_best"),
                 "failed": True, "failure": None}
    instance = largest_first(instance)
    encoding = encode(instance)
    row["vcpu_scale"] = encoding.vcpu_scale
    supply = [t.count if t.count is not None else instance.n_items for t in instance.bin_types]
    sizing_bins = first_fit_bins(encoding, supply, options)
    if sizing_bins is None:
        row["failure"] = "first fit cannot place every item on the full fleet"
        return row
    offered = max(int(entry.get("best_known_ub") or 0), sizing_bins)
    counts = [min(c, offered) for c in supply]
    row["hosts_offered"] = sum(counts)
    hosts, requests = host_table(encoding, counts), request_table(encoding)
    marks: list[tuple[str, float]] = [("start", time.perf_counter())]
    try:
        result = plan(hosts, requests, options, progress=lambda stage: marks.append((stage, time.perf_counter())))
    except Exception as exc:  # one broken instance must not end a long run
        row.update(wall_s=round(time.perf_counter() - marks[0][1], 3), failure=f"plan raised {exc!r}")
        return row
    marks.append(("end", time.perf_counter()))
    wall = marks[-1][1] - marks[0][1]
    # seconds spent in each engine stage (a stage runs from its mark to the next one)
    row["stage_s"] = {stage: round(later - at, 3) for (stage, at), (_, later) in zip(marks[1:], marks[2:])}
    summary = result.plan_json
    violations = check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict())
    spans = result.shards.group_by("request_id").agg(pl.col("host_id").n_unique().alias("hosts"))
    bins = result.shards["host_id"].n_unique()
    ffd = summary["baseline_ffd"]
    ffd_bins = int(round(ffd["active_host_cost_per_hour"])) if ffd["placed"] == instance.n_items else None
    bound = summary["best_bound"]
    bound_bins = math.ceil(bound - 1e-6) if bound is not None else None
    cp_sat = summary["cp_sat"] or {"status": "not run (above monolithic_pair_limit: LNS only)", "best_bound": None}
    row.update(
        bins=bins, gap=(bins - optimum) / optimum, ffd_bins=ffd_bins,
        ffd_gap=(ffd_bins - optimum) / optimum if ffd_bins is not None else None,
        sizing_ffd_bins=sizing_bins, best_bound=bound, bound_bins=bound_bins,
        bound_gap=(optimum - bound_bins) / optimum if bound_bins is not None else None,
        status=summary["status"], solver=summary["solver"], cp_sat_status=cp_sat["status"],
        cp_sat_bound=cp_sat["best_bound"], wall_s=round(wall, 3), plan_wall_s=summary["wall_s"],
        placed=summary["placed"], unplaced=summary["unplaced"], violations=len(violations),
        split_items=int((spans["hosts"] > 1).sum()),
        first_violations=[str(v) for v in violations[:3]])
    problems = []
    if summary["unplaced"]:
        problems.append(f"{summary['unplaced']} item(s) unplaced")
    if violations:
        problems.append(f"{len(violations)} checker violation(s)")
    if row["split_items"]:
        problems.append(f"{row['split_items']} item(s) on several hosts")
    if bins < optimum and not problems:
        problems.append(f"{bins} bins < optimum {optimum}: the tables do not encode the instance")
    row["failed"] = bool(problems)
    row["failure"] = "; ".join(problems) or None
    if row["failed"]:
        row["gap"] = None
    return row


# --- aggregates -----------------------------------------------------------------------------------

def summarize(rows: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Per group: gap to the optimum (solved instances), share at the optimum (all), median wall,
    FFD's gap, how often CP-SAT beat FFD, and how far the reported bound is below the optimum."""
    ok = ~pl.col("failed")
    return rows.group_by(by, maintain_order=True).agg(
        pl.len().alias("instances"),
        pl.col("failed").sum().alias("failed"),
        pl.col("optimum").filter(ok).mean().alias("mean_optimum"),
        pl.col("bins").filter(ok).mean().alias("mean_bins"),
        pl.col("gap").filter(ok).mean().alias("mean_gap"),
        pl.col("gap").filter(ok).max().alias("max_gap"),
        ((pl.col("bins") == pl.col("optimum")) & ok).mean().alias("share_optimal"),
        (pl.col("status") == "optimal").fill_null(False).mean().alias("share_proved"),
        pl.col("wall_s").median().alias("median_wall_s"),
        pl.col("ffd_gap").mean().alias("ffd_mean_gap"),
        ((pl.col("bins") < pl.col("ffd_bins")) & ok).mean().alias("share_beats_ffd"),
        pl.col("bound_gap").filter(ok).mean().alias("mean_bound_gap"),
        pl.col("ccils_best").filter(ok).mean().alias("mean_ccils_bins"),
    )


def with_targets(by_set: pl.DataFrame) -> pl.DataFrame:
    """Target and verdict per set: mean gap within the target (set C: mean bins ≤ CCILS), nothing failed."""
    targets = []
    for entry in by_set.iter_rows(named=True):
        if entry["set"] == CCILS_SET:
            target = "mean bins ≤ CCILS"
            met = entry["mean_bins"] is not None and entry["mean_bins"] <= entry["mean_ccils_bins"] + 1e-9
        else:
            limit = TARGET_MEAN_GAP.get(entry["set"])
            target = f"mean gap ≤ {limit:.0%}" if limit is not None else "–"
            met = limit is not None and entry["mean_gap"] is not None and entry["mean_gap"] <= limit + 1e-12
        met = met and entry["failed"] == 0
        targets.append((target, "met" if met else "missed"))
    return by_set.with_columns(pl.Series("target", [t for t, _ in targets]),
                               pl.Series("verdict", [v for _, v in targets]))


def _pct(value: float | None) -> float | None:
    return None if value is None else 100.0 * value


def print_summary(by_class: pl.DataFrame, by_set: pl.DataFrame, by_size: pl.DataFrame, console: Console,
                  time_limit_s: float) -> None:
    columns = ["", "inst", "failed", "bins", "opt", "gap %", "max gap %", "at opt %", "proved %", "FFD gap %",
               "beats FFD %", "bound gap %", "median wall s"]

    def cells(entry: dict) -> list:
        return [entry["instances"], entry["failed"], entry["mean_bins"], entry["mean_optimum"], _pct(entry["mean_gap"]),
                _pct(entry["max_gap"]), _pct(entry["share_optimal"]), _pct(entry["share_proved"]),
                _pct(entry["ffd_mean_gap"]), _pct(entry["share_beats_ffd"]), _pct(entry["mean_bound_gap"]),
                entry["median_wall_s"]]

    print_table(f"VBP / VMP per class (CP-SAT {time_limit_s:g} s, whole mode; gaps to the known optimum)",
                ["class"] + columns[1:], ([e["class"]] + cells(e) for e in by_class.iter_rows(named=True)), console)
    print_table("VBP / VMP by set and size", ["set / n"] + columns[1:],
                ([f"{e['set']} n={e['n']}"] + cells(e) for e in by_size.iter_rows(named=True)), console)
    print_table("VBP / VMP per set, against the targets", ["set"] + columns[1:] + ["CCILS bins", "target", "verdict"],
                ([e["set"]] + cells(e) + [e["mean_ccils_bins"], e["target"], e["verdict"]]
                 for e in by_set.iter_rows(named=True)), console)


def _display_order(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    """Sets in SETS order, classes by number, then the other keys."""
    keys = [pl.col("set").replace_strict({s: i for i, s in enumerate(SETS)}, default=len(SETS),
                                         return_dtype=pl.Int64)]
    if "class" in by:
        keys += [pl.col("class").str.extract(r"class\w*?(\d+)").cast(pl.Int64), pl.col("class")]
    keys += [pl.col(k) for k in by if k not in ("set", "class")]
    return frame.sort(keys, nulls_last=True)


def aggregates(rows: list[dict]) -> dict[str, pl.DataFrame]:
    frame = pl.DataFrame(rows, infer_schema_length=None)
    for column, dtype in (("bins", pl.Int64), ("ffd_bins", pl.Int64), ("gap", pl.Float64), ("ffd_gap", pl.Float64),
                          ("bound_gap", pl.Float64), ("wall_s", pl.Float64), ("status", pl.Utf8),
                          ("ccils_best", pl.Float64)):
        if column not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=dtype).alias(column))
    groupings = {"by_class": ["set", "class"], "by_size": ["set", "n"], "by_set": ["set"]}
    tables = {name: _display_order(summarize(frame, by), by) for name, by in groupings.items()}
    tables["by_set"] = with_targets(tables["by_set"])
    return tables


# --- command line ---------------------------------------------------------------------------------

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    sample: int = typer.Option(1, min=1, help="Instances kept per (set, class, dims, n) stratum, lowest index "
                               "first. 1 → 184 instances: on 2 shared cores at 10 s the 160 with n ≤ 400 took an "
                               "hour; the 24 with 500–1000 items need roughly as long again."),
    all_instances: bool = typer.Option(False, "--all", help="Every known-optimum instance in scope (ignores --sample)."),
    time_limit: float = typer.Option(10.0, "--time-limit", min=0.1, help="CP-SAT seconds per instance."),
    max_items: Optional[int] = typer.Option(None, "--max-items", min=1, help="Skip instances with more items."),
    sets: Optional[str] = typer.Option(None, "--sets", help=f"Comma-separated subset of: {', '.join(SETS)} (VMP: all three)."),
    workers: int = typer.Option(2, "--workers", min=1, help="CP-SAT search workers."),
    deterministic: bool = typer.Option(False, "--deterministic",
                                       help="CP-SAT deterministic time (reproducible, wall time varies with load); "
                                            "default: wall-clock limits."),
    out: Path = typer.Option(results_path("vbp"), "--out", help="JSON file for per-instance rows and aggregates."),
    budget_minutes: Optional[float] = typer.Option(None, "--budget-minutes", min=0.1,
                                                   help="Start no new instance after this many minutes."),
    report_only: bool = typer.Option(False, "--report-only",
                                     help="Solve nothing: aggregate and print the rows already in --out."),
    resume: bool = typer.Option(False, "--resume",
                                help="Keep the rows already in --out and solve only the instances missing there "
                                     "(a run cut short by its budget, Ctrl-C or a crash goes on where it stopped)."),
) -> None:
    """Solve the selected instances, print per-class and per-set tables, write JSON.

    Instances run smallest first, so a run cut short (budget, Ctrl-C) still covers every set;
    the JSON is rewritten after every instance, with `complete` false until the end."""
    console = Console(width=None if sys.stdout.isatty() else 200)
    if report_only:
        report(out, console)
        return
    shared = require_shared_dir()
    catalogue = load_catalogue(shared).join(ccils_results(shared), on="instance", how="left")
    chosen, dropped = select_instances(catalogue, None if all_instances else sample,
                                       [s.strip() for s in sets.split(",")] if sets else None, max_items, shared)
    chosen = chosen.with_row_index("_catalogue").sort("n_items", "_catalogue").drop("_catalogue")  # small first
    if chosen.height == 0:
        console.print("[red]no instance matches the selection[/red]")
        raise typer.Exit(1)
    options = solve_options(time_limit, workers, deterministic)
    run = {"benchmark": "vbp", "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "selection": {"sample_per_stratum": None if all_instances else sample, "sets": sets,
                         "max_items": max_items, "instances": chosen.height},
           "options": options.to_dict(), "shared": str(shared), "excluded": dropped}
    console.print(f"{chosen.height} instances ({len(dropped)} excluded: the engine cannot take them as written), "
                  f"CP-SAT {time_limit:g} s each, {workers} workers → {out}")
    rows: list[dict] = []
    if resume and out.exists():
        selected = set(chosen["instance"].to_list())
        rows = [r for r in json.loads(out.read_text()).get("instances", []) if r["instance"] in selected]
        done = {r["instance"] for r in rows}
        chosen = chosen.filter(~pl.col("instance").is_in(list(done)))
        console.print(f"resuming: {len(done)} instances already in {out}, {chosen.height} to go")
    start = time.perf_counter()
    stopped = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("vbp", total=chosen.height)
        try:
            for entry in chosen.iter_rows(named=True):
                if budget_minutes is not None and time.perf_counter() - start > 60 * budget_minutes:
                    stopped = f"budget of {budget_minutes:g} min spent"
                    break
                progress.update(task, description=entry["instance"])
                row = solve_instance(entry, read_instance(shared / entry["file"]), options)
                rows.append(row)
                mark = f"[red]FAILED: {row['failure']}[/red]" if row["failed"] else (
                    f"bins {row['bins']} opt {row['optimum']} ffd {row['ffd_bins']} bound {row['bound_bins']} "
                    f"{row['status']} {row['wall_s']:.1f}s")
                progress.console.print(f"{entry['instance']:<34} n={row['n_items']:<4} {mark}")
                progress.advance(task)
                write_json_atomic(out, {**run, "complete": False,
                                        "wall_s_total": round(time.perf_counter() - start, 1), "instances": rows})
        except KeyboardInterrupt:
            stopped = "interrupted"
    if not rows:
        raise typer.Exit(1)
    total = time.perf_counter() - start
    write_json_atomic(out, {**run, "complete": stopped is None, "stopped": stopped, "wall_s_total": round(total, 1),
                            "instances": rows})
    report(out, console)
    console.print(f"{len(rows)} of {run['selection']['instances']} instances in {total / 60:.1f} min"
                  f"{f' ({stopped})' if stopped else ''}; results in {out}")


def report(path: Path, console: Console) -> None:
    """Aggregate the per-instance rows stored in `path`, print the tables and store them beside the rows."""
    import json

    stored = json.loads(path.read_text())
    rows = stored.get("instances") or []
    if not rows:
        raise typer.BadParameter(f"{path} holds no instance rows")
    tables = aggregates(rows)
    limit = (stored.get("options") or {}).get("time_limit_s", float("nan"))
    print_summary(tables["by_class"], tables["by_set"], tables["by_size"], console, limit)
    instances = stored.pop("instances")
    write_json_atomic(path, {**stored, **{name: frame.to_dicts() for name, frame in tables.items()},
                             "instances": instances})


if __name__ == "__main__":
    app()
