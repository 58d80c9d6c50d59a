"""CLI commands that drive executors: ``apply``, ``status`` and ``faults``.

``register(app)`` adds them to the main typer app; ``python -m shardplan.planner.cli.executors``
runs them on their own (the kill -9 test starts it as a subprocess).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from shardplan.executors.base import PART_COLUMNS, UnknownExecutor, parts_frame
from shardplan.files import parquet_bytes, write_atomically

console = Console()
errors = Console(stderr=True)


def apply(
    plan_dir: Path = typer.Argument(..., help="Plan directory (shards.parquet, inputs/hosts.parquet, inputs/requests.parquet)."),
    executor: str = typer.Option("sim", "--executor", help="Registered executor: sim, libvirt or a plugin's name."),
    state: Path = typer.Option(..., "--state", help="SQLite file holding the journal (and the simulated cluster)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the ordered actions with their reasons; change nothing."),
    action_delay_ms: float = typer.Option(0.0, "--action-delay-ms", help="Pause before each action (lets an interruption land mid-apply)."),
) -> None:
    """Bring the cluster to the plan; resumes an interrupted apply of the same plan."""
    from shardplan.executors.apply import ApplyError, UnsafePlan, apply_plan
    from shardplan.executors.apply import dry_run as plan_dry_run

    try:
        if dry_run:
            plan = plan_dry_run(plan_dir, executor, state)
            table = Table(title=f"{len(plan.actions)} action(s) to reach {plan_dir}")
            for column in ("seq", "action", "part", "host", "reason"):
                table.add_column(column)
            for action in plan.actions:
                table.add_row(str(action.seq), action.kind.value, f"{action.part.request_id}/p{action.part.shard}",
                              action.part.host_id, action.reason)
            console.print(table)
            if not plan.ok:
                errors.print(plan.explain_stuck())
                raise typer.Exit(3)
            return
        count = 0

        def progress(action: object) -> None:
            nonlocal count
            count += 1
            if console.is_terminal and count % 10 == 0:
                console.print(f"  {count} actions done", highlight=False)

        report = apply_plan(plan_dir, executor, state, action_delay_ms=action_delay_ms, on_action=progress)
        verb = "resumed apply" if report.resumed else "apply"
        console.print(f"{verb} {report.apply_id}: {report.actions_run} of {report.actions_total} actions run in "
                      f"{report.wall_s:.2f} s ({report.actions_per_s:.1f} actions/s); cluster matches the plan")
    except UnsafePlan as exc:
        errors.print(f"[red]refusing to apply[/red]: {exc}")
        raise typer.Exit(3)
    except (ApplyError, UnknownExecutor, FileNotFoundError, ValueError) as exc:
        errors.print(f"[red]apply failed[/red]: {exc}")
        raise typer.Exit(1)


def status(
    state: Path = typer.Option(..., "--state", help="SQLite state file written by apply."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of parts in the shards.parquet columns."),
    fmt: str = typer.Option("table", "--format", help="table, json, parquet or csv (parquet and csv need --out)."),
    out: Path = typer.Option(None, "--out", help="File to write (atomically) in the shards columns: what "
                             "`shardplan plan --current FILE` reads."),
) -> None:
    """Current parts per host; `--format parquet --out FILE` writes them for the next plan's --current."""
    from shardplan.executors.apply import current_status

    try:
        name, parts = current_status(state)
    except (FileNotFoundError, UnknownExecutor) as exc:
        errors.print(f"[red]status failed[/red]: {exc}")
        raise typer.Exit(1)
    frame = parts_frame(parts).sort("host_id", "request_id", "shard")
    if fmt not in ("table", "json", "parquet", "csv"):
        errors.print(f"[red]bad option[/red]: --format {fmt!r}: expected table, json, parquet or csv")
        raise typer.Exit(2)
    if fmt in ("parquet", "csv"):
        if out is None:
            errors.print(f"[red]bad option[/red]: --format {fmt} needs --out FILE")
            raise typer.Exit(2)
        ordered = frame.sort("request_id", "shard")
        if fmt == "parquet":
            write_atomically(out, parquet_bytes(ordered))
        else:
            write_atomically(out, ordered.write_csv())
        console.print(f"{len(parts)} part(s) of {ordered['request_id'].n_unique()} request(s) ({name} executor) "
                      f"→ {out}")
        return
    if as_json or fmt == "json":
        sys.stdout.write(json.dumps(frame.to_dicts()) + "\n")
        return
    incomplete = {p.place for p in parts if not p.complete}
    table = Table(title=f"{len(parts)} part(s) on {frame['host_id'].n_unique()} host(s) ({name} executor)")
    for column in PART_COLUMNS:
        table.add_column(column)
    for row in frame.iter_rows(named=True):
        filling = (row["request_id"], row["shard"], row["host_id"]) in incomplete
        table.add_row(*[str(row[c]) + (" (filling)" if filling and c == "storage_gib" else "") for c in PART_COLUMNS])
    console.print(table)


