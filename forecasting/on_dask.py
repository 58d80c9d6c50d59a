"""Per-series forecasters fanned out over a Dask cluster: the series cut into chunks, each chunk's fit one task.

A per-series forecaster (Prophet, statsforecast's MSTL / AutoETS / AutoTheta / seasonal naive) fits every
series on its own, so a chunk of series gives the same forecast wherever it runs; the one thing a chunk
shares with the whole frame is the forecast origin (the frame's last hour), so a chunk whose series all
end earlier carries one series that reaches the origin, and its forecast is dropped. The global model
(`global_gbm`) and the selection over it (`shardplan_auto`) learn across series: they train where they
are, in this process (with every core), and are not fanned out. The naive baselines are one vectorised
polars query: splitting them would only add transfers.

    forecaster = on_dask("prophet", client)           # a Forecaster like any other
    forecast = forecaster.fit_predict(series, 24)
"""
from __future__ import annotations

from datetime import timedelta

import polars as pl

from shardplan.forecasting.base import Forecaster, last_hour, series_keys

PER_SERIES: tuple[str, ...] = ("prophet", "prophet_plain", "mstl", "auto_ets", "auto_theta", "sf_seasonal_naive")
"""Registered forecasters that fit each series on its own: the ones a cluster fans out."""

SERIES_PER_TASK = 50
"""Series in one Dask task: enough that a task outweighs its transfer (a Prophet fit takes ~0.1–0.3 s)."""

CARRIER = "__origin_carrier__"


def fit_chunk(name: str, settings: dict, chunk: pl.DataFrame, horizon_hours: int, origin: object) -> pl.DataFrame:
    """One task: the registered forecaster `name` fitted on a chunk of series, in one process (workers=1)."""
    from shardplan.forecasting.forecasters import get_forecaster

    forecaster = get_forecaster(name, **settings)
    keys = series_keys(chunk)
    carried = last_hour(chunk) < origin
    if carried:  # the chunk's series all end before the frame's origin: 12 hours of one that reaches it
        carrier = pl.DataFrame({k: [CARRIER] for k in keys}, schema={k: chunk.schema[k] for k in keys})
        times = pl.DataFrame({"ts": pl.datetime_range(origin - timedelta(hours=11), origin, "1h", eager=True)})
        extra = carrier.join(times, how="cross").with_columns(pl.lit(0.0).alias("y"))
        chunk = pl.concat([chunk, extra.select(chunk.columns).cast(chunk.schema)])
    try:
        forecast = forecaster.fit_predict(chunk, horizon_hours)
    finally:
        forecaster.close()
    if carried:
        forecast = forecast.filter(pl.col(keys[0]).cast(pl.Utf8) != CARRIER)
    return forecast


def chunks(series: pl.DataFrame, size: int = SERIES_PER_TASK) -> list[pl.DataFrame]:
    """The frame cut into frames of `size` whole series each, in key order."""
    keys = series_keys(series)
    ids = series.select(keys).unique(maintain_order=True).sort(keys)
    return [series.join(ids.slice(i, size), on=keys, how="semi") for i in range(0, ids.height, size)]


class OnDask(Forecaster):
    """A registered per-series forecaster whose fits run as Dask tasks on `client` (chunks of series)."""

    def __init__(self, name: str, client, series_per_task: int = SERIES_PER_TASK, **settings: object):
        if name not in PER_SERIES:
            raise ValueError(f"{name!r} does not fit series one by one (fanned out: {', '.join(PER_SERIES)}); "
                             "it trains where it is")
        self.name, self.client, self.series_per_task = name, client, series_per_task
        self.settings = {"workers": 1, **settings} if name.startswith("prophet") else dict(settings)

    def fit_predict(self, series: pl.DataFrame, horizon_hours: int) -> pl.DataFrame:
        keys = series_keys(series)
        origin = last_hour(series)
        parts = chunks(series, self.series_per_task)
        futures = self.client.map(fit_chunk, [self.name] * len(parts), [self.settings] * len(parts), parts,
                                  [horizon_hours] * len(parts), [origin] * len(parts), pure=False, retries=2)
        return pl.concat(self.client.gather(futures)).sort(*keys, "ts")

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "on": "dask", "series_per_task": self.series_per_task, **self.settings}


def on_dask(name: str, client, **settings: object) -> Forecaster:
    """`name` on the cluster when it fits series one by one, else the forecaster itself (it trains here)."""
    from shardplan.forecasting.forecasters import get_forecaster

    if name in PER_SERIES:
        return OnDask(name, client, **settings)
    return get_forecaster(name, **settings)

