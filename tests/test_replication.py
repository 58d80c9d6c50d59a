"""Replication layer under seeded fault schedules, and the history checker (which must be able to fail)."""
from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from shardplan.executors.repl_checker import Op, check_history
from shardplan.executors.replication import (
    FaultEvent,
    ReplicatedStore,
    ReplicationOptions,
    Stamp,
    Version,
    resolve,
    run_schedule,
    run_schedules,
    vv_concurrent,
)

SCHEDULES = 50


@pytest.fixture(scope="module")
def majority_runs():
    return run_schedules(SCHEDULES, seed=42)


@pytest.fixture(scope="module")
def weak_runs():
    return run_schedules(SCHEDULES, seed=42, options=ReplicationOptions(write_quorum=1, read_quorum=1))


def test_majority_quorums_lose_nothing_and_never_read_stale(majority_runs):
    results, totals = majority_runs
    assert totals.schedules == SCHEDULES and totals.acknowledged_writes > 1000
    assert (totals.lost_writes, totals.stale_reads, totals.diverged) == (0, 0, 0)
    kinds = {f.kind for r in results for f in r.faults}
    assert kinds == {"crash", "partition_racks", "partition_zones", "slow", "move", "crash_in_move"}
    assert sum(r.moves_done for r in results) > 0 and sum(r.moves_aborted for r in results) > 0


def test_the_checker_catches_quorum_one(weak_runs):
    """Same schedules with write and read quorum 1: the checker must report violations."""
    _, totals = weak_runs
    assert totals.stale_reads > 0
    assert totals.lost_writes > 0
    assert totals.schedules_with_violations > SCHEDULES // 2


def test_copies_converge_after_heal_even_at_quorum_one(weak_runs):
    _, totals = weak_runs
    assert totals.diverged == 0  # anti-entropy still converges; what is lost is recency, not agreement


def test_anti_entropy_brings_a_recovered_copy_up_to_date():
    store = ReplicatedStore(ReplicationOptions(), seed=3)
    store.run([FaultEvent(at_ms=10, kind="crash", slot=2, duration_ms=400)])
    finals = [op for op in store.history if op.f == "final"]
    by_key: dict[str, set] = {}
    for op in finals:
        by_key.setdefault(op.key, set()).add(op.value)
    assert all(len(values) == 1 for values in by_key.values())
    assert check_history(store.history).ok


def test_a_moved_copy_keeps_every_acknowledged_write():
    store = ReplicatedStore(ReplicationOptions(), seed=4)
    store.run([FaultEvent(at_ms=100, kind="move", slot=0, duration_ms=120)])
    assert store.moves_done == 1 and store.slots[0].name != "n0"
    assert check_history(store.history).ok


# --- conflict rule ---------------------------------------------------------------------------

def test_concurrent_writes_resolve_to_the_last_writer_by_hlc_with_merged_vectors():
    a = Version(Stamp(100, 0, "n0"), "from-n0", (("n0", 1),))
    b = Version(Stamp(100, 1, "n1"), "from-n1", (("n1", 1),))
    assert vv_concurrent(a.clock, b.clock)
    kept, conflict = resolve(a, b)
    assert conflict and kept.value == "from-n1" and kept.clock == (("n0", 1), ("n1", 1))
    assert resolve(b, a)[0] == kept


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3), st.sampled_from(["n0", "n1", "n2"]),
                          st.integers(0, 3)), min_size=1, max_size=6))
def test_resolution_is_order_independent(raw):
    versions = [Version(Stamp(p, l, node), f"{p}-{l}-{node}", ((node, c),)) for p, l, node, c in raw]
    forward = None
    for v in versions:
        forward = resolve(forward, v)[0]
    backward = None
    for v in reversed(versions):
        backward = resolve(backward, v)[0]
    assert forward.stamp == backward.stamp and forward.clock == backward.clock


# --- the history checker on hand-made histories --------------------------------------------------

def _write(p, key, value, start, end, kind="ok"):
    return [Op(p, "invoke", "write", key, value, start), Op(p, kind, "write", key, value if kind == "ok" else None, end)]


def _read(p, key, value, start, end):
    return [Op(p, "invoke", "read", key, None, start), Op(p, "ok", "read", key, value, end)]


def _finals(key, *values):
    return [Op(-1, "ok", "final", key, v, 100, node=f"n{i}") for i, v in enumerate(values)]


def test_checker_flags_a_stale_read():
    history = _write(0, "k", "a", 0, 1) + _write(0, "k", "b", 2, 3) + _read(1, "k", "a", 4, 5) + _finals("k", "b", "b")
    verdict = check_history(history)
    assert verdict.stale_reads == 1 and verdict.lost_writes == 0


def test_checker_accepts_a_read_concurrent_with_a_write():
    history = _write(0, "k", "a", 0, 1) + _write(0, "k", "b", 2, 6) + _read(1, "k", "a", 3, 4) + _finals("k", "b", "b")
    assert check_history(history).ok


def test_checker_flags_a_lost_write_and_divergence():
    history = _write(0, "k", "a", 0, 1) + _write(0, "k", "b", 2, 3) + _finals("k", "a", "b")
    verdict = check_history(history)
    assert verdict.lost_writes == 1 and verdict.diverged == 1


def test_checker_treats_a_timed_out_write_as_maybe_applied():
    history = _write(0, "k", "a", 0, 1) + _write(1, "k", "x", 2, 50, kind="info") + _read(2, "k", "x", 5, 6)
    history += _write(0, "k", "b", 7, 8) + _finals("k", "x", "x")
    verdict = check_history(history)
    assert verdict.stale_reads == 0 and verdict.lost_writes == 0  # x may take effect after b


def test_checker_flags_a_read_of_nothing_after_an_acknowledged_write():
    assert check_history(_write(0, "k", "a", 0, 1) + _read(1, "k", None, 2, 3)).stale_reads == 1


# --- CLI ---------------------------------------------------------------------------------------

def test_faults_command_writes_integer_totals(tmp_path):
    import typer

    from shardplan.planner.cli import executors as cli_executors

    app = typer.Typer()
    cli_executors.register(app)
    out = tmp_path / "faults.json"
    shown = CliRunner().invoke(app, ["faults", "--schedules", "4", "--seed", "9", "--write-quorum", "1",
                                     "--read-quorum", "1", "--json", str(out)])
    report = json.loads(out.read_text())
    totals = report["totals"]
    # quorum 1 loses writes: the checker finds it and the command fails, like `check`
    assert totals["schedules_with_violations"] > 0 and shown.exit_code == 1, shown.output
    majority = CliRunner().invoke(app, ["faults", "--schedules", "4", "--seed", "9", "--json", str(tmp_path / "m.json")])
    assert majority.exit_code == 0 and json.loads((tmp_path / "m.json").read_text())["totals"]["schedules_with_violations"] == 0
    for name in ("schedules", "acknowledged_writes", "lost_writes", "stale_reads", "diverged"):
        assert isinstance(totals[name], int)
    assert totals["schedules"] == 4 and len(report["schedules"]) == 4
    assert (report["write_quorum"], report["read_quorum"]) == (1, 1)
    again = run_schedule(9 * 100_003, ReplicationOptions(write_quorum=1, read_quorum=1))
    assert again.verdict.acknowledged_writes == report["schedules"][0]["acknowledged_writes"]  # seeded, reproducible
