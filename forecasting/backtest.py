"""Rolling-origin backtest: every forecaster on the same origins, scored side by side.

At each origin the forecasters see the `train_days` before it and forecast the
next `horizon_hours`. Scores: WAPE and MASE per series (pooled over origins) and
on the fleet total (the sum over series, per resource), and the share of actuals
inside the 10–90 band.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

import polars as pl

from shardplan.forecasting.forecasters import Forecaster, get_forecaster, series_keys

FLEET_KEYS: tuple[str, ...] = ("resource",)
MASE_SEASON_HOURS = 24  # MASE scales by the in-sample error of same-hour-yesterday


@dataclass(frozen=True)
class BacktestSettings:
    """Where the origins fall and how much each forecaster sees."""

    train_days: int = 14
    horizon_hours: int = 24
    step_hours: int = 24
    first_origin: datetime | None = None
    """Earliest origin scored (None: as soon as a full training window exists)."""
    last_origin: datetime | None = None
    """Latest origin scored (None: the last one whose horizon lies inside the history)."""
    max_origins: int | None = None
    """Keep at most this many origins, spread evenly over the eligible ones."""


@dataclass
class BacktestResult:
    """Scores per forecaster and resource (`summary`), per series (`per_series`), and the origins used."""

    summary: pl.DataFrame
    per_series: pl.DataFrame
    scored: pl.DataFrame
    """Every forecast hour with its actual: forecaster, keys, origin, ts, point, lo, hi, y, scale."""
    origins: list[datetime]
    settings: BacktestSettings
    forecasters: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "settings": {k: (v.isoformat() if isinstance(v, datetime) else v)
                         for k, v in asdict(self.settings).items()},
            "origins": [o.isoformat() for o in self.origins],
            "forecasters": self.forecasters,
            "summary": self.summary.to_dicts(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)


def rolling_origins(series: pl.DataFrame, settings: BacktestSettings) -> list[datetime]:
    """Forecast start hours a step apart, each with a full training window and horizon inside the history.

    An origin whose previous hour is missing from the whole table (a monitoring gap)
    is skipped, so every forecaster starts from the same last hour.
    """
    hours = series.get_column("ts").unique().sort()
    first, last = hours[0], hours[-1]
    start = first + timedelta(days=settings.train_days)
    end = last + timedelta(hours=1) - timedelta(hours=settings.horizon_hours)
    if settings.first_origin is not None:
        start = max(start, settings.first_origin)
    if settings.last_origin is not None:
        end = min(end, settings.last_origin)
    observed = set(hours.to_list())
    origins = []
    origin = start
    while origin <= end:
        if origin - timedelta(hours=1) in observed:
            origins.append(origin)
        origin += timedelta(hours=settings.step_hours)
    if settings.max_origins is not None and len(origins) > settings.max_origins:
        stride = len(origins) / settings.max_origins
        origins = [origins[int(i * stride)] for i in range(settings.max_origins)]
    return origins


def seasonal_scale(train: pl.DataFrame, keys: list[str]) -> pl.DataFrame:
    """Mean absolute same-hour-yesterday error inside the training window, per series (MASE denominator)."""
    lagged = train.select(*keys, (pl.col("ts") + pl.duration(hours=MASE_SEASON_HOURS)).alias("ts"),
                          pl.col("y").alias("y_lag"))
    return (
        train.join(lagged, on=[*keys, "ts"], how="inner")
        .group_by(keys).agg((pl.col("y") - pl.col("y_lag")).abs().mean().alias("scale"))
    )


def fleet_total(frame: pl.DataFrame, keys: list[str], values: list[str]) -> pl.DataFrame:
    """Sum over series per fleet key (resource) and hour."""
    fleet = [k for k in FLEET_KEYS if k in keys]
    return frame.group_by(*fleet, *[c for c in ("forecaster", "origin") if c in frame.columns], "ts").agg(
        pl.col(v).sum() for v in values
    ).with_columns(pl.lit("fleet").alias("series"))


def error_scores(scored: pl.DataFrame, group: list[str]) -> pl.DataFrame:
    """WAPE, MASE and 10–90 coverage per group of (actual y, point, lo, hi, scale) rows."""
    error = (pl.col("y") - pl.col("point")).abs()
    return scored.group_by(group).agg(
        (error.sum() / pl.col("y").abs().sum()).alias("wape"),
        (error / pl.col("scale")).filter(pl.col("scale") > 0).mean().alias("mase"),
        ((pl.col("y") >= pl.col("lo")) & (pl.col("y") <= pl.col("hi"))).mean().alias("coverage"),
        pl.len().alias("hours"),
    ).with_columns(
        pl.when(pl.col("wape").is_finite()).then(pl.col("wape")).alias("wape"),
    )


def run_backtest(series: pl.DataFrame, forecasters: list[str | Forecaster],
                 settings: BacktestSettings = BacktestSettings()) -> BacktestResult:
    """Score every forecaster on the same rolling origins over long hourly series (keys, ts, y)."""
    keys = series_keys(series)
    origins = rolling_origins(series, settings)
    if not origins:
        raise ValueError(f"the history is too short for a backtest: it needs {settings.train_days} days of training "
                         f"plus {settings.horizon_hours} hours")
    models = [get_forecaster(f) if isinstance(f, str) else f for f in forecasters]
    forecasts: list[pl.DataFrame] = []
    scales: list[pl.DataFrame] = []
    fleet_scales: list[pl.DataFrame] = []
    seconds = {m.name: 0.0 for m in models}
    series_count = series.select(keys).unique().height
    try:
        for origin in origins:
            train = series.filter(pl.col("ts") >= origin - timedelta(days=settings.train_days), pl.col("ts") < origin)
            scales.append(seasonal_scale(train, keys).with_columns(pl.lit(origin).alias("origin")))
            fleet_train = fleet_total(train, keys, ["y"])
            fleet_scales.append(seasonal_scale(fleet_train, [k for k in FLEET_KEYS if k in keys])
                                .with_columns(pl.lit(origin).alias("origin")))
            for model in models:
                started = time.perf_counter()
                forecast = model.fit_predict(train, settings.horizon_hours)
                seconds[model.name] += time.perf_counter() - started
                forecasts.append(forecast.with_columns(pl.lit(model.name).alias("forecaster"),
                                                       pl.lit(origin).alias("origin")))
    finally:
        for model in models:
            model.close()
    actuals = series.select(*keys, "ts", "y")
    scored = (
        pl.concat(forecasts).join(actuals, on=[*keys, "ts"], how="inner")
        .join(pl.concat(scales), on=[*keys, "origin"], how="left")
    )
    fleet_scale = pl.concat(fleet_scales)
    per_series, series_scores, fleet_scores = score(scored, keys, fleet_scale)
    timing = pl.DataFrame({
        "forecaster": list(seconds), "seconds": list(seconds.values()),
    }).with_columns((pl.col("seconds") / (series_count * len(origins))).alias("seconds_per_series"))
    fleet = [k for k in FLEET_KEYS if k in keys]
    order = {m.name: i for i, m in enumerate(models)}
    summary = (
        series_scores.join(fleet_scores, on=["forecaster", *fleet], how="left").join(timing, on="forecaster")
        .sort(pl.col("forecaster").replace_strict(order, return_dtype=pl.Int64), *fleet)
    )
    described = {m.name: m.describe() for m in models}
    return BacktestResult(summary, per_series, scored.join(fleet_scale.rename({"scale": "fleet_scale"}),
                                                           on=[*fleet, "origin"], how="left"),
                          origins, settings, described)


def score(scored: pl.DataFrame, keys: list[str],
          fleet_scale: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Per-series scores, their summary per forecaster and resource, and the fleet-total scores."""
    per_series = error_scores(scored, ["forecaster", *keys]).sort("forecaster", *keys)
    fleet = [k for k in FLEET_KEYS if k in keys]
    fleet_scored = (
        fleet_total(scored, keys, ["y", "point", "lo", "hi"])
        .join(fleet_scale, on=[*fleet, "origin"], how="left")
    )
    fleet_scores = error_scores(fleet_scored, ["forecaster", *fleet]).select(
        "forecaster", *fleet, pl.col("wape").alias("wape_fleet"), pl.col("mase").alias("mase_fleet"))
    series_scores = per_series.group_by("forecaster", *fleet).agg(
        pl.col("wape").median().alias("wape_series_median"),
        pl.col("mase").median().alias("mase_series_median"),
        (pl.col("coverage") * pl.col("hours")).sum().truediv(pl.col("hours").sum()).alias("coverage"),
        pl.col("wape").is_null().sum().alias("series_without_wape"),
        pl.len().alias("series"),
    )
    return per_series, series_scores, fleet_scores


