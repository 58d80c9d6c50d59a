"""Odd but valid inputs end in a valid plan: each request no host can hold is unplaced with its reason."""
from __future__ import annotations

import polars as pl
import pytest

import shardplan.planner.engine as engine
from shardplan.models.problem import Assignment
from shardplan.planner.engine import plan
from shardplan.planner.report.checker import check_plan
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, requests_table, three_hosts


def _reason(result, request_id: str) -> str:
    row = result.requests_out.filter(pl.col("request_id") == request_id)
    assert row["status"][0] == "unplaced"
    return row["reason"][0]


def test_a_vcpu_only_request_in_whole_mode_is_unplaced_not_a_broken_plan():
    # VMP_A103 has items like this one: 120 vcpu, no RAM; whole mode cannot give it local RAM (invariant 4)
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "vcpu": 128, "ram_gib": 512} for i in range(3)])
    requests = requests_table({"request_id": "cpu-only", "vcpu": 120, "ram_gib": 0},
                              {"request_id": "normal", "vcpu": 8, "ram_gib": 32})
    for mode in ("whole", "sharded"):
        options = PlanOptions(mode=mode, time_limit_s=2, workers=1)
        result = plan(hosts, requests, options)
        assert check_plan(hosts, requests, result.shards, result.requests_out, options) == []
        assert "local-RAM rule" in _reason(result, "cpu-only")
        assert result.requests_out.filter(pl.col("request_id") == "normal")["status"][0] == "placed"
    # with the rule off (0 GiB per vcpu) the same request is valid and placed
    result = plan(hosts, requests, PlanOptions(mode="whole", time_limit_s=2, workers=1, min_local_ram_gib_per_vcpu=0))
    assert result.requests_out.filter(pl.col("request_id") == "cpu-only")["status"][0] == "placed"


@pytest.mark.parametrize("mode", ["whole", "sharded"])
def test_a_gpu_model_no_host_has_is_named_not_called_capacity(mode):
    hosts = three_hosts(h1={"gpu": 2, "gpu_model": "a100"})
    requests = requests_table({"request_id": "wants-h100", "vcpu": 4, "ram_gib": 16, "gpu": 1, "gpu_model": "h100",
                               "max_shards": 2})
    result = plan(hosts, requests, PlanOptions(mode=mode, time_limit_s=2, workers=1))
    reason = _reason(result, "wants-h100")
    assert reason.startswith("no host:") and "GPU of its model" in reason and "capacity" not in reason


def test_a_request_larger_than_every_zone_is_ruled_out_and_does_not_weigh_on_the_objective():
    hosts = three_hosts()
    small = requests_table({"request_id": "fits", "vcpu": 4, "ram_gib": 8})
    giant = requests_table({"request_id": "fits", "vcpu": 4, "ram_gib": 8},
                           {"request_id": "giant", "vcpu": 10_000, "ram_gib": 40_000, "max_shards": 3})
    options = PlanOptions(time_limit_s=2, workers=1)
    alone, with_giant = plan(hosts, small, options), plan(hosts, giant, options)
    assert "zones whose free capacity" in _reason(with_giant, "giant")
    assert with_giant.plan_json["objective"] == pytest.approx(alone.plan_json["objective"])
    assert with_giant.plan_json["objective_terms"]["ruled_out_penalty_not_in_total"] > 1e6
    assert with_giant.plan_json["gap"] is not None and with_giant.plan_json["gap"] < 0.5


def test_a_checker_failure_falls_back_to_the_best_valid_plan(monkeypatch):
    hosts = three_hosts()
    requests = requests_table(*[{"request_id": f"r{i}", "vcpu": 8, "ram_gib": 8} for i in range(8)])  # 6 fit
    real_solve = engine.solve

    def broken_solve(problem, hint, *args, **kwargs):
        found = real_solve(problem, hint, *args, **kwargs)
        # a bug in a search: every request crammed onto host 0, past its capacity (and so "better")
        parts = [[(0, int(d[0]), int(d[1]), int(d[3]), int(d[4]))] for d in problem.demand]
        found.assignment = Assignment(problem.demand[:, 0] >= 0, parts, [[] for _ in parts])
        found.label = "broken-search"
        return found

    monkeypatch.setattr(engine, "solve", broken_solve)
    options = PlanOptions(time_limit_s=2, workers=1)
    result = plan(hosts, requests, options)
    fallback = result.plan_json["checker_fallback"]
    assert fallback is not None and fallback["violation_count"] > 0 and fallback["plan"] == "warm start"
    assert "checker fallback" in result.plan_json["solver"]
    assert check_plan(hosts, requests, result.shards, result.requests_out, options) == []
    assert result.plan_json["placed"] == 6


