"""Selection and reconciliation (registered as `shardplan_auto`): per series, the forecaster that did best on the
training window's own last days, then the hierarchy made coherent.

**Selection.** The candidates (seasonal-naive rules, statsforecast's AutoTheta, the global LightGBM model) each
forecast every series from `validation_days` rolling origins inside the history handed over (the last days of
the training window: nothing after the forecast origin is seen). Per series, the candidate with the lowest WAPE
over those origins is chosen (ties: the earlier candidate), and refitted on the whole history.

**Hierarchy.** When the series are (user_id, app_type[, resource]), every level is forecast the same way: the
fleet total per resource, per application type, per user, and the bottom (user, app type) series. These are
grouped, not nested (a user spans app types), which hierarchicalforecast's summing matrix expresses
(`aggregate` over the four specs).

**Reconciliation** (hierarchicalforecast): bottom-up, or MinT with a shrunk covariance (`mint_shrink`), whose
error covariance is estimated from the chosen forecasts' errors on the validation origins. Which one is used —
or none — is chosen by the fleet total's WAPE on those same origins (the covariance is estimated on them too, so
the choice slightly favours MinT). Only the bottom series are returned: reconciliation moves their points so
that their sums follow the better aggregate forecasts; each band moves with its point. The band is the chosen
model's own: bands from the validation errors' 10th and 90th percentiles were tried on the tuning origins and
covered less (Bitbrains vcpu 58 % against 71 %, RAM 68 % against 82 %).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import polars as pl

from shardplan.forecasting.base import Forecaster, last_hour, series_keys

CANDIDATES: tuple[str, ...] = ("last_value", "mean_7_same_hours", "same_hour_yesterday", "auto_theta", "global_gbm")
"""Tried per series, in this order (ties go to the earlier one)."""
RECONCILERS: tuple[str, ...] = ("none", "bottom_up", "mint_shrink")
COMBINATION = "combination"
"""A further choice per series: the mean of every candidate's forecast (point and band), the M-competitions'
robust default; chosen like any candidate, on the validation origins."""
HIERARCHY_KEYS: tuple[str, str] = ("user_id", "app_type")
ANY = "*"
"""The key value of a series summed over that key (an aggregate level)."""


def wape(frame: pl.DataFrame, by: list[str], point: str = "point") -> pl.DataFrame:
    """Σ|y − point| ÷ Σ|y| per group (mean absolute error where Σ|y| is 0)."""
    return frame.group_by(by).agg(
        pl.when(pl.col("y").abs().sum() > 0)
        .then((pl.col("y") - pl.col(point)).abs().sum() / pl.col("y").abs().sum())
        .otherwise((pl.col("y") - pl.col(point)).abs().mean()).alias("wape"))


@dataclass
class SelectedForecaster(Forecaster):
    """Per-series selection among `candidates` on the history's last days, then reconciliation (module docstring)."""

    name: str = "shardplan_auto"
    candidates: tuple[str, ...] = CANDIDATES
    validation_days: int = 3
    reconcile: str = "auto"
    """auto (chosen on the validation origins), or one of RECONCILERS."""
    min_train_days: int = 2
    factory: Callable[[str], Forecaster] | None = None
    """Makes a candidate by name (the registry's get_forecaster, handed in by it)."""
    last_choice: dict[str, object] = field(default_factory=dict)
    """What the last fit chose: candidate counts per level, the reconciler and the validation scores."""

    def __post_init__(self) -> None:
        if self.reconcile not in ("auto", *RECONCILERS):
            raise ValueError(f"reconcile must be auto or one of {', '.join(RECONCILERS)}, got {self.reconcile!r}")
        self._models: dict[str, Forecaster] = {}

    def _model(self, name: str) -> Forecaster:
        if self.factory is None:
            raise ValueError("SelectedForecaster needs the registry's factory: get_forecaster('shardplan_auto')")
        if name not in self._models:
            self._models[name] = self.factory(name)
        return self._models[name]

    def close(self) -> None:
        for model in self._models.values():
            model.close()
        self._models = {}

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "candidates": list(self.candidates), "validation_days": self.validation_days,
                "reconcile": self.reconcile, "last_choice": self.last_choice}

    # --- the series of every level ------------------------------------------------------------------

    @staticmethod
    def nodes(series: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, bool]:
        """Every level's series (keys with ANY where summed over, `_id`, `_level`, ts, y) and whether the keys
        make a hierarchy; without one, the series themselves."""
        hierarchical = all(k in keys for k in HIERARCHY_KEYS)
        if not hierarchical:
            return series.with_columns(pl.concat_str([pl.col(k).cast(pl.Utf8) for k in keys], separator="|")
                                       .alias("_id"), pl.lit("bottom").alias("_level")), False
        top = [k for k in keys if k not in HIERARCHY_KEYS]
        levels = {"total": [], "app_type": ["app_type"], "user_id": ["user_id"], "bottom": list(HIERARCHY_KEYS)}
        pairs = series.select(*HIERARCHY_KEYS).unique()
        for level in ("app_type", "user_id"):   # a level with one bottom per node repeats the bottom: left out
            if pairs[level].n_unique() == pairs.height:
                del levels[level]
        frames = []
        for level, kept in levels.items():
            by = [*top, *kept]
            summed = series.group_by(*by, "ts").agg(pl.col("y").sum()) if level != "bottom" else series
            frames.append(summed.with_columns(*(pl.lit(ANY).alias(k) for k in HIERARCHY_KEYS if k not in kept),
                                              pl.lit(level).alias("_level"))
                          .select(*keys, "_level", "ts", "y"))
        frame = pl.concat(frames, how="vertical")
        return frame.with_columns(pl.concat_str([pl.col("_level"), *[pl.col(k).cast(pl.Utf8) for k in keys]],
                                                separator="|").alias("_id")), True

    # --- selection ------------------------------------------------------------------------------------

    def _forecast(self, name: str, frame: pl.DataFrame, keys: list[str], horizon: int) -> pl.DataFrame:
        cols = [*keys, "_level", "_id"]
        return self._model(name).fit_predict(frame.select(*cols, "ts", "y"), horizon).select(
            "_id", "ts", "point", "lo", "hi")

    def validate(self, nodes: pl.DataFrame, keys: list[str], origin, horizon: int) -> pl.DataFrame:
        """Every candidate's forecasts from the validation origins, with the actuals: candidate, _id, origin, ts,
        point, lo, hi, y."""
        lead = min(horizon, 24)
        first = nodes["ts"].min()
        out = []
        for k in range(1, self.validation_days + 1):
            start = origin - timedelta(hours=24 * k)
            if start - first < timedelta(days=self.min_train_days):
                continue
            train = nodes.filter(pl.col("ts") <= start)
            actual = nodes.filter((pl.col("ts") > start) & (pl.col("ts") <= start + timedelta(hours=lead)))
            if actual.height == 0:
                continue
            for name in self.candidates:
                predicted = self._forecast(name, train, keys, lead)
                out.append(predicted.join(actual.select("_id", "ts", "y"), on=["_id", "ts"], how="inner")
                           .with_columns(pl.lit(name).alias("candidate"), pl.lit(start).alias("origin")))
        if not out:
            return pl.DataFrame(schema={"_id": pl.Utf8, "ts": nodes.schema["ts"], "point": pl.Float64,
                                        "lo": pl.Float64, "hi": pl.Float64, "y": pl.Float64,
                                        "candidate": pl.Utf8, "origin": nodes.schema["ts"]})
        frame = pl.concat(out, how="vertical_relaxed")
        if len(self.candidates) > 1:
            mean = self.combined(frame, ["_id", "origin", "ts"])
            frame = pl.concat([frame, mean.select(frame.columns)], how="vertical_relaxed")
        return frame

    @staticmethod
    def combined(frames: pl.DataFrame, by: list[str]) -> pl.DataFrame:
        """The mean of the candidates' point, lo and hi per `by` (rows every candidate forecast)."""
        n = frames["candidate"].n_unique()
        return (frames.group_by(by).agg(pl.col("point", "lo", "hi").mean(), pl.len().alias("_n"),
                                        *([pl.col("y").first()] if "y" in frames.columns else []))
                .filter(pl.col("_n") == n).drop("_n").with_columns(pl.lit(COMBINATION).alias("candidate")))

    def choose(self, validation: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
        """_id → candidate: the lowest validation WAPE, ties to the earlier candidate; the first candidate where
        nothing was validated."""
        order = {name: i for i, name in enumerate((*self.candidates, COMBINATION))}
        if validation.height == 0:
            return ids.with_columns(pl.lit(self.candidates[0]).alias("candidate"))
        scores = wape(validation, ["_id", "candidate"]).with_columns(
            pl.col("candidate").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        best = scores.sort("_id", "wape", "_order").unique("_id", keep="first").select("_id", "candidate")
        return ids.join(best, on="_id", how="left").with_columns(pl.col("candidate").fill_null(self.candidates[0]))

    # --- reconciliation --------------------------------------------------------------------------------

    @staticmethod
    def summing(nodes: pl.DataFrame, keys: list[str]) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:
        """The summing matrix (hierarchicalforecast's S_df: unique_id, then one column per bottom id) and tags."""
        order = {"total": 0, "app_type": 1, "user_id": 2, "bottom": 3}   # aggregates first, the bottom last
        ids = (nodes.select("_id", "_level", *keys).unique("_id")
               .sort(pl.col("_level").replace_strict(order, return_dtype=pl.Int64), "_id"))
        bottoms = ids.filter(pl.col("_level") == "bottom")
        top = [k for k in keys if k not in HIERARCHY_KEYS]
        matrix = np.zeros((ids.height, bottoms.height))
        rows = ids.rows(named=True)
        for j, b in enumerate(bottoms.rows(named=True)):
            for i, node in enumerate(rows):
                if all(node[k] == b[k] for k in top) and all(node[k] in (ANY, b[k]) for k in HIERARCHY_KEYS):
                    matrix[i, j] = 1.0
        frame = pl.DataFrame({"unique_id": ids["_id"]}).hstack(
            pl.DataFrame(matrix, schema=bottoms["_id"].to_list()))
        tags = {level: ids.filter(pl.col("_level") == level)["_id"].to_numpy()
                for level in ("total", "app_type", "user_id", "bottom")
                if ids.filter(pl.col("_level") == level).height}
        return frame, tags

    @staticmethod
    def reconciled(method: str, base: pl.DataFrame, residuals: pl.DataFrame, s_df: pl.DataFrame,
                   tags: dict[str, np.ndarray]) -> pl.DataFrame:
        """_id, ts, point reconciled by `method` (none: the base)."""
        if method == "none":
            return base.select("_id", "ts", "point")
        from hierarchicalforecast.core import HierarchicalReconciliation
        from hierarchicalforecast.methods import BottomUp, MinTrace

        reconciler = BottomUp() if method == "bottom_up" else MinTrace(method="mint_shrink")
        naive = lambda frame: frame.with_columns(pl.col("ts").dt.replace_time_zone(None))  # noqa: E731
        y_hat = naive(base).select(pl.col("_id").alias("unique_id"), pl.col("ts").alias("ds"),
                                   pl.col("point").alias("base"))
        y_df = None
        if method != "bottom_up":
            y_df = naive(residuals).select(pl.col("_id").alias("unique_id"), pl.col("ts").alias("ds"), "y",
                                           pl.col("point").alias("base"))
        out = HierarchicalReconciliation([reconciler]).reconcile(Y_hat_df=y_hat, tags=tags, S_df=s_df, Y_df=y_df)
        column = next(c for c in out.columns if c.startswith("base/"))
        zone = base.schema["ts"].time_zone
        return out.select(pl.col("unique_id").alias("_id"),
                          pl.col("ds").dt.replace_time_zone(zone).cast(base.schema["ts"]).alias("ts"),
                          pl.col(column).alias("point"))

    @staticmethod
    def complete(frame: pl.DataFrame, ids: list[str]) -> pl.DataFrame:
        """Every id at every hour of the frame (per origin): a series the window did not see (no samples) gets 0
        for forecast and actual, as the sums over it do (reconciliation needs every node at every hour)."""
        grid = (pl.DataFrame({"_id": ids}).join(frame.select("origin", "ts").unique(), how="cross"))
        return (grid.join(frame, on=["_id", "origin", "ts"], how="left")
                .with_columns(pl.col("point", "lo", "hi", "y").fill_null(0.0),
                              pl.col("candidate").fill_null("none")))

    def pick_reconciler(self, validation: pl.DataFrame, s_df, tags, nodes: pl.DataFrame) -> tuple[str, dict]:
        """The reconciler whose fleet totals (level total) had the lowest WAPE on the validation origins."""
        if self.reconcile != "auto":
            return self.reconcile, {}
        scores = {}
        totals = set(tags["total"].tolist())
        for method in RECONCILERS:
            parts = []
            for origin in validation["origin"].unique().sort().to_list():
                chunk = validation.filter(pl.col("origin") == origin)
                try:
                    rec = self.reconciled(method, chunk, validation, s_df, tags)
                except Exception:  # a reconciler that cannot run on these origins (a singular covariance)
                    rec = None
                if rec is None:
                    parts = []
                    break
                parts.append(rec.join(chunk.select("_id", "ts", "y"), on=["_id", "ts"]))
            if parts:
                frame = pl.concat(parts).filter(pl.col("_id").is_in(list(totals)))
                scores[method] = float(wape(frame.with_columns(pl.lit(1).alias("_all")), ["_all"])["wape"][0])
        if not scores:
            return "none", {}
        return min(scores, key=lambda m: (scores[m], RECONCILERS.index(m))), scores

    # --- the forecast ------------------------------------------------------------------------------------

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        keys = series_keys(series)
        origin = last_hour(series)
        nodes, hierarchical = self.nodes(series, keys)
        validation = self.validate(nodes, keys, origin, horizon_hours)
        ids = nodes.select("_id", "_level").unique("_id")
        chosen = self.choose(validation, ids)
        finals = []
        combining = chosen.filter(pl.col("candidate") == COMBINATION).select("_id")
        for name in self.candidates:
            mine = chosen.filter(pl.col("candidate") == name).select("_id")
            needed = pl.concat([mine, combining]).unique()
            if needed.height == 0:
                continue
            forecast = self._forecast(name, nodes.join(needed, on="_id", how="semi"), keys, horizon_hours)
            finals.append(forecast.with_columns(pl.lit(name).alias("candidate")))
        every = pl.concat(finals, how="vertical_relaxed")
        parts = [every.join(chosen.select("_id", "candidate"), on=["_id", "candidate"], how="semi")]
        if combining.height:
            mean = self.combined(every.join(combining, on="_id", how="semi"), ["_id", "ts"])
            parts.append(mean.select(every.columns))
        base = pl.concat(parts, how="vertical_relaxed").drop("candidate")
        method, scores = "none", {}
        if hierarchical and self.reconcile != "none" and validation.height:
            best_val = validation.join(chosen.select("_id", "candidate"), on=["_id", "candidate"], how="semi")
            s_df, tags = self.summing(nodes, keys)
            best_val = self.complete(best_val, s_df["unique_id"].to_list())
            ids = s_df["unique_id"].to_list()
            seen = base.select("_id").unique()
            if seen.height < len(ids):   # a node no candidate forecast (no history): 0 for it
                hours = base.select("ts").unique()
                missing = pl.DataFrame({"_id": ids}).join(seen, on="_id", how="anti").join(hours, how="cross")
                base = pl.concat([base, missing.with_columns(pl.lit(0.0).alias(c) for c in ("point", "lo", "hi"))
                                  .select(base.columns)], how="vertical_relaxed")
            method, scores = self.pick_reconciler(best_val, s_df, tags, nodes)
            if method != "none":
                rec = self.reconciled(method, base, best_val, s_df, tags).rename({"point": "_rec"})
                base = (base.join(rec, on=["_id", "ts"], how="left")
                        .with_columns((pl.col("_rec").fill_null(pl.col("point")) - pl.col("point")).alias("_shift"))
                        .with_columns((pl.col(c) + pl.col("_shift")).alias(c) for c in ("point", "lo", "hi"))
                        .drop("_rec", "_shift"))
        counts = chosen.group_by("_level", "candidate").len().sort("_level", "candidate")
        self.last_choice = {
            "candidates": {f"{row['_level']}/{row['candidate']}": int(row["len"]) for row in counts.iter_rows(named=True)},
            "reconciler": method, "validation_total_wape": {k: round(v, 4) for k, v in scores.items()
                                                            if math.isfinite(v)},
        }
        bottoms = nodes.filter(pl.col("_level") == "bottom").select(*keys, "_id").unique("_id")
        out = (base.join(bottoms, on="_id", how="inner")
               .with_columns(pl.col("point").clip(0.0))
               .with_columns(pl.min_horizontal("lo", "point").clip(0.0).alias("lo"),
                             pl.max_horizontal("hi", "point").alias("hi")))
        return out.select(*keys, "ts", "point", "lo", "hi").sort(*keys, "ts")