def faults(
    schedules: int = typer.Option(50, "--schedules", min=1, help="Seeded fault schedules to run."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first schedule."),
    write_quorum: int = typer.Option(None, "--write-quorum", min=1, help="Copies that acknowledge a write (default majority)."),
    read_quorum: int = typer.Option(None, "--read-quorum", min=1, help="Copies a read hears from (default majority)."),
    copies: int = typer.Option(3, "--copies", min=1, help="Storage copies of the simulated request."),
    json_path: Path = typer.Option(..., "--json", help="Write per-schedule results and totals here."),
) -> None:
    """Run fault schedules against the replication layer; report lost writes, stale reads, divergence."""
    from shardplan.executors.replication import ReplicationOptions, run_schedules

    for name, quorum in (("--write-quorum", write_quorum), ("--read-quorum", read_quorum)):
        if quorum is not None and quorum > copies:
            errors.print(f"[red]{name} {quorum} exceeds --copies {copies}[/red]")
            raise typer.Exit(2)
    options = ReplicationOptions(copies=copies, write_quorum=write_quorum, read_quorum=read_quorum)
    results, totals = run_schedules(schedules, seed, options)
    w, r = options.quorums()
    per_schedule = [{"seed": res.seed, "faults": [f.kind for f in res.faults], "acknowledged_writes": res.verdict.acknowledged_writes,
                     "lost_writes": res.verdict.lost_writes, "stale_reads": res.verdict.stale_reads,
                     "diverged": res.verdict.diverged, "conflicts_resolved": res.conflicts, "moves_done": res.moves_done,
                     "moves_aborted": res.moves_aborted, "examples": res.verdict.examples} for res in results]
    report = {"copies": copies, "write_quorum": w, "read_quorum": r, "seed": seed, "schedules": per_schedule,
              "totals": {"schedules": totals.schedules, "acknowledged_writes": totals.acknowledged_writes,
                         "lost_writes": totals.lost_writes, "stale_reads": totals.stale_reads, "diverged": totals.diverged,
                         "reads": totals.reads, "conflicts_resolved": totals.conflicts,
                         "schedules_with_violations": totals.schedules_with_violations}}
    write_atomically(json_path, json.dumps(report, indent=1))
    table = Table(title=f"{schedules} fault schedule(s), {copies} copies, write quorum {w}, read quorum {r}")
    for column in ("schedules", "acknowledged writes", "lost writes", "stale reads", "diverged keys", "schedules with violations"):
        table.add_column(column, justify="right")
    table.add_row(str(totals.schedules), str(totals.acknowledged_writes), str(totals.lost_writes), str(totals.stale_reads),
                  str(totals.diverged), str(totals.schedules_with_violations))
    console.print(table)
    if totals.schedules_with_violations:  # like `check`: a violation found is a failing exit
        errors.print(f"[red]{totals.schedules_with_violations} schedule(s) broke the replication guarantees "
                     f"(see {json_path})[/red]")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add apply, status and faults to ``app``."""
    app.command("apply")(apply)
    app.command("status")(status)
    app.command("faults")(faults)


def main() -> None:
    standalone = typer.Typer(add_completion=False, no_args_is_help=True)
    register(standalone)
    standalone()


if __name__ == "__main__":
    main()
