"""Forecasting: history aggregation, baselines, Prophet, backtest scores, predict_resource_needs, CLI."""
from __future__ import annotations

import gzip
from datetime import datetime, time, timedelta, timezone

import numpy as np
import polars as pl
import pytest
import typer
from typer.testing import CliRunner

from shardplan.forecasting.backtest import (
    BacktestSettings,
    error_scores,
    load_adjustment,
    rolling_origins,
    run_backtest,
)
from shardplan.forecasting.export import FORECAST_SCHEMA, forecast_demand
from shardplan.forecasting.forecasters import BASELINES, FORECASTERS, SeasonalNaive, get_forecaster
from shardplan.forecasting.history import demand_long, demand_wide, hourly_demand, system_load
from shardplan.forecasting.predict import DEFAULT_ALLOCATIONS, LOAD_ADJUSTMENT_DEFAULT, predict_resource_needs
from shardplan.forecasting.prophet_model import SHIPPED_SETTINGS, fit_chunk
from shardplan.forecasting.traces import load_bitbrains

START = datetime(2024, 1, 1, tzinfo=timezone.utc)  # a Monday


def hourly_series(values: np.ndarray, **keys: str) -> pl.DataFrame:
    """Long series frame (keys…, ts, y) starting at START, one value per hour."""
    ts = pl.datetime_range(START, START + timedelta(hours=len(values) - 1), "1h", eager=True, time_unit="us",
                           time_zone="UTC")
    return pl.DataFrame({**{k: [v] * len(values) for k, v in keys.items()}, "ts": ts, "y": values})


def daily_cycle(hours: int, level: float = 10.0, swing: float = 5.0) -> np.ndarray:
    return level + swing * np.sin(np.arange(hours) * 2 * np.pi / 24)


def history_from_demand(cores: np.ndarray, user: str = "u01", app_type: str = "web",
                        vcpu: float = 32.0) -> pl.DataFrame:
    """A one-VM history whose used cores follow `cores` (cpu_util = cores / vcpu)."""
    ts = pl.datetime_range(START, START + timedelta(hours=len(cores) - 1), "1h", eager=True, time_unit="us",
                           time_zone="UTC")
    return pl.DataFrame({"ts": ts, "vm_id": "vm-1", "user_id": user, "app_type": app_type, "vcpu": vcpu,
                         "ram_gib": 16.0, "cpu_util": cores / vcpu})


# --- history ---------------------------------------------------------------------------------------

def test_hourly_demand_averages_samples_within_the_hour_and_sums_vms():
    at = lambda h, m: START + timedelta(hours=h, minutes=m)  # noqa: E731
    history = pl.DataFrame({
        "ts": [at(0, 0), at(0, 30), at(0, 10), at(1, 0), at(0, 0)],
        "vm_id": ["a", "a", "b", "a", "c"],
        "user_id": ["u1", "u1", "u1", "u1", "u2"],
        "app_type": ["web", "web", "web", "web", "db"],
        "vcpu": [4.0, 4.0, 2.0, 4.0, 8.0],
        "ram_gib": [8.0, 10.0, 4.0, 6.0, 32.0],
        "cpu_util": [0.5, 0.25, None, 1.0, 0.125],
    })
    demand = hourly_demand(history).sort("user_id", "ts")
    first = demand.row(0, named=True)
    assert first["user_id"] == "u1" and first["ts"] == at(0, 0)
    # vm a: mean(2.0, 1.0) used cores = 1.5; vm b: no utilisation → allocated 2 → 3.5 in all
    assert first["vcpu"] == pytest.approx(3.5)
    assert first["ram_gib"] == pytest.approx(9.0 + 4.0)
    assert demand.filter(pl.col("user_id") == "u1").get_column("vcpu").to_list() == pytest.approx([3.5, 4.0])
    assert demand.filter(pl.col("user_id") == "u2").get_column("vcpu").to_list() == pytest.approx([1.0])
    # an hour in which a series reported nothing is absent, not zero
    assert demand.filter(pl.col("user_id") == "u2").height == 1


