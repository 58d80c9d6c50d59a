"""Re-planning against what runs: validation of the current placement, the move cost and budget in
every search phase, mandatory moves, moves.parquet, invariant 11 and the plan → apply → status → plan loop."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.models.placement import PlacementModel
from shardplan.plandir import read_plan_dir
from shardplan.planner.cli import app
from shardplan.planner.engine import plan
from shardplan.planner.replan import check_current, compare, moved_requests, must_move
from shardplan.planner.report.checker import check_plan, check_plan_dir
from shardplan.planner.validate.inputs import InputError
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import SHARDS_SCHEMA
from tests.fleets import hosts_table, requests_table

FAST = PlanOptions(time_limit_s=6, lp_bound=False)


def shards(*rows: tuple) -> pl.DataFrame:
    """Current-placement rows: (request, shard, host, replica, vcpu, ram, storage, net, gpu, role)."""
    return pl.DataFrame(list(rows), schema=SHARDS_SCHEMA, orient="row")


def two_hosts(cost: float = 0.5, **status: str) -> pl.DataFrame:
    """Two 16-vcpu hosts at `cost` $/h: below the 0.87 $/h that moving an 8-vcpu, 16-GiB request costs at the
    default prices (20 $ + 16 GiB × 0.05 $ over 24 h), so consolidating them does not pay."""
    return hosts_table(*[{"host_id": h, "rack": f"r{i}", "vcpu": 16, "ram_gib": 64, "status": status.get(h, "up"),
                          "cost_per_hour": cost} for i, h in enumerate(("h1", "h2"))])


def running_pair(big_priority: int = 5, evictable: bool = False) -> pl.DataFrame:
    """r1 and r2 (8 vcpu each) run; `big` (16 vcpu, one host) arrives."""
    return requests_table({"request_id": "r1", "vcpu": 8, "ram_gib": 16},
                          {"request_id": "r2", "vcpu": 8, "ram_gib": 16, "evictable": evictable},
                          {"request_id": "big", "vcpu": 16, "ram_gib": 32, "priority": big_priority})


SPLIT = shards(("r1", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"), ("r2", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"))


# --- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize("rows, column, words", [
    ((("r1", 0, "h9", 0, 8, 16, 0, 0.0, 0, "compute"),), "host_id", "not in tonight's hosts"),
    ((("r1", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"), ("r1", 0, "h2", 0, 0, 0, 0, 0.0, 0, "compute")), "shard",
     "shard 0 twice"),
    ((("r1", 0, "h1", 0, 6, 16, 0, 0.0, 0, "compute"),), "vcpu", "ask for 8"),
    ((("r1", 0, "h1", 0, 8, 16, 10, 0.0, 0, "compute"),), "storage_gib", "rows of their own"),
    ((("r1", 0, "h1", 1, 8, 16, 0, 0.0, 0, "compute"),), "replica", "replica 0"),
    ((("r1", 0, "h1", 0, 4, 8, 0, 0.0, 0, "compute"), ("r1", 1, "h1", 0, 4, 8, 0, 0.0, 0, "compute")), "host_id",
     "one part per host"),
])
def test_a_bad_current_placement_is_refused_naming_row_and_column(rows, column, words):
    with pytest.raises(InputError) as caught:
        check_current(shards(*rows), two_hosts(), running_pair(), "cur.parquet")
    assert caught.value.column == column and words in str(caught.value) and caught.value.row is not None


def test_a_repeated_shard_names_the_row_that_repeats_it():
    rows = shards(("r1", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"), ("r2", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"),
                  ("r1", 0, "h2", 0, 0, 0, 0, 0.0, 0, "compute"), ("r2", 0, "h1", 0, 0, 0, 0, 0.0, 0, "compute"))
    with pytest.raises(InputError) as caught:
        check_current(rows, two_hosts(), running_pair(), "cur")
    assert caught.value.row == 3 and "'r1' has shard 0 twice (first at row 1)" in str(caught.value)


def test_parts_that_would_break_an_invariant_where_they_are_must_move():
    hosts = hosts_table({"host_id": "h1", "rack": "rA", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h2", "rack": "rA", "vcpu": 16, "ram_gib": 64})
    requests = requests_table({"request_id": "r1", "vcpu": 4, "ram_gib": 8, "storage_gib": 10, "replicas": 2},
                              {"request_id": "r2", "vcpu": 4, "ram_gib": 4})
    current = shards(("r1", 0, "h1", 0, 4, 8, 0, 0.0, 0, "compute"), ("r1", 1, "h1", 0, 0, 0, 10, 0.0, 0, "storage"),
                     ("r1", 2, "h2", 1, 0, 0, 10, 0.0, 0, "replica"), ("r2", 0, "h2", 0, 4, 4, 0, 0.0, 0, "compute"))
    forced = must_move(hosts, requests, current, min_local_ram_gib_per_vcpu=2.0)
    assert forced == {"r1": "2 storage copies share rack rA", "r2": "4 GiB beside 4 vcpu on h2, below 2 GiB per vcpu"}
    # planned with a budget of no voluntary moves, neither breaks it, and the plan is valid
    options = FAST.replace(max_moves=0, min_local_ram_gib_per_vcpu=2.0)
    result = plan(hosts, requests, options, current=check_current(current, hosts, requests, "cur"))
    assert check_plan(hosts, requests, result.shards, result.requests_out, options, current=current) == []


def test_untouched_ram_held_remotely_by_a_low_latency_request_may_stay_under_use_pricing():
    """Use pricing lets latency class low hold its untouched GiB remotely (the checker's invariant 4); a
    running request doing so is free to stay, and one holding more than that must move."""
    from shardplan.planner.report.checker import remote_caps
    hosts = hosts_table({"host_id": "h1", "rack": "rA", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h2", "rack": "rB", "vcpu": 16, "ram_gib": 64})
    requests = requests_table({"request_id": "r1", "vcpu": 4, "ram_gib": 16, "latency_class": "low",
                               "untouched_ram_gib": 8, "net_gbps": 0.008, "max_shards": 2})
    def held(remote: int) -> pl.DataFrame:
        return shards(("r1", 0, "h1", 0, 4, 16 - remote, 0, 0.0, 0, "compute"),
                      ("r1", 1, "h2", 0, 0, remote, 0, 0.001 * remote, 0, "memory"))
    options = FAST.replace(max_moves=0)
    caps = remote_caps(requests, options, "use")
    assert must_move(hosts, requests, held(8), remote_cap=caps) == {}
    assert must_move(hosts, requests, held(8)) == {"r1": "remote memory on h2, which latency class low does not allow"}
    assert must_move(hosts, requests, held(10), remote_cap=caps) == {
        "r1": "10 GiB of remote memory, more than the 8 GiB its latency class low may hold remotely"}
    # the planner keeps it where it is, and the checker agrees
    result = plan(hosts, requests, options, current=check_current(held(8), hosts, requests, "cur"))
    assert moved_requests(held(8), result.shards) == set()
    assert check_plan(hosts, requests, result.shards, result.requests_out, options, current=held(8)) == []


def test_negative_amounts_are_refused(tmp_path):
    bad = SPLIT.with_columns(pl.when(pl.col("request_id") == "r2").then(-8).otherwise(pl.col("vcpu")).alias("vcpu"))
    with pytest.raises(InputError) as caught:
        check_current(bad, two_hosts(), running_pair(), "cur.parquet")
    assert (caught.value.row, caught.value.column) == (2, "vcpu")


def test_requests_that_left_free_their_room():
    current = check_current(SPLIT.vstack(shards(("gone", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"))), two_hosts(),
                            running_pair(), "cur")
    assert current.departed == ("gone",) and sorted(current.running) == ["r1", "r2"]


# --- the plan as an edit ----------------------------------------------------------------------


def test_same_inputs_keep_everything_where_it_runs():
    hosts, requests = two_hosts(), running_pair()
    first = plan(hosts, requests, FAST)
    again = plan(hosts, requests, FAST, current=check_current(first.shards, hosts, requests, "A"))
    migration = again.plan_json["migration"]
    assert migration["kept_requests"] == migration["running_requests"] == first.plan_json["placed"]
    assert again.moves.height == 0 and not moved_requests(first.shards, again.shards)


def test_a_move_that_makes_room_for_a_high_priority_request_is_made_and_explained():
    hosts, requests = two_hosts(), running_pair()
    result = plan(hosts, requests, FAST, current=check_current(SPLIT, hosts, requests, "cur"))
    assert "big" in result.shards["request_id"].to_list()
    assert result.plan_json["migration"]["voluntary_requests"] == 1
    reason = result.moves.filter(pl.col("kind") == "voluntary")["reason"][0]
    assert reason.startswith("made room for big (priority 5)")
    assert check_plan(hosts, requests, result.shards, result.requests_out, FAST, current=SPLIT) == []


def test_a_budget_of_zero_moves_keeps_what_runs_and_leaves_the_newcomer_out():
    hosts, requests = two_hosts(), running_pair()
    options = FAST.replace(max_moves=0)
    result = plan(hosts, requests, options, current=check_current(SPLIT, hosts, requests, "cur"))
    assert result.moves.height == 0 and "big" not in result.shards["request_id"].to_list()
    assert result.plan_json["migration"]["max_moves"] == 0


def test_only_an_evictable_request_is_dropped_to_make_room():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    current = shards(("r2", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"))
    for evictable, evicted in ((True, True), (False, False)):
        requests = running_pair(evictable=evictable).filter(pl.col("request_id") != "r1")
        result = plan(hosts, requests, FAST, current=check_current(current, hosts, requests, "cur"))
        assert (result.plan_json["migration"]["evicted_requests"] == 1) is evicted
        assert ("r2" in result.shards["request_id"].to_list()) is not evicted


def test_parts_on_a_draining_host_move_and_do_not_count_against_the_budget():
    hosts, requests = two_hosts(h2="draining"), running_pair().filter(pl.col("request_id") != "big")
    result = plan(hosts, requests, FAST.replace(max_moves=0), current=check_current(SPLIT, hosts, requests, "cur"))
    moved = result.moves.filter(pl.col("request_id") == "r2")
    assert moved["kind"].to_list() == ["mandatory"] and moved["reason"][0] == "host h2 draining"
    assert moved["to_host"][0] == "h1" and result.plan_json["migration"]["kept_requests"] == 1


def test_a_host_that_can_no_longer_hold_its_parts_forces_the_lowest_priority_off():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64, "used_vcpu": 4})
    requests = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 8, "priority": 3},
                              {"request_id": "b", "vcpu": 8, "ram_gib": 8, "priority": 1})
    current = shards(("a", 0, "h1", 0, 8, 8, 0, 0.0, 0, "compute"), ("b", 0, "h1", 0, 8, 8, 0, 0.0, 0, "compute"))
    assert list(must_move(hosts, requests, current)) == ["b"]
    assert "can no longer hold it (vcpu 12 left)" in must_move(hosts, requests, current)["b"]


def test_the_model_keeps_a_running_request_unless_moving_it_pays():
    """CP-SAT alone, with the move family: a voluntary move is made for the big request, or to free a host
    that costs more than the move (2 $/h against 0.87 $/h), not to free one that costs less (0.5 $/h)."""
    from shardplan.planner.engine import build_problem, run_ffd
    from shardplan.planner.search.candidates import build_fleet, find_candidates
    from shardplan.planner.search.running import build_running

    for big_priority, cost, moves in ((5, 0.5, 1), (None, 0.5, 0), (None, 2.0, 1)):
        hosts = two_hosts(cost)
        requests = running_pair(big_priority or 1)
        if big_priority is None:
            requests = requests.filter(pl.col("request_id") != "big")
        running = build_running(hosts, requests, check_current(SPLIT, hosts, requests, "c"), FAST,
                                (hosts["status"] == "up").to_numpy())
        fleet = build_fleet(hosts, running.held)
        start, order = run_ffd(fleet, requests, FAST, sharded=True, running=running)
        must = [a | b for a, b in zip(start.hosts_per_request(), running.hosts())]
        candidates = find_candidates(fleet, requests, FAST, must_include=must)
        problem = build_problem(fleet, requests, candidates, FAST, order, running)
        solution = PlacementModel.build(problem).solve(start.reordered(order))
        disrupted = sum(problem.current.disrupted(r, bool(solution.assignment.placed[r]), solution.assignment.parts[r],
                                                  solution.assignment.storage_hosts[r])
                        for r in range(problem.n_requests))
        assert disrupted == moves and solution.terms.moves >= 0


# --- invariant 11 and moves.parquet -------------------------------------------------------------


def test_the_checker_flags_a_dropped_running_request_and_a_broken_budget():
    hosts, requests = two_hosts(), running_pair().filter(pl.col("request_id") != "big")
    moved = shards(("r1", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"))
    out = pl.DataFrame({"request_id": ["r1", "r2"], "status": ["placed", "unplaced"], "n_hosts": [1, 0],
                        "cost_per_hour": [0.5, 0.0], "spread_penalty": [0.0, 0.0], "reason": [None, "x"]})
    found = check_plan(hosts, requests, moved, out, {"max_moves": 1}, current=SPLIT)
    assert [v.invariant for v in found] == [11, 11]
    assert any("r2" == v.request_id for v in found) and any("over the budget of 1" in v.message for v in found)
    moves, migration = compare(SPLIT, moved, requests, {})
    assert sorted(moves["kind"].to_list()) == ["eviction", "voluntary"] and migration["kept_requests"] == 0


def test_cli_loop_plan_apply_status_plan_applies_only_the_edit(tmp_path):
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "vcpu": 32, "ram_gib": 128} for i in range(6)])
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": 4 + 2 * (i % 4), "ram_gib": 16, "storage_gib": 50,
                                 "replicas": 1 + i % 2, "max_shards": 2} for i in range(24)])
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests.head(18).write_parquet(tmp_path / "night1.parquet")
    requests.slice(2).write_parquet(tmp_path / "night2.parquet")  # two leave, six arrive
    runner = CliRunner()
    base = ["--hosts", str(tmp_path / "hosts.parquet"), "--time-limit", "8", "--no-lp-bound"]
    a, b, state = tmp_path / "A", tmp_path / "B", tmp_path / "state.db"
    assert runner.invoke(app, ["plan", *base, "--requests", str(tmp_path / "night1.parquet"), "--out", str(a)]).exit_code == 0
    assert runner.invoke(app, ["apply", str(a), "--state", str(state)]).exit_code == 0
    status = runner.invoke(app, ["status", "--state", str(state), "--format", "parquet", "--out",
                                 str(tmp_path / "cur.parquet")])
    assert status.exit_code == 0, status.output
    result = runner.invoke(app, ["plan", *base, "--requests", str(tmp_path / "night2.parquet"), "--out", str(b),
                                 "--current", str(tmp_path / "cur.parquet"), "--json"])
    assert result.exit_code == 0, result.output
    assert check_plan_dir(b) == []
    second = read_plan_dir(b)
    assert second.moves is not None and second.current is not None
    before = pl.read_parquet(a / "shards.parquet")
    applied = runner.invoke(app, ["apply", str(b), "--state", str(state)])
    assert applied.exit_code == 0, applied.output
    # what the apply did touches only the moved requests (moves.parquet), the new and the departed ones
    from shardplan.executors.actions import plan_actions
    from shardplan.executors.base import load_target, parts_from_frame

    target = load_target(b)
    actions = plan_actions(list(parts_from_frame(before)), target, target.hosts).actions
    touched = {action.part.request_id for action in actions}
    new = set(second.shards["request_id"]) - set(before["request_id"])
    departed = set(before["request_id"]) - set(second.requests["request_id"])
    assert new <= touched <= set(second.moves["request_id"]) | new | departed
    ran = int(applied.output.split(" of ")[0].split(":")[-1])
    assert ran == len(actions)


def test_previous_and_current_together_are_refused(tmp_path):
    result = CliRunner().invoke(app, ["plan", "--hosts", "h.csv", "--requests", "r.csv", "--out", str(tmp_path / "o"),
                                      "--previous", str(tmp_path), "--current", "c.parquet"])
    assert result.exit_code == 2 and "not both" in result.output


def test_diff_and_explain_of_an_incremental_plan_show_what_moved_and_why(tmp_path):
    from shardplan.planner.report.diff import diff_plans
    from shardplan.planner.report.explain import explain_request
    from shardplan.planner.report.export import write_plan_dir

    hosts, requests = two_hosts(), running_pair()
    base_requests = requests.filter(pl.col("request_id") != "big")
    out_a = pl.DataFrame({"request_id": ["r1", "r2"], "status": ["placed", "placed"], "n_hosts": [1, 1],
                          "cost_per_hour": [0.25, 0.25], "spread_penalty": [0.0, 0.0], "reason": [None, None]},
                         schema_overrides={"reason": pl.Utf8})
    write_plan_dir(tmp_path / "A", hosts=hosts, requests=base_requests, shards=SPLIT, requests_out=out_a,
                   plan_json={"options": {}})
    result = plan(hosts, requests, FAST, current=check_current(SPLIT, hosts, requests, "A/shards.parquet"))
    write_plan_dir(tmp_path / "B", hosts=hosts, requests=requests, shards=result.shards,
                   requests_out=result.requests_out, plan_json=result.plan_json, current=result.current,
                   moves=result.moves)
    assert check_plan_dir(tmp_path / "B") == []
    diff = diff_plans(tmp_path / "A", tmp_path / "B")
    assert diff.incremental and set(diff.parts["request_id"]) <= {"r1", "r2"}  # only what moved, not big's parts
    assert any(r.startswith("voluntary: made room for big") for r in diff.by_reason["reason"].to_list())
    assert diff.placed_demand_b > diff.placed_demand_a
    moved = next(r for r in ("r1", "r2") if r in set(result.moves["request_id"]))
    stayed = ({"r1", "r2"} - {moved}).pop()
    assert explain_request(tmp_path / "B", moved).running["kind"] == "voluntary"
    assert explain_request(tmp_path / "B", stayed).running["stayed"]
    assert explain_request(tmp_path / "B", "big").running == {"running": False}


def test_nightly_plans_against_what_runs_and_exports_the_moves(tmp_path):
    from shardplan.planner.nightly import NightlyInputs, export_nightly, run_nightly
    from shardplan.planner.reservations import ReservationOptions

    hosts, requests = two_hosts(), running_pair()
    inputs = NightlyInputs(hosts, requests, None, "test", None, current=check_current(SPLIT, hosts, requests, "c"))
    run = run_nightly(inputs, FAST, ReservationOptions())
    assert run.violations == [] and run.planned.plan_json["migration"]["running_requests"] == 2
    export_nightly(run, tmp_path / "n")
    assert read_plan_dir(tmp_path / "n").moves.height == run.planned.plan.moves.height > 0
    assert check_plan_dir(tmp_path / "n") == []


@pytest.mark.parametrize("disruption_cost, freed", [(5.0, 2), (200.0, 0)])
def test_consolidation_frees_hosts_only_when_it_pays_for_the_moves(disruption_cost, freed):
    """Three 2 $/h hosts with a small request each: moving two frees two hosts (4 $/h) when a disruption
    costs 5 $ (0.2 $/h over 24 h), not when it costs 200 $ (8.3 $/h)."""
    from shardplan.models.problem import evaluate
    from shardplan.planner.search.consolidate import consolidate

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "vcpu": 16, "ram_gib": 64, "cost_per_hour": 2.0}
                          for i in range(3)])
    requests = requests_table(*[{"request_id": f"r{i}", "vcpu": 4, "ram_gib": 8} for i in range(3)])
    current = shards(*[(f"r{i}", 0, f"h{i}", 0, 4, 8, 0, 0.0, 0, "compute") for i in range(3)])
    problem, _, hint = replan_problem(hosts, requests, current, FAST.replace(disruption_cost=disruption_cost))
    found, _ = consolidate(problem, hint, 2000, seed=0)
    assert 3 - len({p[0] for parts in found.parts for p in parts}) == freed
    assert evaluate(problem, found).total <= evaluate(problem, hint).total


def test_cli_refuses_a_bad_current_placement_and_writes_nothing(tmp_path):
    hosts, requests = two_hosts(), running_pair()
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests.write_parquet(tmp_path / "requests.parquet")
    SPLIT.with_columns(pl.lit("h7").alias("host_id")).write_csv(tmp_path / "current.csv")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["plan", "--hosts", str(tmp_path / "hosts.parquet"), "--requests",
                                      str(tmp_path / "requests.parquet"), "--out", str(out), "--current",
                                      str(tmp_path / "current.csv")])
    assert result.exit_code == 2
    assert "current.csv, row 1, column 'host_id'" in result.output and "not in tonight's hosts" in result.output
    assert not out.exists() or not any(out.iterdir())


def test_a_swap_no_executor_can_order_is_found_and_undone():
    """Two full hosts whose requests trade places: neither create can run before the other's delete."""
    from shardplan.models.problem import Assignment
    from shardplan.planner.engine import keep_in_place, unorderable_moves

    hosts = hosts_table(*[{"host_id": h, "rack": f"r{i}", "vcpu": 8, "ram_gib": 16} for i, h in enumerate(("h1", "h2"))])
    requests = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 16}, {"request_id": "b", "vcpu": 8, "ram_gib": 16})
    current = shards(("a", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"), ("b", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"))
    swapped = shards(("a", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"), ("b", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"))
    messages, stuck = unorderable_moves(hosts, requests, current, swapped)
    assert stuck == {"a", "b"} and messages
    assert unorderable_moves(hosts, requests, current, current) == ([], set())
    problem, order, _ = replan_problem(hosts, requests, current)
    plan_swapped = Assignment(np.ones(2, dtype=bool), [[(1, 8, 16, 0, 0)], [(0, 8, 16, 0, 0)]], [[], []])
    repaired = keep_in_place(problem, plan_swapped.reordered(order), requests, stuck, order).restored(order)
    assert repaired.parts == [[(0, 8, 16, 0, 0)], [(1, 8, 16, 0, 0)]]


