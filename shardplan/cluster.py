"""The Dask cluster shardplan's distributed work runs on: an existing scheduler, or a LocalCluster it starts."""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator


@contextlib.contextmanager
def dask_client(address: str | None = None, workers: int | None = None) -> Iterator[object]:
    """A distributed.Client on the scheduler at `address`, or (None or `local`) on a distributed.LocalCluster
    of `workers` single-threaded worker processes (default one per core), closed on exit."""
    from distributed import Client, LocalCluster

    if address not in (None, "local"):
        with Client(address) as client:
            yield client
        return
    # no dashboard; the scheduler's plain HTTP routes on a free port, so two clusters never fight over 8787
    with LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1, processes=True,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"},
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client
