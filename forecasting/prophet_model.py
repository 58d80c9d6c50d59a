"""Prophet forecaster: daily and weekly seasonality, fitted per series in a process pool, quietly.

Plain Prophet loses to last-value on VM load 24 hours ahead: its level is a 14-day
trend fit that lags a series which moved, and on most VMs its daily shape is noise.
The shipped settings (:data:`SHIPPED_SETTINGS`) keep Prophet for the shape and anchor
the level on the recent hours; per series and origin, inside the training window, they
choose the level window and how much of Prophet's shape to add (see
:func:`anchored_forecast`). :meth:`ProphetForecaster.plain` is Prophet as it comes.
"""
from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np
import polars as pl

from shardplan.forecasting.base import QUANTILES, Forecaster, last_hour, series_keys

QUIET_LOGGERS = ("cmdstanpy", "prophet", "prophet.plot", "prophet.models")
MIN_FIT_HOURS = 48
"""Fewer observed hours than this and the series gets the recent-level forecast without Prophet."""
FALLBACK_LEVEL_HOURS = 6


@dataclass(frozen=True)
class ProphetSettings:
    """How one series is fitted and read; every field is recorded by the benchmark."""

    daily_seasonality: bool = True
    weekly_seasonality: bool = True
    holidays_country: str | None = None
    """Country code for Prophet's built-in holidays (off by default: the fleet spans countries)."""
    growth: str = "linear"
    """Prophet's trend: linear (with changepoints) or flat (a level plus seasonality)."""
    changepoint_prior_scale: float = 0.05
    """Prophet's trend flexibility (its default)."""
    changepoint_range: float = 0.8
    """Share of the training window where the trend may bend (Prophet's default)."""
    seasonality_prior_scale: float = 10.0
    """Prophet's seasonality flexibility (its default)."""
    log_offset: float | None = None
    """Fit log(y + offset × mean(y)) instead of y, so the point forecast is a median, not a mean; None fits y."""
    spike_clip_sigmas: float | None = None
    """Clip training values above median + this × 1.4826 × MAD (robust sigma); None keeps spikes."""
    level_hours: tuple[int, ...] | None = None
    """Candidate windows (hours) for anchoring the level on the recent hours; None keeps Prophet's own level.
    Prophet's fitted level lags a series that moved, and a VM's load is mostly persistence."""
    level_statistic: str = "median"
    """median or mean of the window (in the fitted scale)."""
    shape_weights: tuple[float, ...] = (1.0,)
    """Candidate shares of Prophet's predicted change (seasonality and trend) added to the level."""
    shape_penalty: float = 1.0
    """In-sample error multiplier for candidates that use Prophet's shape: the shape was fitted on those
    very hours, so its in-sample error flatters it."""
    interval_samples: int = 1000
    """Prophet's uncertainty samples for its own 10/90 band (used when the level is not anchored)."""
    interval_scale: float = 1.0
    """Widen (>1) or narrow the empirical band of the anchored forecast (in-sample errors are optimistic)."""


def quiet_prophet() -> None:
    """Silence Stan and Prophet logging (the 'Chain [1] start processing' chatter) and Prophet's pandas warnings.

    cmdstanpy installs its own console handler when its logger has none, so a null
    handler goes first; the level is set again whatever the import order was.
    """
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
        logger.setLevel(logging.CRITICAL)
        logger.propagate = False
    warnings.filterwarnings("ignore", module=r"prophet(\..*)?$")


@contextlib.contextmanager
def silenced_output() -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors too) to /dev/null for the block."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = [os.dup(1), os.dup(2)]
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def _worker_init() -> None:
    quiet_prophet()
    with silenced_output():
        import prophet  # noqa: F401  (import once per worker, quietly)
    quiet_prophet()


