"""Ruin and recreate (shardplan.planner.search.recreate): places more priority-weighted demand than first fit where the
fleet cannot hold everything, keeps every invariant and each request on its own candidates, is never
worse than its start and is reproducible for a seed."""
from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import typer

from shardplan.data.generator import generate_fleet
from shardplan.models.problem import GPU, Assignment, canonical_groups, evaluate, host_usage
from shardplan.planner.cli.common import resolve_options
from shardplan.planner.engine import plan
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.recreate import ruin_and_recreate
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, problem_and_ffd, requests_table


def two_host_fleet(sizes=(7, 5, 5, 4, 4)):
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
    assert runs[0][0].parts == runs[1][0].parts and runs[0][1].kept == runs[1][1].kept
    # only no-worse moves are kept, and the objective kept along the way is the true one
    assert runs[0][1].improved > 0 and runs[0][1].final_objective < runs[0][1].start_objective
    assert evaluate(problem, runs[0][0]).total == runs[0][1].final_objective
    assert (host_usage(problem, runs[0][0]) <= problem.free).all()
    for r in np.flatnonzero(runs[0][0].placed):  # every part on one of the request's own candidates
        assert {p[0] for p in runs[0][0].parts[r]} <= set(problem.compute_candidates[r].tolist())
        assert set(runs[0][0].storage_hosts[r]) <= set(problem.storage_candidates[r].tolist())


def test_a_gpu_request_only_lands_where_its_model_is():
    # the T4 host is the roomiest, so a split tried roomiest first would reach it before the A100 host
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "vcpu": 10, "ram_gib": 10} for i in range(2)],
                        {"host_id": "a100", "rack": "r8", "vcpu": 10, "ram_gib": 10, "gpu": 2, "gpu_model": "A100"},
                        {"host_id": "t4", "rack": "r9", "vcpu": 32, "ram_gib": 32, "gpu": 4, "gpu_model": "T4"})
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v, "max_shards": 2}
                                for i, v in enumerate((7, 5, 5, 4, 4, 6, 9, 12))],
                              {"request_id": "gpu", "vcpu": 14, "ram_gib": 14, "gpu": 2, "gpu_model": "A100",
                               "max_shards": 2, "priority": 5})
    problem, _ = problem_and_ffd(hosts, requests, PlanOptions(mode="sharded", workers=1))
    start = Assignment.empty(problem.n_requests)  # nothing placed: every request goes through the insertion
    result, _ = ruin_and_recreate(problem, start, max_moves=300, seed=1)
    gpu = next(r for r in range(problem.n_requests) if problem.demand[r][GPU] > 0)
    assert result.placed[gpu]
    assert {h for h, v, m, n, g in result.parts[gpu] if g > 0} == {2}
    assert (host_usage(problem, result) <= problem.free).all()
    assert host_usage(problem, result)[3, GPU] == 0


def test_interchangeable_empty_hosts_are_relabelled_onto_the_first_members():
    # ten identical empty hosts on one rack: the CP-SAT symmetry rules open them in order, so the plan
    # handed over as a hint must use a prefix of them, whatever hosts the random moves picked
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": "r1", "vcpu": 10, "ram_gib": 40} for i in range(10)])
    requests = requests_table(*[{"request_id": f"q{i}", "vcpu": v, "ram_gib": v, "max_shards": 2}
                                for i, v in enumerate((15, 9, 8))])
    problem, _ = problem_and_ffd(hosts, requests, PlanOptions(mode="sharded", workers=1))
    assert len(problem.symmetry_groups) == 1
    group = [int(h) for h in problem.symmetry_groups[0]]
    scattered = Assignment.empty(problem.n_requests)
    for r, parts in ((0, [(group[7], 8, 8, 0, 0), (group[3], 7, 7, 0, 0)]), (2, [(group[7], 2, 2, 0, 0),
                                                                              (group[9], 6, 6, 0, 0)])):
        scattered.placed[r], scattered.parts[r] = True, parts
    relabelled = canonical_groups(problem, scattered)
    assert relabelled.parts[0] == [(group[0], 8, 8, 0, 0), (group[1], 7, 7, 0, 0)]
    assert relabelled.parts[2] == [(group[0], 2, 2, 0, 0), (group[2], 6, 6, 0, 0)]
    used = np.flatnonzero(host_usage(problem, relabelled).sum(axis=1) > 0).tolist()
    assert used == group[:3]
    # a group some request sees only in part is not reordered (its members are not alike for that request)
    partial = dataclasses.replace(problem, compute_candidates=[problem.compute_candidates[0][:5]]
                                  + list(problem.compute_candidates[1:]))
    assert canonical_groups(partial, scattered).parts == scattered.parts