def test_demand_long_and_wide_round_trip():
    demand = hourly_demand(history_from_demand(daily_cycle(48)))
    long = demand_long(demand)
    assert set(long.get_column("resource").unique()) == {"vcpu", "ram_gib"}
    forecast = long.rename({"y": "point"}).with_columns(pl.col("point").alias("lo"), pl.col("point").alias("hi"),
                                                        pl.lit("m").alias("model"))
    wide = demand_wide(forecast)
    assert wide.columns == ["user_id", "app_type", "ts", "vcpu", "vcpu_lo", "vcpu_hi", "ram_gib", "ram_gib_lo",
                            "ram_gib_hi", "model"]
    assert wide.get_column("vcpu").to_list() == pytest.approx(demand.get_column("vcpu").to_list())


def test_system_load_is_used_over_allocated_cores():
    history = pl.DataFrame({"ts": [START, START], "vm_id": ["a", "b"], "vcpu": [4.0, 12.0],
                            "cpu_util": [0.5, 0.0], "ram_gib": [1.0, 1.0]})
    assert system_load(history).get_column("load").to_list() == pytest.approx([2.0 / 16.0])


def test_bitbrains_loader_maps_each_vm_to_its_own_user(tmp_path):
    (tmp_path / "vms.csv").write_text("vm_id,cpu_cores,mem_capacity_kb\n7,1,1048576\n8,8,16777216\n9,2,33554432\n")
    rows = ["vm_id,hour_start,cpu_cores,cpu_capacity_mhz,cpu_usage_mhz_mean,mem_usage_kb_mean",
            "7,1372629600,1,2000,500,524288", "8,1372629600,8,16000,17600,1048576", "9,1372629600,0,0,0,0"]
    with gzip.open(tmp_path / "usage_hourly.csv.gz", "wt") as handle:
        handle.write("\n".join(rows) + "\n")
    history = load_bitbrains(tmp_path).sort("vm_id")
    assert history.get_column("user_id").to_list() == ["rnd-007", "rnd-008"]  # vm 9 was off: no row
    assert history.get_column("app_type").to_list() == ["web", "analytics"]
    assert history.get_column("cpu_util").to_list() == pytest.approx([0.25, 1.0])  # turbo above capacity clipped
    assert history.get_column("ram_gib").to_list() == pytest.approx([0.5, 1.0])
    assert history.get_column("ram_alloc_gib").to_list() == pytest.approx([1.0, 16.0])  # rented: vms.csv
    assert "net_gbps" not in history.columns   # this file has no network columns
    rows = [rows[0] + ",net_rx_kbps_mean,net_tx_kbps_mean", "7,1372629600,1,2000,500,524288,1000,24000"]
    with gzip.open(tmp_path / "usage_hourly.csv.gz", "wt") as handle:
        handle.write("\n".join(rows) + "\n")
    assert load_bitbrains(tmp_path)["net_gbps"].to_list() == pytest.approx([25000 * 8 * 1024 / 1e9])


# --- baselines ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["same_hour_yesterday", "same_hour_last_week", "mean_7_same_hours"])
def test_seasonal_baselines_are_exact_on_a_pure_daily_cycle(name):
    series = hourly_series(daily_cycle(21 * 24), user_id="u1")
    forecast = get_forecaster(name).fit_predict(series, 24)
    truth = daily_cycle(22 * 24)[-24:]
    assert forecast.get_column("ts")[0] == START + timedelta(days=21)
    assert forecast.get_column("point").to_numpy() == pytest.approx(truth)
    # the rule was exact on the calibration origins too, so the band is the point itself
    assert forecast.get_column("lo").to_numpy() == pytest.approx(truth)
    assert forecast.get_column("hi").to_numpy() == pytest.approx(truth)


def test_last_value_repeats_the_last_hour_and_brackets_it():
    values = daily_cycle(14 * 24)
    forecast = get_forecaster("last_value").fit_predict(hourly_series(values, user_id="u1"), 36)
    assert forecast.height == 36
    assert forecast.get_column("point").to_numpy() == pytest.approx(np.full(36, values[-1]))
    assert (forecast.get_column("lo") <= forecast.get_column("point")).all()
    assert (forecast.get_column("hi") > forecast.get_column("lo")).all()


