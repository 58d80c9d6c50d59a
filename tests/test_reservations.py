"""Pre-allocation: the sizing LP (newsvendor answer, capacity, quantile floor), blocks, the plan with
reservations (checker, real requests first) and the nightly pipeline end to end through the CLI."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.models.problem import SolveResult
from shardplan.models.reservations import ReservationProblem, solve_reservations
from shardplan.planner.cli import app
from shardplan.planner.report.checker import check_plan, check_plan_dir
from shardplan.planner.report.export import read_plan_dir, write_plan_dir
from shardplan.planner.reservations import (
    ReservationOptions,
    ReservationSizing,
    block_windows,
    class_capacity,
    peak_scenarios,
    plan_with_reservations,
    reservation_blocks,
    size_reservations,
    suitable_classes,
)
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, requests_table, three_hosts

WINDOW_START = datetime(2024, 6, 3, tzinfo=timezone.utc)
FAST = PlanOptions(time_limit_s=5.0, lp_bound=False)


def one_group(penalty: float, capacity: float = np.inf, floor: float = 0.0) -> ReservationProblem:
    """One group, one resource, peaks 10/20/30 with Swanson's weights, reserve price 1 $/unit-h."""
    return ReservationProblem(
        groups=("u1/web",), resources=("vcpu",), peaks=np.array([[[10.0, 20.0, 30.0]]]),
        probabilities=np.array([0.3, 0.4, 0.3]), floor=np.array([[floor]]), classes=("general",),
        class_capacity=np.array([[capacity]]), suits=np.array([[True]]), reserve_price=np.array([1.0]),
        shortfall_penalty=np.array([penalty]), window_hours=24.0)


# --- the sizing model --------------------------------------------------------------------------


@pytest.mark.parametrize("penalty, expected", [(10.0, 30.0), (2.0, 20.0), (1.25, 10.0), (0.5, 0.0)])
def test_sizing_is_the_newsvendor_critical_fractile(penalty, expected):
    # critical fractile 1 − price / penalty: 0.9 → P90 scenario, 0.5 → P50, 0.2 → P10 (CDF 0.3 / 0.7 / 1);
    # a penalty below the price reserves nothing
    solution = solve_reservations(one_group(penalty))
    assert solution.result.status == "optimal"
    assert solution.reserved[0, 0] == pytest.approx(expected)
    short = sum(w * max(d - expected, 0) for w, d in zip((0.3, 0.4, 0.3), (10, 20, 30)))
    assert solution.result.objective == pytest.approx(24 * (expected + penalty * short))
    assert solution.result.gap == 0.0 and solution.result.solver.startswith("pyomo/")


def test_class_capacity_binds_and_is_shared():
    assert solve_reservations(one_group(4.0, capacity=25.0)).reserved[0, 0] == pytest.approx(25.0)
    assert solve_reservations(one_group(4.0, capacity=1000.0)).reserved[0, 0] == pytest.approx(30.0)
    two = ReservationProblem(
        groups=("a/web", "b/web"), resources=("vcpu",), peaks=np.array([[[10.0, 20.0, 30.0]], [[10.0, 20.0, 30.0]]]),
        probabilities=np.array([0.3, 0.4, 0.3]), floor=np.zeros((2, 1)), classes=("general",),
        class_capacity=np.array([[40.0]]), suits=np.ones((2, 1), dtype=bool), reserve_price=np.array([1.0]),
        shortfall_penalty=np.array([4.0]))
    solution = solve_reservations(two)
    assert solution.reserved.sum() == pytest.approx(40.0)
    assert solution.by_class[:, 0, 0].sum() == pytest.approx(40.0)


def envelope_problem(capacity: float, shared: bool, prices=(1.0,)) -> ReservationProblem:
    """One group in two 4-hour windows, certain peaks 30 then 20, one or two classes."""
    n_classes = len(prices)
    return ReservationProblem(
        groups=("a/web@0", "a/web@1"), resources=("vcpu",), peaks=np.array([[[30.0] * 3], [[20.0] * 3]]),
        probabilities=np.array([0.3, 0.4, 0.3]), floor=np.zeros((2, 1)), classes=tuple(f"c{i}" for i in range(n_classes)),
        class_capacity=np.full((n_classes, 1), capacity), suits=np.ones((2, n_classes), dtype=bool),
        reserve_price=np.array(prices, dtype=float)[:, None], shortfall_penalty=np.array([10.0]),
        hours=np.array([4.0, 4.0]), envelope_of=np.array([0, 0]) if shared else None)