def load_adjustment(result: BacktestResult, load: pl.DataFrame) -> pl.DataFrame:
    """Scores of every forecaster with and without × (1 + load), load = fleet load of the hour before the origin.

    `load` has columns ts, load (see shardplan.forecasting.history.system_load). Columns: forecaster,
    resource, adjusted (bool), wape_series_median, wape_fleet, coverage.
    """
    keys = [c for c in result.per_series.columns if c not in ("forecaster", "wape", "mase", "coverage", "hours")]
    fleet = [k for k in FLEET_KEYS if k in keys]
    at_origin = load.select((pl.col("ts") + pl.duration(hours=1)).alias("origin"), pl.col("load"))
    scored = result.scored.join(at_origin, on="origin", how="left").with_columns(pl.col("load").fill_null(0.0))
    factor = 1 + pl.col("load")
    adjusted = scored.with_columns(pl.col("point") * factor, pl.col("lo") * factor, pl.col("hi") * factor)
    fleet_scale = result.scored.select(*fleet, "origin", pl.col("fleet_scale").alias("scale")).unique()
    rows = []
    for flag, frame in ((False, scored), (True, adjusted)):
        _, series_scores, fleet_scores = score(frame.drop("load", "fleet_scale"), keys, fleet_scale)
        rows.append(series_scores.join(fleet_scores, on=["forecaster", *fleet]).select(
            "forecaster", *fleet, pl.lit(flag).alias("adjusted"), "wape_series_median", "wape_fleet", "coverage"))
    return pl.concat(rows).sort("forecaster", *fleet, "adjusted")
