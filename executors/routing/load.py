"""Live load: other tenants' CPU use on each part's host, replayed from real host-utilisation series, so that
the cores a part can give a task at time t are its vcpu minus what that load takes (DESIGN.md).

`alibaba_2018_load` reads the Alibaba cluster-trace-v2018 machine sample (16 co-located hosts, 8 days,
cpu_util_percent every 30–120 s); `bitbrains_load` the Bitbrains Rnd VMs (5-minute CPU usage %). Each part gets
one series (part i → the i-th machine of the sample, after `offset` series), starting at `start_s` into it. The
load takes round(util × vcpu) of the part's cores, held between samples (a step function).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

ALIBABA_2018_CSV = "vm-usage/alibaba-2018-machine-sample/machine_usage_sample.csv.gz"
BITBRAINS_CSV = "vm-usage/bitbrains-rnd/usage_5min_2013-08_60vms.csv.gz"


@dataclass(frozen=True)
class LoadSeries:
    """Share of a host's CPU other tenants use, as steps: util[i] holds from times[i] (s from the run's start)."""

    source: str
    times: np.ndarray
    util: np.ndarray

    def cores_taken(self, vcpu: int) -> np.ndarray:
        return np.minimum(np.rint(self.util * vcpu).astype(np.int64), vcpu)

    def at(self, t: float) -> float:
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return float(self.util[max(i, 0)])


def pooled(loads: list[LoadSeries], vcpu: list[int]) -> LoadSeries:
    """The parts' loads as one host's: at every moment the vcpu-weighted mean of their shares (the load a VM on one
    host with all the parts' vcpu would see)."""
    times = np.unique(np.concatenate([s.times for s in loads]))
    total = float(sum(vcpu))
    util = sum(v * s.util[np.clip(np.searchsorted(s.times, times, side="right") - 1, 0, len(s.util) - 1)]
               for s, v in zip(loads, vcpu)) / total
    return LoadSeries("pooled(" + ", ".join(s.source for s in loads) + ")", times, np.asarray(util, dtype=float))


def idle() -> LoadSeries:
    return LoadSeries("none", np.array([0.0]), np.array([0.0]))


def _series(frame: pl.DataFrame, key: str, ts: str, util: str, n: int, offset: int, start_s: float,
            scale: float, source: str) -> list[LoadSeries]:
    names = frame.group_by(key).agg(pl.len().alias("n")).filter(pl.col("n") > 100).sort(key)[key].to_list()
    if not names:
        raise ValueError(f"{source}: no host series with enough samples")
    out = []
    for i in range(n):
        name = names[(offset + i) % len(names)]
        mine = frame.filter(pl.col(key) == name).sort(ts)
        t = mine[ts].to_numpy().astype(float)
        u = np.clip(mine[util].to_numpy().astype(float) * scale, 0.0, 1.0)
        t = t - t[0] - start_s
        keep = t >= 0
        first = max(int(np.argmax(keep)) - 1, 0) if keep.any() else len(t) - 1
        t, u = t[first:], u[first:]
        t[0] = 0.0
        out.append(LoadSeries(f"{source}:{name}", t, np.nan_to_num(u)))
    return out


def alibaba_2018_load(datasets: Path, n: int, offset: int = 0, start_s: float = 0.0) -> list[LoadSeries]:
    """`n` series from the Alibaba 2018 machine sample (hosts with samples from its start, in id order)."""
    frame = pl.read_csv(datasets / ALIBABA_2018_CSV, columns=["machine_id", "time_stamp", "cpu_util_percent"])
    frame = frame.drop_nulls()
    return _series(frame, "machine_id", "time_stamp", "cpu_util_percent", n, offset, start_s, 0.01, "alibaba-2018")


def bitbrains_load(datasets: Path, n: int, offset: int = 0, start_s: float = 0.0) -> list[LoadSeries]:
    """`n` series of Bitbrains Rnd VMs' CPU usage (%), 5-minute samples."""
    frame = pl.read_csv(datasets / BITBRAINS_CSV, columns=["vm_id", "timestamp", "cpu_usage_pct"]).drop_nulls()
    return _series(frame, "vm_id", "timestamp", "cpu_usage_pct", n, offset, start_s, 0.01, "bitbrains")


def read_load_file(path: str | Path, n: int) -> list[LoadSeries]:
    """A load table given with --load: columns `part` (0-based compute-part index), `t_s`, `util` (0–1)."""
    path = Path(path)
    frame = pl.read_parquet(path) if path.suffix == ".parquet" else pl.read_csv(path)
    missing = [c for c in ("part", "t_s", "util") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: required column missing (expected {missing[0]})")
    bad = frame.filter((pl.col("util") < 0) | (pl.col("util") > 1) | (pl.col("t_s") < 0))
    if bad.height:
        row = frame.with_row_index("row").join(bad, on=list(frame.columns), how="semi")["row"][0]
        raise ValueError(f"{path}, row {row + 1}: util must be in 0–1 and t_s ≥ 0")
    out = []
    for part in range(n):
        mine = frame.filter(pl.col("part") == part).sort("t_s")
        if mine.height == 0:
            out.append(idle())
            continue
        t, u = mine["t_s"].to_numpy().astype(float), mine["util"].to_numpy().astype(float)
        if t[0] > 0:
            t, u = np.concatenate([[0.0], t]), np.concatenate([[0.0], u])
        out.append(LoadSeries(f"{path.name}:{part}", t, u))
    return out
