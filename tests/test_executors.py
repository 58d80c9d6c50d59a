"""Executor interface, registry, safe ordering, journal resume and the simulated cluster's faults."""
from __future__ import annotations

import json
import sys
import textwrap
import time

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shardplan.executors.actions import Action, ActionKind, plan_actions
from shardplan.executors.apply import ApplyError, UnsafePlan, apply_plan, dry_run, matches_target
from shardplan.executors.base import HostSpec, Part, TargetPlan, executor_class, load_target, registered_executors
from shardplan.executors.journal import Journal
from shardplan.executors.repl_checker import check_action_sequence, check_event_log
from shardplan.executors.sample_plans import demo_plans, write_plan_dir
from shardplan.executors.sim import SimExecutor, SimulatedCrash


def host_rows(n_racks: int = 3, per_rack: int = 1, vcpu: int = 16, ram_gib: int = 64, storage_gib: int = 100) -> pl.DataFrame:
    return pl.DataFrame([{"host_id": f"h{r}{i}", "zone": "z0", "rack": f"r{r}", "vcpu": vcpu, "ram_gib": ram_gib,
                          "storage_gib": storage_gib, "storage_type": "ssd", "net_gbps": 10.0, "gpu": 0, "cost_per_hour": 1.0}
                         for r in range(n_racks) for i in range(per_rack)])


def request_rows(ids: list[str], replicas: int = 2) -> pl.DataFrame:
    return pl.DataFrame([{"request_id": r, "user_id": "u", "app_type": "db", "vcpu": 4, "ram_gib": 8, "storage_gib": 20,
                          "gpu": 0, "net_gbps": 1.0, "replicas": replicas} for r in ids])


def shard_rows(layout: list[tuple[str, int, str, int, int, int]]) -> pl.DataFrame:
    """(request, shard, host, replica, vcpu, storage_gib) rows; ram is 2 GiB per vcpu."""
    return pl.DataFrame([{"request_id": r, "shard": s, "host_id": h, "replica": rep, "vcpu": v, "ram_gib": 2 * v,
                          "storage_gib": stg, "net_gbps": 0.5 if v else 0.0, "gpu": 0,
                          "role": "compute" if v else ("storage" if rep == 0 else "replica")}
                         for r, s, h, rep, v, stg in layout])


@pytest.fixture()
def two_plans(tmp_path):
    """Request r1: compute on h00, copies on racks r0 and r1; the second plan moves copy 1 to rack r2."""
    hosts, requests = host_rows(), request_rows(["r1", "r2"])
    before = write_plan_dir(tmp_path / "before", hosts, requests, shard_rows(
        [("r1", 0, "h00", 0, 4, 0), ("r1", 1, "h00", 0, 0, 20), ("r1", 2, "h10", 1, 0, 20), ("r2", 0, "h20", 0, 2, 0)]))
    after = write_plan_dir(tmp_path / "after", hosts, requests, shard_rows(
        [("r1", 0, "h00", 0, 6, 0), ("r1", 1, "h00", 0, 0, 20), ("r1", 2, "h20", 1, 0, 20), ("r2", 0, "h10", 0, 2, 0)]))
    return before, after


# --- registry ----------------------------------------------------------------------------------

def test_builtin_executors_are_registered_by_entry_point():
    found = registered_executors()
    assert {"sim", "libvirt"} <= set(found)
    assert executor_class("sim") is SimExecutor
    assert "fault_injection" in executor_class("sim").supports