def test_sharded_plan_on_an_over_demanded_fleet_runs_it_and_passes_the_checker():
    hosts, requests = generate_fleet(30, 80, seed=7)
    options = PlanOptions(mode="sharded", workers=1, time_limit_s=3, lp_bound=False)
    result = plan(hosts, requests, options)
    stats = result.plan_json["ruin_recreate"]
    assert stats is not None and stats["moves"] > 0
    assert stats["final_objective"] <= stats["start_objective"]
    assert result.plan_json["consolidation"] is None
    assert check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict()) == []


def test_options_that_would_leave_the_search_nothing_to_aim_at_are_refused():
    for bad in ({"unplaced_weight": 0.0}, {"recreate_moves_per_s": 0}, {"recreate_share": 1.0}):
        with pytest.raises(ValueError):
            PlanOptions(**bad).validate()
    with pytest.raises(typer.Exit) as exit_info:
        resolve_options(unplaced_weight=-1.0)
    assert exit_info.value.exit_code == 2


def test_the_search_reaches_hosts_the_models_top_k_ranks_out_and_the_model_keeps_them():
    # First fit puts 7 on h0 and 5,5 on h1. With top_k 1 the cheaper h1 is the only candidate of the two
    # 4s, and the 5s keep h1 (the warm start's host) alone, so the model can place 17 at most: 5,4 | 5,4
    # needs a 4 and a 5 on h0. The search sees every host that passes the filters (search_pair_budget),
    # and the hosts it used join the model's candidates.
    hosts, requests = two_host_fleet()
    hosts = hosts.with_columns(cost_per_hour=pl.Series([2.0, 1.0]))
    options = PlanOptions(mode="whole", top_k=1, workers=1, time_limit_s=2, lp_bound=False)
    narrow = plan(hosts, requests, options.replace(search_pair_budget=1))
    wide = plan(hosts, requests, options)
    vcpu = dict(zip(requests["request_id"], requests["vcpu"]))
    placed = {name: sum(vcpu[q] for q in result.shards["request_id"].unique()) for name, result in
              (("narrow", narrow), ("wide", wide))}
    assert placed == {"narrow": 17, "wide": 18}
    assert narrow.plan_json["ruin_recreate"]["top_k"] == 1 and wide.plan_json["ruin_recreate"]["top_k"] > 1
    assert wide.plan_json["solver"].startswith("ruin-recreate")  # the search's plan, kept by the model
    for r in np.flatnonzero(wide.assignment.placed):
        assert {p[0] for p in wide.assignment.parts[r]} <= set(wide.candidates.compute[r].tolist())
    assert check_plan(hosts, requests, wide.shards, wide.requests_out, options.to_dict()) == []


def test_explain_lists_the_hosts_a_request_sits_on_among_its_candidates_even_when_ranked_out(tmp_path):
    from shardplan.planner.report.explain import explain_request
    from shardplan.planner.report.export import write_plan_dir

    hosts, requests = two_host_fleet()
    hosts = hosts.with_columns(cost_per_hour=pl.Series([2.0, 1.0]))  # top_k 1 ranks h0 out for everyone
    options = PlanOptions(mode="whole", top_k=1, workers=1, time_limit_s=2, lp_bound=False)
    result = plan(hosts, requests, options)
    write_plan_dir(tmp_path / "p", hosts=hosts, requests=requests, shards=result.shards,
                   requests_out=result.requests_out, plan_json=result.plan_json)
    on_h0 = result.shards.filter(pl.col("host_id") == "h0")["request_id"].to_list()
    assert on_h0  # 5,4 | 5,4 puts two requests on h0
    for request_id in on_h0:
        why = explain_request(tmp_path / "p", request_id)
        assert "h0" in why.candidate_hosts["host_id"].to_list()


def test_ruins_drawn_by_fit_find_the_few_hosts_a_big_request_can_use():
    """A 16-GPU request split in two can only use the 2 GPU hosts among 40: uniform draws of 3 hosts find
    both in about 0.4% of the ruins; draws by fit in most of the half of the ruins that use them."""
    from shardplan.planner.search import recreate

    rows = [{"host_id": f"h{i:02d}", "rack": f"r{i % 4}", "vcpu": 64, "ram_gib": 256} for i in range(38)]
    rows += [{"host_id": f"g{i}", "rack": f"r{i}", "vcpu": 64, "ram_gib": 256, "gpu": 8, "gpu_model": "A100"}
             for i in range(2)]
    hosts = hosts_table(*rows)
    requests = requests_table({"request_id": "big", "vcpu": 64, "ram_gib": 128, "gpu": 16, "max_shards": 2})
    problem, _ = problem_and_ffd(hosts, requests, PlanOptions(time_limit_s=5, top_k=64))
    gpu_hosts = {h for h in problem.compute_candidates[0].tolist() if problem.free[h, GPU] > 0}
    assert len(gpu_hosts) == 2 and len(problem.compute_candidates[0]) > 10
    rng = np.random.default_rng(0)
    hits = sum(gpu_hosts <= set(recreate._ruined_hosts(problem, 0, rng).tolist()) for _ in range(400))
    assert hits > 100  # uniform draws: about 2