def test_windows_of_one_group_share_an_envelope_in_the_class_capacity():
    # held as one block sized by its larger window: 30 ≤ 40 fits, where two separate rows (50) would not
    shared = solve_reservations(envelope_problem(40.0, shared=True))
    assert shared.reserved[:, 0] == pytest.approx([30.0, 20.0])
    apart = solve_reservations(envelope_problem(40.0, shared=False))
    assert apart.reserved[:, 0].sum() == pytest.approx(40.0)
    assert shared.result.objective == pytest.approx(4 * 30 + 4 * 20)  # each window pays for its own hours


def test_each_class_is_priced_and_the_cheaper_one_is_used_first():
    cheap_first = solve_reservations(envelope_problem(25.0, shared=True, prices=(3.0, 1.0)))
    assert cheap_first.by_class[0, 1, 0] == pytest.approx(25.0) and cheap_first.by_class[0, 0, 0] == pytest.approx(5.0)
    assert cheap_first.reserved[:, 0] == pytest.approx([30.0, 20.0])
    # past the penalty a class is not worth reserving on: price 12 > penalty 10 leaves the peak short
    dear = solve_reservations(envelope_problem(25.0, shared=True, prices=(12.0, 1.0)))
    assert dear.reserved[0, 0] == pytest.approx(25.0)


def test_quantile_floor_binds_and_infeasible_floor_is_reported():
    assert solve_reservations(one_group(1.25)).reserved[0, 0] == pytest.approx(10.0)
    assert solve_reservations(one_group(1.25, floor=20.0)).reserved[0, 0] == pytest.approx(20.0)
    assert solve_reservations(one_group(4.0, floor=20.0)).reserved[0, 0] == pytest.approx(30.0)  # does not bind
    stuck = solve_reservations(one_group(4.0, capacity=5.0, floor=20.0))
    assert stuck.result.status == "infeasible" and stuck.reserved[0, 0] == 0.0


# --- forecast → scenarios → sizing --------------------------------------------------------------


def forecast_rows(groups: dict[tuple[str, str], tuple[float, float, float]], hours: int = 24) -> pl.DataFrame:
    """A flat forecast per group: (lo, point, hi) vcpu every hour; ram_gib = 4 × vcpu."""
    rows = []
    for (user, app_type), (lo, mid, hi) in groups.items():
        for h in range(hours):
            bump = 1.0 if h == 12 else 0.0  # the peak hour
            rows.append({"user_id": user, "app_type": app_type, "ts": WINDOW_START + timedelta(hours=h),
                         "vcpu": mid + bump, "vcpu_lo": lo + bump, "vcpu_hi": hi + bump,
                         "ram_gib": 4 * (mid + bump), "ram_gib_lo": 4 * (lo + bump), "ram_gib_hi": 4 * (hi + bump),
                         "model": "test"})
    return pl.DataFrame(rows)


def test_peak_scenarios_take_the_window_peak_of_each_percentile():
    peaks = peak_scenarios(forecast_rows({("u1", "web"): (2.0, 4.0, 7.0)}))
    vcpu = peaks.filter(pl.col("resource") == "vcpu").row(0, named=True)
    assert (vcpu["peak_p10"], vcpu["peak_p50"], vcpu["peak_p90"]) == (3.0, 5.0, 8.0)


def test_sizing_from_forecast_respects_host_classes_and_floor():
    hosts = hosts_table(
        {"host_id": "g1", "rack": "r1", "vcpu": 8, "ram_gib": 256, "host_class": "gpu", "gpu": 2, "gpu_model": "a100"},
        {"host_id": "c1", "rack": "r2", "vcpu": 64, "ram_gib": 256, "host_class": "general"},
    )
    classes = class_capacity(hosts)
    assert suitable_classes("ml-training", True, classes) == ["gpu"]
    assert suitable_classes("web", False, classes) == ["general"]
    assert suitable_classes("unknown-kind", False, classes) == ["general"]
    forecast = forecast_rows({("u1", "ml-training"): (8.0, 11.0, 19.0), ("u2", "web"): (2.0, 4.0, 7.0)})
    sizing = size_reservations(forecast, hosts, ReservationOptions(window_hours=24))
    by_group = {(r["user_id"], r["app_type"]): r for r in sizing.groups.iter_rows(named=True)}
    assert sizing.result.status == "optimal"
    assert by_group[("u1", "ml-training")]["reserved_vcpu"] == pytest.approx(8.0)  # the GPU class holds 8 vcpu
    assert by_group[("u2", "web")]["reserved_vcpu"] == pytest.approx(8.0)          # P90 peak (fractile 0.9)
    assert sizing.window_start == WINDOW_START and sizing.window_end == WINDOW_START + timedelta(hours=24)
    cheap = ReservationOptions(shortfall_penalty_per_unit_hour=0.0301, window_hours=24)  # fractile ≈ 0: P10 …
    assert size_reservations(forecast, None, cheap.replace(quantile_floor=0.0)).groups.filter(
        pl.col("app_type") == "web")["reserved_vcpu"][0] == pytest.approx(3.0)
    floored = size_reservations(forecast, None, cheap)                             # … unless the P50 floor binds
    assert floored.groups.filter(pl.col("app_type") == "web")["reserved_vcpu"][0] == pytest.approx(5.0)