def test_an_executor_from_outside_the_package_registers_through_entry_points(tmp_path, monkeypatch, two_plans):
    (tmp_path / "toy_executor.py").write_text(textwrap.dedent('''
        import json
        from pathlib import Path
        from shardplan.executors.base import Executor, Part

        class ToyExecutor(Executor):
            """Keeps parts in a JSON file next to the state."""
            name = "toy"
            supports = frozenset({"persistent_state"})

            def _file(self):
                return Path(str(self.state_path) + ".toy.json")

            def current_parts(self):
                if not self._file().exists():
                    return []
                return [Part.from_record(r) for r in json.loads(self._file().read_text())]

            def apply(self, action):
                parts = {p.place: p for p in self.current_parts()}
                if action.kind.value == "delete_part":
                    parts.pop(action.part.place, None)
                else:
                    parts[action.part.place] = action.part
                self._file().write_text(json.dumps([p.to_record() for p in parts.values()]))
    '''))
    dist = tmp_path / "toy_executor-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-executor\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[shardplan.executors]\ntoy = toy_executor:ToyExecutor\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "toy" in registered_executors()
    before, _ = two_plans
    report = apply_plan(before, "toy", tmp_path / "toy-state.db")
    assert report.actions_run == 4
    assert executor_class("toy").__name__ == "ToyExecutor"
    with pytest.raises(LookupError, match="no executor named 'nope'"):
        executor_class("nope")


# --- ordering ----------------------------------------------------------------------------------

def test_a_storage_move_is_make_before_break(tmp_path, two_plans):
    before, after = two_plans
    apply_plan(before, "sim", tmp_path / "state.db")
    with SimExecutor(tmp_path / "state.db") as sim:
        current = sim.current_parts()
    plan = plan_actions(current, load_target(after))
    steps = [(a.kind, a.part.label) for a in plan.actions]
    create = steps.index((ActionKind.CREATE, "r1/p2@h20"))
    copy = steps.index((ActionKind.COPY, "r1/p2@h20"))
    delete = steps.index((ActionKind.DELETE, "r1/p2@h10"))
    assert create < copy < delete
    verdict = check_action_sequence(current, load_target(after), plan.actions)
    assert verdict.ok and verdict.min_copy_margin == 0


def test_frees_come_before_the_allocations_that_need_them(tmp_path):
    hosts = host_rows(n_racks=2, vcpu=8)
    requests = request_rows(["a", "b"], replicas=1)
    before = write_plan_dir(tmp_path / "b", hosts, requests, shard_rows([("a", 0, "h00", 0, 8, 0), ("b", 0, "h10", 0, 2, 0)]))
    after = write_plan_dir(tmp_path / "a", hosts, requests, shard_rows([("a", 0, "h10", 0, 6, 0)]))  # b leaves, a moves in
    apply_plan(before, "sim", tmp_path / "s.db")
    with SimExecutor(tmp_path / "s.db") as sim:
        plan = plan_actions(sim.current_parts(), load_target(after))
    labels = [(a.kind.value, a.part.label) for a in plan.actions]
    assert labels.index(("delete_part", "b/p0@h10")) < labels.index(("create_part", "a/p0@h10"))
    apply_plan(after, "sim", tmp_path / "s.db")


def test_a_swap_on_full_hosts_is_reported_as_a_cycle_and_nothing_is_applied(tmp_path):
    hosts = host_rows(n_racks=2, vcpu=8)
    requests = request_rows(["a", "b"], replicas=1)
    before = write_plan_dir(tmp_path / "b", hosts, requests, shard_rows([("a", 0, "h00", 0, 8, 0), ("b", 0, "h10", 0, 8, 0)]))
    after = write_plan_dir(tmp_path / "a", hosts, requests, shard_rows([("a", 0, "h10", 0, 8, 0), ("b", 0, "h00", 0, 8, 0)]))
    apply_plan(before, "sim", tmp_path / "s.db")
    with SimExecutor(tmp_path / "s.db") as sim:
        plan = plan_actions(sim.current_parts(), load_target(after))
        assert not plan.ok and len(plan.cycle) >= 3
        assert "cycle" in plan.explain_stuck() and "needs vcpu 8" in plan.explain_stuck()
    with pytest.raises(UnsafePlan):
        apply_plan(after, "sim", tmp_path / "s.db")
    with SimExecutor(tmp_path / "s.db") as sim:
        assert matches_target(sim.current_parts(), load_target(before)) == []


