"""Ruin and recreate (planner.recreate): places more priority-weighted demand than first fit where the
fleet cannot hold everything, keeps every invariant and each request on its own candidates, is never
worse than its start and is reproducible for a seed."""
from __future__ import annotations

import numpy as np

from models.problem import GPU, evaluate, host_usage
from planner.checker import check_plan
from planner.engine import plan
from planner.fleet import generate_fleet
from planner.options import PlanOptions
from planner.recreate import ruin_and_recreate
from tests.fleets import hosts_table, problem_and_ffd, requests_table


def two_host_fleet(sizes=(7, 5, 5, 4, 4), gpu_host: bool = False):
    """Two 10-vcpu hosts. First fit decreasing puts 7 | 5,5 and leaves both 4s out (17 vcpu placed);
    5,4 | 5,4 places 18."""
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "vcpu": 10, "ram_gib": 10} for i in range(2)])
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v} for i, v in enumerate(sizes)])
    return hosts, requests


def placed_vcpu(problem, assignment) -> int:
    return int(problem.demand[assignment.placed, 0].sum())


def test_places_more_than_first_fit_on_a_full_fleet():
    problem, ffd = problem_and_ffd(*two_host_fleet(), PlanOptions(mode="whole", workers=1))
    assert placed_vcpu(problem, ffd) == 17
    result, stats = ruin_and_recreate(problem, ffd, max_moves=500, seed=0)
    assert placed_vcpu(problem, result) == 18
    assert stats.final_objective < stats.start_objective == evaluate(problem, ffd).total
    assert evaluate(problem, result).total == stats.final_objective
    assert (host_usage(problem, result) <= problem.free).all()


def test_reproducible_for_a_seed_and_never_worse_than_its_start():
    hosts, requests = generate_fleet(30, 80, seed=5)
    problem, ffd = problem_and_ffd(hosts, requests, PlanOptions(mode="sharded", workers=1))
    runs = [ruin_and_recreate(problem, ffd, max_moves=150, seed=2) for _ in range(2)]
    assert runs[0][0].parts == runs[1][0].parts and runs[0][1] .kept == runs[1][1].kept
    assert runs[0][1].final_objective <= runs[0][1].start_objective
    assert (host_usage(problem, runs[0][0]) <= problem.free).all()
    for r in np.flatnonzero(runs[0][0].placed):  # every part on one of the request's own candidates
        assert {p[0] for p in runs[0][0].parts[r]} <= set(problem.compute_candidates[r].tolist())
        assert set(runs[0][0].storage_hosts[r]) <= set(problem.storage_candidates[r].tolist())


def test_a_gpu_request_only_lands_where_its_model_is():
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "vcpu": 10, "ram_gib": 10} for i in range(2)],
                        {"host_id": "g", "rack": "r9", "vcpu": 10, "ram_gib": 10, "gpu": 2, "gpu_model": "A100"})
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v} for i, v in enumerate((7, 5, 5, 4, 4, 6))],
                              {"request_id": "gpu", "vcpu": 4, "ram_gib": 4, "gpu": 2, "gpu_model": "A100",
                               "priority": 5})
    problem, ffd = problem_and_ffd(hosts, requests, PlanOptions(mode="whole", workers=1))
    result, _ = ruin_and_recreate(problem, ffd, max_moves=300, seed=1)
    gpu = [r for r in range(problem.n_requests) if problem.demand[r][GPU] > 0]
    assert result.placed[gpu[0]] and result.parts[gpu[0]][0][0] == 2
    assert (host_usage(problem, result) <= problem.free).all()


def test_sharded_plan_on_an_over_demanded_fleet_runs_it_and_passes_the_checker():
    hosts, requests = generate_fleet(30, 80, seed=7)
    options = PlanOptions(mode="sharded", workers=1, time_limit_s=3, lp_bound=False)
    result = plan(hosts, requests, options)
    stats = result.plan_json["ruin_recreate"]
    assert stats is not None and stats["moves"] > 0
    assert stats["final_objective"] <= stats["start_objective"]
    assert result.plan_json["consolidation"] is None
    assert check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict()) == []
