"""Replication and executor benchmark: fault schedules, kill -9 drill, apply throughput, libvirt read-back.

Side by side in one run: majority quorums against the deliberately weakened
quorum 1/1 (the checker must catch it), and the journaled apply against raw
executor calls. The apply figures are measured on THE demo plan: the plan the
planner makes for the embedded demo fleet (240 hosts, 500 requests), and on a
second nightly plan of the same fleet after a what-if (hosts drained, new
requests), applied on top of the first. Prints tables and writes
benchmarks/results/replication.json.

    python benchmarks/replication.py [--schedules 1000] [--kills 300] [--seed 0] [--plan-time-limit 10]
"""
from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

if __package__ in (None, ""):  # `python benchmarks/replication.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import results_path, write_json_atomic
from shardplan.executors.actions import ActionKind, plan_actions
from shardplan.executors.apply import apply_plan, matches_target
from shardplan.executors.base import load_target
from shardplan.executors.kill_drill import KillDrillResult, differs_from_shards_file, kill_drill
from shardplan.executors.repl_checker import check_action_sequence
from shardplan.executors.replication import ReplicationOptions, run_schedules
from shardplan.executors.sim import SimExecutor

RESULTS = results_path("replication")
console = Console(width=200)  # wide tables also when the output is a log file


@dataclass(frozen=True)
class DemoPlans:
    """Plan directories made by the planner: ``a`` for the demo fleet, ``b`` after the what-if."""

    a: Path
    b: Path
    summary: dict[str, object]


def _plan_dir(out: Path, hosts: pl.DataFrame, requests: pl.DataFrame, time_limit_s: float) -> dict[str, object]:
    """Plan with the public path, write the plan directory, run the plan checker on it."""
    from shardplan.planner.engine import plan
    from shardplan.planner.report.checker import check_plan_dir
    from shardplan.planner.report.export import write_plan_dir
    from shardplan.planner.validate.options import PlanOptions

    started = time.perf_counter()
    result = plan(hosts, requests, PlanOptions(time_limit_s=time_limit_s, workers=2, lp_bound=False))
    write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    violations = check_plan_dir(out)
    if violations:
        raise SystemExit(f"{out}: the planner's plan fails the checker: {violations[:3]}")
    shards = result.shards
    status = dict(result.requests_out.group_by("status").len().iter_rows())
    return {"parts": shards.height, "placed": status.get("placed", 0), "unplaced": status.get("unplaced", 0),
            "hosts_used": shards["host_id"].n_unique(), "roles": dict(shards.group_by("role").len().sort("role").iter_rows()),
            "memory_only_parts": shards.filter((pl.col("vcpu") == 0) & (pl.col("ram_gib") > 0)).height,
            "gpu_parts": shards.filter(pl.col("gpu") > 0).height, "solver_status": result.plan_json.get("status"),
            "checker_violations": len(violations), "plan_wall_s": round(time.perf_counter() - started, 1)}