def test_the_static_checker_catches_a_delete_before_the_copy(tmp_path, two_plans):
    before, after = two_plans
    apply_plan(before, "sim", tmp_path / "state.db")
    with SimExecutor(tmp_path / "state.db") as sim:
        current = sim.current_parts()
    target = load_target(after)
    good = plan_actions(current, target).actions
    delete = next(a for a in good if a.kind is ActionKind.DELETE and a.part.label == "r1/p2@h10")
    broken = [delete] + [a for a in good if a is not delete]
    verdict = check_action_sequence(current, target, broken)
    assert not verdict.ok and any("floor 2" in v for v in verdict.violations)
    overcommit = good + [Action(99, ActionKind.CREATE, Part("x", 0, "h00", 0, 99, 0, 0, 0.0, 0, "compute"), "test")]
    assert any("over-committed in vcpu" in v for v in check_action_sequence(current, target, overcommit).violations)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_planned_orders_always_pass_the_static_checker(data):
    """Random current and target placements: either a safe order is found or the plan says why not."""
    hosts = {f"h{i}": HostSpec(f"h{i}", "z0", f"r{i % 3}", 8.0, 32.0, 60.0, 10.0, 0.0) for i in range(5)}
    n_requests = data.draw(st.integers(1, 4))

    def placement() -> list[Part]:
        parts = []
        for r in range(n_requests):
            racks = data.draw(st.permutations(["r0", "r1", "r2"]))
            for replica in range(2):
                on_rack = [h for h, s in hosts.items() if s.rack == racks[replica]]
                parts.append(Part(f"q{r}", 1 + replica, data.draw(st.sampled_from(on_rack)), replica, 0, 0, 20, 0.0, 0,
                                  "storage" if replica == 0 else "replica"))
            parts.append(Part(f"q{r}", 0, data.draw(st.sampled_from(sorted(hosts))), 0, data.draw(st.integers(1, 4)), 2,
                              0, 0.5, 0, "compute"))
        return parts

    current, wanted = placement(), placement()
    model_ok = all(sum(p.vcpu for p in ps if p.host_id == h) <= 8 and sum(p.storage_gib for p in ps if p.host_id == h) <= 60
                   for ps in (current, wanted) for h in hosts)
    assume(model_ok)
    target = TargetPlan(plan_dir=None, parts=tuple(wanted), hosts=hosts, replicas={f"q{r}": 2 for r in range(n_requests)},
                        plan_hash="x")
    plan = plan_actions(current, target)
    if plan.ok:
        verdict = check_action_sequence(current, target, plan.actions)
        assert verdict.ok, verdict.violations
    else:
        assert plan.stuck and all(s.why for s in plan.stuck)


# --- journal and resume ------------------------------------------------------------------------

def test_every_action_is_idempotent(tmp_path, two_plans):
    before, after = two_plans
    apply_plan(before, "sim", tmp_path / "state.db")
    with SimExecutor(tmp_path / "state.db") as sim:
        plan = plan_actions(sim.current_parts(), load_target(after))
        for action in plan.actions:
            sim.apply(action)
            sim.apply(action)
        assert matches_target(sim.current_parts(), load_target(after)) == []


def test_a_crash_in_the_middle_of_a_move_resumes_to_the_plan(tmp_path, two_plans):
    before, after = two_plans
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        initial, first_event = sim.current_parts(), len(sim.events())
        sim.arm_crash_in_copy(after_chunks=1)
    with pytest.raises(SimulatedCrash):
        apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        half = [p for p in sim.current_parts() if not p.complete]
        assert [p.label for p in half] == ["r1/p2@h20"] and 0 < len(sim.store_rows(half[0])) < 20
    report = apply_plan(after, "sim", state)
    assert report.resumed
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []
        verdict = check_event_log(initial, sim.events()[first_event:], load_target(after))
        assert verdict.ok and verdict.min_copy_margin == 0
        copy = next(p for p in sim.current_parts() if p.label == "r1/p2@h20")
        assert len(sim.store_rows(copy)) == 20
    journal = Journal(state)
    runs = journal.runs()
    journal.close()
    assert runs[-1]["status"] == "done" and runs[-1]["attempts"] == 2


