"""Per-series forecasters fanned out over a real distributed.LocalCluster (two worker processes): the same
forecast as in process, a chunk whose series end early gets the frame's origin, and the global model trains
where it is."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest

from shardplan.forecasting.forecasters import get_forecaster
from shardplan.forecasting.on_dask import OnDask, on_dask

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def many_series(n: int, hours: int, short: set[int] = frozenset()) -> pl.DataFrame:
    """n daily-cycle series of `hours` hours with seeded noise and levels; those in `short` end 30 hours early."""
    rng = np.random.default_rng(3)
    frames = []
    for i in range(n):
        length = hours - (30 if i in short else 0)
        ts = pl.datetime_range(START, START + timedelta(hours=length - 1), "1h", eager=True, time_unit="us",
                               time_zone="UTC")
        y = 5 + i % 7 + 3 * np.sin(np.arange(length) * 2 * np.pi / 24) + rng.normal(0, 0.5, length)
        frames.append(pl.DataFrame({"user_id": f"u{i:03d}", "app_type": "web", "resource": "vcpu", "ts": ts, "y": y}))
    return pl.concat(frames)


@pytest.mark.parametrize("name", ["auto_theta", "sf_seasonal_naive"])
def test_fanned_out_forecast_equals_the_in_process_one(dask_client, name) -> None:
    series = many_series(12, 10 * 24, short={4, 5, 6, 7})
    here = get_forecaster(name).fit_predict(series, 12)
    there = OnDask(name, dask_client, series_per_task=4).fit_predict(series, 12)
    assert there.height == here.height == 12 * 12
    assert there.select("user_id", "ts").equals(here.select("user_id", "ts"))
    np.testing.assert_allclose(there["point"].to_numpy(), here["point"].to_numpy(), rtol=1e-9)
    np.testing.assert_allclose(there["hi"].to_numpy(), here["hi"].to_numpy(), rtol=1e-9)
    assert (there["ts"].min() - series["ts"].max()) == timedelta(hours=1)  # the short chunk kept the origin


def test_prophet_fans_out_one_process_per_task(dask_client) -> None:
    series = many_series(4, 8 * 24)
    here = get_forecaster("prophet", workers=1).fit_predict(series, 6)
    there = on_dask("prophet", dask_client, series_per_task=2).fit_predict(series, 6)
    np.testing.assert_allclose(there["point"].to_numpy(), here["point"].to_numpy(), rtol=1e-6)


def test_the_global_model_trains_where_it_is(dask_client) -> None:
    assert not isinstance(on_dask("global_gbm", dask_client), OnDask)
    with pytest.raises(ValueError, match="trains where it is"):
        OnDask("global_gbm", dask_client)
