"""Remote memory priced by use (issue 14 item 3): untouched GiB remote at near-zero traffic for every class,
touched GiB at the touched rate within each class's slowdown cap, the slowdown reported, the checker's rule."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from shardplan.models.placement import solve_placement
from shardplan.models.problem import evaluate, host_usage, remote_gib
from shardplan.planner.report.checker import check_plan
from shardplan.planner.validate.inputs import InputError, load_requests
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import plan_checked, problem_and_ffd, requests_table, three_hosts

FAST = PlanOptions(time_limit_s=5, workers=1, lp_bound=False)
# h1 has the vcpu and 8 GiB of RAM free; h2 has RAM but no vcpu; h3 is full: a request of 8 vcpu and 40 GiB
# holds at most 8 GiB locally, so 32 GiB must sit on h2 as remote memory
HOSTS = three_hosts(h1={"used_ram_gib": 56}, h2={"used_vcpu": 16}, h3={"used_vcpu": 16, "used_ram_gib": 64})


def request(latency: str, untouched: int | None):
    return requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 40, "max_shards": 2, "latency_class": latency,
                           "untouched_ram_gib": untouched})


def solve(requests, **changes):
    return plan_checked(HOSTS, requests, FAST.replace(**changes))


def outcome(result) -> dict:
    return result.requests_out.row(0, named=True)


def memory_shard(result) -> dict:
    rows = result.shards.filter(pl.col("role") == "memory")
    assert rows.height == 1
    return rows.row(0, named=True)


def test_a_low_latency_request_keeps_its_untouched_memory_remote_at_near_zero_traffic():
    result = solve(request("low", 32))
    assert outcome(result)["status"] == "placed"
    shard = memory_shard(result)
    assert shard["host_id"] == "h2" and shard["ram_gib"] == 32
    assert shard["net_gbps"] == pytest.approx(FAST.untouched_remote_gbps_per_gib * 32)
    assert outcome(result)["remote_ram_gib"] == 32 and outcome(result)["slowdown"] == 0.0
    # one GiB short of untouched: low may hold no touched GiB remotely
    assert outcome(solve(request("low", 31)))["status"] == "unplaced"
    # the rule before use pricing: never remote for class low
    assert outcome(solve(request("low", 32), remote_memory_pricing="flat"))["status"] == "unplaced"


def test_past_the_untouched_gib_every_remote_gib_is_priced_as_touched_and_slows_the_request():
    result = solve(request("tolerant", 30))
    assert outcome(result)["status"] == "placed"
    shard = memory_shard(result)
    assert shard["ram_gib"] == 32
    assert shard["net_gbps"] == pytest.approx(FAST.remote_memory_gbps_per_gib * 32)
    assert outcome(result)["slowdown"] == pytest.approx(FAST.remote_slowdown_per_share * 2 / 40)
    assert result.plan_json["objective_terms"]["remote_memory_penalty"] == pytest.approx(
        2 * FAST.touched_remote_price_tolerant)


def test_the_touched_share_is_capped_by_the_slowdown_each_class_allows():
    # nothing known untouched: 32 touched GiB would slow a tolerant request by 28%, past its 10%
    assert outcome(solve(request("tolerant", None)))["status"] == "unplaced"
    # medium allows 2%: 2 touched GiB of 40 (1.75%) pass, 3 (2.6%) do not
    assert outcome(solve(request("medium", 30)))["status"] == "placed"
    assert outcome(solve(request("medium", 29)))["status"] == "unplaced"
    # a looser cap admits it
    assert outcome(solve(request("tolerant", None), max_slowdown_tolerant=0.3))["status"] == "placed"
    # flat pricing has no cap and reports the slowdown as if every remote GiB were touched
    flat = solve(request("tolerant", None), remote_memory_pricing="flat")
    assert outcome(flat)["status"] == "placed"
    assert outcome(flat)["slowdown"] == pytest.approx(FAST.remote_slowdown_per_share * 32 / 40)


def test_the_checker_applies_the_rule_from_the_plan_alone():
    requests = request("tolerant", 30)
    result = solve(requests)
    options = FAST.to_dict()
    # the same parts for a request known to touch all its memory: 32 GiB remote > the 11 its class allows
    touched = requests.with_columns(untouched_ram_gib=pl.lit(0, dtype=pl.Int64))
    found = check_plan(HOSTS, touched, result.shards, result.requests_out, options)
    assert [v.invariant for v in found] == [4] and "32 GiB in all > the 11 GiB" in found[0].message
    # traffic priced at the untouched rate although 2 GiB are touched
    cheap = result.shards.with_columns(net_gbps=pl.when(pl.col("role") == "memory")
                                       .then(FAST.untouched_remote_gbps_per_gib * 32).otherwise("net_gbps"))
    found = [v for v in check_plan(HOSTS, requests, cheap, result.requests_out, options) if v.invariant == 4]
    assert len(found) == 1 and "remote-memory traffic 0.05 × 32 GiB" in found[0].message
    # a plan.json from before the option priced remote memory flat: class low may hold none
    low = request("low", 32)
    placed = solve(low)
    old = {k: v for k, v in FAST.to_dict().items() if k != "remote_memory_pricing"}
    found = check_plan(HOSTS, low, placed.shards, placed.requests_out, old)
    assert any(v.invariant == 4 and "not allowed for latency class low" in v.message for v in found)


def test_untouched_ram_above_the_request_ram_is_refused_naming_row_and_column(tmp_path):
    path = tmp_path / "requests.csv"
    request("medium", 12).with_columns(untouched_ram_gib=pl.lit(41)).write_csv(path)
    with pytest.raises(InputError, match="untouched_ram_gib 41 exceeds the request's ram_gib 40") as error:
        load_requests(path)
    assert error.value.row == 1 and error.value.column == "untouched_ram_gib"


def test_cp_sat_the_searches_and_the_usage_rule_agree_under_use_pricing():
    """On a generated fleet (untouched shares from Bitbrains): CP-SAT's remote-memory term and its objective
    are no lower than `evaluate`'s of its plan (in a feasible, unproven solution the touched-GiB and spread
    counters may sit above their floor), every host's usage by the one usage rule fits its free room, and no
    request holds more remote GiB than its cap."""
    from shardplan.data.generator import generate_fleet

    hosts, requests = generate_fleet(10, 30, seed=14, powered_down=0.0)  # tight enough that remote memory is held
    assert requests["untouched_ram_gib"].sum() > 0
    problem, ffd = problem_and_ffd(hosts, requests, FAST)
    assert (problem.memory.cap > problem.memory.untouched).any() and problem.memory.untouched.any()
    solution = solve_placement(problem, ffd)
    assert solution.result.status.has_solution
    assignment = solution.assignment
    terms = evaluate(problem, assignment)
    assert terms.remote <= solution.terms.remote and terms.unplaced == solution.terms.unplaced
    if solution.result.status.value == "optimal":
        assert terms.remote == solution.terms.remote
    assert terms.total <= solution.terms.total == round(solution.result.objective)
    assert (host_usage(problem, assignment) <= problem.free).all()
    held = np.array([remote_gib(parts) for parts in assignment.parts])
    assert held.sum() > 0 and (held <= problem.memory.cap).all()


def test_explain_says_how_much_is_remote_what_it_costs_and_how_much_it_slows(tmp_path):
    from shardplan.planner.report.explain import explain_request, remote_line
    from shardplan.planner.report.export import write_plan_dir

    requests = request("tolerant", 30)
    result = solve(requests)
    write_plan_dir(tmp_path, hosts=HOSTS, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    line = remote_line(explain_request(tmp_path, "a").remote)
    assert line.startswith("32 GiB remote on h2: 30 GiB predicted untouched, 2 touched (at most 40 GiB remote")
    assert "50 Mbit/s per GiB (1.6 Gbit/s)" in line and "slowdown 1.75%" in line


def _history(rows):
    """Hourly used RAM of VMs: rows of (vm, user, app, rented GiB, [used GiB per hour])."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return pl.DataFrame([{"ts": start + timedelta(hours=h), "vm_id": vm, "user_id": user, "app_type": app,
                          "vcpu": 2.0, "ram_gib": used, "ram_alloc_gib": rented}
                         for vm, user, app, rented, series in rows for h, used in enumerate(series)])


