"""The objective's hot-spot and speed terms (issue 14 items 1 and 4): each binds where it should, is reported
in plan.json, and every search counts it as `evaluate` does."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shardplan.models.placement import solve_placement
from shardplan.models.problem import evaluate
from shardplan.planner.search.recreate import _State, ruin_and_recreate
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import plan_checked, problem_and_ffd, requests_table, three_hosts

FAST = PlanOptions(time_limit_s=5, workers=1, lp_bound=False)


def solve(hosts, requests, **changes):
    return plan_checked(hosts, requests, FAST.replace(**changes))


def host_of(result, request_id="a") -> str:
    hosts = result.shards.filter(pl.col("request_id") == request_id)["host_id"].unique().to_list()
    assert len(hosts) == 1
    return hosts[0]


def terms(result) -> dict:
    return result.plan_json["objective_terms"]


def test_a_plan_avoids_pushing_a_host_past_its_headroom_when_another_has_room():
    # all three hosts run load (no activation cost); 5 vcpu take h1 to 15 of 16 (94% > 90%), h2 to 7
    hosts = three_hosts(h1={"used_vcpu": 10}, h2={"used_vcpu": 2}, h3={"used_vcpu": 16})
    request = requests_table({"request_id": "a", "vcpu": 5, "ram_gib": 8})
    result = solve(hosts, request)
    assert host_of(result) == "h2" and terms(result)["hot_spot_penalty"] == 0.0
    # only h1 has room: placed there all the same (placing demand comes first), the hot spot charged
    crowded = three_hosts(h1={"used_vcpu": 10}, h2={"used_vcpu": 12}, h3={"used_vcpu": 16})
    result = solve(crowded, request)
    assert host_of(result) == "h1" and terms(result)["hot_spot_penalty"] == pytest.approx(FAST.hot_spot_price)
    # a host past the threshold by its existing load alone is not the plan's doing
    hot_already = three_hosts(h1={"used_vcpu": 15}, h2={"used_vcpu": 16}, h3={"used_vcpu": 16})
    one = requests_table({"request_id": "a", "vcpu": 1, "ram_gib": 2})
    assert terms(solve(hot_already, one))["hot_spot_penalty"] == 0.0
    # RAM counts too: 60 of 64 GiB on h1 is a hot spot, h2 keeps its RAM below 90%
    ram = three_hosts(h1={"used_ram_gib": 40}, h2={"used_ram_gib": 10}, h3={"used_vcpu": 16})
    assert host_of(solve(ram, requests_table({"request_id": "a", "vcpu": 2, "ram_gib": 20}))) == "h2"


def test_a_latency_sensitive_request_with_no_stated_need_is_worth_more_on_a_faster_host():
    hosts = three_hosts(h1={"cpu_score": 0.8, "used_vcpu": 1}, h2={"cpu_score": 1.2, "used_vcpu": 1},
                        h3={"used_vcpu": 16})
    low = requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8, "latency_class": "low"})
    result = solve(hosts, low)
    assert host_of(result) == "h2" and terms(result)["speed_penalty"] == 0.0
    # the fast host is full: on the slow one, charged speed_price × vcpu × the 0.4 score deficit
    full = three_hosts(h1={"cpu_score": 0.8, "used_vcpu": 1}, h2={"cpu_score": 1.2, "used_vcpu": 14},
                       h3={"used_vcpu": 16})
    result = solve(full, low)
    assert host_of(result) == "h1"
    assert terms(result)["speed_penalty"] == pytest.approx(FAST.speed_price_low * 4 * 0.4)
    tolerant = low.with_columns(latency_class=pl.lit("tolerant"))
    assert terms(solve(full, tolerant))["speed_penalty"] == 0.0
    stated = low.with_columns(min_cpu_score=pl.lit(0.5))  # a stated need is a filter, not a price
    assert terms(solve(full, stated))["speed_penalty"] == 0.0


def test_cp_sat_and_ruin_and_recreate_count_the_new_terms_as_evaluate_does():
    from shardplan.data.generator import generate_fleet

    hosts, requests = generate_fleet(16, 40, seed=5, powered_down=0.0)
    problem, ffd = problem_and_ffd(hosts, requests, FAST)
    start = evaluate(problem, ffd)
    assert start.hot_spots > 0 and start.speed > 0  # both terms are live on this fleet
    solution = solve_placement(problem, ffd)
    assert solution.result.status.has_solution
    mine = evaluate(problem, solution.assignment)
    assert (mine.hot_spots, mine.speed, mine.unplaced) == (solution.terms.hot_spots, solution.terms.speed,
                                                           solution.terms.unplaced)
    # the search's running totals, after every kind of move, equal evaluate's
    found, _ = ruin_and_recreate(problem, ffd, max_moves=300, seed=1)
    state = _State(problem, found)
    assert state.total == evaluate(problem, found).total
    rng = np.random.default_rng(0)
    for r in rng.choice(np.flatnonzero(found.placed), size=10, replace=False):
        parts, copies = state.remove(int(r))
        assert state.total == evaluate(problem, state.assignment()).total
        state.put(int(r), parts, copies)
    assert state.total == evaluate(problem, found).total


def test_explain_names_the_speed_and_hot_spot_terms_of_a_request(tmp_path):
    from shardplan.planner.report.explain import explain_request
    from shardplan.planner.report.export import write_plan_dir

    hosts = three_hosts(h1={"used_vcpu": 10, "cpu_score": 0.8}, h2={"used_vcpu": 12}, h3={"used_vcpu": 16})
    request = requests_table({"request_id": "a", "vcpu": 5, "ram_gib": 8, "latency_class": "low"})
    result = solve(hosts, request)
    write_plan_dir(tmp_path, hosts=hosts, requests=request, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    lines = explain_request(tmp_path, "a").terms
    assert lines[0].startswith("speed: vcpu on hosts of cpu_score 0.8 (fastest up host 1): 0.050 $/h")
    assert lines[1].startswith("hot spot: h1 vcpu at 94% after the plan (threshold 90%")
