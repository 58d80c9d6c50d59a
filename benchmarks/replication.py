"""Replication and executor benchmark: fault schedules, kill -9 drill, apply throughput, libvirt read-back.

Side by side in one run: majority quorums against the deliberately weakened
quorum 1/1 (the checker must catch it), and the journaled apply against raw
executor calls. Prints tables and writes benchmarks/results/replication.json.

    python benchmarks/replication.py [--schedules 1000] [--kills 300] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from executors.actions import plan_actions
from executors.apply import apply_plan, matches_target
from executors.base import load_target
from executors.kill_drill import kill_drill
from executors.replication import ReplicationOptions, run_schedules
from executors.sample_plans import demo_hosts, demo_plans, write_plan_dir
from executors.sim import SimExecutor

RESULTS = Path(__file__).resolve().parent / "results" / "replication.json"
console = Console()


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


def throughput(workdir: Path) -> dict[str, float]:
    """Actions per second on the simulated cluster: journaled apply against raw executor calls."""
    fleet = demo_plans(1, n_requests=120, hosts=demo_hosts(zones=2, racks_per_zone=3, hosts_per_rack=6))
    before = write_plan_dir(workdir / "tp-before", fleet.hosts, fleet.requests, fleet.before)
    after = write_plan_dir(workdir / "tp-after", fleet.hosts, fleet.requests, fleet.after)
    out: dict[str, float] = {}
    report_before = apply_plan(before, "sim", workdir / "tp-journaled.db")
    report_after = apply_plan(after, "sim", workdir / "tp-journaled.db")
    journaled_actions = report_before.actions_run + report_after.actions_run
    journaled_s = report_before.wall_s + report_after.wall_s
    started = time.perf_counter()
    raw_actions = 0
    with SimExecutor(workdir / "tp-raw.db", load_target(before).hosts) as sim:
        for plan_dir in (before, after):
            for action in plan_actions(sim.current_parts(), load_target(plan_dir)).actions:
                sim.apply(action)
                raw_actions += 1
        assert matches_target(sim.current_parts(), load_target(after)) == []
    raw_s = time.perf_counter() - started
    out = {"actions_journaled": journaled_actions, "journaled_actions_per_s": round(journaled_actions / journaled_s, 1),
           "raw_actions_per_s": round(raw_actions / raw_s, 1),
           "journal_cost_ratio": round((raw_actions / raw_s) / (journaled_actions / journaled_s), 2)}
    table = Table(title=f"apply throughput on the simulated cluster ({fleet.hosts.height} hosts)")
    for column in ("actions", "journaled actions/s", "raw executor actions/s", "raw / journaled"):
        table.add_column(column, justify="right")
    table.add_row(str(journaled_actions), str(out["journaled_actions_per_s"]), str(out["raw_actions_per_s"]),
                  str(out["journal_cost_ratio"]))
    console.print(table)
    return out


def kills(n: int, seed: int, workdir: Path) -> dict[str, object]:
    """``n`` kill -9 interruptions of ``shardplan apply`` on the demo plan."""
    fleet = demo_plans(0)
    before = write_plan_dir(workdir / "demo-before", fleet.hosts, fleet.requests, fleet.before)
    after = write_plan_dir(workdir / "demo-after", fleet.hosts, fleet.requests, fleet.after)
    started = time.perf_counter()
    result = kill_drill(before, after, workdir / "kill-trials", total_kills=n, kills_per_trial=10, seed=seed,
                        action_delay_ms=20)
    out = {"kills": result.kills, "kills_mid_apply": result.kills_mid_apply, "trials": result.trials,
           "resumed_runs_ending_in_plan": result.resumed_runs_ok, "lost_parts": result.lost_parts,
           "duplicated_parts": result.duplicated_parts, "floor_violations": result.floor_violations,
           "min_copy_margin": result.min_copy_margin, "journaled_steps_checked": result.journal_steps_checked,
           "failures": result.failures[:10], "wall_s": round(time.perf_counter() - started, 1)}
    table = Table(title=f"kill -9 of `apply` on the demo plan ({fleet.after.height} parts)")
    for column in ("kills", "mid-apply", "trials", "ended in plan", "lost parts", "duplicated parts",
                   "floor violations", "min copy margin", "steps checked"):
        table.add_column(column, justify="right")
    table.add_row(*[str(out[k]) for k in ("kills", "kills_mid_apply", "trials", "resumed_runs_ending_in_plan", "lost_parts",
                                          "duplicated_parts", "floor_violations", "min_copy_margin",
                                          "journaled_steps_checked")])
    console.print(table)
    return out


def libvirt_readback(workdir: Path) -> dict[str, object]:
    """Apply the demo plans to test-driver hosts and read every domain back."""
    try:
        import libvirt
    except ImportError:
        return {"skipped": "libvirt-python not installed"}
    from executors.libvirt_exec import KIB_PER_GIB

    keeper = libvirt.open("test:///default")  # the test driver forgets its state when the last connection closes
    hosts = demo_hosts(libvirt_uri="test:///default", storage_gib=100)
    fleet = demo_plans(0, hosts=hosts, storage_gib=(1, 2))
    before = write_plan_dir(workdir / "lv-before", fleet.hosts, fleet.requests, fleet.before)
    after = write_plan_dir(workdir / "lv-after", fleet.hosts, fleet.requests, fleet.after)
    started = time.perf_counter()
    actions = apply_plan(before, "libvirt", workdir / "lv.db").actions_run + apply_plan(after, "libvirt", workdir / "lv.db").actions_run
    wall = time.perf_counter() - started
    target = load_target(after)
    domains = {d.name(): d.info() for d in keeper.listAllDomains()}
    wanted = [p for p in target.parts if p.vcpu or p.ram_gib]
    # libvirt needs at least one vcpu: a memory-only part runs as a 1-vcpu domain (its metadata keeps vcpu 0)
    right = sum(1 for p in wanted if p.domain_name in domains and domains[p.domain_name][3] == max(p.vcpu, 1)
                and domains[p.domain_name][1] == p.ram_gib * KIB_PER_GIB)
    keeper.close()
    out = {"actions": actions, "actions_per_s": round(actions / wall, 1), "domains_expected": len(wanted),
           "domains_with_right_vcpus_and_memory": right,
           "memory_only_domains": sum(1 for p in wanted if p.vcpu == 0)}
    table = Table(title="libvirt executor on test:///default hosts")
    for column in ("actions", "actions/s", "domains expected", "read back right"):
        table.add_column(column, justify="right")
    table.add_row(str(actions), str(out["actions_per_s"]), str(len(wanted)), str(right))
    console.print(table)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    results: dict[str, object] = {"schedules_seed": args.seed}
    with tempfile.TemporaryDirectory(prefix="shardplan-bench-") as scratch:
        workdir = Path(scratch)
        results["fault_schedules"] = fault_schedules(args.schedules, args.seed)
        results["apply_throughput"] = throughput(workdir)
        results["libvirt"] = libvirt_readback(workdir)
        results["kill_9"] = kills(args.kills, args.seed, workdir)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=1))
    console.print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
