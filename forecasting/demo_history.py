"""Seeded generator of the embedded demo history (data/demo/history.parquet).

Shaped after what the real traces show: CPU utilisation low on average (Bitbrains
~6–10 %, Azure ~4–11 %) with a daily cycle whose peak hour depends on the kind of
work (interactive by day, batch in the evening and at night), a weekend dip for
interactive work, slow growth, multiplicative noise and rare bursts; used memory
moves far less than CPU. Users u01..u40 and the six demo application types.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

from shardplan.files import write_parquet_atomically

APP_TYPES: tuple[str, ...] = ("web", "db", "analytics", "cache", "batch", "ml-training")
DEMO_START = datetime(2024, 5, 6, tzinfo=timezone.utc)  # a Monday


@dataclass(frozen=True)
class AppProfile:
    """Usage shape of one application type (hours are UTC)."""

    sizes: tuple[tuple[int, int], ...]
    """(vcpu, ram_gib) a VM of this type is allocated, picked at random."""
    mean_util: float
    """Mean CPU utilisation (0–1)."""
    daily_amplitude: float
    """Peak-to-mean swing of the daily cycle, as a share of the mean."""
    peak_hour: int
    weekend_factor: float
    """Saturday/Sunday level relative to weekdays."""
    noise: float
    """Sigma of the hourly log-normal noise."""
    burst_rate: float
    """Chance per hour that a burst (a job, a report run) starts."""
    ram_share: float
    """Used memory as a share of allocated memory."""


PROFILES: dict[str, AppProfile] = {
    "web": AppProfile(((2, 4), (4, 8)), 0.18, 0.6, 14, 0.6, 0.15, 0.002, 0.45),
    "db": AppProfile(((8, 32), (8, 56)), 0.25, 0.35, 15, 0.8, 0.10, 0.003, 0.70),
    "analytics": AppProfile(((16, 64), (32, 64)), 0.20, 0.5, 10, 0.4, 0.25, 0.010, 0.50),
    "cache": AppProfile(((4, 16), (8, 56)), 0.12, 0.5, 14, 0.7, 0.10, 0.001, 0.80),
    "batch": AppProfile(((2, 4), (4, 8)), 0.15, 0.8, 22, 0.9, 0.30, 0.020, 0.40),
    "ml-training": AppProfile(((16, 64), (16, 128)), 0.35, 0.2, 2, 1.0, 0.20, 0.008, 0.60),
}


def demo_pairs(requests: pl.DataFrame | None, vms: int, users: int) -> list[tuple[str, str]]:
    """(user_id, app_type) of each demo VM: the pairs the demo requests ask for most (so the planner finds
    history for them), else users u01..u<users> cycling through the app types."""
    if requests is not None and requests.height:
        ranked = (requests.group_by("user_id", "app_type").agg(pl.len().alias("requests"))
                  .sort("requests", "user_id", "app_type", descending=[True, False, False]))
        pairs = list(ranked.select("user_id", "app_type").iter_rows())
        return [pairs[i % len(pairs)] for i in range(vms)]
    return [(f"u{(vm * 7) % users + 1:02d}", APP_TYPES[vm % len(APP_TYPES)]) for vm in range(vms)]


def demo_history(vms: int = 60, days: int = 28, users: int = 40, weekly_growth: float = 0.02,
                 seed: int = 7, requests: pl.DataFrame | None = None) -> pl.DataFrame:
    """Hourly history of `vms` VMs over `days` days (seeded, deterministic); see :func:`demo_pairs` for labels."""
    rng = np.random.default_rng(seed)
    pairs = demo_pairs(requests, vms, users)
    hours = days * 24
    hour_index = np.arange(hours)
    hour_of_day = hour_index % 24
    weekday = (hour_index // 24) % 7  # DEMO_START is a Monday
    frames = []
    for vm, (user, app_type) in enumerate(pairs):
        profile = PROFILES.get(app_type, PROFILES["web"])
        vcpu, ram_gib = profile.sizes[rng.integers(len(profile.sizes))]
        level = profile.mean_util * rng.lognormal(0.0, 0.35)
        phase = (hour_of_day - profile.peak_hour + rng.integers(-1, 2)) * 2 * np.pi / 24
        daily = 1 + profile.daily_amplitude * np.cos(phase)
        weekly = np.where(weekday >= 5, profile.weekend_factor, 1.0)
        growth = (1 + weekly_growth * rng.uniform(0.0, 2.0)) ** (hour_index / 168)
        noise = rng.lognormal(-profile.noise ** 2 / 2, profile.noise, hours)
        bursts = np.zeros(hours)
        for start in np.flatnonzero(rng.random(hours) < profile.burst_rate):
            bursts[start:start + rng.integers(1, 6)] += rng.uniform(0.2, 0.6)
        cpu_util = np.clip(level * daily * weekly * growth * noise + bursts, 0.0, 1.0)
        ram_used = ram_gib * np.clip(profile.ram_share * (0.85 + 0.15 * cpu_util / max(cpu_util.mean(), 1e-6))
                                     * growth * rng.lognormal(0.0, 0.03, hours), 0.0, 1.0)
        frames.append(pl.DataFrame({
            "hour": hour_index, "vm_id": f"vm-{vm + 1:03d}", "user_id": user, "app_type": app_type,
            "vcpu": float(vcpu), "ram_gib": np.round(ram_used, 3), "ram_alloc_gib": float(ram_gib),
            "cpu_util": np.round(cpu_util, 4),
        }))
    return pl.concat(frames).select(
        (pl.lit(DEMO_START) + pl.duration(hours=pl.col("hour"))).dt.cast_time_unit("us").alias("ts"),
        "vm_id", "user_id", "app_type", "vcpu", "ram_gib", "ram_alloc_gib", "cpu_util",
    )


def write_demo_history(path: str | Path, **settings: object) -> Path:
    """Write the demo history as Parquet, atomically."""
    return write_parquet_atomically(demo_history(**settings), path, compression="zstd")


if __name__ == "__main__":
    demo = Path(__file__).resolve().parents[1] / "data" / "demo"
    demo_requests = pl.read_parquet(demo / "requests.parquet") if (demo / "requests.parquet").exists() else None
    print(write_demo_history(demo / "history.parquet", requests=demo_requests))
