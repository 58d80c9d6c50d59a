"""Small plan directories written with polars, for the executor demo, tests and benchmarks.

``demo_plans`` gives a fleet and two plans over it: the plan already applied
(``before``) and the nightly plan to apply (``after``) with moves, resizes, new and
removed requests. Only the files executors read are written (DESIGN.md columns).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shardplan.schema import REQUESTS_OUT_SCHEMA, SHARDS_SCHEMA


@dataclass(frozen=True)
class DemoFleet:
    hosts: pl.DataFrame
    requests: pl.DataFrame
    before: pl.DataFrame
    after: pl.DataFrame


def write_plan_dir(plan_dir: str | Path, hosts: pl.DataFrame, requests: pl.DataFrame, shards: pl.DataFrame) -> Path:
    """shards.parquet, requests.parquet, inputs/hosts.parquet, inputs/requests.parquet (placed requests only)."""
    plan_dir = Path(plan_dir)
    (plan_dir / "inputs").mkdir(parents=True, exist_ok=True)
    shards = shards.select([pl.col(c).cast(t) for c, t in SHARDS_SCHEMA.items()]).sort("request_id", "shard")
    placed = shards.get_column("request_id").unique().to_list()
    wanted = requests.filter(pl.col("request_id").is_in(placed))
    summary = (shards.group_by("request_id").agg(pl.col("host_id").n_unique().alias("n_hosts"))
               .with_columns(pl.lit("placed").alias("status"), pl.lit(0.0).alias("cost_per_hour"),
                             pl.lit(0.0).alias("spread_penalty"), pl.lit(None, pl.Utf8).alias("reason"))
               .select([pl.col(c).cast(t) for c, t in REQUESTS_OUT_SCHEMA.items()]).sort("request_id"))
    shards.write_parquet(plan_dir / "shards.parquet")
    summary.write_parquet(plan_dir / "requests.parquet")
    hosts.write_parquet(plan_dir / "inputs" / "hosts.parquet")
    wanted.write_parquet(plan_dir / "inputs" / "requests.parquet")
    return plan_dir


def demo_hosts(zones: int = 2, racks_per_zone: int = 3, hosts_per_rack: int = 2, vcpu: int = 64, ram_gib: int = 256,
               storage_gib: int = 4000, libvirt_uri: str | None = None) -> pl.DataFrame:
    rows = []
    for z in range(zones):
        for r in range(racks_per_zone):
            for h in range(hosts_per_rack):
                rows.append({"host_id": f"h{z}{r}{h}", "host_class": "general", "zone": f"z{z}", "rack": f"z{z}-r{r}",
                             "vcpu": vcpu, "ram_gib": ram_gib, "storage_gib": storage_gib, "storage_type": "ssd",
                             "net_gbps": 100.0, "gpu": 0, "cost_per_hour": 1.0, "libvirt_uri": libvirt_uri})
    return pl.DataFrame(rows)


def _place_request(request: dict, hosts: pl.DataFrame, rng: random.Random) -> list[dict]:
    zone_hosts = hosts.filter(pl.col("zone") == request["zone"])
    host_ids = zone_hosts.get_column("host_id").to_list()
    racks = sorted(set(zone_hosts.get_column("rack").to_list()))
    rows = []
    shards = request["max_shards"]
    for shard in range(shards):
        rows.append({"shard": shard, "host_id": rng.choice(host_ids), "replica": 0,
                     "vcpu": request["vcpu"] // shards + (1 if shard < request["vcpu"] % shards else 0),
                     "ram_gib": request["ram_gib"] // shards + (1 if shard < request["ram_gib"] % shards else 0),
                     "storage_gib": 0, "net_gbps": request["net_gbps"] / shards, "gpu": 0, "role": "compute"})
        if rows[-1]["vcpu"] == 0:
            rows[-1]["role"] = "memory"
    for replica, rack in enumerate(rng.sample(racks, request["replicas"])):
        on_rack = zone_hosts.filter(pl.col("rack") == rack).get_column("host_id").to_list()
        rows.append({"shard": shards + replica, "host_id": rng.choice(on_rack), "replica": replica, "vcpu": 0, "ram_gib": 0,
                     "storage_gib": request["storage_gib"], "net_gbps": 0.0, "gpu": 0,
                     "role": "storage" if replica == 0 else "replica"})
    return [{"request_id": request["request_id"], **row} for row in rows]


def demo_plans(seed: int = 0, n_requests: int = 24, hosts: pl.DataFrame | None = None, storage_gib: tuple[int, int] = (8, 64)) -> DemoFleet:
    """A fleet and two plans; ``after`` moves about a third of the requests' parts and resizes some."""
    rng = random.Random(seed)
    hosts = demo_hosts() if hosts is None else hosts
    zones = sorted(set(hosts.get_column("zone").to_list()))
    racks_per_zone = hosts.group_by("zone").agg(pl.col("rack").n_unique()).get_column("rack").min()
    requests = []
    for n in range(n_requests + n_requests // 6):
        requests.append({"request_id": f"r{n:03d}", "user_id": f"u{n % 5}", "app_type": "web", "vcpu": rng.randint(2, 12),
                         "ram_gib": rng.randint(4, 48), "storage_gib": rng.randint(*storage_gib), "gpu": 0,
                         "net_gbps": float(rng.randint(1, 4)), "max_shards": rng.randint(1, 3),
                         "replicas": rng.randint(1, min(3, racks_per_zone)), "zone": rng.choice(zones)})
    old_ids = {r["request_id"] for r in requests[:n_requests]}
    new_ids = {r["request_id"] for r in requests[n_requests:]}
    removed = set(rng.sample(sorted(old_ids), n_requests // 8))
    before_rows, after_rows = [], []
    for request in requests:
        placed = _place_request(request, hosts, rng)
        if request["request_id"] in old_ids:
            before_rows += placed
        if request["request_id"] in removed:
            continue
        if request["request_id"] in new_ids:
            after_rows += placed
            continue
        changed = [dict(row) for row in placed]
        if rng.random() < 0.35:  # move one part: a compute part anywhere in the zone, a copy to a free rack
            row = rng.choice(changed)
            replanned = _place_request(request, hosts, rng)
            if row["storage_gib"] == 0:
                row["host_id"] = replanned[row["shard"]]["host_id"]
            else:
                used_racks = {hosts.filter(pl.col("host_id") == r["host_id"])["rack"][0] for r in changed if r["storage_gib"]}
                candidates = hosts.filter((pl.col("zone") == request["zone"]) & ~pl.col("rack").is_in(sorted(used_racks - {
                    hosts.filter(pl.col("host_id") == row["host_id"])["rack"][0]})) & (pl.col("host_id") != row["host_id"]))
                if candidates.height:
                    row["host_id"] = rng.choice(candidates.get_column("host_id").to_list())
        if rng.random() < 0.25:  # resize a compute part
            row = changed[0]
            row["vcpu"] = max(1, row["vcpu"] + rng.choice([-1, 1, 2]))
            row["ram_gib"] = max(1, row["ram_gib"] + rng.choice([-2, 2, 4]))
        after_rows += changed
    frame = pl.DataFrame(requests).drop("zone")
    return DemoFleet(hosts, frame, pl.DataFrame(before_rows), pl.DataFrame(after_rows))
