"""Kill drill: ``shardplan apply`` in a real subprocess, ``kill -9`` at random moments, resume, check.

Each trial starts from the cluster in plan ``before`` (or an empty cluster when
``before`` is None), applies plan ``after`` in a child process and SIGKILLs it at
random moments until a run finishes. Most kills land at a uniformly drawn point of
the journaled action list (the child is killed once that many actions have started,
after a random part of one action's time, so kills fall before, inside and after
actions); the rest land during start-up and ordering. Then the cluster must equal
``after``'s shards.parquet exactly, and the recorded part events must keep every
request at its copy floor, within capacity, at every step.
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

import polars as pl

from shardplan.executors.apply import apply_plan, matches_target
from shardplan.executors.base import load_target, parts_frame
from shardplan.executors.repl_checker import check_event_log
from shardplan.executors.sim import SimExecutor
from shardplan.schema import SHARDS_SCHEMA


@dataclass
class KillDrillResult:
    trials: int = 0
    kills: int = 0
    kills_mid_apply: int = 0
    """Kills that landed while the journaled apply was under way (actions of its journal started or done; a
    resumed child killed during its own start-up counts too); the others hit before the journal was written."""
    resumed_runs_ok: int = 0
    lost_parts: int = 0
    duplicated_parts: int = 0
    floor_violations: int = 0
    min_copy_margin: int | None = None
    journal_steps_checked: int = 0
    actions_per_apply: int = 0
    """Length of the journaled action list of the last trial."""
    failures: list[str] = field(default_factory=list)
    action_s: float = 0.015
    """Running estimate of one action's wall time (sets the random offset of a kill inside an action)."""


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
    command = [sys.executable, "-m", "shardplan", "apply", str(after), "--executor", "sim",
               "--state", str(state), "--action-delay-ms", str(action_delay_ms)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "COLUMNS": "200"})


def _fresh(state: Path, snapshot: Path | None) -> None:
    """The trial's state file: a copy of the ``before`` snapshot, or nothing (an empty cluster)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    if snapshot is not None:
        source, copy = sqlite3.connect(str(snapshot)), sqlite3.connect(str(state))
        try:
            source.backup(copy)
        finally:
            source.close()
            copy.close()


def differs_from_shards_file(parts: list, after: Path) -> list[str]:
    """Rows where the cluster's parts and ``after/shards.parquet`` differ (empty when identical)."""
    want = pl.read_parquet(after / "shards.parquet").select([pl.col(c).cast(t) for c, t in SHARDS_SCHEMA.items()])
    have = parts_frame(parts)
    keys = ["request_id", "shard", "host_id"]
    problems = [f"not in the cluster: {r['request_id']}/p{r['shard']}@{r['host_id']}"
                for r in want.join(have, on=keys, how="anti").iter_rows(named=True)]
    problems += [f"not in shards.parquet: {r['request_id']}/p{r['shard']}@{r['host_id']}"
                 for r in have.join(want, on=keys, how="anti").iter_rows(named=True)]
    both = want.join(have, on=keys, suffix="_have")
    for column in SHARDS_SCHEMA:
        if column in keys:
            continue
        left, right = pl.col(column), pl.col(f"{column}_have")
        close = (left - right).abs() <= 1e-9 if column == "net_gbps" else left == right
        for r in both.filter(~close).iter_rows(named=True):
            problems.append(f"{r['request_id']}/p{r['shard']}@{r['host_id']}: {column} {r[column + '_have']} != {r[column]}")
    problems += [f"{p.label}: storage copy not filled" for p in parts if not p.complete]
    return problems


def run_trial(before: Path | None, after: Path, state: Path, rng: random.Random, kills: int, action_delay_ms: float,
              result: KillDrillResult, startup_kill_share: float = 0.2, snapshot: Path | None = None) -> None:
    """One trial: up to ``kills`` kills of the apply of ``after``, then a run to completion and the checks."""
    if snapshot is None and before is not None:
        _fresh(state, None)
        apply_plan(before, "sim", state)
    else:
        _fresh(state, snapshot)
    with SimExecutor(state) as sim:
        initial, first_event = sim.current_parts(), len(sim.events())
    target = load_target(after)
    killed = 0
    points: list[float] | None = None  # kill points, as fractions of the journaled action list
    while killed < kills:
        child = _child(after, state, action_delay_ms)
        if rng.random() < startup_kill_share:  # during start-up, ordering, or the first actions
            deadline = time.monotonic() + rng.uniform(0.0, 3.0)
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.005)
        else:
            while child.poll() is None and _progress(state)[1] == 0:  # wait for the journal
                time.sleep(0.005)
            started, total = _progress(state)
            if points is None and total:
                points = sorted(rng.random() for _ in range(kills - killed))
            while points and points[0] * total < started:
                points.pop(0)
            goal = max(started + 1, int(points.pop(0) * total) + 1) if points else started + 1
            first_seen: tuple[float, int] | None = None  # when this child was first seen running an action
            while child.poll() is None:
                now = _progress(state)[0]
                if now > started and first_seen is None:
                    first_seen = (time.monotonic(), now)
                if now >= goal:
                    break
                time.sleep(0.002)
            if first_seen is not None and _progress(state)[0] > first_seen[1]:
                ran = _progress(state)[0] - first_seen[1]
                result.action_s = 0.7 * result.action_s + 0.3 * (time.monotonic() - first_seen[0]) / ran
            time.sleep(rng.uniform(0.0, result.action_s + action_delay_ms / 1000.0))
        if child.poll() is not None:  # finished before the kill landed: the trial is over
            break
        before_kill, total = _progress(state)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed += 1
        result.kills += 1
        result.kills_mid_apply += int(before_kill > 0)
    finisher = _child(after, state, 0)
    _, stderr = finisher.communicate(timeout=900)
    result.trials += 1
    if finisher.returncode != 0:
        result.failures.append(f"resumed run exited {finisher.returncode}: {stderr.decode()[-400:]}")
        return
    with SimExecutor(state) as sim:
        parts = sim.current_parts()
        events = sim.events()[first_event:]
    connection = sqlite3.connect(str(state))
    try:
        row = connection.execute("SELECT n_actions FROM applies ORDER BY apply_id DESC LIMIT 1").fetchone()
        result.actions_per_apply = int(row[0]) if row else 0
    finally:
        connection.close()
    problems = differs_from_shards_file(parts, after) + matches_target(parts, target)
    keys = [p.key for p in parts]
    result.duplicated_parts += len(keys) - len(set(keys))
    result.lost_parts += sum(1 for p in problems if p.startswith("not in the cluster"))
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


def kill_drill(before: Path | None, after: Path, workdir: Path, total_kills: int, kills_per_trial: int = 5, seed: int = 0,
               action_delay_ms: float = 15.0, keep_states: bool = True) -> KillDrillResult:
    """Trials until ``total_kills`` kills have landed (``before`` None: each trial starts from an empty cluster).

    The ``before`` state is applied once and copied into each trial's state file.
    """
    rng = random.Random(seed)
    result = KillDrillResult()
    workdir.mkdir(parents=True, exist_ok=True)
    snapshot = None
    if before is not None:
        snapshot = workdir / "before-state.db"
        _fresh(snapshot, None)
        apply_plan(before, "sim", snapshot)
    while result.kills < total_kills:
        state = workdir / f"trial-{result.trials}.db"
        run_trial(before, after, state, rng, min(kills_per_trial, total_kills - result.kills), action_delay_ms, result,
                  snapshot=snapshot)
        if not keep_states:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state}{suffix}").unlink(missing_ok=True)
    return result
