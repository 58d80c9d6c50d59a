"""The pool LP (models/pool_bound.py): never above a proven optimum or any plan on seeded fleets; it proves
what the zone-aggregate LP cannot where a request's vcpu and its RAM, or its GPUs, are on different hosts."""
from __future__ import annotations

import pytest

from shardplan.data.generator import generate_fleet
from shardplan.models.lp_bound import aggregate_bound
from shardplan.models.pool_bound import pool_bound, request_classes
from shardplan.models.problem import COST_UNITS_PER_DOLLAR, PlanStatus, evaluate
from shardplan.planner.engine import run_ffd
from shardplan.planner.search.candidates import build_fleet, host_pools
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import assert_bound_below_plans, hosts_table, problem_and_ffd, requests_table

OPTIONS = PlanOptions(time_limit_s=20, workers=2, lp_bound=False)


def problem_pools_ffd(hosts, requests, options=OPTIONS):
    problem, ffd = problem_and_ffd(hosts, requests, options)
    fleet = build_fleet(hosts)
    _, order = run_ffd(fleet, requests, options, sharded=options.mode == "sharded")
    return problem, host_pools(fleet, requests, order, problem.free), ffd


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_never_above_the_optimum_or_a_plan(seed) -> None:
    hosts, requests = generate_fleet(10, 24, seed=seed)
    problem, pools, ffd = problem_pools_ffd(hosts, requests)
    bound = pool_bound(problem, pools, 10)
    assert bound.status == PlanStatus.OPTIMAL and bound.solver == "highs-pool-lp"
    assert_bound_below_plans(problem, ffd, bound.best_bound)


def test_whole_mode_and_requests_alike_share_a_class() -> None:
    hosts, requests = generate_fleet(8, 20, seed=5)
    whole = OPTIONS.replace(mode="whole")
    problem, pools, ffd = problem_pools_ffd(hosts, requests, whole)
    assert_bound_below_plans(problem, ffd, pool_bound(problem, pools, 10).best_bound)
    classes = request_classes(problem, pools)
    assert classes.max() + 1 <= problem.n_requests


def test_vcpu_without_ram_proves_the_request_unplaceable() -> None:
    # host c has vcpu but its RAM is taken; host m has RAM but no vcpu. A one-host request for 8 vcpu and
    # 64 GiB fits neither; the zone-aggregate LP pools c's vcpu with m's RAM and says it fits
    hosts = hosts_table({"host_id": "c", "rack": "r1", "vcpu": 32, "ram_gib": 64, "used_ram_gib": 62},
                        {"host_id": "m", "rack": "r2", "vcpu": 32, "ram_gib": 512, "used_vcpu": 32})
    requests = requests_table({"request_id": "q", "vcpu": 8, "ram_gib": 64, "max_shards": 1})
    problem, pools, ffd = problem_pools_ffd(hosts, requests)
    weight = int(problem.unplaced_weight[0])
    assert not ffd.placed.any()
    assert aggregate_bound(problem, 10).best_bound < weight / 2
    assert pool_bound(problem, pools, 10).best_bound == pytest.approx(weight)


def test_spanning_request_keeps_its_ram_beside_its_vcpu() -> None:
    # the same hosts; a request that may span 2 hosts but hold no remote memory (latency class low): all of
    # its RAM sits beside its vcpu, so on c, which has 2 of its 64 GiB: at most 1/32 of it can be placed
    hosts = hosts_table({"host_id": "c", "rack": "r1", "vcpu": 32, "ram_gib": 64, "used_ram_gib": 62},
                        {"host_id": "m", "rack": "r2", "vcpu": 32, "ram_gib": 512, "used_vcpu": 32})
    requests = requests_table({"request_id": "q", "vcpu": 8, "ram_gib": 64, "max_shards": 2,
                               "latency_class": "low"})
    problem, pools, ffd = problem_pools_ffd(hosts, requests)
    weight = int(problem.unplaced_weight[0])
    assert not problem.allow_remote[0]
    assert pool_bound(problem, pools, 10).best_bound == pytest.approx(weight * (1 - 2 / 64))


def test_gpus_of_another_model_prove_nothing() -> None:
    hosts = hosts_table({"host_id": "a", "rack": "r1", "vcpu": 32, "ram_gib": 256, "gpu": 4, "gpu_model": "a100"},
                        {"host_id": "t", "rack": "r2", "vcpu": 32, "ram_gib": 256, "gpu": 4, "gpu_model": "t4"})
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": 8, "ram_gib": 32, "gpu": 4, "gpu_model": "a100",
                                 "max_shards": 2} for i in range(2)])
    problem, pools, ffd = problem_pools_ffd(hosts, requests)
    weight = int(problem.unplaced_weight.min())
    bound = pool_bound(problem, pools, 10).best_bound
    assert bound >= weight - 1e-6
    assert bound <= evaluate(problem, ffd).total + 1e-6


def test_room_everywhere_proves_little() -> None:
    # where everything fits, the bound must not claim a request stays out
    hosts = hosts_table({"host_id": "a", "rack": "r1", "vcpu": 64, "ram_gib": 256},
                        {"host_id": "b", "rack": "r2", "vcpu": 64, "ram_gib": 256})
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": 4, "ram_gib": 16} for i in range(4)])
    problem, pools, ffd = problem_pools_ffd(hosts, requests)
    assert ffd.placed.all()
    assert pool_bound(problem, pools, 10).best_bound < int(problem.unplaced_weight.min())


def test_the_engine_reports_the_pool_lp_above_the_pair_limit() -> None:
    from shardplan.planner.engine import plan

    hosts, requests = generate_fleet(12, 30, seed=7)
    options = PlanOptions(time_limit_s=8, workers=2, lp_pair_limit=10, lp_bound=True)
    result = plan(hosts, requests, options)
    lp = result.report.lp_relaxation
    assert lp is not None and (lp.solver == "highs-pool-lp" or lp.solver.startswith("lagrangian"))
    assert lp.best_bound is not None
    assert lp.best_bound <= result.result.objective * COST_UNITS_PER_DOLLAR + 1e-6  # plan.json's objective is in $


def test_solves_after_pulp_has_run_highs_in_the_same_process() -> None:
    # HiGHS keeps one thread scheduler per process: an option that asks for another thread count after
    # PuLP's HiGHS ran leaves the model unsolved (status not set). A fresh process, PuLP first
    import subprocess
    import sys

    code = (
        "from shardplan.data.generator import generate_fleet\n"
        "from shardplan.models.lp_bound import aggregate_bound\n"
        "from shardplan.models.pool_bound import pool_bound\n"
        "from shardplan.planner.validate.options import PlanOptions\n"
        "from tests.test_pool_bound import problem_pools_ffd\n"
        "hosts, requests = generate_fleet(10, 24, seed=1)\n"
        "problem, pools, _ = problem_pools_ffd(hosts, requests, PlanOptions(time_limit_s=5))\n"
        "assert aggregate_bound(problem, 5).best_bound is not None\n"
        "print(pool_bound(problem, pools, 5).status)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "optimal"