def demo_plans(workdir: Path, time_limit_s: float, seed: int, drain: int, new_requests: int) -> DemoPlans:
    """Plan A for the embedded demo fleet; plan B after draining ``drain`` busy hosts and adding new requests."""
    from shardplan.data.generator import demo_fleet

    hosts, requests = demo_fleet()
    a = workdir / "demo-plan-a"
    summary_a = _plan_dir(a, hosts, requests, time_limit_s)
    rng = random.Random(seed)
    busy = pl.read_parquet(a / "shards.parquet")["host_id"].unique().sort().to_list()
    up = set(hosts.filter(pl.col("status") == "up")["host_id"].to_list())
    drained = sorted(rng.sample(sorted(set(busy) & up), drain))
    hosts_b = hosts.with_columns(pl.when(pl.col("host_id").is_in(drained)).then(pl.lit("draining"))
                                 .otherwise(pl.col("status")).alias("status"))
    extra = requests.sample(new_requests, seed=seed).with_columns(
        (pl.lit("new-") + pl.int_range(1, new_requests + 1).cast(pl.Utf8).str.zfill(4)).alias("request_id"))
    b = workdir / "demo-plan-b"
    summary_b = _plan_dir(b, hosts_b, pl.concat([requests, extra]), time_limit_s)
    table = Table(title=f"the demo plans (planner, {hosts.height} hosts, time limit {time_limit_s:g} s)")
    for column in ("plan", "requests", "placed", "unplaced", "parts", "memory-only", "GPU parts", "hosts used",
                   "solver", "checker", "plan wall s"):
        table.add_column(column, justify="right")
    for label, n, s in (("A: demo fleet", requests.height, summary_a),
                        (f"B: {drain} hosts drained, {new_requests} new", requests.height + new_requests, summary_b)):
        table.add_row(label, str(n), str(s["placed"]), str(s["unplaced"]), str(s["parts"]), str(s["memory_only_parts"]),
                      str(s["gpu_parts"]), str(s["hosts_used"]), str(s["solver_status"]),
                      "ok" if not s["checker_violations"] else str(s["checker_violations"]), str(s["plan_wall_s"]))
    console.print(table)
    return DemoPlans(a, b, {"fleet": {"hosts": hosts.height, "requests": requests.height,
                                      "hosts_not_up": hosts.filter(pl.col("status") != "up").height},
                            "plan_a": summary_a,
                            "what_if": {"drained_hosts": drained, "new_requests": new_requests,
                                        "new_requests_sampled_from_demo_with_seed": seed},
                            "plan_b": summary_b})


def fault_schedules(n: int, seed: int) -> dict[str, dict[str, int]]:
    """The same seeded schedules at majority quorums and at quorum 1/1."""
    out = {}
    for label, options in (("majority", ReplicationOptions()), ("quorum_1_1", ReplicationOptions(write_quorum=1, read_quorum=1))):
        started = time.perf_counter()
        _, totals = run_schedules(n, seed, options)
        w, r = options.quorums()
        out[label] = {"write_quorum": w, "read_quorum": r, "schedules": totals.schedules,
                      "acknowledged_writes": totals.acknowledged_writes, "lost_writes": totals.lost_writes,
                      "stale_reads": totals.stale_reads, "diverged": totals.diverged, "reads": totals.reads,
                      "conflicts_resolved": totals.conflicts, "schedules_with_violations": totals.schedules_with_violations,
                      "wall_s": round(time.perf_counter() - started, 2)}
    table = Table(title=f"{n} seeded fault schedules (3 copies on distinct racks, 2 zones)")
    for column in ("quorums W/R", "acknowledged writes", "lost writes", "stale quorum reads", "diverged keys",
                   "schedules with violations", "wall s"):
        table.add_column(column, justify="right")
    for row in out.values():
        table.add_row(f"{row['write_quorum']}/{row['read_quorum']}", str(row["acknowledged_writes"]), str(row["lost_writes"]),
                      str(row["stale_reads"]), str(row["diverged"]), str(row["schedules_with_violations"]), str(row["wall_s"]))
    console.print(table)
    return out


