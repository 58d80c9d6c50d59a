"""What every command of the CLI shares: the consoles, the start of the command's clock, options from
flags, the output directory check, and the summary and violation tables."""
from __future__ import annotations

import json
import os
import sys
import time

COMMAND_STARTED = time.perf_counter()
"""When the command started (this module is imported first thing): `--time-limit` counts from here. A process
that runs several commands (tests through CliRunner, a caller of `app`) restarts the clock at each later one
(`start_invocation`), so a command's limit is never spent before it began."""
_invocations = 0


def start_invocation() -> None:
    """Called as each command starts (the app's callback): the first one keeps the import time, which is the
    nearest to the process's start; later ones in the same process count from now."""
    global COMMAND_STARTED, _invocations
    if _invocations:
        COMMAND_STARTED = time.perf_counter()
    _invocations += 1


def command_started() -> float:
    return COMMAND_STARTED

from pathlib import Path  # noqa: E402

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from shardplan.planner.validate.inputs import InputError  # noqa: E402
from shardplan.planner.validate.options import OptionError, PlanOptions  # noqa: E402


def _console(stderr: bool = False) -> Console:
    """A console that never cuts ids: piped output gets 240 columns instead of rich's default 80."""
    made = Console(stderr=stderr, soft_wrap=stderr)
    return made if made.is_terminal else Console(stderr=stderr, soft_wrap=stderr, width=240)


console = _console()
errors = _console(stderr=True)



def fail_input(exc: InputError) -> None:
    errors.print("bad input: " + str(exc), style="bold red", markup=False)
    raise typer.Exit(2)


FLAGS = {"mode": "--mode", "time_limit_s": "--time-limit", "workers": "--workers", "seed": "--seed",
         "top_k": "--top-k", "min_local_ram_gib_per_vcpu": "--min-local-ram-gib-per-vcpu",
         "lp_bound": "--lp-bound", "reservation_weight": "--reservation-weight", "max_moves": "--max-moves",
         "disruption_cost": "--disruption-cost", "move_cost_per_gib": "--move-cost-per-gib",
         "remote_memory_pricing": "--remote-memory-pricing", "partitions": "--partitions"}
"""The flag that sets each option, so an error names what the user typed."""


def resolve_options(**flags: object) -> PlanOptions:
    """Defaults ← SHARDPLAN_* environment ← CLI flags; a bad value exits 2 naming its flag or variable."""
    try:
        options = PlanOptions.from_env(validate=False).replace(**flags)
        options.validate()
    except OptionError as exc:  # named by where the bad value came from: the flag, else the variable
        variable = f"SHARDPLAN_{exc.name.upper()}"
        source = (FLAGS.get(exc.name, exc.name) if flags.get(exc.name) is not None
                  else variable if variable in os.environ else None)
        errors.print(f"bad option: {exc.named(source) if source else exc}", style="bold red", markup=False)
        raise typer.Exit(2) from exc
    except ValueError as exc:
        errors.print(f"bad option: {exc}", style="bold red", markup=False)
        raise typer.Exit(2) from exc
    return options


def start_command(options: PlanOptions, out: Path, force: bool):
    """The command's search budget (counted from its start) once `--out` is known to take a plan; exits 2
    before any work when it cannot."""
    from shardplan.planner.engine import new_budget
    from shardplan.planner.report.export import OutDirError, prepare_out_dir

    try:
        prepare_out_dir(out, force)
    except OutDirError as exc:
        errors.print(f"bad option: {exc}", style="bold red", markup=False)
        raise typer.Exit(2) from exc
    return new_budget(options, started=command_started())


def warn_fallback(fallback: dict) -> None:
    errors.print(f"warning: the search's plan broke {fallback['violation_count']} invariant checks (a bug; "
                 f"first: {fallback['violations'][0]}); wrote the best valid plan instead: {fallback.get('plan')}",
                 style="bold yellow", markup=False)


def summary(plan_json: dict) -> dict[str, object]:
    """The run in figures: one shape for plan and nightly (real requests and reservation blocks apart)."""
    blocks = plan_json.get("reservation_blocks") or {"held": 0, "not_held": 0}
    ffd = plan_json.get("baseline_ffd") or {}
    return {"status": plan_json.get("status"), "solver": plan_json.get("solver"),
            "objective": plan_json.get("objective"), "best_bound": plan_json.get("best_bound"),
            "gap": plan_json.get("gap"), "wall_s": plan_json.get("wall_s"),
            "requests_placed": plan_json.get("placed"), "requests_unplaced": plan_json.get("unplaced"),
            "reservation_blocks_held": blocks["held"], "reservation_blocks_not_held": blocks["not_held"],
            "objective_terms": plan_json.get("objective_terms", {}),
            "ffd_objective": ffd.get("objective"), "ffd_placed": ffd.get("placed"),
            "wall_clock_cap_fired": (plan_json.get("budget") or {}).get("wall_clock_cap_fired"),
            "checker_fallback": (plan_json.get("checker_fallback") or {}).get("plan"),
            **migration_figures(plan_json.get("migration")), **partition_figures(plan_json.get("partitioned"))}


def partition_figures(partitioned: dict | None) -> dict[str, object]:
    """Partitioned planning's figures of plan.json's `partitioned` (none for a monolithic plan)."""
    if not partitioned:
        return {}
    cells = partitioned.get("cells") or []
    return {"partitions": partitioned.get("partitions"), "dask_workers": partitioned.get("workers"),
            "cells_wall_s": partitioned.get("cells_wall_s"), "cells_placed": partitioned.get("merged_placed"),
            "cells_unfinished": sum(1 for c in cells if c.get("status") in ("unfinished", "failed"))}


def migration_figures(migration: dict | None) -> dict[str, object]:
    """Re-planning figures of plan.json's `migration` (none for a fresh packing)."""
    if not migration:
        return {}
    names = {"running_requests": "running_requests", "kept_requests": "running_kept",
             "mandatory_requests": "moved_mandatory", "voluntary_requests": "moved_voluntary",
             "evicted_requests": "running_evicted", "lost_requests": "running_lost", "moved_gib": "moved_gib",
             "max_moves": "max_moves"}
    return {name: migration.get(key) for key, name in names.items()}


def print_summary(plan_json: dict, out: Path, as_json: bool = False) -> None:
    figures = {"plan_dir": str(out), **summary(plan_json)}
    if as_json:
        sys.stdout.write(json.dumps(figures, default=str) + "\n")
        return
    table = Table(title=f"plan → {out}", show_header=True)
    table.add_column("figure", no_wrap=True)
    table.add_column("value", justify="right", overflow="fold")
    fmt = lambda x: "—" if x is None else (f"{x:,.3f}" if isinstance(x, float) else str(x))  # noqa: E731
    for key, value in figures.items():
        if key == "objective_terms":
            for term, amount in value.items():
                table.add_row(f"  {term}", fmt(amount))
        elif key != "plan_dir":
            table.add_row(key.replace("_", " "), fmt(value))
    console.print(table)


def print_violations(violations) -> None:
    table = Table(title=f"{len(violations)} invariant violations", show_header=True)
    for col in ("invariant", "request", "host", "what"):
        table.add_column(col)
    for v in violations:
        table.add_row(str(v.invariant), v.request_id or "", v.host_id or "", v.message)
    errors.print(table)


def cells_for(options: PlanOptions, n_hosts: int, n_requests: int) -> int:
    """Partitions for the command (`partitions_for`: --partitions, or chosen from the size); re-planning
    against what runs is partitioned too (shardplan.planner.partition)."""
    from shardplan.planner.partition import partitions_for

    return partitions_for(options, n_hosts, n_requests)