def test_windows_are_sized_from_their_own_hours():
    hosts = hosts_table({"host_id": "c1", "rack": "r2", "vcpu": 64, "ram_gib": 256, "host_class": "general"})
    forecast = forecast_rows({("u2", "web"): (2.0, 4.0, 7.0)})   # 7 vcpu at P90, 8 in hour 12 only
    sizing = size_reservations(forecast, hosts, ReservationOptions())
    rows = sizing.groups.sort("window")
    assert rows["window"].to_list() == list(range(6))
    assert rows["window_start"].to_list() == [WINDOW_START + timedelta(hours=4 * w) for w in range(6)]
    assert rows["reserved_vcpu"].to_list() == pytest.approx([7, 7, 7, 8, 7, 7])
    blocks = reservation_blocks(sizing, hosts, None, PlanOptions(), ReservationOptions())
    assert blocks.select("request_id", "vcpu").rows() == [("rsv-u2-web-1", 8)]   # the envelope
    held = block_windows(sizing, blocks, PlanOptions())
    assert held["vcpu"].to_list() == [7, 7, 7, 8, 7, 7] and held.height == 6
    planned = plan_with_reservations(hosts, requests_table({"request_id": "r1", "vcpu": 50, "ram_gib": 100}),
                                     blocks, FAST, sizing)
    assert planned.reservations.height == 6 and set(planned.reservations["reservation_id"]) == {"rsv-u2-web-1"}
    assert planned.plan_json["reservations"]["reserved"]["vcpu"] == 8        # the host holds the peak window
    assert planned.plan_json["reservations"]["reserved_unit_hours"]["vcpu"] == pytest.approx(4 * 43)
    assert check_plan(hosts, planned.requests, planned.shards, planned.requests_out, FAST, planned.reservations) == []


def test_checker_counts_reservations_of_one_window_together_only():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    t0 = WINDOW_START

    def row(rid, start_h, end_h, vcpu):
        return {"reservation_id": rid, "host_id": "h1", "user_id": "u", "app_type": "web", "vcpu": vcpu,
                "ram_gib": 8, "storage_gib": 0, "net_gbps": 0.0, "gpu": 0,
                "window_start": t0 + timedelta(hours=start_h), "window_end": t0 + timedelta(hours=end_h)}

    empty = requests_table({"request_id": "r0", "vcpu": 1, "ram_gib": 1}).head(0)
    no_shards = pl.DataFrame(schema={"request_id": pl.Utf8, "shard": pl.Int64, "host_id": pl.Utf8,
                                     "replica": pl.Int64, "vcpu": pl.Int64, "ram_gib": pl.Int64,
                                     "storage_gib": pl.Int64, "net_gbps": pl.Float64, "gpu": pl.Int64, "role": pl.Utf8})
    no_out = pl.DataFrame(schema={"request_id": pl.Utf8, "status": pl.Utf8, "n_hosts": pl.Int64,
                                  "cost_per_hour": pl.Float64, "spread_penalty": pl.Float64, "reason": pl.Utf8})
    apart = pl.DataFrame([row("a", 0, 4, 10), row("b", 4, 8, 10)])
    assert check_plan(hosts, empty, no_shards, no_out, FAST, apart) == []
    together = pl.DataFrame([row("a", 0, 4, 10), row("b", 2, 8, 10)])
    violations = check_plan(hosts, empty, no_shards, no_out, FAST, together)
    assert [v.invariant for v in violations] == [2] and "vcpu 20" in violations[0].message


# --- blocks -------------------------------------------------------------------------------------


def sizing_of(rows: list[dict]) -> ReservationSizing:
    groups = pl.DataFrame([{"uses_gpu": False, **row} for row in rows])
    return ReservationSizing(SolveResult("optimal", 0.0, 0.0, 0.0, 0.0, "test"), groups, WINDOW_START,
                             WINDOW_START + timedelta(hours=24))