def test_a_crashed_host_fails_the_apply_cleanly_and_restart_resumes(tmp_path, two_plans):
    before, after = two_plans
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        sim.crash_host("h20")
    with pytest.raises(ApplyError, match="h20 is down"):
        apply_plan(after, "sim", state)
    journal = Journal(state)
    entries = journal.entries(journal.runs()[-1]["apply_id"])
    journal.close()
    assert [e.state for e in entries if e.state == "failed"] == ["failed"]
    with SimExecutor(state) as sim:
        assert "r1/p2@h10" in {p.label for p in sim.current_parts()}  # the old copy is kept while the new one is missing
        sim.restart_host("h20")
    assert apply_plan(after, "sim", state).resumed
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []


def test_a_partition_between_racks_blocks_the_copy_until_healed(tmp_path, two_plans):
    before, after = two_plans
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        sim.partition("rack", ["r2"], ["r0", "r1"])
    with pytest.raises(ApplyError, match="no complete copy of r1 reachable"):
        apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        sim.heal()
    apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []


def test_a_zone_partition_and_a_slow_host(tmp_path, two_plans):
    before, after = two_plans
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        sim.slow_host("h20", 150)
        sim.partition("zone", ["z0"], ["z9"])  # a partition that separates nothing in use
    started = time.perf_counter()
    apply_plan(after, "sim", state)
    assert time.perf_counter() - started >= 0.3  # create, copy and (re)reach h20 each wait 150 ms


def test_a_different_plan_supersedes_an_unfinished_apply(tmp_path, two_plans):
    before, after = two_plans
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        sim.arm_crash_in_copy()
    with pytest.raises(SimulatedCrash):
        apply_plan(after, "sim", state)
    apply_plan(before, "sim", state)  # operator goes back to the previous plan
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(before)) == []
    statuses = [r["status"] for r in Journal(state).runs()]
    assert statuses[-2:] == ["superseded", "done"]


def test_the_demo_plans_apply_with_the_copy_floor_held(tmp_path):
    fleet = demo_plans(3, n_requests=12)
    before = write_plan_dir(tmp_path / "before", fleet.hosts, fleet.requests, fleet.before)
    after = write_plan_dir(tmp_path / "after", fleet.hosts, fleet.requests, fleet.after)
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        initial, first_event = sim.current_parts(), len(sim.events())
    report = apply_plan(after, "sim", state)
    assert report.actions_per_s > 0
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []
        assert check_event_log(initial, sim.events()[first_event:], load_target(after)).ok


# --- CLI ---------------------------------------------------------------------------------------

def test_cli_dry_run_apply_and_status(tmp_path, two_plans):
    import typer

    from shardplan.planner.cli import executors as cli_executors

    app = typer.Typer()
    cli_executors.register(app)
    runner = CliRunner()
    before, after = two_plans
    state = tmp_path / "state.db"
    assert runner.invoke(app, ["apply", str(before), "--executor", "sim", "--state", str(state)]).exit_code == 0
    shown = runner.invoke(app, ["apply", str(after), "--state", str(state), "--dry-run"])
    assert shown.exit_code == 0 and "copy_replica" in shown.output and "move from h10" in shown.output
    assert len(dry_run(after, "sim", state).actions) == 6
    assert runner.invoke(app, ["apply", str(after), "--state", str(state), "--action-delay-ms", "1"]).exit_code == 0
    status = runner.invoke(app, ["status", "--state", str(state), "--json"])
    parts = json.loads(status.output)
    assert {(p["request_id"], p["shard"], p["host_id"]) for p in parts} == {
        ("r1", 0, "h00"), ("r1", 1, "h00"), ("r1", 2, "h20"), ("r2", 0, "h10")}
    assert set(parts[0]) == {"request_id", "shard", "host_id", "replica", "vcpu", "ram_gib", "storage_gib", "net_gbps",
                             "gpu", "role"}
    table = runner.invoke(app, ["status", "--state", str(state)])
    assert table.exit_code == 0 and "h20" in table.output
    missing = runner.invoke(app, ["apply", str(tmp_path / "nowhere"), "--state", str(state)])
    assert missing.exit_code == 1