def fit_one(ts_hours: np.ndarray, y: np.ndarray, origin_hour: int, horizon_hours: int,
            settings: ProphetSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit one series (hours since epoch, values) and forecast hours origin+1..origin+horizon: point, lo, hi."""
    import pandas as pd
    from prophet import Prophet

    quiet_prophet()
    y = np.asarray(y, dtype=float)
    if settings.spike_clip_sigmas is not None:
        median = np.median(y)
        sigma = 1.4826 * np.median(np.abs(y - median))
        if sigma > 0:
            y = np.minimum(y, median + settings.spike_clip_sigmas * sigma)
    offset = max(settings.log_offset * float(np.mean(y)), 1e-6) if settings.log_offset is not None else 0.0
    fitted = np.log(y + offset) if settings.log_offset is not None else y
    if np.ptp(fitted) < 1e-9:  # a flat series: Prophet's scaling breaks down, and the answer is known
        level = np.full(horizon_hours, y[-1] if len(y) else 0.0)
        return level, level.copy(), level.copy()
    if len(y) < MIN_FIT_HOURS:
        return recent_level(y, horizon_hours)
    anchored = settings.level_hours is not None
    model = Prophet(
        growth=settings.growth,
        daily_seasonality=settings.daily_seasonality,
        weekly_seasonality=settings.weekly_seasonality,
        yearly_seasonality=False,
        changepoint_prior_scale=settings.changepoint_prior_scale,
        changepoint_range=settings.changepoint_range,
        seasonality_prior_scale=settings.seasonality_prior_scale,
        interval_width=QUANTILES[1] - QUANTILES[0],
        uncertainty_samples=0 if anchored else settings.interval_samples,
    )
    if settings.holidays_country:
        model.add_country_holidays(country_name=settings.holidays_country)
    stamps = pd.to_datetime(ts_hours * 3600, unit="s")
    with silenced_output():
        model.fit(pd.DataFrame({"ds": stamps, "y": fitted}))
    future_hours = np.arange(origin_hour + 1, origin_hour + horizon_hours + 1)
    if anchored:
        both = model.predict(pd.DataFrame({"ds": stamps.append(pd.to_datetime(future_hours * 3600, unit="s"))}))
        yhat = both["yhat"].to_numpy()
        point, lo, hi = anchored_forecast(ts_hours, fitted, yhat[:len(fitted)], yhat[len(fitted):], origin_hour,
                                          settings)
    else:
        predicted = model.predict(pd.DataFrame({"ds": pd.to_datetime(future_hours * 3600, unit="s")}))
        point = predicted["yhat"].to_numpy()
        lo = predicted.get("yhat_lower", predicted["yhat"]).to_numpy()
        hi = predicted.get("yhat_upper", predicted["yhat"]).to_numpy()
    # a trend extrapolated on a log scale grows exponentially: keep it within the training range ± its width
    floor, ceiling = fitted.min() - np.ptp(fitted), fitted.max() + np.ptp(fitted)
    point, lo, hi = (np.clip(v, floor, ceiling) for v in (point, lo, hi))
    if settings.log_offset is not None:
        point, lo, hi = (np.exp(v) - offset for v in (point, lo, hi))
    return np.maximum(point, 0.0), np.maximum(lo, 0.0), np.maximum(hi, 0.0)


def anchored_forecast(ts_hours: np.ndarray, fitted: np.ndarray, yhat_past: np.ndarray, yhat_future: np.ndarray,
                      origin_hour: int, settings: ProphetSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recent level plus a share of Prophet's change from it, chosen per series inside the training window.

    Every (window, shape weight) candidate forecasts each training hour from every earlier
    hour 1..horizon ahead, exactly as it will forecast the future; the candidate with the
    least mean absolute error (× shape_penalty when it uses the shape) wins. The 10/90 band
    for lead h is the point plus the winner's empirical 10th/90th percentile lead-h errors
    (× interval_scale). All in the fitted scale.
    """
    horizon = len(yhat_future)
    span = int(origin_hour - ts_hours.min()) + 1
    actual = np.full(span, np.nan)
    model = np.full(span, np.nan)
    index = (ts_hours - ts_hours.min()).astype(int)
    actual[index], model[index] = fitted, yhat_past
    statistic = np.nanmedian if settings.level_statistic == "median" else np.nanmean
    windows = [k for k in (settings.level_hours or (1,)) if k <= span // 2] or [1]
    made_at = np.arange(max(windows) - 1, span - 1)  # the same in-sample origins for every candidate
    best = None
    for hours in windows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows (gaps) give NaN, dropped below
            level = statistic(np.lib.stride_tricks.sliding_window_view(actual, hours), axis=1)
            base = np.nanmean(np.lib.stride_tricks.sliding_window_view(model, hours), axis=1)
        for weight in settings.shape_weights:
            errors = []
            for lead in range(1, horizon + 1):
                origins = made_at[made_at + lead < span]
                start = origins - hours + 1  # level[i] summarises hours i .. i+hours-1
                predicted = level[start] + weight * (model[origins + lead] - base[start])
                error = actual[origins + lead] - predicted
                errors.append(error[np.isfinite(error)])
            pooled = np.concatenate(errors)
            score = (np.abs(pooled).mean() if pooled.size else np.inf) * (settings.shape_penalty if weight else 1.0)
            if best is None or score < best[0]:
                last_level = level[-1] if np.isfinite(level[-1]) else fitted[-1]
                last_base = base[-1] if np.isfinite(base[-1]) else yhat_past[-1]
                best = (score, last_level + weight * (yhat_future - last_base), errors)
    _, point, errors = best
    spread = actual[np.isfinite(actual)] - np.nanmedian(actual)
    lo = np.empty_like(point)
    hi = np.empty_like(point)
    for i, lead_errors in enumerate(errors):
        sample = lead_errors if lead_errors.size >= 10 else spread
        lo[i] = point[i] + settings.interval_scale * min(np.quantile(sample, QUANTILES[0]), 0.0)
        hi[i] = point[i] + settings.interval_scale * max(np.quantile(sample, QUANTILES[1]), 0.0)
    return point, lo, hi


def recent_level(y: np.ndarray, horizon_hours: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Median of the last hours, banded by the 10th/90th percentiles of the series around it: the forecast
    for a series too short for Prophet or whose fit failed."""
    y = np.asarray(y, dtype=float)
    if y.size == 0:
        zeros = np.zeros(horizon_hours)
        return zeros, zeros.copy(), zeros.copy()
    level = float(np.median(y[-FALLBACK_LEVEL_HOURS:]))
    spread = y - np.median(y)
    lo = max(level + min(np.quantile(spread, QUANTILES[0]), 0.0), 0.0)
    hi = level + max(np.quantile(spread, QUANTILES[1]), 0.0)
    return np.full(horizon_hours, level), np.full(horizon_hours, lo), np.full(horizon_hours, hi)


def fit_chunk(chunk: list[tuple[np.ndarray, np.ndarray]], origin_hour: int, horizon_hours: int,
              settings: ProphetSettings) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Fit a batch of series in one worker call (fewer round trips than one task per series).

    A series whose fit fails (Stan gives up on a degenerate series) gets :func:`recent_level`
    rather than failing the whole fleet's forecast.
    """
    quiet_prophet()
    results = []
    for ts_hours, y in chunk:
        try:
            results.append(fit_one(ts_hours, y, origin_hour, horizon_hours, settings))
        except (RuntimeError, ValueError):
            results.append(recent_level(y, horizon_hours))
    return results


class ProphetForecaster(Forecaster):
    """Prophet per series, fitted in parallel over series by a process pool of `workers`."""

    def __init__(self, workers: int | None = None, name: str = "prophet", **changes: object):
        self.name = name
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.settings = replace(SHIPPED_SETTINGS, **changes)
        self._pool: Executor | None = None

    @classmethod
    def plain(cls, workers: int | None = None, **changes: object) -> "ProphetForecaster":
        """Prophet with its own defaults (no transform, no anchoring, its own band): the benchmark's reference."""
        forecaster = cls(workers=workers, name="prophet_plain")
        forecaster.settings = replace(ProphetSettings(), **changes)
        return forecaster

    def describe(self) -> dict[str, object]:
        """Settings for the benchmark JSON."""
        return {"name": self.name, "workers": self.workers, **asdict(self.settings)}

    def pool(self) -> Executor:
        """The process pool, started on first use (spawned workers: polars' threads do not survive fork)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_worker_init)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        with contextlib.suppress(Exception):
            self.close()

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        keys = series_keys(series)
        origin = last_hour(series)
        origin_hour = int(origin.timestamp()) // 3600
        parts = series.sort(*keys, "ts").partition_by(keys, maintain_order=True, as_dict=False)
        work = [
            ((part.get_column("ts").dt.epoch("s") // 3600).to_numpy(), part.get_column("y").to_numpy())
            for part in parts
        ]
        if self.workers == 1 or len(work) < 4:
            quiet_prophet()
            results = fit_chunk(work, origin_hour, horizon_hours, self.settings)
        else:
            chunk_size = max(1, min(16, len(work) // (self.workers * 4)))
            chunks = [work[i:i + chunk_size] for i in range(0, len(work), chunk_size)]
            futures = [self.pool().submit(fit_chunk, c, origin_hour, horizon_hours, self.settings) for c in chunks]
            results = [r for f in futures for r in f.result()]
        leads = pl.int_range(1, horizon_hours + 1, eager=True)
        frames = [
            part.select(keys).head(1).join(
                pl.DataFrame({"lead": leads, "point": point, "lo": lo, "hi": hi}), how="cross")
            for part, (point, lo, hi) in zip(parts, results)
        ]
        forecast = pl.concat(frames) if frames else pl.DataFrame(schema={**{k: series.schema[k] for k in keys},
                                                                          "lead": pl.Int64, "point": pl.Float64,
                                                                          "lo": pl.Float64, "hi": pl.Float64})
        return forecast.select(
            *keys, (pl.lit(origin) + pl.duration(hours=pl.col("lead"))).alias("ts"), "point", "lo", "hi",
        ).sort(*keys, "ts")


SHIPPED_SETTINGS = ProphetSettings(level_hours=(1, 3, 6, 12, 24), shape_weights=(0.0, 0.5, 1.0), shape_penalty=2.0,
                                   interval_scale=1.1)
"""Chosen on the tuning windows only (Bitbrains origins before 2013-08-15, Azure before 2016-12-04, samples of
VMs; see benchmarks/forecast.py): a log scale, carrying the last residual forward and fixed level windows
were tried there and lost to this per-series choice; shape_penalty 2.0 beat 1.0 and 1.5; interval_scale 1.1
put the in-sample-calibrated band at ~80 % coverage."""