def _apply_once(plan_dir: Path, state: Path, label: str) -> dict[str, object]:
    """Journaled apply of ``plan_dir`` onto the simulated cluster in ``state``, then raw executor calls from the same start."""
    raw_state = state.with_name(state.stem + "-raw.db")
    with SimExecutor(state) as sim:
        current = sim.current_parts()
    source, copy = sqlite3.connect(str(state)), sqlite3.connect(str(raw_state))
    try:  # the raw run starts from the same cluster: a copy of the state file
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    target = load_target(plan_dir)
    started = time.perf_counter()
    ordered = plan_actions(current, target)
    order_s = time.perf_counter() - started
    if not ordered.ok:
        raise SystemExit(f"{label}: no safe order: {ordered.explain_stuck()[:2000]}")
    verdict = check_action_sequence(current, target, ordered.actions)
    report = apply_plan(plan_dir, "sim", state)
    with SimExecutor(state) as sim:
        differs = differs_from_shards_file(sim.current_parts(), plan_dir)
    with SimExecutor(raw_state, target.hosts) as sim:
        started = time.perf_counter()
        actions = plan_actions(sim.current_parts(), target).actions
        executing = time.perf_counter()
        for action in actions:
            sim.apply(action)
        raw_exec_s = time.perf_counter() - executing
        raw_s = time.perf_counter() - started
        raw_ok = matches_target(sim.current_parts(), target) == []
    kinds = Counter(a.kind.value for a in ordered.actions)
    return {"scenario": label, "actions": report.actions_run, "create": kinds[ActionKind.CREATE.value],
            "resize": kinds[ActionKind.RESIZE.value], "copy": kinds[ActionKind.COPY.value],
            "delete": kinds[ActionKind.DELETE.value],
            "staged_parts": sum(1 for a in ordered.actions if a.kind is ActionKind.CREATE and a.reason.startswith("stage on")),
            "order_s": round(order_s, 2), "journaled_wall_s": round(report.wall_s, 2),
            "journaled_actions_per_s": round(report.actions_run / report.wall_s, 1),
            "raw_wall_s": round(raw_s, 2), "raw_actions_per_s": round(len(actions) / raw_s, 1),
            "raw_execute_only_actions_per_s": round(len(actions) / raw_exec_s, 1),
            "journal_cost_ratio": round((len(actions) / raw_s) / (report.actions_run / report.wall_s), 2),
            "static_check_ok": verdict.ok, "min_copy_margin": verdict.min_copy_margin,
            "ends_in_shards_parquet": not differs and raw_ok}


def throughput(plans: DemoPlans, workdir: Path) -> dict[str, object]:
    """Actions per second on the simulated cluster: the demo plan from empty, then the diff to plan B."""
    state = workdir / "tp-state.db"
    rows = [_apply_once(plans.a, state, "empty → demo plan A"),
            _apply_once(plans.b, state, "plan A → plan B (nightly diff)")]
    table = Table(title=f"apply throughput on the simulated cluster ({len(load_target(plans.a).hosts)} hosts, "
                        "journal + state fsync'd per step)")
    for column in ("scenario", "actions", "create/resize/copy/delete", "staged", "order s", "journaled actions/s",
                   "raw executor actions/s", "raw / journaled", "ends in plan"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["scenario"], str(row["actions"]), f"{row['create']}/{row['resize']}/{row['copy']}/{row['delete']}",
                      str(row["staged_parts"]), str(row["order_s"]), str(row["journaled_actions_per_s"]),
                      str(row["raw_actions_per_s"]), str(row["journal_cost_ratio"]),
                      "yes" if row["ends_in_shards_parquet"] and row["static_check_ok"] else "NO")
    console.print(table)
    return {"from_empty": rows[0], "nightly_diff": rows[1]}


def _drill_row(label: str, result: KillDrillResult, wall_s: float) -> dict[str, object]:
    return {"scenario": label, "kills": result.kills, "kills_mid_apply": result.kills_mid_apply, "trials": result.trials,
            "actions_per_apply": result.actions_per_apply, "resumed_runs_ending_in_plan": result.resumed_runs_ok,
            "lost_parts": result.lost_parts, "duplicated_parts": result.duplicated_parts,
            "floor_violations": result.floor_violations, "min_copy_margin": result.min_copy_margin,
            "journaled_steps_checked": result.journal_steps_checked, "failures": result.failures[:10],
            "wall_s": round(wall_s, 1)}


