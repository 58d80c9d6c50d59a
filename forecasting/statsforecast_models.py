"""statsforecast's models as forecasters: the peers forecasting engineers reach for, beside Prophet and the
seasonal-naive baselines (registered in shardplan.forecasting.forecasters as `mstl`, `auto_ets`, `auto_theta`
and `sf_seasonal_naive`).

Each series is put on a regular hourly grid from its first hour to the frame's last (statsforecast's models need
one): an hour the history lacks is filled by linear interpolation between its neighbours (at the edges, the
nearest value). The 10th/90th percentiles are the models' own 80 % prediction intervals; forecasts below zero
are cut to zero (demand is never negative). A series too short for the model's seasons (fewer than two
seasons of history) is forecast by the seasonal naive rule at the daily period instead, or the last value when
it has less than a day: said in `describe()` as the count of such series.

- `mstl`: MSTL with daily and weekly seasons (weekly only with two weeks of history), its trend by AutoETS.
- `auto_ets`: AutoETS with a daily season.
- `auto_theta`: AutoTheta with a daily season.
- `sf_seasonal_naive`: statsforecast's seasonal naive (daily), the reference its own way.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import polars as pl

from shardplan.forecasting.base import Forecaster, last_hour, series_keys

DAY = 24
WEEK = 168
LEVEL = 80   # the 10th..90th percentile band


@dataclass
class StatsForecastModel(Forecaster):
    """One statsforecast model over every series (see the module docstring)."""

    name: str
    model: str                      # mstl, auto_ets, auto_theta, seasonal_naive
    fallbacks: int = field(default=0, init=False)

    def _make(self, hours: int):
        from statsforecast.models import MSTL, AutoETS, AutoTheta, Naive, SeasonalNaive

        if hours < 2 * DAY:
            return Naive() if hours < DAY else SeasonalNaive(season_length=DAY)
        if self.model == "mstl":
            seasons = [DAY, WEEK] if hours >= 2 * WEEK else [DAY]
            return MSTL(season_length=seasons, trend_forecaster=AutoETS(model="ZZN"))
        if self.model == "auto_ets":
            return AutoETS(season_length=DAY)
        if self.model == "auto_theta":
            return AutoTheta(season_length=DAY)
        if self.model == "seasonal_naive":
            return SeasonalNaive(season_length=DAY)
        raise ValueError(f"unknown statsforecast model {self.model!r}")

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        from statsforecast import StatsForecast

        keys = series_keys(series)
        origin = last_hour(series)
        ids = series.select(keys).unique(maintain_order=True).with_row_index("_sid")
        grid = regular_grid(series.join(ids, on=keys), origin)
        lengths = grid.group_by("_sid").len()
        out = []
        self.fallbacks = 0
        # series are grouped by the model their length allows (most take the asked one)
        lengths = lengths.with_columns(pl.col("len").map_elements(lambda n: type(self._make(int(n))).__name__ +
                                                                  ("w" if n >= 2 * WEEK else ""),
                                                                  return_dtype=pl.Utf8).alias("_model"))
        for _name, members in lengths.group_by("_model"):
            hours = int(members["len"].min())
            model = self._make(hours)
            if hours < 2 * DAY:
                self.fallbacks += members.height
            frame = (grid.join(members.select("_sid"), on="_sid")
                     .select(pl.col("_sid").cast(pl.Utf8).alias("unique_id"),
                             pl.col("ts").dt.replace_time_zone(None).alias("ds"), "y")
                     .to_pandas())
            with warnings.catch_warnings():  # statsmodels divides by a zero variance on flat series; harmless
                warnings.simplefilter("ignore", RuntimeWarning)
                fitted = StatsForecast(models=[model], freq="h", n_jobs=1).forecast(df=frame, h=horizon_hours,
                                                                                    level=[LEVEL])
            column = type(model).__name__
            out.append(pl.from_pandas(fitted.reset_index() if "unique_id" not in fitted.columns else fitted)
                       .select(pl.col("unique_id").cast(pl.UInt32).alias("_sid"),
                               pl.col("ds").alias("ts"), pl.col(column).alias("point"),
                               pl.col(f"{column}-lo-{LEVEL}").alias("lo"), pl.col(f"{column}-hi-{LEVEL}").alias("hi")))
        forecast = pl.concat(out)
        zone = series.schema["ts"].time_zone if isinstance(series.schema["ts"], pl.Datetime) else None
        forecast = forecast.with_columns(pl.col("ts").cast(pl.Datetime("us")))
        if zone:
            forecast = forecast.with_columns(pl.col("ts").dt.replace_time_zone(zone))
        clipped = [pl.col(c).clip(lower_bound=0.0) for c in ("point", "lo", "hi")]
        return (forecast.with_columns(clipped)
                .with_columns(pl.min_horizontal("lo", "point").alias("lo"), pl.max_horizontal("hi", "point").alias("hi"))
                .join(ids, on="_sid").select(*keys, "ts", "point", "lo", "hi").sort(*keys, "ts"))

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "model": self.model, "library": "statsforecast", "short_series_fallbacks":
                self.fallbacks}


def regular_grid(series: pl.DataFrame, origin: object) -> pl.DataFrame:
    """Every series (by `_sid`) on an hourly grid from its first hour to `origin`, gaps interpolated linearly
    (the nearest value at the edges)."""
    spans = series.group_by("_sid").agg(pl.col("ts").min().alias("first"))
    hours = spans.with_columns(pl.datetime_ranges("first", pl.lit(origin, dtype=series.schema["ts"]), interval="1h")
                               .alias("ts")).explode("ts").select("_sid", "ts")
    return (hours.join(series.select("_sid", "ts", "y"), on=["_sid", "ts"], how="left").sort("_sid", "ts")
            .with_columns(pl.col("y").interpolate().forward_fill().backward_fill().over("_sid")))
