"""The search budget: grants within the deadline, the wall-clock cap, and the CLI that keeps it."""
from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.data.generator import generate_fleet
from shardplan.planner.cli import app
from shardplan.planner.engine import plan
from shardplan.planner.search.budget import SearchBudget, Stop
from shardplan.planner.validate.options import OptionError, PlanOptions


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_grants_never_pass_the_deadline_less_what_comes_after():
    clock = FakeClock()
    budget = SearchBudget(60.0, deterministic=False, clock=clock)
    budget.set_aside(5.0, 10.0)
    clock.now += 20.0  # fixed phases took 20 s
    grant = budget.grant("search", 0.5)
    assert grant.seconds == pytest.approx(0.5 * (60 - 20 - 10))
    assert grant.wall_cap_s == pytest.approx(grant.seconds)
    clock.now += 45.0  # past the deadline: nothing more to give
    assert budget.grant("lns").seconds == 0.0 and budget.grant("lns").wall_cap_s == 0.0


def test_deterministic_grants_come_from_nominal_time_and_the_clock_only_caps():
    clock = FakeClock()
    budget = SearchBudget(40.0, deterministic=True, units_per_s=0.5, safety_factor=3.0, clock=clock)
    budget.set_aside(2.0, 6.0)
    clock.now += 30.0  # a slow machine: the nominal share is unchanged ...
    grant = budget.grant("search", 0.5)
    assert grant.seconds == pytest.approx(0.5 * (40 - 8)) and grant.units == pytest.approx(grant.seconds * 0.5)
    # ... but the wall cap is what is left to the deadline, less the time after the search
    assert grant.wall_cap_s == pytest.approx(40 - 30 - 6)
    clock.now += grant.wall_cap_s
    record = budget.charge(grant, used_s=2.0, wall_s=grant.wall_cap_s, stopped_by=Stop.BUDGET)
    assert record.stopped_by == Stop.WALL_CAP and budget.cap_fired
    assert budget.nominal_left() == pytest.approx(40 - 8 - 2.0)


def test_set_aside_never_takes_more_than_most_of_the_limit():
    budget = SearchBudget(10.0, clock=FakeClock())
    budget.set_aside(30.0, 10.0)
    assert budget.before_s + budget.after_s == pytest.approx(6.0)


def test_every_phase_is_recorded_in_plan_json():
    hosts, requests = generate_fleet(24, 60, seed=4)
    result = plan(hosts, requests, PlanOptions(time_limit_s=3, workers=1))
    phases = [p["phase"] for p in result.plan_json["budget"]["phases"]]
    for name in ("fleet", "warm_start", "candidates", "cp_sat", "lns", "bound", "assign", "check"):
        assert name in phases
    granted = [p for p in result.plan_json["budget"]["phases"] if p["granted_s"] is not None]
    assert sum(p["granted_s"] for p in granted if p["phase"] != "bound") <= 3.0 + 1e-6


def test_option_errors_name_the_flag_the_env_variable_or_the_field(tmp_path, monkeypatch):
    with pytest.raises(OptionError, match="time_limit_s = -1"):
        PlanOptions(time_limit_s=-1).validate()
    monkeypatch.setenv("SHARDPLAN_TOP_K", "0")
    with pytest.raises(OptionError, match="SHARDPLAN_TOP_K = 0"):
        PlanOptions.from_env()
    monkeypatch.delenv("SHARDPLAN_TOP_K")
    hosts, requests = generate_fleet(12, 20, seed=1)
    hosts.write_parquet(tmp_path / "h.parquet")
    requests.write_parquet(tmp_path / "r.parquet")
    result = CliRunner().invoke(app, ["plan", "--hosts", str(tmp_path / "h.parquet"), "--requests",
                                      str(tmp_path / "r.parquet"), "--out", str(tmp_path / "p"), "--time-limit", "-1"])
    assert result.exit_code == 2 and "--time-limit = -1" in result.output


@pytest.fixture
def tables(tmp_path):
    hosts, requests = generate_fleet(16, 30, seed=2)
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests.write_parquet(tmp_path / "requests.parquet")
    return ["--hosts", str(tmp_path / "hosts.parquet"), "--requests", str(tmp_path / "requests.parquet"),
            "--time-limit", "2", "--workers", "1"]


def test_out_is_checked_before_solving_and_a_plan_is_replaced_only_with_force(tmp_path, tables):
    runner = CliRunner()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    bad = runner.invoke(app, ["plan", *tables, "--out", str(blocker / "plan")])
    assert bad.exit_code == 2 and "not writable" in bad.output and "Traceback" not in bad.output
    out = tmp_path / "plan"
    assert runner.invoke(app, ["plan", *tables, "--out", str(out)]).exit_code == 0
    (out / "moves.parquet").write_bytes(b"an older run's file")
    again = runner.invoke(app, ["plan", *tables, "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output
    assert (out / "moves.parquet").exists()  # refused: nothing touched
    forced = runner.invoke(app, ["plan", *tables, "--out", str(out), "--force", "--json"])
    assert forced.exit_code == 0, forced.output
    figures = json.loads(forced.stdout.strip().splitlines()[-1])
    assert figures["requests_placed"] + figures["requests_unplaced"] == 30
    assert figures["reservation_blocks_held"] == 0 and figures["status"] in ("optimal", "feasible")
    assert not (out / "moves.parquet").exists()  # stale file of the older run removed
    assert runner.invoke(app, ["check", str(out)]).exit_code == 0


def test_version_and_ids_kept_whole(tmp_path, tables):
    runner = CliRunner()
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("shardplan ")
    result = runner.invoke(app, ["plan", *tables, "--out", str(tmp_path / "p")])
    assert str(tmp_path / "p") in result.output.replace("\n", "")
    out = pl.read_parquet(tmp_path / "p" / "requests.parquet")
    assert out.height == 30


def test_a_later_command_in_the_same_process_gets_its_whole_time_limit(tmp_path, monkeypatch):
    """`--time-limit` counts from the command's start: in a process that ran commands before (CliRunner in
    tests, a caller of `app`), the clock restarts, instead of counting from the module's import."""
    import json

    from typer.testing import CliRunner

    from shardplan.planner.cli import app, common
    hosts, requests = generate_fleet(8, 12, seed=3)
    hosts.write_parquet(tmp_path / "h.parquet")
    requests.write_parquet(tmp_path / "r.parquet")
    monkeypatch.setattr(common, "COMMAND_STARTED", common.COMMAND_STARTED - 1000.0)  # imported long ago
    monkeypatch.setattr(common, "_invocations", 1)                                # and ran a command since
    result = CliRunner().invoke(app, ["plan", "--hosts", str(tmp_path / "h.parquet"), "--requests",
                                      str(tmp_path / "r.parquet"), "--out", str(tmp_path / "p"), "--time-limit", "5"])
    assert result.exit_code == 0, result.output
    budget = json.loads((tmp_path / "p" / "plan.json").read_text())["budget"]
    assert budget["elapsed_s"] < 5 and not budget["wall_clock_cap_fired"]