def test_same_hour_last_week_follows_a_weekly_pattern_and_beyond_a_week():
    weekly = np.tile(np.arange(168, dtype=float), 3)
    forecast = get_forecaster("same_hour_last_week").fit_predict(hourly_series(weekly, user_id="u1"), 200)
    expected = np.tile(np.arange(168, dtype=float), 2)[:200]
    assert forecast.get_column("point").to_numpy() == pytest.approx(expected)


def test_mean_of_seven_same_hours_averages_the_days():
    days = np.repeat(np.arange(1.0, 15.0), 24)  # day d is the constant d
    forecast = get_forecaster("mean_7_same_hours").fit_predict(hourly_series(days, user_id="u1"), 24)
    assert forecast.get_column("point").to_numpy() == pytest.approx(np.full(24, np.mean(np.arange(8.0, 15.0))))


def test_baselines_forecast_every_series_separately():
    both = pl.concat([hourly_series(np.full(48, 2.0), user_id="a"), hourly_series(np.full(48, 5.0), user_id="b")])
    forecast = get_forecaster("last_value").fit_predict(both, 3)
    assert forecast.group_by("user_id").agg(pl.col("point").first()).sort("user_id")["point"].to_list() == [2.0, 5.0]


def test_registry_names_every_forecaster():
    assert set(BASELINES) | {"prophet"} <= set(FORECASTERS)
    assert isinstance(get_forecaster("mean_7_same_hours"), SeasonalNaive)
    with pytest.raises(KeyError, match="unknown forecaster"):
        get_forecaster("crystal_ball")


# --- Prophet ------------------------------------------------------------------------------------------

def test_prophet_beats_last_value_on_a_daily_cycle_and_stays_quiet(capfd):
    rng = np.random.default_rng(1)
    values = daily_cycle(15 * 24) * rng.lognormal(0, 0.05, 15 * 24)
    train = hourly_series(values[:14 * 24], user_id="u1")
    truth = values[14 * 24:]
    prophet = get_forecaster("prophet", workers=1)
    forecast = prophet.fit_predict(train, 24)
    naive = get_forecaster("last_value").fit_predict(train, 24)
    error = lambda f: np.abs(f.get_column("point").to_numpy() - truth).sum()  # noqa: E731
    assert error(forecast) < 0.5 * error(naive)
    assert (forecast.get_column("lo") <= forecast.get_column("hi")).all()
    inside = (truth >= forecast.get_column("lo").to_numpy()) & (truth <= forecast.get_column("hi").to_numpy())
    assert inside.mean() >= 0.5
    printed = capfd.readouterr()
    assert "Chain" not in printed.out + printed.err and "cmdstanpy" not in printed.out + printed.err


# --- backtest -----------------------------------------------------------------------------------------

def test_error_scores_wape_mase_and_coverage_by_hand():
    scored = pl.DataFrame({"s": ["a"] * 4, "y": [10.0, 10.0, 20.0, 0.0], "point": [12.0, 10.0, 15.0, 1.0],
                           "lo": [9.0, 11.0, 10.0, 0.0], "hi": [13.0, 12.0, 30.0, 2.0], "scale": [2.0] * 4})
    row = error_scores(scored, ["s"]).row(0, named=True)
    assert row["wape"] == pytest.approx((2 + 0 + 5 + 1) / 40)
    assert row["mase"] == pytest.approx((2 + 0 + 5 + 1) / 2 / 4)
    assert row["coverage"] == pytest.approx(3 / 4)  # 10 lies below [11, 12]