def test_blocks_split_amounts_within_block_size():
    hosts = hosts_table({"host_id": "g1", "rack": "r1", "vcpu": 96, "ram_gib": 768, "host_class": "gpu", "gpu": 8,
                         "gpu_model": "a100"})
    sizing = sizing_of([{"user_id": "u1", "app_type": "web", "reserved_vcpu": 39.2, "reserved_ram_gib": 10.0},
                        {"user_id": "u2", "app_type": "db", "reserved_vcpu": 2.0, "reserved_ram_gib": 300.0},
                        {"user_id": "u3", "app_type": "ml-training", "uses_gpu": True, "reserved_vcpu": 0.4,
                         "reserved_ram_gib": 20.0},
                        {"user_id": "u4", "app_type": "web", "reserved_vcpu": 0.0, "reserved_ram_gib": 0.0}])
    blocks = reservation_blocks(sizing, hosts, None, PlanOptions(), ReservationOptions())
    web = blocks.filter(pl.col("user_id") == "u1")
    assert web["request_id"].to_list() == ["rsv-u1-web-1", "rsv-u1-web-2", "rsv-u1-web-3"]
    assert sorted(web["vcpu"].to_list()) == [13, 13, 14] and web["vcpu"].sum() == 40
    assert (web["ram_gib"] >= 0.5 * web["vcpu"]).all()  # invariant 4: local RAM for a one-host block
    db = blocks.filter(pl.col("user_id") == "u2")
    assert db.height == 3 and db["ram_gib"].sum() == 300 and db["ram_gib"].max() <= 128
    gpu = blocks.filter(pl.col("user_id") == "u3").row(0, named=True)
    assert (gpu["vcpu"], gpu["gpu"], gpu["gpu_model"]) == (1, 1, "a100")
    assert blocks.filter(pl.col("user_id") == "u4").height == 0
    assert set(blocks["kind"]) == {"reservation"} and set(blocks["max_shards"]) == {1}


# --- reservations in the plan ---------------------------------------------------------------------


def blocks_for(hosts: pl.DataFrame, rows: list[dict]) -> tuple[pl.DataFrame, ReservationSizing]:
    sizing = sizing_of(rows)
    return reservation_blocks(sizing, hosts, None, PlanOptions(), ReservationOptions()), sizing


def test_plan_with_reservations_passes_the_checker(tmp_path):
    hosts = three_hosts()
    requests = requests_table({"request_id": "r1", "vcpu": 8, "ram_gib": 16},
                              {"request_id": "r2", "vcpu": 12, "ram_gib": 32, "max_shards": 2})
    blocks, sizing = blocks_for(hosts, [{"user_id": "u1", "app_type": "web", "reserved_vcpu": 6.0,
                                         "reserved_ram_gib": 12.0},
                                        {"user_id": "u2", "app_type": "db", "reserved_vcpu": 4.0,
                                         "reserved_ram_gib": 20.0}])
    planned = plan_with_reservations(hosts, requests, blocks, FAST, sizing)
    status = dict(zip(planned.requests_out["request_id"], planned.requests_out["status"]))
    assert status == {"r1": "placed", "r2": "placed", "rsv-u1-web-1": "reserved", "rsv-u2-db-1": "reserved"}
    assert not planned.shards["request_id"].str.starts_with("rsv-").any()
    assert planned.plan_json["placed"] == 2 and planned.plan_json["reserved"] == 2
    assert check_plan(hosts, planned.requests, planned.shards, planned.requests_out, FAST, planned.reservations) == []
    write_plan_dir(tmp_path / "plan", hosts=hosts, requests=planned.requests, shards=planned.shards,
                   requests_out=planned.requests_out, plan_json=planned.plan_json, reservations=planned.reservations)
    assert check_plan_dir(tmp_path / "plan") == []
    written = read_plan_dir(tmp_path / "plan")
    assert sorted(written.reservations["reservation_id"]) == ["rsv-u1-web-1", "rsv-u2-db-1"]
    db_block = written.reservations.filter(pl.col("reservation_id") == "rsv-u2-db-1")
    assert db_block.select("vcpu", "ram_gib").row(0) == (4, 20)
    assert written.reservations["window_start"].to_list() == [WINDOW_START] * 2
    assert written.hosts_out["vcpu_reserved"].sum() == 10
    assert "kind" in written.requests.columns


