"""Forecasting on a Dask cluster against a process pool: the same per-series fits, the same chunks.

`n` series of 14 days (Bitbrains' series tiled, `benchmarks/forecast.py` `tiled_series`), 24 hours ahead,
one origin. Each per-series forecaster runs three ways in one run: in this process (one core), over a
`concurrent.futures.ProcessPoolExecutor` of one process per core (spawned, as Prophet's own pool), and over
a `distributed.LocalCluster` of one single-threaded worker per core (`forecasting/on_dask.py`), the last two
on the same chunks of `SERIES_PER_TASK` series through the same task function. Reported: wall seconds,
seconds per series, the speed-up over one core, and whether the three forecasts are equal. The global model
(`global_gbm`) trains where it is and is not part of this table (`benchmarks/forecast.py --global-speed-only`).

    python benchmarks/forecast_dask.py [--series 10000] [--forecasters auto_theta,prophet] [--prophet-series 1000]
                                       [--one-core-series N]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, require_shared_dir, results_path, write_json_atomic  # noqa: E402
from benchmarks.forecast import HORIZON_HOURS, load_trace, tiled_series  # noqa: E402
from shardplan.cluster import dask_client  # noqa: E402
from shardplan.forecasting.base import last_hour, series_keys  # noqa: E402
from shardplan.forecasting.on_dask import SERIES_PER_TASK, OnDask, chunks, fit_chunk  # noqa: E402


def on_pool(name: str, settings: dict, series: pl.DataFrame, workers: int) -> pl.DataFrame:
    """The chunks over a spawned process pool (the pool's start counts)."""
    origin = last_hour(series)
    parts = chunks(series)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = list(pool.map(fit_chunk, [name] * len(parts), [settings] * len(parts), parts,
                              [HORIZON_HOURS] * len(parts), [origin] * len(parts)))
    return pl.concat(parts).sort(*series_keys(series), "ts")


def in_process(name: str, settings: dict, series: pl.DataFrame) -> pl.DataFrame:
    return fit_chunk(name, settings, series, HORIZON_HOURS, last_hour(series)).sort(*series_keys(series), "ts")


def same(a: pl.DataFrame, b: pl.DataFrame) -> bool:
    return a.height == b.height and bool(np.allclose(a["point"].to_numpy(), b["point"].to_numpy(), rtol=1e-6))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--forecasters", default="auto_theta,prophet")
    parser.add_argument("--prophet-series", type=int, default=1_000,
                        help="series for Prophet (about 0.1-0.3 s a fit: 10,000 take most of an hour on 2 cores)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--one-core-series", type=int, default=None,
                        help="run the one-core reference only up to this many series (default: always)")
    args = parser.parse_args(argv)
    console = Console()
    history = load_trace("bitbrains", require_shared_dir())
    rows, report = [], []
    with dask_client("local", args.workers) as client:
        for name in args.forecasters.split(","):
            n = args.prophet_series if name.startswith("prophet") else args.series
            series = tiled_series(history, n)
            n = series.select(series_keys(series)).n_unique()
            settings = {"workers": 1} if name.startswith("prophet") else {}
            timings, outputs = {}, {}
            ways = [("one core", lambda: in_process(name, settings, series)),
                    ("process pool", lambda: on_pool(name, settings, series, args.workers)),
                    ("dask LocalCluster", lambda: OnDask(name, client, **settings).fit_predict(series, HORIZON_HOURS))]
            if args.one_core_series is not None and n > args.one_core_series:
                ways = ways[1:]
            for way, run in ways:
                began = time.perf_counter()
                outputs[way] = run()
                timings[way] = time.perf_counter() - began
                console.print(f"{name}, {n} series, {way}: {timings[way]:.1f} s")
            reference = outputs.get("one core", outputs["process pool"])
            equal = all(same(reference, out) for out in outputs.values())
            base = timings.get("one core")
            for way, wall in timings.items():
                rows.append((name, n, way, wall, wall / n, None if base is None else base / wall,
                             "yes" if equal else "NO"))
            report.append({"forecaster": name, "series": n, "workers": args.workers, "series_per_task": SERIES_PER_TASK,
                           "wall_s": timings, "s_per_series": {k: v / n for k, v in timings.items()},
                           "dask_over_pool": timings["dask LocalCluster"] / timings["process pool"],
                           "forecasts_equal": equal})
    print_table(f"Per-series forecasting, {args.workers} workers, {HORIZON_HOURS} h ahead: one core vs process pool vs "
                "Dask LocalCluster (same chunks)", ["forecaster", "series", "on", "wall s", "s per series",
                                                    "speed-up vs one core", "forecasts equal"], rows, console, digits=4)
    path = write_json_atomic(results_path("forecast_dask"), {"runs": report, "cpus": os.cpu_count(),
                                                             "load_average_1_5_15": list(os.getloadavg())})
    console.print(f"wrote {path}")
    return 0 if all(r["forecasts_equal"] for r in report) else 1


if __name__ == "__main__":
    raise SystemExit(main())