def test_backtest_scores_every_forecaster_on_the_same_origins():
    demand = pl.concat([
        hourly_series(np.tile(np.arange(24.0), 20), user_id="u1", resource="vcpu"),  # exact in binary
        hourly_series(np.tile(30.0 + np.arange(24.0) % 4, 20), user_id="u2", resource="vcpu"),
    ])
    settings = BacktestSettings(train_days=14, horizon_hours=24, step_hours=24)
    assert len(rolling_origins(demand, settings)) == 6
    result = run_backtest(demand, ["same_hour_yesterday", "last_value"], settings)
    summary = {row["forecaster"]: row for row in result.summary.iter_rows(named=True)}
    assert summary["same_hour_yesterday"]["wape_series_median"] == pytest.approx(0.0, abs=1e-12)
    assert summary["same_hour_yesterday"]["wape_fleet"] == pytest.approx(0.0, abs=1e-12)
    assert summary["same_hour_yesterday"]["coverage"] == pytest.approx(1.0)
    assert summary["last_value"]["wape_fleet"] > 0.05
    assert summary["last_value"]["series"] == 2
    assert len(result.origins) == 6 and '"summary"' in result.to_json()
    load = pl.DataFrame({"ts": demand.get_column("ts").unique().sort()}).with_columns(pl.lit(0.5).alias("load"))
    adjusted = load_adjustment(result, load).filter(pl.col("forecaster") == "same_hour_yesterday")
    assert adjusted.filter(pl.col("adjusted")).get_column("wape_fleet")[0] == pytest.approx(0.5)


def test_backtest_refuses_a_history_shorter_than_one_window():
    with pytest.raises(ValueError, match="too short"):
        run_backtest(hourly_series(np.ones(48), user_id="u1"), ["last_value"], BacktestSettings())


# --- predict_resource_needs ---------------------------------------------------------------------------

def test_no_history_gives_the_default_allocation_of_the_app_type():
    needs = predict_resource_needs("u99", "db", time(14), history=None)
    assert needs.source == "default"
    assert (needs.vcpu, needs.ram_gib) == (DEFAULT_ALLOCATIONS["db"].vcpu, DEFAULT_ALLOCATIONS["db"].ram_gib)
    other = predict_resource_needs("u01", "web", time(14), history=history_from_demand(daily_cycle(48)),
                                   forecaster="last_value")
    assert other.source == "forecast"
    unknown = predict_resource_needs("u01", "db", time(14), history=history_from_demand(daily_cycle(48)),
                                     forecaster="last_value")
    assert unknown.source == "default"  # u01 has history for web only


def test_load_adjustment_multiplies_cpu_and_ram():
    history = history_from_demand(daily_cycle(21 * 24))
    plain = predict_resource_needs("u01", "web", time(6), history, forecaster="same_hour_yesterday",
                                   adjust_for_load=False)
    loaded = predict_resource_needs("u01", "web", time(6), history, forecaster="same_hour_yesterday",
                                    adjust_for_load=True, load=0.25)
    assert plain.ts == START + timedelta(days=21, hours=6) and plain.load is None
    assert plain.vcpu == pytest.approx(daily_cycle(24)[6])
    assert loaded.vcpu == pytest.approx(plain.vcpu * 1.25)
    assert loaded.ram_gib == pytest.approx(plain.ram_gib * 1.25)
    default = predict_resource_needs("u02", "batch", time(6), None, adjust_for_load=True, load=1.0)
    assert default.vcpu == pytest.approx(2 * DEFAULT_ALLOCATIONS["batch"].vcpu)
    assert isinstance(LOAD_ADJUSTMENT_DEFAULT, bool)


def test_predict_at_an_explicit_hour_uses_the_history_load_when_none_is_given():
    history = history_from_demand(np.full(15 * 24, 2.0), vcpu=8.0)  # 2 of 8 cores: load 0.25
    when = START + timedelta(days=15, hours=3)
    needs = predict_resource_needs("u01", "web", when, history, forecaster="last_value", adjust_for_load=True)
    assert needs.ts == when and needs.load == pytest.approx(0.25)
    assert needs.vcpu == pytest.approx(2.0 * 1.25)


# --- forecast export and CLI --------------------------------------------------------------------------

def test_forecast_demand_has_the_export_columns():
    forecast = forecast_demand(history_from_demand(daily_cycle(15 * 24)), 12, "mean_7_same_hours")
    assert forecast.schema == pl.Schema(FORECAST_SCHEMA)
    assert forecast.height == 12 and set(forecast.get_column("model")) == {"mean_7_same_hours"}


