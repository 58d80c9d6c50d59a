"""Engine stages: FFD baselines, LNS improvement, the FFD fallback label, explain and the full CLI round trip."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
from typer.testing import CliRunner

from shardplan.data.generator import generate_fleet
from shardplan.models.problem import evaluate
from shardplan.planner.cli import app
from shardplan.planner.engine import plan, plan_ffd
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.lns import improve, subproblem
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import problem_and_ffd


def small_problem(seed=5, hosts=30, requests=70):
    host_table, request_table = generate_fleet(hosts, requests, seed=seed)
    return problem_and_ffd(host_table, request_table, PlanOptions(workers=1, time_limit_s=4, lp_bound=False))


def test_ffd_plans_pass_the_checker_and_sharded_places_at_least_as_much():
    hosts, requests = generate_fleet(40, 90, seed=2)
    options = PlanOptions(workers=1)
    whole = plan_ffd(hosts, requests, options.replace(mode="whole"), sharded=False)
    sharded = plan_ffd(hosts, requests, options, sharded=True)
    for result in (whole, sharded):
        assert check_plan(hosts, requests, result.shards, result.requests_out, result.options.to_dict()) == []
    assert sharded.plan_json["placed"] >= whole.plan_json["placed"]
    single = whole.shards.filter(pl.col("role") != "replica").group_by("request_id").agg(pl.col("host_id").n_unique())
    assert single.filter(pl.col("host_id") > 1).height == 0  # whole mode: one host per VM (copy 0 beside it)


def test_subproblem_objective_delta_matches_the_full_problem():
    problem, hint = small_problem()
    requests = [int(r) for r in np.flatnonzero(hint.placed)[:5]] + [int(r) for r in np.flatnonzero(~hint.placed)[:3]]
    hosts = set()
    for r in requests:
        hosts |= {int(h) for h in problem.compute_candidates[r][:6]}
        hosts |= {p[0] for p in hint.parts[r]} | set(hint.storage_hosts[r])
    sub, released = subproblem(problem, hint, requests, hosts, 1.0)
    # dropping one placed request changes both objectives by the same amount
    changed = type(released)(released.placed.copy(), list(released.parts), list(released.storage_hosts))
    changed.placed[0] = False
    full = type(hint)(hint.placed.copy(), list(hint.parts), list(hint.storage_hosts))
    full.placed[requests[0]] = False
    assert evaluate(sub, changed).total - evaluate(sub, released).total == \
        evaluate(problem, full).total - evaluate(problem, hint).total


def test_lns_never_worsens_and_stays_feasible():
    problem, hint = small_problem()
    start = evaluate(problem, hint).total
    best, stats = improve(problem, hint, budget_s=0.5, seed=1, sub_time_s=0.3)
    assert stats.moves > 0
    assert evaluate(problem, best).total <= start
    assert stats.final_objective == evaluate(problem, best).total


def test_plan_labels_and_reports_every_phase():
    hosts, requests = generate_fleet(30, 70, seed=9)
    result = plan(hosts, requests, PlanOptions(workers=1, time_limit_s=8, lp_bound=True))  # the LP gets 1 s of it
    j = result.plan_json
    assert j["status"] in ("optimal", "feasible")
    assert j["best_bound"] is not None and j["best_bound"] <= j["objective"] + 1e-6
    assert 0 <= j["gap"] <= 1
    assert j["objective"] <= j["baseline_ffd"]["objective"] + 1e-6  # never worse than the warm start
    assert j["lp_relaxation"]["status"] == "optimal"
    assert check_plan(hosts, requests, result.shards, result.requests_out, j["options"]) == []


def test_cli_plan_check_explain_diff_round_trip(tmp_path):
    hosts, requests = generate_fleet(24, 60, seed=4)
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests.write_csv(tmp_path / "requests.csv")
    runner = CliRunner()
    common = ["--hosts", str(tmp_path / "hosts.parquet"), "--requests", str(tmp_path / "requests.csv"),
              "--time-limit", "3", "--workers", "1"]
    a = runner.invoke(app, ["plan", *common, "--out", str(tmp_path / "a")])
    assert a.exit_code == 0, a.output
    b = runner.invoke(app, ["plan", *common, "--out", str(tmp_path / "b"), "--mode", "whole"])
    assert b.exit_code == 0, b.output
    check = runner.invoke(app, ["check", str(tmp_path / "a")])
    assert check.exit_code == 0 and "hold" in check.output
    out = pl.read_parquet(tmp_path / "a" / "requests.parquet")
    placed = out.filter(pl.col("status") == "placed")["request_id"][0]
    explained = runner.invoke(app, ["explain", str(tmp_path / "a"), placed])
    assert explained.exit_code == 0 and placed in explained.output and "parts" in explained.output
    unplaced = out.filter(pl.col("status") == "unplaced")["request_id"]
    if unplaced.len():
        why = runner.invoke(app, ["explain", str(tmp_path / "a"), unplaced[0]])
        assert why.exit_code == 0 and "unplaced" in why.output and "ruled out" in why.output
    diff = runner.invoke(app, ["diff", str(tmp_path / "a"), str(tmp_path / "b"), "--json",
                               "--parquet", str(tmp_path / "diff.parquet")])
    assert diff.exit_code == 0, diff.output
    assert isinstance(json.loads(diff.output), dict)
    assert (tmp_path / "diff.parquet").exists()
    # a broken plan directory is caught by check with exit 1
    shards = pl.read_parquet(tmp_path / "a" / "shards.parquet")
    shards.with_columns(pl.col("vcpu") * 50).write_parquet(tmp_path / "a" / "shards.parquet")
    broken = runner.invoke(app, ["check", str(tmp_path / "a")])
    assert broken.exit_code == 1


def test_nightly_on_demo(tmp_path):
    result = CliRunner().invoke(app, ["nightly", "--out", str(tmp_path / "n"), "--time-limit", "4", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["check", str(tmp_path / "n")]).exit_code == 0
    plan_json = json.loads((tmp_path / "n" / "plan.json").read_text())
    assert plan_json["placed"] > 0 and plan_json["options"]["time_limit_s"] == 4


def test_a_request_no_host_can_hold_does_not_stop_the_search():
    """The only unplaced request has no candidate (it weighs 0 in the objective): LNS must still run, not
    draw its seed from all-zero weights (it raised 'probabilities contain NaN')."""
    from shardplan.planner.engine import plan
    from shardplan.planner.validate.options import PlanOptions
    from tests.fleets import hosts_table, requests_table

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "zone": "z1", "vcpu": 16, "ram_gib": 64,
                           "used_vcpu": 4 * (i % 2), "used_ram_gib": 8} for i in range(6)])
    requests = requests_table(*[{"request_id": f"q{i:02d}", "vcpu": 12 if i < 4 else 4, "ram_gib": 24,
                                 "max_shards": 3} for i in range(12)],
                              {"request_id": "big", "vcpu": 40, "ram_gib": 8, "max_shards": 1})
    result = plan(hosts, requests, PlanOptions(time_limit_s=4, lp_bound=False))
    out = dict(zip(result.requests_out["request_id"], result.requests_out["status"]))
    assert out.pop("big") == "unplaced" and set(out.values()) == {"placed"}
    assert result.plan_json["lns"] is not None  # the search this is about ran


def test_gpu_aware_fit_leaves_a_gpu_hosts_vcpu_to_the_next_gpu_request():
    # one GPU host (16 vcpu, 2 GPUs) and a CPU host; a spanning GPU request (14 vcpu) and a one-host one
    # (8 vcpu). First fit puts the first whole on the GPU host and the second finds 2 vcpu there; GPU-aware,
    # the first keeps to its GPU's share of the host (8 vcpu) and puts the rest on the CPU host
    from shardplan.planner.engine import run_ffd
    from shardplan.planner.search.candidates import build_fleet
    from tests.fleets import hosts_table, requests_table

    hosts = hosts_table({"host_id": "g", "rack": "r1", "vcpu": 16, "ram_gib": 64, "gpu": 2, "gpu_model": "a100"},
                        {"host_id": "c", "rack": "r2", "vcpu": 32, "ram_gib": 128})
    requests = requests_table(
        {"request_id": "big", "vcpu": 14, "ram_gib": 28, "gpu": 1, "gpu_model": "a100", "max_shards": 2},
        {"request_id": "one", "vcpu": 8, "ram_gib": 16, "gpu": 1, "gpu_model": "a100", "max_shards": 1})
    options = PlanOptions(time_limit_s=5)
    fleet = build_fleet(hosts)
    classic, _ = run_ffd(fleet, requests, options, sharded=True)
    aware, _ = run_ffd(fleet, requests, options, sharded=True, gpu_aware=True)
    assert classic.placed.tolist() == [True, False]
    assert aware.placed.tolist() == [True, True]
    big = aware.parts[0]
    assert sorted((h, v, g) for h, v, _, _, g in big) == [(0, 8, 1), (1, 6, 0)]
    result = plan(hosts, requests, options)
    assert result.report.placed == 2
    assert check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict()) == []