def replan_problem(hosts: pl.DataFrame, requests: pl.DataFrame, current: pl.DataFrame, options: PlanOptions = FAST):
    """The placement problem of re-planning `requests` on `hosts` against `current`, its order, and the
    re-planning warm start (what may stay kept, the rest placed by FFD) in problem order."""
    from shardplan.planner.engine import build_problem, run_ffd
    from shardplan.planner.search.candidates import build_fleet, find_candidates
    from shardplan.planner.search.running import build_running

    running = build_running(hosts, requests, check_current(current, hosts, requests, "c"), options,
                            (hosts["status"] == "up").to_numpy())
    fleet = build_fleet(hosts, running.held)
    start, order = run_ffd(fleet, requests, options, sharded=True, running=running)
    candidates = find_candidates(fleet, requests, options, must_include=running.hosts())
    return build_problem(fleet, requests, candidates, options, order, running), order, start.reordered(order)


def test_a_stuck_request_put_back_where_it_runs_evicts_what_took_its_room_and_places_it_elsewhere():
    """a ran on h1 and moved to h2 in the plan, and new request n took a's room on h1; a's move cannot be
    ordered (h2 is full of b until b leaves, and b waits on h1). Putting a back on h1 must not overfill
    h1 (the old repair did: the plan then failed the checker and fell back to the warm start): n goes
    to the free host h3 instead, and the plan keeps every request placed within capacity."""
    from shardplan.models.problem import Assignment, host_usage
    from shardplan.planner.engine import keep_in_place

    hosts = hosts_table(*[{"host_id": h, "rack": f"r{i}", "vcpu": 8, "ram_gib": 16}
                          for i, h in enumerate(("h1", "h2", "h3"))])
    requests = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 16}, {"request_id": "b", "vcpu": 8, "ram_gib": 16},
                              {"request_id": "n", "vcpu": 8, "ram_gib": 16})
    current = shards(("a", 0, "h1", 0, 8, 16, 0, 0.0, 0, "compute"), ("b", 0, "h2", 0, 8, 16, 0, 0.0, 0, "compute"))
    problem, order, _ = replan_problem(hosts, requests, current)
    chosen = Assignment(np.ones(3, dtype=bool), [[(1, 8, 16, 0, 0)], [(2, 8, 16, 0, 0)], [(0, 8, 16, 0, 0)]],
                        [[], [], []])
    repaired = keep_in_place(problem, chosen.reordered(order), requests, {"a"}, order)
    assert (host_usage(problem, repaired) <= problem.free).all()
    out = repaired.restored(order)
    assert out.placed.all()
    assert out.parts[0] == [(0, 8, 16, 0, 0)]            # a back on h1, where it runs
    assert {out.parts[1][0][0], out.parts[2][0][0]} == {1, 2}  # b and n share h2 and h3