def test_cli_runs_as_a_module():
    import subprocess

    shown = subprocess.run([sys.executable, "-m", "shardplan.planner.cli.executors", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "apply" in shown.stdout and "faults" in shown.stdout


# --- what real planner plans bring: staging, role changes, host status, existing load -------------

@pytest.mark.parametrize("spare_status", ["up", "draining"])
def test_a_swap_on_full_hosts_goes_through_a_staging_host_with_room(tmp_path, spare_status):
    """Two full hosts swap parts; a third host with room (and up) takes one of them in between."""
    hosts = host_rows(n_racks=3, vcpu=8).with_columns(
        pl.when(pl.col("host_id") == "h20").then(pl.lit(spare_status)).otherwise(pl.lit("up")).alias("status"))
    requests = request_rows(["a", "b"], replicas=1)
    before = write_plan_dir(tmp_path / "b", hosts, requests, shard_rows([("a", 0, "h00", 0, 8, 0), ("b", 0, "h10", 0, 8, 0)]))
    after = write_plan_dir(tmp_path / "a", hosts, requests, shard_rows([("a", 0, "h10", 0, 8, 0), ("b", 0, "h00", 0, 8, 0)]))
    state = tmp_path / "s.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        current, first_event = sim.current_parts(), len(sim.events())
    plan = plan_actions(current, load_target(after))
    if spare_status != "up":  # a draining host takes no new parts, not even for a moment
        assert not plan.ok and plan.cycle
        return
    assert plan.ok
    staged = [a for a in plan.actions if a.part.host_id == "h20"]
    assert [a.kind for a in staged] == [ActionKind.CREATE, ActionKind.DELETE]
    assert staged[0].reason.startswith("stage on h20 to free")
    assert check_action_sequence(current, load_target(after), plan.actions).ok
    apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []
        assert check_event_log(current, sim.events()[first_event:], load_target(after)).ok


@pytest.mark.parametrize("spare_model", ["A100", "T4"])
def test_a_gpu_part_is_staged_only_on_a_host_with_the_same_gpu_model(tmp_path, spare_model):
    hosts = host_rows(n_racks=3, vcpu=8).with_columns(
        pl.lit(1).alias("gpu"), pl.when(pl.col("host_id") == "h20").then(pl.lit(spare_model)).otherwise(pl.lit("A100"))
        .alias("gpu_model"))
    layout_a = [("a", 0, "h00", 0, 8, 0), ("b", 0, "h10", 0, 8, 0)]
    layout_b = [("a", 0, "h10", 0, 8, 0), ("b", 0, "h00", 0, 8, 0)]
    requests = request_rows(["a", "b"], replicas=1)
    with_gpu = [pl.lit(1).alias("gpu")]
    before = write_plan_dir(tmp_path / "b", hosts, requests, shard_rows(layout_a).with_columns(with_gpu))
    after = write_plan_dir(tmp_path / "a", hosts, requests, shard_rows(layout_b).with_columns(with_gpu))
    assert load_target(after).hosts["h20"].gpu_model == spare_model
    state = tmp_path / "s.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        plan = plan_actions(sim.current_parts(), load_target(after))
    assert plan.ok == (spare_model == "A100")


def test_a_part_that_becomes_a_storage_copy_is_filled_before_it_counts(tmp_path):
    """Shard numbers are the planner's: a compute part may come back as a storage copy on the same host."""
    hosts, requests = host_rows(), request_rows(["r1"], replicas=2)
    before = write_plan_dir(tmp_path / "before", hosts, requests, shard_rows(
        [("r1", 0, "h00", 0, 4, 0), ("r1", 1, "h10", 0, 0, 20), ("r1", 2, "h20", 1, 0, 20)]))
    after = write_plan_dir(tmp_path / "after", hosts, requests, shard_rows(
        [("r1", 0, "h00", 0, 0, 20), ("r1", 1, "h10", 0, 4, 0), ("r1", 2, "h20", 1, 0, 20)]))
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        current, first_event = sim.current_parts(), len(sim.events())
    plan = plan_actions(current, load_target(after))
    steps = [(a.kind, a.part.label) for a in plan.actions]
    grown = next(a for a in plan.actions if a.kind is ActionKind.RESIZE and a.part.label == "r1/p0@h00")
    assert not grown.part.complete  # an empty volume is no copy
    assert steps.index((ActionKind.COPY, "r1/p0@h00")) < steps.index((ActionKind.RESIZE, "r1/p1@h10"))
    assert check_action_sequence(current, load_target(after), plan.actions).ok
    apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        parts = {p.label: p for p in sim.current_parts()}
        assert matches_target(list(parts.values()), load_target(after)) == []
        filled = sim.store_rows(parts["r1/p0@h00"])
        assert filled and sorted(filled) == sorted(sim.store_rows(parts["r1/p2@h20"]))
        assert sim.store_rows(parts["r1/p1@h10"]) == []  # a compute part holds no data
        verdict = check_event_log(current, sim.events()[first_event:], load_target(after))
    assert verdict.ok and verdict.min_copy_margin == 0


def test_the_only_copy_renumbered_on_a_full_host_is_staged_and_never_lost(tmp_path):
    """h00 holds the only copy as shard 1; the new plan wants it as shard 0 there, with no room for both."""
    hosts, requests = host_rows(storage_gib=30), request_rows(["q"], replicas=1)
    before = write_plan_dir(tmp_path / "before", hosts, requests,
                            shard_rows([("q", 0, "h00", 0, 2, 0), ("q", 1, "h00", 0, 0, 20)]))
    after = write_plan_dir(tmp_path / "after", hosts, requests, shard_rows([("q", 0, "h00", 0, 0, 20), ("q", 1, "h10", 0, 2, 0)]))
    state = tmp_path / "state.db"
    apply_plan(before, "sim", state)
    with SimExecutor(state) as sim:
        current, first_event = sim.current_parts(), len(sim.events())
    plan = plan_actions(current, load_target(after))
    assert plan.ok
    assert any(a.part.label == "q/p1@h20" and a.reason.startswith("stage on h20") for a in plan.actions)
    assert check_action_sequence(current, load_target(after), plan.actions).ok
    apply_plan(after, "sim", state)
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), load_target(after)) == []
        verdict = check_event_log(current, sim.events()[first_event:], load_target(after))
    assert verdict.ok and verdict.min_copy_margin == 0


