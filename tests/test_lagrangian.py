"""The Lagrangian bound (models/lagrangian.py): never above a proven optimum or any plan, on seeded fleets
CP-SAT solves to optimality; it proves more than the zone-aggregate LP where requests cannot share a host."""
from __future__ import annotations

import pytest

from shardplan.data.generator import generate_fleet
from shardplan.models.lagrangian import lagrangian_bound
from shardplan.models.lp_bound import aggregate_bound
from shardplan.models.problem import evaluate
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import assert_bound_below_plans, hosts_table, problem_and_ffd, requests_table

OPTIONS = PlanOptions(time_limit_s=20, workers=2, lp_bound=False)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_never_above_the_optimum_or_a_plan(seed) -> None:
    hosts, requests = generate_fleet(10, 24, seed=seed)
    problem, ffd = problem_and_ffd(hosts, requests, OPTIONS)
    bound = lagrangian_bound(problem, time_limit_s=10, upper=evaluate(problem, ffd).total)
    assert_bound_below_plans(problem, ffd, bound.best_bound)


def test_gpus_of_another_model_prove_nothing() -> None:
    # one host with 4 A100s, one with 4 T4s; two requests for 4 A100s: one fits. The zone-aggregate LP pools
    # the zone's 8 GPUs and says both do; priced per host, the T4 host cannot serve them
    hosts = hosts_table({"host_id": "a", "rack": "r1", "vcpu": 32, "ram_gib": 256, "gpu": 4, "gpu_model": "a100"},
                        {"host_id": "t", "rack": "r2", "vcpu": 32, "ram_gib": 256, "gpu": 4, "gpu_model": "t4"})
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": 8, "ram_gib": 32, "gpu": 4, "gpu_model": "a100",
                                 "max_shards": 1} for i in range(2)])
    problem, ffd = problem_and_ffd(hosts, requests, OPTIONS)
    plan_value = evaluate(problem, ffd).total
    weight = int(problem.unplaced_weight.min())
    lagrangian = lagrangian_bound(problem, time_limit_s=10, upper=plan_value).best_bound
    aggregate = aggregate_bound(problem, 10).best_bound
    assert aggregate < weight / 2
    assert lagrangian <= plan_value + 1e-6
    assert lagrangian >= 0.9 * weight