def test_the_filter_counts_the_solver_saw_reach_requests_parquet_and_explain(tmp_path):
    from typer.testing import CliRunner

    from shardplan.planner.cli import app

    three_hosts(h1={"gpu": 2, "gpu_model": "a100"}, h3={"status": "down"}).write_parquet(tmp_path / "hosts.parquet")
    requests_table({"request_id": "wants-h100", "vcpu": 4, "ram_gib": 16, "gpu": 1, "gpu_model": "h100"},
                   {"request_id": "ok", "vcpu": 2, "ram_gib": 4}).write_parquet(tmp_path / "requests.parquet")
    runner = CliRunner()
    made = runner.invoke(app, ["plan", "--hosts", str(tmp_path / "hosts.parquet"), "--requests",
                               str(tmp_path / "requests.parquet"), "--out", str(tmp_path / "p"), "--time-limit", "2",
                               "--mode", "whole"])
    assert made.exit_code == 0, made.output
    counts = pl.read_parquet(tmp_path / "p" / "filters.parquet").filter(pl.col("request_id") == "wants-h100")
    assert dict(zip(counts["filter"], counts["hosts"])) == {"status": 1, "gpu_model": 2}
    reason = pl.read_parquet(tmp_path / "p" / "requests.parquet").filter(pl.col("request_id") == "wants-h100")["reason"][0]
    assert reason == "no host: 2 lack a free GPU of its model (whole: on the host; sharded: in the host's zone), " \
                     "1 not up (draining or down)"
    explained = runner.invoke(app, ["explain", str(tmp_path / "p"), "wants-h100"])
    assert explained.exit_code == 0 and "gpu_model" not in explained.output.split("unplaced")[0]
    assert "GPU of its model" in explained.output


def test_a_host_loaded_past_its_capacity_is_bad_input_naming_row_and_column(tmp_path):
    from typer.testing import CliRunner

    from shardplan.planner.cli import app
    from shardplan.planner.validate.inputs import InputError, check_hosts

    hosts = three_hosts().with_columns(pl.when(pl.col("host_id") == "h2").then(37).otherwise(pl.col("used_vcpu"))
                                       .alias("used_vcpu"))
    with pytest.raises(InputError, match=r"row 2.*used_vcpu.*exceeds its capacity 16"):
        check_hosts(hosts, "hosts.parquet")
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests_table({"request_id": "a", "vcpu": 2, "ram_gib": 4}).write_parquet(tmp_path / "requests.parquet")
    result = CliRunner().invoke(app, ["plan", "--hosts", str(tmp_path / "hosts.parquet"), "--requests",
                                      str(tmp_path / "requests.parquet"), "--out", str(tmp_path / "p")])
    assert result.exit_code == 2 and "used_vcpu" in result.output and not (tmp_path / "p").exists()


def test_a_flag_overrides_a_bad_environment_variable_and_the_variable_is_named_alone(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from shardplan.planner.cli import app

    three_hosts().write_parquet(tmp_path / "hosts.parquet")
    requests_table({"request_id": "a", "vcpu": 2, "ram_gib": 4}).write_parquet(tmp_path / "requests.parquet")
    common = ["plan", "--hosts", str(tmp_path / "hosts.parquet"), "--requests", str(tmp_path / "requests.parquet"),
              "--time-limit", "2"]
    monkeypatch.setenv("SHARDPLAN_TOP_K", "0")
    alone = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "a")])
    assert alone.exit_code == 2 and "SHARDPLAN_TOP_K = 0" in alone.output
    overridden = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--top-k", "5"])
    assert overridden.exit_code == 0, overridden.output


def test_a_host_with_only_nic_room_can_carry_part_of_a_split_requests_traffic():
    hosts = hosts_table({"host_id": "a", "rack": "r1", "vcpu": 4, "ram_gib": 8, "net_gbps": 5.0},
                        {"host_id": "b", "rack": "r2", "vcpu": 4, "ram_gib": 8, "net_gbps": 10.0,
                         "used_vcpu": 4, "used_ram_gib": 8})
    requests = requests_table({"request_id": "x", "vcpu": 2, "ram_gib": 4, "net_gbps": 8.0, "max_shards": 2})
    options = PlanOptions(time_limit_s=3, workers=1)
    result = plan(hosts, requests, options)
    assert check_plan(hosts, requests, result.shards, result.requests_out, options) == []
    assert result.requests_out["status"][0] == "placed"
    assert set(result.shards["host_id"]) == {"a", "b"}


def test_explain_and_diff_of_a_missing_plan_directory_exit_2_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from shardplan.planner.cli import app

    for args in (["explain", str(tmp_path / "nope"), "x"], ["diff", str(tmp_path / "nope"), str(tmp_path / "nah")]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "no such folder" in result.output and "Traceback" not in result.output
        assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped PlanDirError