def test_hosts_that_are_not_up_take_no_new_parts(tmp_path):
    hosts = host_rows().with_columns(pl.when(pl.col("host_id") == "h10").then(pl.lit("draining")).otherwise(pl.lit("up"))
                                     .alias("status"))
    plan_dir = write_plan_dir(tmp_path / "p", hosts, request_rows(["a"], replicas=1), shard_rows([("a", 0, "h10", 0, 2, 0)]))
    with pytest.raises(UnsafePlan, match="h10 is draining: it takes no new parts"):
        apply_plan(plan_dir, "sim", tmp_path / "s.db")


def test_existing_load_overcommit_and_hardware_tags_come_from_the_hosts_table(tmp_path):
    hosts = host_rows(vcpu=16).with_columns(
        pl.lit(2.0).alias("vcpu_overcommit"), pl.lit(10).alias("used_vcpu"), pl.lit(60).alias("used_ram_gib"),
        pl.lit(None, pl.Int64).alias("used_gpu"), pl.lit("T4").alias("gpu_model"))
    plan_dir = write_plan_dir(tmp_path / "p", hosts, request_rows(["a"], replicas=1), shard_rows([("a", 0, "h00", 0, 2, 0)]))
    spec = load_target(plan_dir).hosts["h00"]
    assert (spec.vcpu, spec.ram_gib, spec.gpu, spec.storage_type, spec.gpu_model) == (22.0, 4.0, 0.0, "ssd", "T4")
    apply_plan(plan_dir, "sim", tmp_path / "t.db")  # 2 vcpu and 4 GiB fit in what the existing load leaves
    too_big = write_plan_dir(tmp_path / "q", hosts, request_rows(["a"], replicas=1),
                             shard_rows([("a", 0, "h00", 0, 2, 0), ("a", 1, "h00", 0, 1, 0)]))
    with pytest.raises(UnsafePlan, match="needs ram_gib 2 on h00, 0 free"):  # 6 GiB do not
        apply_plan(too_big, "sim", tmp_path / "s.db")


