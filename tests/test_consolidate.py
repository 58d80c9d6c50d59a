"""Consolidation (shardplan.planner.search.consolidate): empties paid-for hosts that first fit left half used, never
breaks an invariant, leaves what cannot move where it is, and is reproducible for a seed."""
from __future__ import annotations

import numpy as np

from shardplan.models.problem import GPU, evaluate, host_usage
from shardplan.planner.engine import plan
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.consolidate import consolidate
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, problem_and_ffd, requests_table

# First fit decreasing packs 5,5 | 4,4 | 3,3,3 | 3 on 10-vcpu hosts: four hosts where three do (5,5 | 4,3,3 | 4,3,3).
SIZES = (5, 5, 4, 4, 3, 3, 3, 3)


def packing_fleet(sizes=SIZES, hosts=6, gpu_host=None):
    rows = [{"host_id": f"h{i}", "rack": f"r{i % 3}", "vcpu": 10, "ram_gib": 100} for i in range(hosts)]
    if gpu_host is not None:
        rows[gpu_host].update(gpu=2, gpu_model="A100")
    hosts_frame = hosts_table(*rows)
    requests_frame = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v} for i, v in enumerate(sizes)])
    return hosts_frame, requests_frame


def used_hosts(problem, assignment) -> int:
    return int((host_usage(problem, assignment).sum(axis=1) > 0).sum())


def test_first_fit_leaves_a_host_that_consolidation_empties():
    options = PlanOptions(mode="whole", hot_spot_price=0.0, workers=1)
    problem, ffd = problem_and_ffd(*packing_fleet(), options)
    assert used_hosts(problem, ffd) == 4
    packed, stats = consolidate(problem, ffd, max_moves=2000, seed=0)
    assert used_hosts(problem, packed) == 3
    assert stats.detail["hosts_emptied"] == 1 and stats.final_objective < stats.start_objective
    assert evaluate(problem, packed).total == stats.final_objective
    assert packed.placed.all()
    assert (host_usage(problem, packed) <= problem.free).all()


def test_consolidation_is_reproducible_for_a_seed():
    options = PlanOptions(mode="whole", hot_spot_price=0.0, workers=1)
    problem, ffd = problem_and_ffd(*packing_fleet((7, 6, 5, 5, 4, 4, 3, 3, 3, 2, 2, 2, 1), hosts=8), options)
    runs = [consolidate(problem, ffd, max_moves=500, seed=3) for _ in range(2)]
    assert runs[0][0].parts == runs[1][0].parts
    assert runs[0][1].moves == runs[1][1].moves


def test_requests_only_move_to_their_own_candidates():
    # the GPU request can only sit on h5; the others fill around it and must not take its place
    hosts_frame, _ = packing_fleet(hosts=6, gpu_host=5)
    requests_frame = requests_table(
        *[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v} for i, v in enumerate(SIZES)],
        {"request_id": "gpu", "vcpu": 2, "ram_gib": 2, "gpu": 1, "gpu_model": "A100"})
    options = PlanOptions(mode="whole", hot_spot_price=0.0, workers=1)
    problem, ffd = problem_and_ffd(hosts_frame, requests_frame, options)
    packed, stats = consolidate(problem, ffd, max_moves=2000, seed=0)
    gpu_requests = [r for r in range(problem.n_requests) if problem.demand[r][GPU] > 0]
    assert len(gpu_requests) == 1
    assert all(packed.parts[r][0][0] == 5 for r in gpu_requests)
    assert stats.detail["hosts_emptied"] >= 1
    assert (host_usage(problem, packed) <= problem.free).all()


def test_multi_part_requests_stay_and_pin_their_hosts():
    options = PlanOptions(mode="sharded", workers=1)
    problem, ffd = problem_and_ffd(*packing_fleet(), options)
    # split one request over two hosts by hand: it cannot move, and neither host may be emptied
    r = 0
    (h, v, m, n, g), = ffd.parts[r]
    other = next(x for x in range(problem.n_hosts) if x != h and host_usage(problem, ffd)[x].sum() > 0)
    ffd.parts[r] = [(h, v - 1, m - 1, n, g), (other, 1, 1, n, g)]
    pinned = {h, other}
    packed, _ = consolidate(problem, ffd, max_moves=2000, seed=0)
    assert packed.parts[r] == ffd.parts[r]
    assert all(host_usage(problem, packed)[x].sum() > 0 for x in pinned)


def test_whole_mode_plan_uses_consolidation_and_passes_the_checker():
    hosts_frame, requests_frame = packing_fleet()
    options = PlanOptions(mode="whole", hot_spot_price=0.0, workers=1, time_limit_s=2, lp_bound=False)
    result = plan(hosts_frame, requests_frame, options)
    assert result.plan_json["consolidation"]["movable_requests"] == len(SIZES)
    assert result.shards["host_id"].n_unique() == 3
    assert check_plan(hosts_frame, requests_frame, result.shards, result.requests_out, options.to_dict()) == []


def test_consolidation_is_skipped_while_requests_wait():
    # more demand than the fleet holds: packing tighter is not the goal, placing more is
    hosts_frame, requests_frame = packing_fleet(sizes=SIZES * 3, hosts=6)
    options = PlanOptions(mode="whole", hot_spot_price=0.0, workers=1, time_limit_s=1, lp_bound=False)
    result = plan(hosts_frame, requests_frame, options)
    assert result.plan_json["unplaced"] > 0
    assert result.plan_json["consolidation"] is None


def test_emptied_hosts_of_a_symmetry_group_leave_the_used_ones_first_in_line():
    # one rack: the six identical empty hosts form one symmetry group, which CP-SAT opens in order; the
    # host consolidation empties may be any of them, so the plan is relabelled onto the group's first
    hosts_frame = hosts_table(*[{"host_id": f"h{i}", "rack": "r1", "vcpu": 10, "ram_gib": 100} for i in range(6)])
    requests_frame = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v} for i, v in enumerate(SIZES)])
    problem, ffd = problem_and_ffd(hosts_frame, requests_frame, PlanOptions(mode="whole", hot_spot_price=0.0, workers=1))
    assert len(problem.symmetry_groups) == 1
    group = [int(h) for h in problem.symmetry_groups[0]]
    packed, stats = consolidate(problem, ffd, max_moves=2000, seed=0)
    assert stats.detail["hosts_emptied"] == 1
    used = sorted(int(h) for h in np.flatnonzero(host_usage(problem, packed).sum(axis=1) > 0))
    assert used == group[:3]
