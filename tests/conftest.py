"""Shared fixtures: a four-host fleet, its requests and a valid hand-made plan of them.

Fleet: h1 (z1, rack r1, nvme, 2 × a100), h2 (z1, r2, ssd), h3 (z1, r1, hdd, RAM-heavy),
h4 (z2, r4, nvme, existing load). Plan: `web` whole on h2 with a storage copy on h1;
`ml` compute + GPU on h1 with remote memory on h3; `batch` split over h2 and h3;
`big` unplaced (no host has 64 vcpu).
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl
import pytest

from shardplan.schema import REQUESTS_OUT_SCHEMA, SHARDS_SCHEMA


@dataclass(frozen=True)
class ExamplePlan:
    """Inputs and exported tables of a small plan, as write_plan_dir takes them."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    plan_json: dict


def _four_host_fleet() -> pl.DataFrame:
    return pl.DataFrame({
        "host_id": ["h1", "h2", "h3", "h4"],
        "host_class": ["gpu", "general", "memory-optimized", "storage-nvme"],
        "zone": ["z1", "z1", "z1", "z2"],
        "rack": ["r1", "r2", "r1", "r4"],
        "vcpu": [16, 16, 8, 16],
        "ram_gib": [64, 64, 128, 64],
        "storage_gib": [1000, 1000, 2000, 1000],
        "storage_type": ["nvme", "ssd", "hdd", "nvme"],
        "net_gbps": [10.0, 10.0, 10.0, 10.0],
        "gpu": [2, 0, 0, 0],
        "gpu_model": ["a100", None, None, None],
        "cost_per_hour": [3.0, 1.0, 0.5, 1.0],
        "vcpu_overcommit": [1.0, 1.0, 1.0, 1.0],
        "status": ["up", "up", "up", "up"],
        "used_vcpu": [0, 0, 0, 2],
        "used_ram_gib": [0, 0, 0, 4],
        "used_storage_gib": [0, 0, 0, 0],
        "used_net_gbps": [0.0, 0.0, 0.0, 0.0],
        "used_gpu": [0, 0, 0, 0],
    })


def _four_host_requests() -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": ["web", "ml", "batch", "big"],
        "user_id": ["alice", "bob", "carol", "dave"],
        "app_type": ["web", "training", "batch", "analytics"],
        "vcpu": [4, 8, 10, 64],
        "ram_gib": [8, 40, 20, 128],
        "storage_gib": [100, 0, 0, 0],
        "gpu": [0, 1, 0, 0],
        "net_gbps": [1.0, 2.0, 0.5, 1.0],
        "storage_type": [None, None, None, None],
        "gpu_model": [None, "a100", None, None],
        "priority": [1, 2, 1, 1],
        "max_shards": [1, 2, 2, 1],
        "replicas": [2, 1, 1, 1],
        "latency_class": ["medium", "tolerant", "low", "medium"],
    }, schema_overrides={"storage_type": pl.Utf8})


def _four_host_shards() -> pl.DataFrame:
    rows = [
        # request, shard, host, replica, vcpu, ram, storage, net, gpu, role
        ("web", 0, "h2", 0, 4, 8, 0, 1.0, 0, "compute"),
        ("web", 1, "h2", 0, 0, 0, 100, 0.0, 0, "storage"),
        ("web", 2, "h1", 1, 0, 0, 100, 0.0, 0, "replica"),
        ("ml", 0, "h1", 0, 8, 24, 0, 2.0, 1, "compute"),
        ("ml", 1, "h3", 0, 0, 16, 0, 0.8, 0, "memory"),  # 16 GiB remote memory × 0.05 Gbps/GiB
        ("batch", 0, "h2", 0, 6, 12, 0, 0.5, 0, "compute"),
        ("batch", 1, "h3", 0, 4, 8, 0, 0.0, 0, "compute"),
    ]
    return pl.DataFrame(rows, schema=SHARDS_SCHEMA, orient="row")


def _four_host_requests_out() -> pl.DataFrame:
    return pl.DataFrame({
        "request_id": ["web", "ml", "batch", "big"],
        "status": ["placed", "placed", "placed", "unplaced"],
        "n_hosts": [1, 2, 2, 0],
        "cost_per_hour": [1.0, 3.5, 1.5, 0.0],
        "spread_penalty": [0.0, 0.1, 2.0, 0.0],
        "reason": [None, None, None, "vcpu: no host has 64 vcpu free (4 hosts)"],
    }, schema=REQUESTS_OUT_SCHEMA)


@pytest.fixture
def four_host_fleet() -> pl.DataFrame:
    """Validated hosts table (defaults filled) of the four-host fleet."""
    return _four_host_fleet()


@pytest.fixture
def four_host_requests() -> pl.DataFrame:
    """Validated requests table: web, ml, batch, big."""
    return _four_host_requests()


@pytest.fixture
def four_host_plan() -> ExamplePlan:
    """A plan of the four-host fleet that satisfies all nine invariants."""
    return ExamplePlan(
        hosts=_four_host_fleet(),
        requests=_four_host_requests(),
        shards=_four_host_shards(),
        requests_out=_four_host_requests_out(),
        plan_json={"status": "optimal", "objective": 5.6, "best_bound": 5.6, "gap": 0.0, "wall_s": 0.01,
                   "solver": "hand", "placed": 3, "unplaced": 1, "inputs_hash": "test", "version": "0.1.0",
                   "options": {"min_local_ram_gib_per_vcpu": 0.5, "remote_memory_gbps_per_gib": 0.05}},
    )


@pytest.fixture(scope="session")
def dask_client():
    """A real distributed.LocalCluster of two single-threaded worker processes (not a mock), for the session."""
    from shardplan.cluster import dask_client as start

    with start("local", workers=2) as client:
        yield client