def test_two_nightly_plans_of_the_planner_apply_in_turn(tmp_path):
    """Plans from the real planner (existing load, memory parts, GPUs, copies, hosts not up), then a what-if."""
    from shardplan.data.generator import generate_fleet
    from shardplan.planner.engine import plan
    from shardplan.planner.report.checker import check_plan_dir
    from shardplan.planner.report.export import write_plan_dir as export_plan_dir
    from shardplan.planner.validate.options import PlanOptions

    # no powered-down hosts: with them the two fresh plans (the second is not an edit of the first) swap parts
    # between two hosts, which apply rightly refuses (test_replan covers plans made as edits)
    hosts, requests = generate_fleet(16, 24, seed=3, zones=1, powered_down=0.0)
    options = PlanOptions(time_limit_s=1, workers=1, lp_bound=False)
    first = plan(hosts, requests, options)
    export_plan_dir(tmp_path / "A", hosts=hosts, requests=requests, shards=first.shards, requests_out=first.requests_out,
                    plan_json=first.plan_json)
    busy = sorted(set(first.shards["host_id"].to_list()) & set(hosts.filter(pl.col("status") == "up")["host_id"]))[:3]
    drained = hosts.with_columns(pl.when(pl.col("host_id").is_in(busy)).then(pl.lit("draining"))
                                 .otherwise("status").alias("status"))
    second = plan(drained, requests, options)
    export_plan_dir(tmp_path / "B", hosts=drained, requests=requests, shards=second.shards,
                    requests_out=second.requests_out, plan_json=second.plan_json)
    assert check_plan_dir(tmp_path / "A") == [] and check_plan_dir(tmp_path / "B") == []
    state = tmp_path / "state.db"
    apply_plan(tmp_path / "A", "sim", state)
    with SimExecutor(state) as sim:
        initial, first_event = sim.current_parts(), len(sim.events())
    apply_plan(tmp_path / "B", "sim", state)
    target = load_target(tmp_path / "B")
    with SimExecutor(state) as sim:
        assert matches_target(sim.current_parts(), target) == []
        assert not any(p.host_id in busy for p in sim.current_parts())
        assert check_event_log(initial, sim.events()[first_event:], target).ok


def test_libvirt_role_changes_and_volumes_larger_than_the_test_pool(tmp_path):
    libvirt = pytest.importorskip("libvirt")
    from shardplan.executors.libvirt_exec import KIB_PER_GIB, volume_name

    keeper = libvirt.open("test:///default")  # the test driver forgets its state when the last connection closes
    try:
        hosts = host_rows(storage_gib=2000).with_columns(pl.lit("test:///default").alias("libvirt_uri"),
                                                         ("rc" + pl.col("host_id")).alias("host_id"))
        requests = request_rows(["rc1"], replicas=1)
        before = write_plan_dir(tmp_path / "before", hosts, requests, shard_rows(
            [("rc1", 0, "rch00", 0, 4, 0), ("rc1", 1, "rch10", 0, 0, 500)]))  # 500 GiB: the test pool holds 100
        after = write_plan_dir(tmp_path / "after", hosts, requests, shard_rows(
            [("rc1", 0, "rch00", 0, 0, 500), ("rc1", 1, "rch10", 0, 4, 0)]))
        state = tmp_path / "lv.db"
        apply_plan(before, "libvirt", state)
        apply_plan(after, "libvirt", state)
        volumes = set(keeper.storagePoolLookupByName("default-pool").listVolumes())
        domains = {d.name(): d.info() for d in keeper.listAllDomains() if d.name().startswith("rc1-")}
        assert volume_name(Part("rc1", 0, "rch00", 0, 0, 0, 500, 0.0, 0, "storage")) in volumes
        assert volume_name(Part("rc1", 1, "rch10", 0, 0, 0, 500, 0.0, 0, "storage")) not in volumes
        assert set(domains) == {"rc1-p1"} and domains["rc1-p1"][3] == 4 and domains["rc1-p1"][1] == 8 * KIB_PER_GIB
    finally:
        keeper.close()
