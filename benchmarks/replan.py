"""Re-planning over seven nights: from scratch, never move, incremental, incremental with a move budget.

Each fleet (the demo and two seeded 200-host fleets) lives seven nights. Every request gets a lifetime
in nights drawn from the Azure V1 lifetimes (the Kaplan–Meier survival of VMs that live at least a day,
in `../shared/datasets/vm-requests/azure-v1-vm-arrivals/`, right-censoring kept), and each night brings
new requests at the rate that keeps the population steady, times that weekday's share of long-lived
arrivals in the trace. One or two hosts start draining every night (back up two nights later) and on
night 4 a whole rack is down. The request and host tables of a night are the same for every policy;
what runs differs, since each policy's night is planned against its own previous plan:

- from scratch: the planner as before this issue, what runs ignored;
- never move: what runs stays, only new requests (and forced moves) are placed (max_moves 0);
- incremental: the plan is an edit of what runs, moves priced (DESIGN.md defaults);
- incremental with --max-moves at 2% of the running requests;
- incremental at T/5, warm-started from the incremental policy's plan of the night before (the target:
  how much of the from-scratch result at T a re-plan reaches in a fifth of the time; night 0 has no
  plan before it and is planned from scratch at T/5).

Per night and in total, all computed from the shards tables (DESIGN.md's definition of a move, not the
planner's own count): disrupted running requests (moved or dropped), moved GiB, executor actions (the sim
executor's action planner between the two placements), placed priority-weighted demand, active cost,
dropped running non-evictable requests whose hosts stayed up (invariant 11), plan wall time. Every plan
passes the checker (invariant 11 against what ran, for the policies that honour it).

    python benchmarks/replan.py [--time-limit 20] [--fleets demo,1,2] [--nights 7]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import print_table, require_shared_dir, results_path, write_json_atomic  # noqa: E402
from shardplan.data.generator import DEMO_SEED, demo_fleet, generate_fleet  # noqa: E402
from shardplan.executors.actions import plan_between  # noqa: E402
from shardplan.planner.engine import demand_units, plan, unplaced_priority  # noqa: E402
from shardplan.planner.replan import check_current, compare, moved_requests, must_move  # noqa: E402
from shardplan.planner.report.checker import check_plan, remote_caps  # noqa: E402
from shardplan.planner.report.diff import active_cost  # noqa: E402
from shardplan.planner.validate.options import PlanOptions  # noqa: E402

POLICIES = ("from_scratch", "never_move", "incremental", "incremental_budget", "incremental_T/5")
DAY = 86_400


def azure_churn(shared: Path) -> tuple[np.ndarray, np.ndarray]:
    """Per-night leaving hazard for ages 1..10 nights (Kaplan–Meier over the lifetime bins of VMs living
    ≥ 1 day, censored ones at risk until their bin) and the weekday shares of their arrivals (mean 1)."""
    folder = shared / "datasets" / "vm-requests" / "azure-v1-vm-arrivals"
    bins = pl.read_csv(folder / "duration_bins.csv")
    rows = (pl.read_csv(folder / "requests_grouped.csv.gz", schema_overrides={"duration_bin": pl.Utf8,
                                                                              "duration_censored": pl.Utf8})
            .filter(pl.col("duration_known") == 1)
            .with_columns(pl.col("duration_bin").cast(pl.Int64), (pl.col("duration_censored") == "1").alias("censored"))
            .join(bins, on="duration_bin").filter(pl.col("duration_lo_s") >= DAY)
            .with_columns((pl.col("duration_lo_s") // DAY).alias("days")))
    hazard = []
    for age in range(1, 11):
        at_risk = rows.filter(pl.col("days") >= age)["count"].sum()
        events = rows.filter((pl.col("days") == age) & ~pl.col("censored"))["count"].sum()
        if at_risk < 1000:  # past what the 9-day window observes: the mean hazard of the last three ages seen
            hazard.append(float(np.mean(hazard[-3:])))
            continue
        hazard.append(events / at_risk)
    days = rows.with_columns((pl.col("bin_end_s") // DAY).alias("day"))
    full = days.filter((pl.col("day") > days["day"].min()) & (pl.col("day") < days["day"].max() + 1))
    per_day = full.group_by("day").agg(pl.col("count").sum()).with_columns((pl.col("day") % 7).alias("weekday"))
    share = per_day.group_by("weekday").agg(pl.col("count").mean()).sort("weekday")["count"].to_numpy().astype(float)
    return np.array(hazard), share / share.mean()


def lifetimes(n: int, hazard: np.ndarray, rng: np.random.Generator, ages: np.ndarray | None = None) -> np.ndarray:
    """Nights each request lives in all, drawn from the hazard given it has lived `ages` nights already
    (default 0; beyond the last age: its last hazard)."""
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        age = 1 if ages is None else int(ages[i]) + 1
        while rng.random() >= hazard[min(age - 1, len(hazard) - 1)] and age < 60:
            age += 1
        out[i] = age
    return out


def fleet_week(name: str, nights: int, hazard: np.ndarray, weekday: np.ndarray, seed: int):
    """Per night: the hosts table (drains, a failed rack) and the requests table."""
    rng = np.random.default_rng(seed)
    if name == "demo":
        hosts, initial = demo_fleet()
        _, pool = generate_fleet(hosts.height, 3 * initial.height, DEMO_SEED + 101)
    else:
        hosts, initial = generate_fleet(200, 400, int(name))
        _, pool = generate_fleet(200, 1200, int(name) + 101)
    pool = pool.with_columns(("arr-" + pl.col("request_id")).alias("request_id"))
    # initial requests: ages spread over a week (they arrived before the first night)
    born = -rng.integers(0, 7, size=initial.height).astype(np.int64)
    life = lifetimes(initial.height, hazard, rng, ages=-born)
    tables = [initial.with_columns(pl.Series("born", born), pl.Series("dies", born + life))]
    steady = float(np.mean(hazard[:7]))
    used = 0
    up = hosts.filter(pl.col("status") == "up")["host_id"].to_list()
    racks = hosts.filter(pl.col("status") == "up")["rack"].unique().sort().to_list()
    failed_rack = racks[int(rng.integers(len(racks)))]
    draining: dict[str, int] = {}
    week = []
    for night in range(nights):
        if night:  # arrivals of the day before
            alive = sum(int(((t["born"] <= night) & (t["dies"] > night)).sum()) for t in tables)
            count = int(round(alive * steady * weekday[(night - 1) % 7]))
            new = pool.slice(used, count)
            used += count
            life = lifetimes(new.height, hazard, rng)
            tables.append(new.with_columns(pl.lit(night, pl.Int64).alias("born"), pl.Series("dies", night + life)))
            for h in list(draining):
                if night - draining[h] >= 2:
                    del draining[h]
            for h in rng.choice([x for x in up if x not in draining], size=int(rng.integers(1, 3)), replace=False):
                draining[str(h)] = night
        requests = pl.concat(tables).filter((pl.col("born") <= night) & (pl.col("dies") > night))
        status = pl.when(pl.col("host_id").is_in(list(draining))).then(pl.lit("draining"))
        if night == 4:
            status = status.when(pl.col("rack") == failed_rack).then(pl.lit("down"))
        tonight = hosts.with_columns(status.otherwise(pl.col("status")).alias("status"))
        week.append((tonight, requests.drop("born", "dies")))
    return week, failed_rack


def weighted_demand(requests: pl.DataFrame, shards: pl.DataFrame, options: PlanOptions) -> float:
    placed = requests["request_id"].is_in(shards["request_id"].unique().implode()).to_numpy()
    return float((unplaced_priority(requests, options) * demand_units(requests, options))[placed].sum())


def run_fleet(name: str, nights: int, time_limit: float, hazard, weekday, seed: int) -> dict:
    week, failed_rack = fleet_week(name, nights, hazard, weekday, seed)
    base = PlanOptions(time_limit_s=time_limit)
    state = {p: None for p in POLICIES}  # each policy's last shards
    rows = []
    for night, (hosts, requests) in enumerate(week):
        last_night = dict(state)
        for policy in POLICIES:
            options = base
            previous = last_night["incremental" if policy == "incremental_T/5" else policy]
            current = None
            if previous is not None:
                running = previous.filter(pl.col("request_id").is_in(requests["request_id"].implode()))
                if policy == "never_move":
                    options = base.replace(max_moves=0)
                elif policy == "incremental_budget":
                    options = base.replace(max_moves=max(1, int(0.02 * running["request_id"].n_unique())))
                elif policy == "incremental_T/5":
                    options = base.replace(time_limit_s=time_limit / 5)
                if policy != "from_scratch":
                    current = check_current(previous, hosts, requests, f"{policy} night {night - 1}")
            elif policy == "incremental_T/5":
                options = base.replace(time_limit_s=time_limit / 5)
            began = time.perf_counter()
            result = plan(hosts, requests, options, current=current)
            wall = time.perf_counter() - began
            was = pl.DataFrame(schema=result.shards.schema) if previous is None else previous.filter(
                pl.col("request_id").is_in(requests["request_id"].implode()))
            violations = check_plan(hosts, requests, result.shards, result.requests_out, options,
                                    current=was if policy != "from_scratch" else None)
            forced = must_move(hosts, requests, was, min_local_ram_gib_per_vcpu=options.min_local_ram_gib_per_vcpu,
                               max_ram_skew=options.max_ram_skew,
                               remote_cap=remote_caps(requests, options, options.remote_memory_pricing))
            moved = moved_requests(was, result.shards)
            running_ids = set(was["request_id"].to_list())
            evictable = dict(requests.select("request_id", "evictable").iter_rows())
            dropped = {r for r in running_ids - set(result.shards["request_id"].to_list())
                       if not evictable.get(r) and r not in forced}
            _, counts = compare(was, result.shards, requests, forced)
            rows.append({
                "fleet": name, "night": night, "policy": policy, "running": len(running_ids),
                "disrupted": len(moved), "voluntary": len(moved - set(forced)), "mandatory": len(moved & set(forced)),
                "moved_gib": counts["moved_gib"],
                "actions": len(plan_between(hosts, requests, was if previous is not None else result.shards.clear(),
                                            result.shards).actions),
                "weighted_demand": weighted_demand(requests, result.shards, options),
                "demand_asked": weighted_demand(requests, requests.select("request_id"), options),
                "active_cost": active_cost(hosts, result.shards), "wall_s": wall,
                "dropped_running_not_evictable": len(dropped), "max_moves": options.max_moves,
                "violations": len(violations), "solver": result.result.solver})
            state[policy] = result.shards
            print(f"  {name} night {night} {policy:<19} disrupted {rows[-1]['disrupted']:>4} "
                  f"demand {rows[-1]['weighted_demand']:>10.0f} wall {wall:5.1f}s violations {len(violations)}",
                  flush=True)
    return {"fleet": name, "failed_rack_night_4": failed_rack, "nights": rows}


def totals(rows: list[dict]) -> dict:
    """Per fleet and policy, nights 1.. summed (night 0 is the first plan for every policy)."""
    frame = pl.DataFrame(rows).filter(pl.col("night") > 0)
    return {f"{f}/{p}": v for f, p, *v in frame.group_by("fleet", "policy", maintain_order=True).agg(
        pl.col("disrupted").sum(), pl.col("moved_gib").sum(), pl.col("actions").sum(),
        pl.col("weighted_demand").sum(), pl.col("active_cost").mean(), pl.col("wall_s").median(),
        pl.col("dropped_running_not_evictable").sum(), pl.col("violations").sum()).iter_rows()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=20.0)
    parser.add_argument("--fleets", default="demo,1,2")
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    hazard, weekday = azure_churn(require_shared_dir())
    print(f"Azure V1 churn: leaving hazard by age (nights 1..10) {np.round(hazard, 3).tolist()}, weekday shares "
          f"{np.round(weekday, 2).tolist()}")
    fleets = [run_fleet(name, args.nights, args.time_limit, hazard, weekday, args.seed + i)
              for i, name in enumerate(args.fleets.split(","))]
    rows = [row for f in fleets for row in f["nights"]]
    print_table("Per night (disrupted running requests by DESIGN.md's definition, from the shards tables)",
                ["fleet", "night", "policy", "running", "disrupted", "voluntary", "mandatory", "moved GiB", "actions",
                 "weighted demand", "active $/h", "wall s", "dropped", "violations"],
                [[r["fleet"], r["night"], r["policy"], r["running"], r["disrupted"], r["voluntary"], r["mandatory"],
                  r["moved_gib"], r["actions"], r["weighted_demand"], r["active_cost"], r["wall_s"],
                  r["dropped_running_not_evictable"], r["violations"]] for r in rows])
    summary = totals(rows)
    table = []
    verdicts = {}
    for fleet in args.fleets.split(","):
        get = lambda p: summary[f"{fleet}/{p}"]  # noqa: E731
        scratch, never, inc, budget, fast = (get(p) for p in POLICIES)
        last = {r["policy"]: r for r in rows if r["fleet"] == fleet and r["night"] == args.nights - 1}
        verdicts[fleet] = {
            "disruption_ratio_scratch_over_incremental": scratch[0] / max(inc[0], 1),
            "incremental_demand_share_of_scratch": inc[3] / max(scratch[3], 1e-9),
            "incremental_over_never_move_last_night": last["incremental"]["weighted_demand"]
            / max(last["never_move"]["weighted_demand"], 1e-9) - 1,
            "budget_respected": all(r["voluntary"] <= r["max_moves"] for r in rows if r["fleet"] == fleet
                                    and r["policy"] == "incremental_budget" and r["night"] > 0),
            "dropped_running_incremental": inc[6] + budget[6] + fast[6] + never[6],
            "fast_share_of_scratch_demand": fast[3] / max(scratch[3], 1e-9),
        }
        for policy, t in zip(POLICIES, (scratch, never, inc, budget, fast)):
            table.append([fleet, policy, *t])
    print_table("Nights 1.. in total (active $/h: mean; wall: median)",
                ["fleet", "policy", "disrupted", "moved GiB", "actions", "weighted demand", "active $/h", "wall s",
                 "dropped", "violations"], table)
    print_table("Targets", ["fleet", "scratch/incremental disrupted (≥ 10)", "incremental demand / scratch (≥ 0.99)",
                            "incremental over never-move, last night (≥ 3%)", "budget kept", "dropped running",
                            "T/5 demand / scratch at T (≥ 0.99)"],
                [[f, v["disruption_ratio_scratch_over_incremental"], v["incremental_demand_share_of_scratch"],
                  f"{100 * v['incremental_over_never_move_last_night']:+.2f}%", v["budget_respected"],
                  v["dropped_running_incremental"], v["fast_share_of_scratch_demand"]] for f, v in verdicts.items()])
    write_json_atomic(results_path("replan"), {"time_limit_s": args.time_limit, "nights": args.nights,
                                               "azure_hazard": hazard.tolist(), "azure_weekday": weekday.tolist(),
                                               "fleets": fleets, "verdicts": verdicts})


if __name__ == "__main__":
    main()