def test_untouched_memory_is_predicted_from_what_the_users_vms_used():
    from shardplan.forecasting.untouched import with_untouched

    history = _history([("v1", "u1", "web", 10.0, [2.0] * 50 + [6.0]),  # peak (p99) ≈ 6 of 10: 40% untouched
                        ("v2", "u2", "web", 20.0, [5.0] * 51),            # 75% untouched
                        ("v3", "u3", "db", 8.0, [8.0] * 51)])             # touches everything
    requests = requests_table({"request_id": "a", "user_id": "u1", "app_type": "web", "vcpu": 2, "ram_gib": 100},
                              {"request_id": "b", "user_id": "u9", "app_type": "web", "vcpu": 2, "ram_gib": 100},
                              {"request_id": "c", "user_id": "u3", "app_type": "db", "vcpu": 2, "ram_gib": 100},
                              {"request_id": "d", "user_id": "u1", "app_type": "cache", "vcpu": 2, "ram_gib": 100},
                              {"request_id": "e", "user_id": "u1", "app_type": "web", "vcpu": 2, "ram_gib": 100,
                               "untouched_ram_gib": 7})
    filled, summary = with_untouched(requests, history)
    got = dict(zip(filled["request_id"], filled["untouched_ram_gib"]))
    assert 40 <= got["a"] <= 42            # its own pair: 1 − p99 of used ÷ rented
    assert 40 <= got["b"] < got["a"] + 35  # a user the history lacks: the app type's cautious quantile of v1, v2
    assert got["c"] == 0 and got["d"] == 0  # touches all of it; an app type never seen
    assert got["e"] == 7                    # stated: kept
    assert summary == {"stated": 1, "by_user_and_app": 2, "by_app": 1, "none": 1,
                       "predicted_gib": got["a"] + got["b"]}
    # without rented RAM in the history nothing is learned
    blind, summary = with_untouched(requests, history.drop("ram_alloc_gib"))
    assert blind["untouched_ram_gib"].to_list() == [0, 0, 0, 0, 7] and summary["none"] == 4
