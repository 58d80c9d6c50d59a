"""The forecasters by name: the seasonal-naive baselines, Prophet and statsforecast's models (each library loaded
only when asked for).

Callers ask :func:`get_forecaster` for a name; nothing tests names. The interface and the baselines
live in forecasting.base, which Prophet's module builds on too.
"""
from __future__ import annotations

from collections.abc import Callable

from shardplan.forecasting.base import FORECAST_COLUMNS, QUANTILES, Forecaster, SeasonalNaive, last_hour, series_keys  # noqa: F401


def _prophet(**settings: object) -> Forecaster:
    from shardplan.forecasting.prophet_model import ProphetForecaster  # Prophet and pandas load only when asked for

    return ProphetForecaster(**settings)


def _prophet_plain(**settings: object) -> Forecaster:
    from shardplan.forecasting.prophet_model import ProphetForecaster

    return ProphetForecaster.plain(**settings)


def _global(**settings: object) -> Forecaster:
    from shardplan.forecasting.global_model import GlobalGBM  # lightgbm and mlforecast load only when asked for

    return GlobalGBM(**settings)


def _statsforecast(name: str, model: str) -> Callable[..., Forecaster]:
    def make(**settings: object) -> Forecaster:
        from shardplan.forecasting.statsforecast_models import StatsForecastModel  # statsforecast loads when asked

        return StatsForecastModel(name, model, **settings)
    return make


def _selected(**settings: object) -> Forecaster:
    from shardplan.forecasting.selection import SelectedForecaster

    return SelectedForecaster(factory=get_forecaster, **settings)


FORECASTERS: dict[str, Callable[..., Forecaster]] = {
    "prophet": _prophet,
    "prophet_plain": _prophet_plain,
    "last_value": lambda: SeasonalNaive("last_value", period_hours=1),
    "same_hour_yesterday": lambda: SeasonalNaive("same_hour_yesterday", period_hours=24),
    "same_hour_last_week": lambda: SeasonalNaive("same_hour_last_week", period_hours=168),
    "mean_7_same_hours": lambda: SeasonalNaive("mean_7_same_hours", period_hours=24, seasons=7),
    "mstl": _statsforecast("mstl", "mstl"),
    "auto_ets": _statsforecast("auto_ets", "auto_ets"),
    "auto_theta": _statsforecast("auto_theta", "auto_theta"),
    "sf_seasonal_naive": _statsforecast("sf_seasonal_naive", "seasonal_naive"),
    "global_gbm": lambda **settings: _global(**settings),
    "shardplan_auto": _selected,
}
PEERS: tuple[str, ...] = ("mstl", "auto_ets", "auto_theta", "sf_seasonal_naive")
"""statsforecast's models (forecasting.statsforecast_models): the peers every forecasting benchmark shows."""
BASELINES: tuple[str, ...] = ("last_value", "same_hour_yesterday", "same_hour_last_week", "mean_7_same_hours")
DEFAULT_FORECASTER = "prophet"


def register_forecaster(name: str, factory: Callable[..., Forecaster]) -> None:
    """Add (or replace) a forecaster under `name`."""
    FORECASTERS[name] = factory


def get_forecaster(name: str, **settings: object) -> Forecaster:
    """A new forecaster by registered name; settings go to its constructor."""
    try:
        factory = FORECASTERS[name]
    except KeyError:
        raise KeyError(f"unknown forecaster {name!r} (known: {', '.join(sorted(FORECASTERS))})") from None
    return factory(**settings)
