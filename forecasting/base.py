"""One forecaster interface and the seasonal-naive baselines (the registry by name is forecasting.forecasters).

A forecaster takes long hourly series (key columns, ``ts``, ``y``) and returns,
for every series and every hour of the horizon after the frame's last hour, the
point forecast and the 10th/90th percentiles (columns key…, ts, point, lo, hi).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from datetime import timedelta

import polars as pl

QUANTILES: tuple[float, float] = (0.1, 0.9)
FORECAST_COLUMNS: tuple[str, ...] = ("ts", "point", "lo", "hi")


def series_keys(series: pl.DataFrame) -> list[str]:
    """The columns that name a series: everything but ts and y."""
    return [c for c in series.columns if c not in ("ts", "y")]


def last_hour(series: pl.DataFrame) -> object:
    """The forecast origin: the last hour observed in the frame (common to all series)."""
    return series.get_column("ts").max()


class Forecaster(ABC):
    """A named forecaster: `fit_predict(series, horizon_hours)` → key…, ts, point, lo, hi."""

    name: str

    @abstractmethod
    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        """Fit on every series of the frame and forecast the next `horizon_hours` hours."""

    def close(self) -> None:
        """Release workers or other resources (a no-op for in-process forecasters)."""

    def describe(self) -> dict[str, object]:
        """The forecaster's name and settings, for reports."""
        return {"name": self.name}


@dataclass
class SeasonalNaive(Forecaster):
    """Mean of the last `seasons` values `period_hours` apart that a forecast made at the origin can see.

    period 1 / 1 season is "last value", 24/1 "same hour yesterday", 168/1 "same hour
    last week", 24/7 "mean of the last 7 same hours". The 10/90 band is the point plus
    the 10th/90th percentile of the same rule's errors from `calibration_days`
    earlier daily origins inside the training window (widened to contain the point).
    """

    name: str
    period_hours: int
    seasons: int = 1
    calibration_days: int = 7

    def point_forecasts(self, series: pl.DataFrame, origins: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        """Point forecast per (series, origin, lead) from the values at or before each origin."""
        keys = series_keys(series)
        period = self.period_hours
        leads = pl.DataFrame({"lead": pl.int_range(1, horizon_hours + 1, eager=True)})
        steps = pl.DataFrame({"season": pl.int_range(0, self.seasons, eager=True)})
        first_k = (pl.col("lead") + period - 1) // period  # smallest k with k·period ≥ lead
        sources = (
            origins.join(leads, how="cross").join(steps, how="cross")
            .with_columns(
                (pl.col("origin") + pl.duration(hours=pl.col("lead") - (first_k + pl.col("season")) * period))
                .alias("ts")
            )
            .join(series, on=[*keys, "ts"], how="left")
            .group_by(*keys, "origin", "lead").agg(pl.col("y").mean().alias("point"))
        )
        last_seen = (
            origins.sort("origin")
            .join_asof(series.sort("ts").rename({"y": "last_y"}), left_on="origin", right_on="ts",
                       by=keys, strategy="backward", check_sortedness=False)
            .select(*keys, "origin", "last_y")
        )
        return (
            sources.join(last_seen, on=[*keys, "origin"], how="left")
            .with_columns(pl.col("point").fill_null(pl.col("last_y")).fill_null(0.0))
            .with_columns((pl.col("origin") + pl.duration(hours=pl.col("lead"))).alias("ts"))
            .select(*keys, "origin", "lead", "ts", "point")
        )

    def describe(self) -> dict[str, object]:
        return asdict(self)

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        keys = series_keys(series)
        origin = last_hour(series)
        names = series.select(keys).unique(maintain_order=True)
        forecast = self.point_forecasts(series, names.with_columns(pl.lit(origin).alias("origin")), horizon_hours)
        past = pl.DataFrame({"origin": [origin - timedelta(days=d) for d in range(1, self.calibration_days + 1)]})
        backcast = (
            self.point_forecasts(series, names.join(past, how="cross"), horizon_hours)
            .filter(pl.col("ts") <= origin)
            .join(series, on=[*keys, "ts"], how="inner")
            .group_by(keys).agg(
                (pl.col("y") - pl.col("point")).quantile(QUANTILES[0], "linear").alias("err_lo"),
                (pl.col("y") - pl.col("point")).quantile(QUANTILES[1], "linear").alias("err_hi"),
            )
        )
        return (
            forecast.join(backcast, on=keys, how="left")
            .with_columns(pl.col("point").clip(0.0))
            .select(
                *keys, "ts", "point",
                (pl.col("point") + pl.col("err_lo").fill_null(0.0).clip(upper_bound=0.0)).clip(0.0).alias("lo"),
                (pl.col("point") + pl.col("err_hi").fill_null(0.0).clip(lower_bound=0.0)).clip(0.0).alias("hi"),
            )
            .sort(*keys, "ts")
        )