@pytest.fixture()
def cli_app() -> typer.Typer:
    from shardplan.planner.cli import forecast as cli_forecast

    app = typer.Typer()
    cli_forecast.register(app)
    return app


def test_forecast_cli_writes_forecast_parquet(cli_app, tmp_path):
    history = pl.concat([history_from_demand(daily_cycle(15 * 24)),
                         history_from_demand(daily_cycle(15 * 24, level=5, swing=2), "u02", "db").with_columns(
                             pl.lit("vm-2").alias("vm_id"))])
    history.write_csv(tmp_path / "history.csv")
    result = CliRunner().invoke(cli_app, ["forecast", "--history", str(tmp_path / "history.csv"), "--horizon", "6",
                                          "--out", str(tmp_path / "out"), "--forecaster", "same_hour_yesterday"])
    assert result.exit_code == 0, result.output
    written = pl.read_parquet(tmp_path / "out" / "forecast.parquet")
    assert written.columns == list(FORECAST_SCHEMA)
    assert written.height == 2 * 6
    assert not list((tmp_path / "out").glob("*.partial"))


def test_forecast_cli_rejects_a_bad_history(cli_app, tmp_path):
    (tmp_path / "history.csv").write_text("ts,vm_id,user_id,app_type,vcpu,ram_gib\n2024-01-01T00:00:00Z,a,u,web,-1,2\n")
    result = CliRunner().invoke(cli_app, ["forecast", "--history", str(tmp_path / "history.csv"),
                                          "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert not (tmp_path / "out" / "forecast.parquet").exists()


def test_backtest_cli_writes_json(cli_app, tmp_path):
    history_from_demand(daily_cycle(17 * 24)).write_parquet(tmp_path / "history.parquet")
    result = CliRunner().invoke(cli_app, ["backtest", "--history", str(tmp_path / "history.parquet"),
                                          "--forecasters", "last_value,same_hour_yesterday",
                                          "--json", str(tmp_path / "scores.json")])
    assert result.exit_code == 0, result.output
    assert '"same_hour_yesterday"' in (tmp_path / "scores.json").read_text()


def test_prophet_gives_short_series_the_recent_level():
    short = (np.arange(400_000, 400_010), np.array([1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10]))
    [(point, lo, hi)] = fit_chunk([short], 400_009, 4, SHIPPED_SETTINGS)
    assert point == pytest.approx(np.full(4, 7.5))  # median of the last 6 hours
    assert (lo <= point).all() and (hi >= point).all()


# --- statsforecast's models as peers ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mstl", "auto_ets", "auto_theta", "sf_seasonal_naive"])
def test_statsforecast_peers_forecast_every_series_with_a_band(name):
    import numpy as np

    from shardplan.forecasting.forecasters import PEERS, get_forecaster

    assert name in PEERS
    hours = 24 * 15
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(3)
    rows = []
    for user in ("u1", "u2"):
        level = 10.0 if user == "u1" else 40.0
        for h in range(hours):
            if user == "u2" and h % 37 == 5:  # gaps: absent hours are unknown, the model needs a grid
                continue
            rows.append({"user_id": user, "ts": start + timedelta(hours=h),
                         "y": level + 5 * np.sin(2 * np.pi * h / 24) + rng.normal(0, 0.5)})
    rows += [{"user_id": "short", "ts": start + timedelta(hours=hours - 10 + h), "y": 3.0} for h in range(10)]
    series = pl.DataFrame(rows)
    forecast = get_forecaster(name).fit_predict(series, 24)
    assert forecast.columns == ["user_id", "ts", "point", "lo", "hi"]
    assert forecast.group_by("user_id").len().sort("user_id")["len"].to_list() == [24, 24, 24]
    assert forecast["ts"].min() == start + timedelta(hours=hours) and forecast["ts"].dtype == series["ts"].dtype
    assert (forecast["lo"] <= forecast["point"]).all() and (forecast["point"] <= forecast["hi"]).all()
    assert (forecast["lo"] >= 0).all()
    # the daily cycle is learned: the forecast for u1 follows it within the noise
    u1 = forecast.filter(pl.col("user_id") == "u1")
    truth = [10.0 + 5 * np.sin(2 * np.pi * (hours + k) / 24) for k in range(24)]
    assert float(np.mean(np.abs(u1["point"].to_numpy() - np.array(truth)))) < 2.0
    assert forecast.filter(pl.col("user_id") == "short")["point"].to_list() == pytest.approx([3.0] * 24)


@pytest.mark.parametrize("max_train_rows", [1_000_000, 900])   # every row, and a sample of 900 of the 1,476
def test_global_model_learns_across_series_and_forecasts_a_newcomer(max_train_rows):
    import numpy as np

    from shardplan.forecasting.forecasters import get_forecaster

    hours = 24 * 15
    start = datetime(2024, 1, 1, tzinfo=timezone.utc)
    rng = np.random.default_rng(5)
    rows = []
    for user in ("u1", "u2", "u3", "u4"):
        level = {"u1": 10.0, "u2": 20.0, "u3": 40.0, "u4": 80.0}[user]
        for h in range(hours):
            rows.append({"user_id": user, "app_type": "web", "ts": start + timedelta(hours=h),
                         "y": level * (1 + 0.3 * np.sin(2 * np.pi * h / 24)) + rng.normal(0, 0.02 * level)})
    # a new user of the same app type with a day and a half of history: the cycle comes from the others
    for h in range(hours - 36, hours):
        rows.append({"user_id": "new", "app_type": "web", "ts": start + timedelta(hours=h),
                     "y": 30.0 * (1 + 0.3 * np.sin(2 * np.pi * h / 24))})
    series = pl.DataFrame(rows)
    forecast = get_forecaster("global_gbm", max_train_rows=max_train_rows).fit_predict(series, 24)
    assert forecast.columns == ["user_id", "app_type", "ts", "point", "lo", "hi"]
    assert forecast.group_by("user_id").len()["len"].to_list() == [24] * 5
    assert (forecast["lo"] <= forecast["point"]).all() and (forecast["point"] <= forecast["hi"]).all()
    assert forecast["ts"].min() == start + timedelta(hours=hours)
    for user, level in (("u1", 10.0), ("u4", 80.0), ("new", 30.0)):
        mine = forecast.filter(pl.col("user_id") == user)["point"].to_numpy()
        truth = np.array([level * (1 + 0.3 * np.sin(2 * np.pi * (hours + k) / 24)) for k in range(24)])
        assert float(np.mean(np.abs(mine - truth))) / level < 0.12, user


def test_optional_resources_are_forecast_where_the_history_has_them_and_named_where_it_does_not():
    from shardplan.forecasting.history import history_resources, missing_resources

    history = history_from_demand(daily_cycle(10 * 24)).with_columns(
        (0.5 + 0.1 * pl.int_range(pl.len()).mod(24) / 24).alias("net_gbps"), pl.lit(None, pl.Float64).alias("gpu"))
    assert history_resources(history) == ("vcpu", "ram_gib", "net_gbps")
    assert missing_resources(history) == ["storage_gib", "gpu"]
    demand = hourly_demand(history)
    assert "net_gbps" in demand.columns and "gpu" not in demand.columns
    assert set(demand_long(demand)["resource"]) == {"vcpu", "ram_gib", "net_gbps"}
    forecast = forecast_demand(history, 24, "same_hour_yesterday")
    assert {"net_gbps", "net_gbps_lo", "net_gbps_hi"} <= set(forecast.columns)
    assert not any(c.startswith(("gpu", "storage")) for c in forecast.columns)
    expected = history.sort("ts").tail(24)["net_gbps"].to_numpy()   # same hour yesterday on a daily pattern
    assert forecast.sort("ts")["net_gbps"].to_numpy() == pytest.approx(expected)
    plain = forecast_demand(history_from_demand(daily_cycle(10 * 24)), 24, "same_hour_yesterday")
    assert list(plain.columns) == list(FORECAST_SCHEMA)