def test_real_requests_win_over_reservations_when_capacity_is_short():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    requests = requests_table({"request_id": "small", "vcpu": 6, "ram_gib": 12})
    blocks, sizing = blocks_for(hosts, [{"user_id": "u9", "app_type": "web", "reserved_vcpu": 12.0,
                                         "reserved_ram_gib": 24.0}])
    planned = plan_with_reservations(hosts, requests, blocks, FAST, sizing)
    status = dict(zip(planned.requests_out["request_id"], planned.requests_out["status"]))
    assert status == {"small": "placed", "rsv-u9-web-1": "unplaced"}
    reason = planned.requests_out.filter(pl.col("request_id") == "rsv-u9-web-1")["reason"][0]
    assert reason.startswith("reservation block not held")
    assert planned.reservations.height == 0
    # without the reservation weight the bigger block would have pushed the real request out
    even = plan_with_reservations(hosts, requests, blocks, FAST.replace(reservation_weight=1.0), sizing)
    assert dict(zip(even.requests_out["request_id"], even.requests_out["status"]))["small"] == "unplaced"


# --- the nightly pipeline through the CLI ----------------------------------------------------------


def tiny_data_dir(folder, with_history: bool = True):
    folder.mkdir()
    hosts_table(
        {"host_id": "h1", "rack": "r1", "vcpu": 32, "ram_gib": 128},
        {"host_id": "h2", "rack": "r2", "vcpu": 32, "ram_gib": 128},
        {"host_id": "g1", "rack": "r3", "vcpu": 32, "ram_gib": 256, "host_class": "gpu", "gpu": 4, "gpu_model": "a100"},
    ).write_parquet(folder / "hosts.parquet")
    requests_table({"request_id": "r1", "user_id": "u1", "vcpu": 8, "ram_gib": 16},
                   {"request_id": "r2", "user_id": "u2", "app_type": "ml-training", "vcpu": 8, "ram_gib": 64,
                    "gpu": 1, "gpu_model": "a100"}).write_csv(folder / "requests.csv")
    if not with_history:
        return folder
    hours = np.arange(10 * 24)
    daily = 1 + 0.5 * np.sin(2 * np.pi * hours / 24)
    rows = []
    for vm, user, app_type, vcpu, ram in (("vm1", "u1", "web", 4, 8), ("vm2", "u2", "ml-training", 8, 64),
                                          ("vm3", "u3", "db", 8, 32)):
        rows.append(pl.DataFrame({"ts": [WINDOW_START + timedelta(hours=int(h)) for h in hours], "vm_id": vm,
                                  "user_id": user, "app_type": app_type, "vcpu": float(vcpu),
                                  "ram_gib": ram * (0.6 + 0.1 * daily), "cpu_util": np.clip(0.3 * daily, 0, 1)}))
    pl.concat(rows).write_parquet(folder / "history.parquet")
    return folder


def test_nightly_runs_end_to_end_and_check_passes(tmp_path):
    data = tiny_data_dir(tmp_path / "data")
    out = tmp_path / "plan"
    runner = CliRunner()
    result = runner.invoke(app, ["nightly", "--data", str(data), "--out", str(out), "--time-limit", "3"])
    assert result.exit_code == 0, result.output
    assert "reservations" in result.output
    checked = runner.invoke(app, ["check", str(out)])
    assert checked.exit_code == 0, checked.output
    plan = read_plan_dir(out)
    assert (out / "forecast.parquet").exists()
    statuses = dict(zip(plan.requests_out["request_id"], plan.requests_out["status"]))
    assert statuses["r1"] == "placed" and statuses["r2"] == "placed"
    reserved = plan.requests_out.filter(pl.col("status") == "reserved")["request_id"].to_list()
    assert reserved and sorted(set(plan.reservations["reservation_id"])) == sorted(reserved)
    windows = plan.reservations.group_by("reservation_id").agg(pl.col("window_start").n_unique())
    assert (windows["window_start"] == 6).all()                      # 4-hour windows over the 24-hour horizon
    assert set(plan.reservations["user_id"]) == {"u1", "u2", "u3"}
    assert plan.reservations.filter(pl.col("app_type") == "ml-training")["gpu"].sum() >= 1
    assert plan.plan["reservations"]["sizing"]["status"] == "optimal"
    assert plan.plan["nightly"]["forecaster"] == "mean_7_same_hours"


def test_nightly_without_history_plans_without_reservations(tmp_path):
    data = tiny_data_dir(tmp_path / "data", with_history=False)
    out = tmp_path / "plan"
    result = CliRunner().invoke(app, ["nightly", "--data", str(data), "--out", str(out), "--time-limit", "3"])
    assert result.exit_code == 0, result.output
    assert "no history" in result.output
    assert not (out / "reservations.parquet").exists()
    assert check_plan_dir(out) == []
