"""A global learned forecaster: one gradient-boosted model over every series (registered as `global_gbm`).

LightGBM through mlforecast, chosen because:
- one model learns across series what a per-series model cannot, so a user or an app type with little history
  is forecast from what it learned of the others (the specification's cold start);
- quantile objectives give the 10th and 90th percentiles directly, with no distributional assumption;
- it trains on this fleet's size in seconds on two cores.

**Features.**
- The series' key columns (user, application type, resource) as categories.
- Hour of day and day of week.
- Recent lags (1, 2, 3, 24, 48 and 168 h).
- Rolling means and standard deviations of the last day, and the mean of the last 7 same hours.

**Target.** Each series is divided by its own mean level before training and multiplied back after, so one model
serves series of very different sizes. It is trained on everything before the forecast origin only: the backtest
hands it the history up to each origin, so there is no leakage.

**Outputs.** Three models, for the 10th, 50th and 90th percentiles. The median is the point forecast; the band is
ordered (lo ≤ point ≤ hi) and clipped at zero.

Series are put on an hourly grid first, with gaps interpolated (the lag features need one).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import polars as pl

from shardplan.forecasting.base import Forecaster, last_hour, series_keys
from shardplan.forecasting.statsforecast_models import regular_grid

QUANTILE_MODELS = {"lo": 0.1, "point": 0.5, "hi": 0.9}


@dataclass
class GlobalGBM(Forecaster):
    """LightGBM quantile models over all series at once (see the module docstring)."""

    name: str = "global_gbm"
    n_estimators: int = 300
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    lags: tuple[int, ...] = (1, 2, 3, 24, 48, 168)
    seed: int = 0
    threads: int = 0
    """LightGBM threads per model; 0: every core the machine has (results do not depend on it: deterministic)."""
    max_train_rows: int = 1_000_000
    """Above this many training rows (series × hours) the models train on a seeded random sample of this size
    (features are built on every row first, so lags stay exact), so a large fleet trains in bounded time;
    smaller fleets (every benchmark's accuracy run) use every row."""

    def _models(self) -> dict:
        import lightgbm as lgb

        return {column: lgb.LGBMRegressor(objective="quantile", alpha=alpha, n_estimators=self.n_estimators,
                                          learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                                          min_child_samples=self.min_child_samples, random_state=self.seed,
                                          n_jobs=self.threads or os.cpu_count() or 1, deterministic=True,
                                          force_row_wise=True, verbose=-1)
                for column, alpha in QUANTILE_MODELS.items()}

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        from mlforecast import MLForecast
        from mlforecast.lag_transforms import RollingMean, RollingStd

        keys = series_keys(series)
        origin = last_hour(series)
        ids = series.select(keys).unique(maintain_order=True).with_row_index("_sid")
        grid = regular_grid(series.join(ids, on=keys), origin)
        scale = grid.group_by("_sid").agg((pl.col("y").abs().mean() + 1e-6).alias("_scale"))
        frame = (grid.join(scale, on="_sid").join(ids, on="_sid")
                 .with_columns((pl.col("y") / pl.col("_scale")).alias("y")))
        statics = [f"k_{k}" for k in keys]
        pdf = frame.select(pl.col("_sid").cast(pl.Utf8).alias("unique_id"),
                           pl.col("ts").dt.replace_time_zone(None).alias("ds"), "y",
                           *[pl.col(k).cast(pl.Utf8).alias(f"k_{k}") for k in keys]).to_pandas()
        for column in statics:
            pdf[column] = pdf[column].astype("category")
        lags = [lag for lag in self.lags if lag < max(int(grid.group_by("_sid").len()["len"].max()), 2)]
        model = MLForecast(models=self._models(), freq="h", lags=lags,
                           lag_transforms={1: [RollingMean(window_size=24), RollingStd(window_size=24)],
                                           24: [RollingMean(window_size=7)]},
                           date_features=["hour", "dayofweek"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pandas/lightgbm chatter on categorical dtypes
            # keep the rows whose long lags are missing: the model learns to forecast a short history too
            if len(pdf) <= self.max_train_rows:
                model.fit(pdf, static_features=statics, dropna=False)
            else:   # features on every row, the models on a sample of them
                features = model.preprocess(pdf, static_features=statics, dropna=False)
                sample = features.sample(n=self.max_train_rows, random_state=self.seed)
                model.fit_models(sample.drop(columns=["unique_id", "ds", "y"]), sample["y"])
            predicted = model.predict(horizon_hours)
        out = (pl.from_pandas(predicted)
               .select(pl.col("unique_id").cast(pl.UInt32).alias("_sid"), pl.col("ds").cast(pl.Datetime("us")).alias("ts"),
                       *list(QUANTILE_MODELS))
               .join(scale, on="_sid")
               .with_columns([(pl.col(c) * pl.col("_scale")).clip(lower_bound=0.0).alias(c) for c in QUANTILE_MODELS]))
        zone = series.schema["ts"].time_zone if isinstance(series.schema["ts"], pl.Datetime) else None
        if zone:
            out = out.with_columns(pl.col("ts").dt.replace_time_zone(zone))
        out = out.with_columns(pl.min_horizontal("lo", "point").alias("lo"), pl.max_horizontal("hi", "point").alias("hi"))
        return out.join(ids, on="_sid").select(*keys, "ts", "point", "lo", "hi").sort(*keys, "ts")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "library": "mlforecast + lightgbm", "quantiles": list(QUANTILE_MODELS.values()),
                "n_estimators": self.n_estimators, "learning_rate": self.learning_rate, "lags": list(self.lags)}
