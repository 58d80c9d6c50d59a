"""Kill drill: ``shardplan apply`` in a real subprocess, ``kill -9`` at random moments, resume, check.

Each trial starts from the cluster in plan ``before``, applies plan ``after`` in a
child process and SIGKILLs it at random moments (mostly while actions run, some
during start-up and planning) until a run finishes. Then the cluster must equal
``after`` exactly and the recorded part events must keep every request at its copy
floor, within capacity, at every step.
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from executors.apply import apply_plan, matches_target
from executors.base import load_target
from executors.repl_checker import check_event_log
from executors.sim import SimExecutor


@dataclass
class KillDrillResult:
    trials: int = 0
    kills: int = 0
    kills_mid_apply: int = 0
    """Kills that landed after the child had started running actions of the journal."""
    resumed_runs_ok: int = 0
    lost_parts: int = 0
    duplicated_parts: int = 0
    floor_violations: int = 0
    min_copy_margin: int | None = None
    journal_steps_checked: int = 0
    failures: list[str] = field(default_factory=list)


def _progress(state: Path) -> tuple[int, int]:
    """(actions started or done, actions in all) of the running apply; (-1, 0) before there is one."""
    if not state.exists():
        return (-1, 0)
    try:
        connection = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1.0)
        try:
            row = connection.execute(
                "SELECT p.n_actions, (SELECT COUNT(*) FROM actions a WHERE a.apply_id = p.apply_id "
                "AND a.state IN ('started', 'done')) FROM applies p WHERE p.status = 'running' "
                "ORDER BY p.apply_id DESC LIMIT 1").fetchone()
            return (-1, 0) if row is None else (int(row[1]), int(row[0]))
        finally:
            connection.close()
    except sqlite3.Error:
        return (-1, 0)


def _child(after: Path, state: Path, action_delay_ms: float) -> subprocess.Popen:
    command = [sys.executable, "-m", "planner.cli_executors", "apply", str(after), "--executor", "sim",
               "--state", str(state), "--action-delay-ms", str(action_delay_ms)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def run_trial(before: Path, after: Path, state: Path, rng: random.Random, kills: int, action_delay_ms: float,
              result: KillDrillResult, startup_kill_share: float = 0.2) -> None:
    """One trial: up to ``kills`` kills of the apply of ``after``, then a run to completion and the checks."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        initial, first_event = sim.current_parts(), len(sim.events())
    target = load_target(after)
    killed = 0
    while killed < kills:
        child = _child(after, state, action_delay_ms)
        if rng.random() < startup_kill_share:
            deadline = time.monotonic() + rng.uniform(0.0, 2.0)
        else:
            seen, _ = _progress(state)
            waited = time.monotonic()
            while child.poll() is None and _progress(state)[0] <= max(seen, 0) and time.monotonic() - waited < 60:
                time.sleep(0.005)
            started, total = _progress(state)
            deadline = time.monotonic() + rng.uniform(0.0, max(total - started, 1) * action_delay_ms / 1000.0)
        while child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if child.poll() is not None:  # finished before the kill landed: the trial is over
            break
        before_kill, _ = _progress(state)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed += 1
        result.kills += 1
        result.kills_mid_apply += int(before_kill > 0)
    finisher = _child(after, state, 0)
    _, stderr = finisher.communicate(timeout=300)
    result.trials += 1
    if finisher.returncode != 0:
        result.failures.append(f"resumed run exited {finisher.returncode}: {stderr.decode()[-400:]}")
        return
    with SimExecutor(state) as sim:
        parts = sim.current_parts()
        events = sim.events()[first_event:]
    problems = matches_target(parts, target)
    keys = [p.key for p in parts]
    result.duplicated_parts += len(keys) - len(set(keys))
    result.lost_parts += sum(1 for p in problems if p.startswith("missing"))
    if problems:
        result.failures.append("; ".join(problems[:5]))
    else:
        result.resumed_runs_ok += 1
    verdict = check_event_log(initial, events, target)
    result.journal_steps_checked += verdict.steps
    result.floor_violations += len(verdict.violations)
    result.failures += verdict.violations[:3]
    if verdict.min_copy_margin is not None:
        result.min_copy_margin = verdict.min_copy_margin if result.min_copy_margin is None else min(
            result.min_copy_margin, verdict.min_copy_margin)


def kill_drill(before: Path, after: Path, workdir: Path, total_kills: int, kills_per_trial: int = 5, seed: int = 0,
               action_delay_ms: float = 15.0) -> KillDrillResult:
    """Trials until ``total_kills`` kills have landed."""
    rng = random.Random(seed)
    result = KillDrillResult()
    workdir.mkdir(parents=True, exist_ok=True)
    while result.kills < total_kills:
        run_trial(before, after, workdir / f"trial-{result.trials}.db", rng,
                  min(kills_per_trial, total_kills - result.kills), action_delay_ms, result)
    return result
