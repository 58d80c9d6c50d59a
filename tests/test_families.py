"""Each constraint family of the CP-SAT model built alone on a three-host fleet: one case where it binds,
one where it must not. The model is built from the engine's public stages (build_fleet, find_candidates,
build_problem) and edited through PlacementModel, as a what-if would."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shardplan.models.placement import (
    FAMILIES,
    PlacementModel,
    add_capacity,
    add_capacity_cover,
    add_demand,
    add_part_links,
    add_replica_racks,
    add_span_limit,
    add_zone,
)
from shardplan.models.problem import PlanStatus
from shardplan.planner.engine import build_problem
from shardplan.planner.search.candidates import build_fleet, find_candidates
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, requests_table, three_hosts

OPTIONS = PlanOptions(workers=1, time_limit_s=5)


def problem_for(hosts, requests, **changes):
    """The placement problem of the tables in request order, every host that passes the filters a candidate."""
    options = OPTIONS.replace(top_k=10, **changes)
    fleet = build_fleet(hosts)
    candidates = find_candidates(fleet, requests, options)
    return build_problem(fleet, requests, candidates, options, np.arange(requests.height))


def solve_with(problem, *families):
    model = PlacementModel.build(problem, families=tuple((f.__name__, f) for f in families))
    solution = model.solve()
    assert solution.result.status == PlanStatus.OPTIMAL
    return solution.assignment


def placed(assignment, r=0) -> bool:
    return bool(assignment.placed[r])


BASE = (add_demand, add_part_links)


def test_demand_makes_parts_add_up():
    problem = problem_for(three_hosts(), requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 16, "max_shards": 2}))
    loose = solve_with(problem)  # without the family "placed" costs nothing and needs no parts
    assert placed(loose) and sum(p[1] for p in loose.parts[0]) != 8
    tight = solve_with(problem, add_demand, add_part_links)
    assert placed(tight) and sum(p[1] for p in tight.parts[0]) == 8 and sum(p[2] for p in tight.parts[0]) == 16


def test_part_links_carry_local_ram_per_vcpu():
    short = problem_for(three_hosts(), requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 2}),
                        min_local_ram_gib_per_vcpu=0.0)
    short = dataclasses.replace(short, local_ram_per_vcpu=(500, 1000))  # the rule, built on this problem
    assert placed(solve_with(short, add_demand))                        # the family absent: placed
    assert not placed(solve_with(short, add_demand, add_part_links))    # binds: 2 GiB < 0.5 × 8
    enough = problem_for(three_hosts(), requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 4}))
    assert placed(solve_with(enough, add_demand, add_part_links))       # 4 GiB = 0.5 × 8: must not bind


def test_span_limit():
    # no spread charge: its counter's domain (0 .. max_shards - 1 extra hosts) would bound the span by itself
    wide = problem_for(three_hosts(), requests_table({"request_id": "a", "vcpu": 40, "ram_gib": 60, "max_shards": 2}),
                       spread_weight_medium=0.0)
    assert placed(solve_with(wide, *BASE, add_capacity))                        # without it: three hosts
    assert not placed(solve_with(wide, *BASE, add_capacity, add_span_limit))    # binds: 40 vcpu need 3 hosts
    fits = problem_for(three_hosts(), requests_table({"request_id": "a", "vcpu": 30, "ram_gib": 60, "max_shards": 2}))
    assert placed(solve_with(fits, *BASE, add_capacity, add_span_limit))


def test_capacity():
    one_host = three_hosts(h2={"vcpu": 0}, h3={"vcpu": 0})   # only h1 can run vcpu
    pair = lambda vcpu: requests_table(*[{"request_id": f"r{i}", "vcpu": vcpu, "ram_gib": 8} for i in range(2)])  # noqa: E731
    count = lambda a: int(a.placed.sum())  # noqa: E731
    assert count(solve_with(problem_for(one_host, pair(10)), *BASE, add_span_limit)) == 2               # 20 on 16
    assert count(solve_with(problem_for(one_host, pair(10)), *BASE, add_span_limit, add_capacity)) == 1  # binds
    assert count(solve_with(problem_for(one_host, pair(8)), *BASE, add_span_limit, add_capacity)) == 2   # 16 fit


def test_capacity_cover_is_a_valid_volume_cut():
    requests = requests_table(*[{"request_id": f"r{i}", "vcpu": 15, "ram_gib": 16} for i in range(4)])
    problem = problem_for(three_hosts(), requests)
    count = lambda a: int(a.placed.sum())  # noqa: E731
    assert count(solve_with(problem, *BASE)) == 4                          # nothing bounds the volume
    assert count(solve_with(problem, *BASE, add_capacity_cover)) == 3      # binds: 60 vcpu > 48 in all
    three = problem_for(three_hosts(), requests.head(3))
    assert count(solve_with(three, *BASE, add_capacity_cover)) == 3        # 45 ≤ 48: must not bind


def test_zone():
    hosts = hosts_table({"host_id": "h1", "zone": "z1", "rack": "r1", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h2", "zone": "z2", "rack": "r2", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h3", "zone": "z2", "rack": "r3", "vcpu": 4, "ram_gib": 64})
    split = problem_for(hosts, requests_table({"request_id": "a", "vcpu": 24, "ram_gib": 48, "max_shards": 2}))
    # the zone-capacity filter rules this request out before any model: offer it every host, to test the model
    split = dataclasses.replace(split, compute_candidates=[np.arange(3)], gpu_ok=[np.ones(3, dtype=bool)],
                                unplaced_weight=np.array([10**9]))
    assert placed(solve_with(split, *BASE, add_capacity))                  # across the two zones
    assert not placed(solve_with(split, *BASE, add_capacity, add_zone))    # binds: z2 holds 20 vcpu
    fits = problem_for(hosts, requests_table({"request_id": "a", "vcpu": 20, "ram_gib": 48, "max_shards": 2}))
    assert placed(solve_with(fits, *BASE, add_capacity, add_zone))


def test_replica_racks():
    one_rack = three_hosts(h2={"rack": "r1"}, h3={"rack": "r1"})
    copies = requests_table({"request_id": "a", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "replicas": 2})
    assert placed(solve_with(problem_for(one_rack, copies), *BASE, add_capacity))
    assert not placed(solve_with(problem_for(one_rack, copies), *BASE, add_capacity, add_replica_racks))  # one rack
    solution = solve_with(problem_for(three_hosts(), copies), *BASE, add_capacity, add_replica_racks)
    assert placed(solution) and len(set(solution.storage_hosts[0])) == 2


ONE_RACK = three_hosts(h2={"rack": "r1"}, h3={"rack": "r1"})  # three interchangeable empty hosts


def test_symmetry_breaking_opens_interchangeable_hosts_in_order():
    requests = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 16})
    problem = problem_for(ONE_RACK, requests)
    assert len(problem.symmetry_groups) == 1 and len(problem.symmetry_groups[0]) == 3
    first = int(problem.symmetry_groups[0][0])
    model = PlacementModel.build(problem, without=("symmetry_breaking",))
    model.add_family("last_host_only", lambda m, p, v: [m.Add(u == 0) for u in v.use[0][:-1]])
    assert model.solve().assignment.parts[0][0][0] != first   # free to use another member
    ordered = PlacementModel.build(problem)
    ordered.add_family("last_host_only", lambda m, p, v: [m.Add(u == 0) for u in v.use[0][:-1]])
    assert not placed(ordered.solve().assignment)   # binds: the first member must open first, so it cannot go
    two = problem_for(ONE_RACK, requests_table(*[{"request_id": f"r{i}", "vcpu": 16, "ram_gib": 16} for i in range(2)]))
    assert solve_with(two, *(f for _, f in FAMILIES)).placed.all()  # must not bind: two hosts, in order


def test_an_objective_term_added_by_a_caller_is_minimised_and_read_back():
    problem = problem_for(three_hosts(h1={"cost_per_hour": 1.0}, h2={"cost_per_hour": 1.0}, h3={"cost_per_hour": 1.0}),
                          requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8}), symmetry_breaking=False)
    model = PlacementModel.build(problem)
    # a what-if's preference: using the first candidate costs 5 $/h-equivalent (5,000 solver units)
    model.add_term("avoid_first", 5000 * model.vars.use[0][0])
    with pytest.raises(ValueError):
        model.add_term("spread", 0)
    solution = model.solve()
    assert solution.assignment.parts[0][0][0] != int(problem.compute_candidates[0][0])
    assert solution.extra_terms == {"avoid_first": 0}
    with pytest.raises(ValueError, match="unknown constraint families"):
        PlacementModel.build(problem, without=("no_such_family",))


def test_a_complete_hint_makes_cp_sat_report_a_solution_within_any_budget():
    requests = requests_table(*[{"request_id": f"r{i}", "vcpu": 4, "ram_gib": 8} for i in range(6)])
    problem = dataclasses.replace(problem_for(three_hosts(), requests), time_limit_s=0.001, wall_limit_s=0.5)
    from shardplan.models.problem import Assignment
    hint = Assignment(np.ones(6, dtype=bool), [[(int(problem.compute_candidates[r][0]), 4, 8, 0, 0)] for r in range(6)],
                      [[] for _ in range(6)])
    solution = PlacementModel.build(dataclasses.replace(problem, symmetry_groups=[])).solve(hint)
    assert solution.result.status.has_solution and solution.terms.unplaced == 0


def test_the_engines_cp_sat_phase_always_holds_the_warm_start():
    from shardplan.data.generator import generate_fleet
    from shardplan.planner.engine import plan

    hosts, requests = generate_fleet(40, 100, seed=5)
    result = plan(hosts, requests, PlanOptions(time_limit_s=6, workers=1, lp_bound=False))
    assert result.plan_json["cp_sat"]["status"] in ("optimal", "feasible")
    assert result.plan_json["cp_sat"]["objective"] <= result.plan_json["warm_start"]["objective"] + 1e-6