def kills(n: int, seed: int, plans: DemoPlans, workdir: Path, kills_per_trial: int, action_delay_ms: float) -> dict[str, object]:
    """``n`` kill -9 interruptions of ``shardplan apply`` (a real subprocess): half on the demo plan from an
    empty cluster, half on plan B over plan A (where copies move and the copy floor binds)."""
    rows = []
    for label, before, after, share in (("empty → demo plan A", None, plans.a, n // 2),
                                        ("plan A → plan B", plans.a, plans.b, n - n // 2)):
        started = time.perf_counter()
        result = kill_drill(before, after, workdir / f"kill-{len(rows)}", total_kills=share, kills_per_trial=kills_per_trial,
                            seed=seed + len(rows), action_delay_ms=action_delay_ms, keep_states=False)
        rows.append(_drill_row(label, result, time.perf_counter() - started))
    total = {k: sum(r[k] for r in rows) for k in ("kills", "kills_mid_apply", "trials", "resumed_runs_ending_in_plan",
                                                  "lost_parts", "duplicated_parts", "floor_violations",
                                                  "journaled_steps_checked", "wall_s")}
    margins = [r["min_copy_margin"] for r in rows if r["min_copy_margin"] is not None]
    total.update(scenario="all", min_copy_margin=min(margins) if margins else None, actions_per_apply=None,
                 failures=[f for r in rows for f in r["failures"]][:10])
    table = Table(title=f"kill -9 of `apply` (subprocess) on the demo plans, {kills_per_trial} kills per trial, "
                        "checked against shards.parquet and every recorded step")
    columns = ("scenario", "kills", "mid-apply", "trials", "actions per apply", "ended in plan", "lost parts",
               "duplicated parts", "floor violations", "min copy margin", "steps checked", "wall s")
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows + [total]:
        table.add_row(*[str(row[k]) for k in ("scenario", "kills", "kills_mid_apply", "trials", "actions_per_apply",
                                              "resumed_runs_ending_in_plan", "lost_parts", "duplicated_parts",
                                              "floor_violations", "min_copy_margin", "journaled_steps_checked", "wall_s")])
    console.print(table)
    return {"scenarios": rows, "total": total, "kills_per_trial": kills_per_trial, "action_delay_ms": action_delay_ms}


def _libvirt_copy(plan_dir: Path, out: Path, uri: str) -> Path:
    """The plan directory with every host's libvirt_uri set to ``uri``."""
    shutil.copytree(plan_dir, out)
    hosts = pl.read_parquet(out / "inputs" / "hosts.parquet").with_columns(pl.lit(uri).alias("libvirt_uri"))
    hosts.write_parquet(out / "inputs" / "hosts.parquet")
    return out


def libvirt_readback(plans: DemoPlans, workdir: Path) -> dict[str, object]:
    """Apply the demo plan (then plan B on top) to test-driver hosts and read every domain and volume back."""
    try:
        import libvirt
    except ImportError:
        return {"skipped": "libvirt-python not installed"}
    from shardplan.executors.libvirt_exec import KIB_PER_GIB, METADATA_NS, volume_name

    uri = "test:///default"
    keeper = libvirt.open(uri)  # the test driver forgets its state when the last connection closes
    state = workdir / "lv-state.db"
    rows = []
    try:
        for label, plan_dir in (("empty → demo plan A", plans.a), ("plan A → plan B", plans.b)):
            lv_dir = _libvirt_copy(plan_dir, workdir / f"lv-{plan_dir.name}", uri)
            report = apply_plan(lv_dir, "libvirt", state)
            target = load_target(lv_dir)
            domains = {}
            for domain in keeper.listAllDomains():
                try:
                    record = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
                except libvirt.libvirtError:
                    continue  # not ours (the test driver's own 'test' domain)
                info = domain.info()
                domains[domain.name()] = (info[3], info[1], record, domain.isActive())
            wanted = [p for p in target.parts if p.vcpu or p.ram_gib]
            # libvirt needs at least one vcpu: a memory-only part runs as a 1-vcpu domain (its metadata keeps vcpu 0)
            right = [p for p in wanted if p.domain_name in domains
                     and domains[p.domain_name][0] == max(p.vcpu, 1) and domains[p.domain_name][1] == p.ram_gib * KIB_PER_GIB
                     and f'host_id="{p.host_id}"' in domains[p.domain_name][2] and domains[p.domain_name][3]]
            volumes = set(keeper.storagePoolLookupByName("default-pool").listVolumes())
            copies = [p for p in target.parts if p.holds_storage]
            rows.append({"scenario": label, "hosts": len(target.hosts), "actions": report.actions_run,
                         "wall_s": round(report.wall_s, 1), "actions_per_s": round(report.actions_per_s, 1),
                         "domains_expected": len(wanted), "domains_read_back": len(domains),
                         "domains_with_right_vcpus_memory_and_host": len(right),
                         "memory_only_domains": sum(1 for p in wanted if p.vcpu == 0),
                         "gpu_parts": sum(1 for p in wanted if p.gpu),
                         "volumes_expected": len(copies),
                         "volumes_present": sum(1 for p in copies if volume_name(p) in volumes),
                         "stray_volumes": len(volumes - {volume_name(p) for p in copies}),
                         "stray_domains": len(set(domains) - {p.domain_name for p in wanted})})
    finally:
        keeper.close()
    table = Table(title=f"libvirt executor on {uri} (all {rows[0]['hosts']} demo hosts share the connection)")
    for column in ("scenario", "actions", "actions/s", "domains expected", "read back right", "memory-only",
                   "volumes expected", "volumes present", "stray domains / volumes", "wall s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(row["scenario"], str(row["actions"]), str(row["actions_per_s"]), str(row["domains_expected"]),
                      str(row["domains_with_right_vcpus_memory_and_host"]), str(row["memory_only_domains"]),
                      str(row["volumes_expected"]), str(row["volumes_present"]),
                      f"{row['stray_domains']} / {row['stray_volumes']}", str(row["wall_s"]))
    console.print(table)
    return {"uri": uri, "scenarios": rows,
            "notes": "volumes are thin (allocation 0): the test driver's pool holds 100 GiB, the demo plan's copies "
                     "far more; GPUs are recorded in the domain metadata only (no device passthrough in the test driver)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plan-time-limit", type=float, default=10.0, help="planner time limit per demo plan (s)")
    parser.add_argument("--kills-per-trial", type=int, default=20)
    parser.add_argument("--action-delay-ms", type=float, default=0.0,
                        help="pause before each action of the killed applies (0: kills land by journal position)")
    parser.add_argument("--drain", type=int, default=10, help="what-if of plan B: busy hosts set to draining")
    parser.add_argument("--new-requests", type=int, default=30, help="what-if of plan B: new requests")
    args = parser.parse_args()
    started = time.perf_counter()
    results: dict[str, object] = {"schedules_seed": args.seed, "seed": args.seed, "plan_time_limit_s": args.plan_time_limit}
    walls: dict[str, float] = {}

    def timed(name: str, value: object, since: float) -> object:
        results[name] = value
        walls[name] = round(time.perf_counter() - since, 1)
        return value

    with tempfile.TemporaryDirectory(prefix="shardplan-bench-") as scratch:
        workdir = Path(scratch)
        since = time.perf_counter()
        timed("fault_schedules", fault_schedules(args.schedules, args.seed), since)
        since = time.perf_counter()
        plans = demo_plans(workdir, args.plan_time_limit, args.seed, args.drain, args.new_requests)
        timed("demo_plans", plans.summary, since)
        since = time.perf_counter()
        timed("apply_throughput", throughput(plans, workdir), since)
        since = time.perf_counter()
        timed("libvirt", libvirt_readback(plans, workdir), since)
        since = time.perf_counter()
        timed("kill_9", kills(args.kills, args.seed, plans, workdir, args.kills_per_trial, args.action_delay_ms), since)
    results["wall_s"] = {**walls, "total": round(time.perf_counter() - started, 1)}
    write_json_atomic(RESULTS, results)
    console.print(f"wrote {RESULTS} ({results['wall_s']['total']} s)")


if __name__ == "__main__":
    main()
