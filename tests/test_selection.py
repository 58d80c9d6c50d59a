"""Selection per series on the training window's last days, the grouped hierarchy, and its reconciliation
(shardplan.forecasting.selection, registered as shardplan_auto)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from shardplan.forecasting.forecasters import get_forecaster
from shardplan.forecasting.selection import ANY, SelectedForecaster, wape


def auto(**settings) -> SelectedForecaster:
    return get_forecaster("shardplan_auto", **settings)

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
FAST = ("last_value", "same_hour_yesterday")


def series(values: np.ndarray, user: str, app_type: str, resource: str = "vcpu") -> pl.DataFrame:
    ts = pl.datetime_range(START, START + timedelta(hours=len(values) - 1), "1h", eager=True, time_unit="us",
                           time_zone="UTC")
    return pl.DataFrame({"user_id": user, "app_type": app_type, "resource": resource, "ts": ts, "y": values})


def fleet(hours: int = 10 * 24, seed: int = 3) -> pl.DataFrame:
    """u1/web: a daily cycle (same hour yesterday is exact); u2/db: a level that steps each day (the last value
    is right all day after the step); u1/db and u3/web noisy cycles."""
    rng = np.random.default_rng(seed)
    h = np.arange(hours)
    cycle = 10 + 5 * np.sin(2 * np.pi * h / 24)
    steps = 20 + (h // 24) % 3 * 4.0
    return pl.concat([
        series(cycle, "u1", "web"),
        series(steps.astype(float), "u2", "db"),
        series(cycle * 0.5 + rng.normal(0, 0.5, hours), "u1", "db"),
        series(cycle * 2 + rng.normal(0, 1.0, hours), "u3", "web"),
    ])


def test_the_hierarchy_has_every_grouped_level():
    nodes, hierarchical = SelectedForecaster.nodes(fleet(), ["user_id", "app_type", "resource"])
    assert hierarchical
    levels = nodes.group_by("_level").agg(pl.col("_id").n_unique()).sort("_level")
    assert dict(levels.iter_rows()) == {"app_type": 2, "bottom": 4, "total": 1, "user_id": 3}
    total = nodes.filter(pl.col("_level") == "total").sort("ts")["y"]
    assert total.to_numpy() == pytest.approx(fleet().group_by("ts").agg(pl.col("y").sum()).sort("ts")["y"].to_numpy())
    web = nodes.filter((pl.col("_level") == "app_type") & (pl.col("app_type") == "web"))
    assert set(web["user_id"]) == {ANY}
    s_df, tags = SelectedForecaster.summing(nodes, ["user_id", "app_type", "resource"])
    matrix = s_df.drop("unique_id").to_numpy()
    assert matrix.shape == (10, 4) and matrix[s_df["unique_id"].to_list().index(tags["total"][0])].sum() == 4
    # a level with one bottom per node (each user runs one app type) repeats the bottom and is left out
    one_each = fleet().filter(~((pl.col("user_id") == "u1") & (pl.col("app_type") == "db")))
    nodes, _ = SelectedForecaster.nodes(one_each, ["user_id", "app_type", "resource"])
    assert set(nodes["_level"]) == {"total", "app_type", "bottom"}


def test_each_series_gets_the_candidate_that_did_best_on_its_last_days():
    model = auto(candidates=FAST, reconcile="none")
    frame = fleet()
    keys = ["user_id", "app_type", "resource"]
    nodes, _ = model.nodes(frame, keys)
    validation = model.validate(nodes, keys, frame["ts"].max(), 24)
    chosen = dict(model.choose(validation, nodes.select("_id", "_level").unique("_id")).select("_id", "candidate")
                  .iter_rows())
    assert chosen["bottom|u1|web|vcpu"] == "same_hour_yesterday"
    # the validation origins see only what came before them
    assert validation.filter(pl.col("ts") <= pl.col("origin")).height == 0
    assert validation["origin"].max() <= frame["ts"].max() - timedelta(hours=24)
    out = model.fit_predict(frame, 24)
    assert out.height == 4 * 24 and set(out.columns) == {*keys, "ts", "point", "lo", "hi"}
    assert (out["lo"] <= out["point"]).all() and (out["point"] <= out["hi"]).all() and (out["lo"] >= 0).all()
    cycle = out.filter((pl.col("user_id") == "u1") & (pl.col("app_type") == "web")).sort("ts")["point"].to_numpy()
    expected = 10 + 5 * np.sin(2 * np.pi * np.arange(10 * 24, 11 * 24) / 24)
    assert cycle == pytest.approx(expected, abs=1e-6)
    picked = model.last_choice["candidates"]
    assert sum(picked.values()) == 10 and model.last_choice["reconciler"] == "none"


@pytest.mark.parametrize("method", ["bottom_up", "mint_shrink"])
def test_reconciled_forecasts_add_up_across_the_hierarchy(method):
    model = auto(candidates=FAST, reconcile=method)
    frame = fleet()
    keys = ["user_id", "app_type", "resource"]
    nodes, _ = model.nodes(frame, keys)
    validation = model.validate(nodes, keys, frame["ts"].max(), 24)
    s_df, tags = model.summing(nodes, keys)
    # incoherent base forecasts: the last value for the bottoms, same hour yesterday for the aggregates
    last, daily = (model._forecast(name, nodes, keys, 24) for name in FAST)
    base = pl.concat([last.filter(pl.col("_id").str.starts_with("bottom|")),
                      daily.filter(~pl.col("_id").str.starts_with("bottom|"))])
    rec = model.reconciled(method, base, model.complete(validation.filter(pl.col("candidate") == "last_value"),
                                                          s_df["unique_id"].to_list()), s_df, tags)
    wide = rec.pivot(on="_id", index="ts", values="point")
    bottoms = [c for c in wide.columns if c.startswith("bottom|")]
    assert wide[tags["total"][0]].to_numpy() == pytest.approx(wide.select(bottoms).sum_horizontal().to_numpy())
    web = [c for c in bottoms if c.endswith("|web|vcpu")]
    assert wide["app_type|*|web|vcpu"].to_numpy() == pytest.approx(wide.select(web).sum_horizontal().to_numpy())
    if method == "mint_shrink":   # MinT moves the bottoms (bottom-up leaves them as they were)
        moved = rec.join(base, on=["_id", "ts"], suffix="_base").filter(pl.col("_id").str.starts_with("bottom|"))
        assert (moved["point"] - moved["point_base"]).abs().max() > 1e-6


def test_auto_picks_the_reconciler_with_the_best_validation_total_and_is_registered():
    model = get_forecaster("shardplan_auto", candidates=FAST)
    assert isinstance(model, SelectedForecaster)
    out = model.fit_predict(fleet(), 12)
    choice = model.last_choice
    assert choice["reconciler"] in ("none", "bottom_up", "mint_shrink")
    scores = choice["validation_total_wape"]
    assert set(scores) == {"none", "bottom_up", "mint_shrink"}
    assert scores[choice["reconciler"]] == min(scores.values())
    assert out.height == 4 * 12
    with pytest.raises(ValueError, match="reconcile must be"):
        SelectedForecaster(reconcile="magic")


def test_wape_by_hand():
    frame = pl.DataFrame({"g": ["a", "a", "b"], "y": [2.0, 2.0, 0.0], "point": [1.0, 3.0, 0.5]})
    scores = dict(wape(frame, ["g"]).iter_rows())
    assert scores == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
