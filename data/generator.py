"""Seeded fleet generator and the embedded demo fleet.

`generate_fleet` builds a hosts table and a requests table shaped after real public
catalogues and traces (each constant below cites the file and rows it came from; the
files themselves are never read here). The fleet is contested on purpose: existing
load leaves free capacity fragmented (CPU-heavy next to RAM-heavy hosts) and demand
exceeds free vcpu, RAM and GPUs, while every request still fits the fleet on its own
when sharded, so sharding has something to win.
"""
from __future__ import annotations

import argparse
import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from shardplan.files import write_parquet_atomically
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS, RESOURCES, free_expr, tier_rank

# --- host hardware -------------------------------------------------------------------


def _gib(gigabytes: float) -> int:
    """Catalogue disk sizes are decimal GB; the tables count GiB."""
    return round(gigabytes * 1e9 / 2**30)


@dataclass(frozen=True)
class HostSku:
    """One hardware type of the fleet and the share of hosts it gets."""

    name: str
    host_class: str
    vcpu: int
    ram_gib: int
    storage_gib: int
    storage_type: str
    net_gbps: float
    gpu: int
    gpu_model: str | None
    cost_per_hour: float  # USD per host-hour, list price
    clock_ghz: float
    mem_bw_gbps: float  # GB/s of the platform's memory channels
    disks: int  # local devices, for storage_iops
    share: float


# Shapes and prices. AWS rows: catalogue/aws-ec2-us-east-1-2023/instance_types.csv (the
# *.metal rows, is_bare_metal=1, or the largest size of a family without a metal size),
# columns vcpus, memory_gib, local_storage_desc, network_gbps, clock_ghz and
# price_linux_ondemand_usd_h. Azure rows: catalogue/azure-vm-sizes-2024/dedicated_hosts.csv
# (vcpus, ram_gib, price_payg_usd_h); a dedicated host lists no disk or NIC, so its disk
# is the temp storage of the largest VM of its family in vm_sizes.csv and its NIC that of
# the AWS host of the same processor generation. openb rows: catalogue/alibaba-openb-gpu-
# nodes-2023 (cpu_milli, memory_mib, gpu, model), priced with the AWS type of the same GPUs.
# mem_bw_gbps: channels × DDR speed × 2 sockets of the processor in physical_processor
# (Ice Lake 8×3200 → 409.6, Cascade Lake 6×2933 → 281.6, Skylake 6×2666 → 256,
# Broadwell 4×2400 → 153.6, Haswell 4×2133 → 136.5, Ivy Bridge 4×1866 DDR3 → 119.4).
HOST_SKUS: tuple[HostSku, ...] = (
    # c6id.metal: 128 vCPU, 256 GiB, "7600 GB (4 * 1900 GB NVMe SSD)", 50 Gbit, $6.4512/h
    HostSku("c6id.metal", "cpu-optimized", 128, 256, _gib(7600), "nvme", 50.0, 0, None, 6.4512, 3.5, 409.6, 4, 0.14),
    # Fsv2-Type2 dedicated host: 72 vCPU, 144 GiB, $3.804/h; F72s v2 temp disk 576 GiB; NIC as c5.metal (25)
    HostSku("Fsv2-Type2", "cpu-optimized", 72, 144, 576, "ssd", 25.0, 0, None, 3.804, 2.7, 256.0, 1, 0.07),
    # m6id.metal: 128 vCPU, 512 GiB, 7600 GB NVMe (4 disks), 50 Gbit, $7.5936/h
    HostSku("m6id.metal", "general", 128, 512, _gib(7600), "nvme", 50.0, 0, None, 7.5936, 3.5, 409.6, 4, 0.16),
    # Ddsv5-Type1 dedicated host: 119 vCPU, 768 GiB, $6.742/h; D96ds v5 temp disk 3600 GiB; NIC as m6i.metal (50)
    HostSku("Ddsv5-Type1", "general", 119, 768, 3600, "ssd", 50.0, 0, None, 6.742, 2.8, 409.6, 1, 0.16),
    # r6id.metal: 128 vCPU, 1024 GiB, 7600 GB NVMe, 50 Gbit, $9.6768/h
    HostSku("r6id.metal", "memory-optimized", 128, 1024, _gib(7600), "nvme", 50.0, 0, None, 9.6768, 3.5, 409.6, 4, 0.12),
    # x2idn.metal: 128 vCPU, 2048 GiB, "3800 GB (2 * 1900 GB NVMe SSD)", 100 Gbit, $13.338/h
    HostSku("x2idn.metal", "memory-optimized", 128, 2048, _gib(3800), "nvme", 100.0, 0, None, 13.338, 3.5, 409.6, 2, 0.04),
    # i4i.metal: 128 vCPU, 1024 GiB, "30000 GB (8 * 3750 GB NVMe SSD)", 75 Gbit, $10.982/h
    HostSku("i4i.metal", "storage-nvme", 128, 1024, _gib(30000), "nvme", 75.0, 0, None, 10.982, 3.5, 409.6, 8, 0.05),
    # i3en.metal: 96 vCPU, 768 GiB, "60000 GB (8 * 7500 GB NVMe SSD)", 100 Gbit, $10.848/h (Platinum 8175, Skylake)
    HostSku("i3en.metal", "storage-nvme", 96, 768, _gib(60000), "nvme", 100.0, 0, None, 10.848, 3.1, 256.0, 8, 0.03),
    # i2.8xlarge: 32 vCPU, 244 GiB, "6400 GB (8 * 800 GB SSD)", 10 Gbit, $6.82/h (Ivy Bridge)
    HostSku("i2.8xlarge", "storage-ssd", 32, 244, _gib(6400), "ssd", 10.0, 0, None, 6.82, 2.5, 119.4, 8, 0.04),
    # h1.16xlarge: 64 vCPU, 256 GiB, "16000 GB (8 * 2000 GB HDD)", 25 Gbit, $3.744/h (Broadwell)
    HostSku("h1.16xlarge", "storage-hdd", 64, 256, _gib(16000), "hdd", 25.0, 0, None, 3.744, 2.3, 153.6, 8, 0.04),
    # d2.8xlarge: 36 vCPU, 244 GiB, "49152 GB (24 * 2048 GB HDD)", 10 Gbit, $5.52/h (Haswell)
    HostSku("d2.8xlarge", "storage-hdd", 36, 244, _gib(49152), "hdd", 10.0, 0, None, 5.52, 2.4, 136.5, 24, 0.03),
    # p4d.24xlarge: 96 vCPU, 1152 GiB, 8 × A100, "8000 GB (8 * 1000 GB NVMe SSD)", "4x 100 Gigabit", $32.7726/h
    HostSku("p4d.24xlarge", "gpu", 96, 1152, _gib(8000), "nvme", 400.0, 8, "A100", 32.7726, 3.0, 281.6, 8, 0.03),
    # p3dn.24xlarge: 96 vCPU, 768 GiB, 8 × V100, "1800 GB (2 * 900 GB NVMe SSD)", 100 Gbit, $31.212/h;
    # the same shape as openb's 21 nodes of 96 cores, 768 GiB, 8 × V100M32
    HostSku("p3dn.24xlarge", "gpu", 96, 768, _gib(1800), "nvme", 100.0, 8, "V100", 31.212, 2.5, 256.0, 2, 0.02),
    # openb 32 cores, 128 GiB, 4 × V100M16 (28 nodes); priced as p3.8xlarge (32 vCPU, 4 × V100, $12.24/h, 10 Gbit,
    # EBS only, so the disk is UNLISTED_LOCAL_SSD_GIB)
    HostSku("openb-v100x4", "gpu", 32, 128, 960, "ssd", 10.0, 4, "V100", 12.24, 2.3, 153.6, 1, 0.03),
    # g4dn.metal: 96 vCPU, 384 GiB, 8 × T4, "1800 GB (2 * 900 GB NVMe SSD)", 100 Gbit, $7.824/h;
    # openb has the same 96 cores / 384 GiB with 4 × T4 (17 nodes)
    HostSku("g4dn.metal", "gpu", 96, 384, _gib(1800), "nvme", 100.0, 8, "T4", 7.824, 2.5, 256.0, 2, 0.04),
)
UNLISTED_LOCAL_SSD_GIB = 960  # assumption: boot/scratch SSD of a host whose source row lists no local disk
REFERENCE_CLOCK_GHZ = 3.0  # cpu_score = clock_ghz / this
# assumption: 4 KiB random reads per device
IOPS_PER_DISK: dict[str, float] = {"nvme": 400_000.0, "ssd": 75_000.0, "hdd": 200.0}

# Alibaba v2018 machine_meta: 4,034 machines in 292 failure_domain_1 groups (median 9, p75 16, max 47)
HOSTS_PER_RACK = 18
MIN_RACKS_PER_ZONE = 3  # so 3 storage replicas can sit on distinct racks of one zone
DOWN_SHARE = 0.03  # assumption (machine_meta shows 4,033 of 4,034 machines USING at trace end: no real down rate)
DRAINING_SHARE = 0.04  # assumption
# Up hosts that run nothing and are powered down (no load, so switching one on costs its cost_per_hour): a
# share of each host class, so which host to switch on is a choice between classes and prices. Assumption,
# after the spare capacity clouds keep in reserve (Azure's Protean, OSDI 2020: capacity buffers of several
# percent per cluster; the Alibaba 2018 machine_meta sample has no powered-down state to read it from).
POWERED_DOWN_SHARE = 0.15
# vcpu_overcommit of general hosts (others stay 1.0); assumption
GENERAL_OVERCOMMIT: tuple[tuple[float, float], ...] = ((1.0, 0.6), (1.5, 0.3), (2.0, 0.1))

# --- existing load --------------------------------------------------------------------


@dataclass(frozen=True)
class LoadProfile:
    """How a host's existing load leans: a weight per resource on the fleet-wide load level."""

    name: str
    share: float
    vcpu: float
    ram_gib: float
    gpu: float


# Co-located hosts lean one way: Alibaba v2018 machine_usage_sample shows 14 of 16 machines
# at ~40 % CPU but ~90 % memory (m_1932–m_1947), two at ~5 % CPU; the mirror image
# (CPU-bound batch) is the other half of the fleet.
LOAD_PROFILES: tuple[LoadProfile, ...] = (
    LoadProfile("cpu-heavy", 0.35, 1.35, 0.55, 1.2),
    LoadProfile("ram-heavy", 0.35, 0.55, 1.35, 1.0),
    LoadProfile("balanced", 0.18, 1.0, 1.0, 1.0),
    LoadProfile("light", 0.12, 0.4, 0.4, 0.0),
)
LOAD_JITTER = 0.15  # each host's weights × U(1 − j, 1 + j)
MAX_HOST_LOAD = 0.97  # share of a host's vcpu or RAM the existing load may take
STORAGE_LOAD_RANGE = (0.15, 0.6)  # assumption: share of local disk already used
NET_LOAD_RANGE = (0.05, 0.3)  # assumption: share of the NIC already used (NICs run far below line rate)
# Aggregate demand ÷ aggregate free capacity of up hosts that the load is calibrated to.
TARGET_DEMAND_OVER_FREE: dict[str, float] = {"vcpu": 1.3, "ram_gib": 1.25, "gpu": 1.2}

# --- requests -------------------------------------------------------------------------

# Azure V1 flavours, vm-requests/azure-v1-vm-arrivals/flavors.csv (vcpus, mem_gb), with the
# VM count of each flavour summed over requests_grouped.csv.gz (1,870,433 VMs).
AZURE_FLAVOURS: tuple[tuple[str, int, float, int], ...] = (
    ("a", 1, 0.75, 38_578), ("b", 1, 1.75, 892_166), ("c", 1, 2.0, 534), ("d", 16, 112.0, 148),
    ("e", 2, 14.0, 301), ("f", 2, 16.0, 144), ("g", 2, 3.5, 464_859), ("h", 2, 4.0, 234),
    ("i", 4, 28.0, 420), ("j", 4, 32.0, 36), ("k", 4, 7.0, 203_416), ("l", 4, 8.0, 66),
    ("m", 8, 14.0, 197_539), ("n", 8, 16.0, 43), ("o", 8, 56.0, 71_942), ("p", 8, 64.0, 7),
)
MEMORY_FLAVOUR_GIB_PER_VCPU = 7.0  # flavours at ≥ 7 GiB/vCPU (d e f i j o p) are the memory family
# VMs per tenant batch (one tenant, one 5-minute bin), requests_grouped.csv.gz summed by
# batch_id over 452,901 batches: (smallest, largest, share). The open last bucket (max 1,404) is cut at 128.
AZURE_BATCH_SIZES: tuple[tuple[int, int, float], ...] = (
    (1, 1, 0.5716), (2, 2, 0.1805), (3, 4, 0.1057), (5, 8, 0.0620),
    (9, 16, 0.0428), (17, 32, 0.0203), (33, 64, 0.0102), (65, 128, 0.0069),
)
# openb CPU-only pods, vm-requests/alibaba-openb-pods-2023 (num_gpu = 0, 1,088 pods): the five
# commonest (cores, GiB) shapes and their pod counts, 1,026 pods together.
OPENB_CPU_POD_SHAPES: tuple[tuple[float, float, int], ...] = (
    (12.5, 56.0, 364), (32.0, 48.0, 284), (8.0, 29.8, 163), (15.4, 50.0, 120), (16.5, 50.0, 95),
)
# openb GPU pods: cores and GiB per GPU at quantiles OPENB_QUANTILES, for 1-GPU pods
# (6,989) and for 2/4/8-GPU pods (75); a sampled u in [0, 1] is interpolated between them.
OPENB_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
OPENB_CORES_PER_GPU_SINGLE = (1.0, 3.15, 4.0, 9.81, 11.91, 15.2, 24.2)
OPENB_GIB_PER_GPU_SINGLE = (1.0, 5.47, 10.35, 30.52, 47.0, 57.0, 123.0)  # the trace's 0 GiB minimum raised to 1
OPENB_CORES_PER_GPU_MULTI = (3.0, 8.0, 8.03, 8.1, 11.0, 15.03, 15.1)
OPENB_GIB_PER_GPU_MULTI = (21.0, 32.0, 32.12, 32.25, 40.0, 78.25, 90.0)
# GPUs per training request. openb is 98.9 % 1-GPU pods (6,989 of 7,064: mostly inference
# and notebooks; 2: 16, 4: 15, 8: 44); training leans to multi-GPU, so this is an assumption.
TRAINING_GPU_COUNTS: tuple[tuple[int, float], ...] = ((1, 0.55), (2, 0.15), (4, 0.15), (8, 0.15))
TRAINING_NET_GBPS_PER_GPU = 4.0  # assumption: gradient exchange per GPU
# openb GPU pods by qos: LS 4,011 → medium, BE 2,948 + Burstable 99 + Guaranteed 6 → tolerant.
OPENB_GPU_LATENCY: tuple[tuple[str, float], ...] = (("medium", 0.568), ("tolerant", 0.432))
N_USERS = 36  # a few dozen tenants, Zipf-weighted (the traces carry no stable tenant ids)
USER_ZIPF_EXPONENT = 0.8

# max_shards by latency class: low → 1 or 2, medium → up to 3, tolerant → up to 4.
MAX_SHARDS_BY_LATENCY: dict[str, tuple[tuple[int, float], ...]] = {
    "low": ((1, 0.4), (2, 0.6)),
    "medium": ((1, 0.2), (2, 0.4), (3, 0.4)),
    "tolerant": ((1, 0.1), (2, 0.3), (3, 0.3), (4, 0.3)),
}


@dataclass(frozen=True)
class AppProfile:
    """How one application type asks: its size source, disk, network, latency and priority."""

    name: str
    share: float
    shape: str  # azure-standard, azure-memory, openb-cpu or openb-gpu
    max_vcpu: int
    storage_gib: tuple[int, int]  # log-uniform range of one copy; assumption
    storage_tiers: tuple[tuple[str | None, float], ...]
    replicas: int
    net_gbps_per_vcpu: float  # assumption, × U(0.5, 1.5)
    latency: tuple[tuple[str, float], ...]
    priority: tuple[int, int]


APP_PROFILES: tuple[AppProfile, ...] = (
    AppProfile("web", 0.28, "azure-standard", 64, (20, 200), (("ssd", 0.7), (None, 0.3)), 1, 0.25,
               (("low", 0.6), ("medium", 0.4)), (2, 4)),
    AppProfile("db", 0.14, "azure-memory", 96, (100, 2000), (("nvme", 0.5), ("ssd", 0.5)), 3, 0.15,
               (("low", 0.7), ("medium", 0.3)), (3, 5)),
    AppProfile("analytics", 0.14, "openb-cpu", 192, (500, 8000), (("hdd", 0.5), ("ssd", 0.5)), 1, 0.2,
               (("medium", 0.6), ("tolerant", 0.4)), (1, 3)),
    AppProfile("cache", 0.12, "azure-memory", 64, (10, 100), (("nvme", 0.6), ("ssd", 0.4)), 1, 0.3,
               (("low", 1.0),), (3, 5)),
    AppProfile("batch", 0.20, "azure-standard", 128, (50, 1000), (("hdd", 0.5), (None, 0.5)), 1, 0.05,
               (("tolerant", 1.0),), (1, 2)),
    AppProfile("ml-training", 0.12, "openb-gpu", 128, (200, 4000), (("nvme", 1.0),), 1, 0.05,
               OPENB_GPU_LATENCY, (2, 4)),
)
SHRINK_FACTOR = 0.85  # a request that does not fit the fleet alone is scaled by this, round after round
MAX_SHRINK_ROUNDS = 40

# --- the demo -------------------------------------------------------------------------

DEMO_HOSTS = 240
DEMO_REQUESTS = 500
DEMO_SEED = 2026
DEMO_ZONES = 2
HOST_FILE = "hosts.parquet"
REQUEST_FILE = "requests.parquet"

_MIN_LOCAL_RAM_GIB_PER_VCPU = PlanOptions().min_local_ram_gib_per_vcpu
_HOST_SCHEMA = {c.name: c.polars_dtype for c in HOST_COLUMNS if c.name != "libvirt_uri"}
_REQUEST_SCHEMA = {c.name: c.polars_dtype for c in REQUEST_COLUMNS}


def generate_fleet(n_hosts: int, n_requests: int, seed: int, zones: int = 2,
                   powered_down: float = POWERED_DOWN_SHARE) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A contested hosts table and requests table, identical for identical arguments. `powered_down`: the
    share of up hosts of each class that run nothing (the load is calibrated on the others, so the demand
    over the free room of loaded hosts stays TARGET_DEMAND_OVER_FREE and the dark hosts are room to buy)."""
    if zones < 1 or n_hosts < zones or n_requests < 1 or not 0 <= powered_down < 1:
        raise ValueError(f"need zones ≥ 1, n_hosts ≥ zones, n_requests ≥ 1 and 0 ≤ powered_down < 1 "
                         f"(got {n_hosts=}, {n_requests=}, {zones=}, {powered_down=})")
    rng = np.random.default_rng(seed)
    bare = _bare_hosts(rng, n_hosts, zones)
    # its own stream, so the requests (and the demo's history, made from them) do not depend on it
    bare = bare.with_columns(dark=pl.Series(_powered_down(np.random.default_rng([seed, 1]), bare, powered_down)))
    lean = _load_lean(rng, bare)
    replicas_cap = int(bare.group_by("zone").agg(pl.col("rack").n_unique())["rack"].min())
    requests = _raw_requests(rng, n_requests, bare, replicas_cap)
    hosts = _with_load(bare, lean, requests)
    for _ in range(2):  # shrink what cannot fit alone, then recalibrate the load to the new demand
        requests = _fit_alone(hosts, requests)
        hosts = _with_load(bare, lean, requests)
    requests = _fit_alone(hosts, requests)
    requests = _with_untouched(np.random.default_rng([seed, 2]), requests)
    return hosts.select(list(_HOST_SCHEMA)), requests.select(list(_REQUEST_SCHEMA))


# --- hosts ----------------------------------------------------------------------------


def _apportion(shares: np.ndarray, total: int) -> np.ndarray:
    """Integer counts proportional to shares that sum to total (largest remainder)."""
    exact = shares / shares.sum() * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    return counts


def _bare_hosts(rng: np.random.Generator, n_hosts: int, zones: int) -> pl.DataFrame:
    """Hosts with hardware, racks, zones, status and overcommit but no load yet."""
    skus = pl.DataFrame([vars(sku) for sku in HOST_SKUS]).rename({"name": "sku"})
    counts = _apportion(skus["share"].to_numpy(), n_hosts)
    sku_of_host = np.repeat(np.arange(len(HOST_SKUS)), counts)
    n_racks = max(math.ceil(n_hosts / HOSTS_PER_RACK), min(n_hosts, MIN_RACKS_PER_ZONE * zones))
    # Deal hosts (grouped by type) round-robin over racks, so every rack and zone gets a mix of types.
    rack_index = np.arange(n_hosts) % n_racks
    zone_index = rack_index % zones
    rack_in_zone = rack_index // zones
    slot = np.arange(n_hosts) // n_racks
    status = np.full(n_hosts, "up", dtype=object)
    shuffled = rng.permutation(n_hosts)
    n_down, n_draining = round(DOWN_SHARE * n_hosts), round(DRAINING_SHARE * n_hosts)
    status[shuffled[:n_down]] = "down"
    status[shuffled[n_down:n_down + n_draining]] = "draining"
    overcommit_levels, overcommit_weights = zip(*GENERAL_OVERCOMMIT)
    overcommit = rng.choice(np.array(overcommit_levels), size=n_hosts, p=np.array(overcommit_weights))
    hosts = skus.select(pl.all().gather(sku_of_host)).with_columns(
        zone=pl.Series([f"z{z + 1}" for z in zone_index]),
        rack=pl.Series([f"z{z + 1}-r{r + 1:02d}" for z, r in zip(zone_index, rack_in_zone)]),
        slot=pl.Series(slot + 1),
        status=pl.Series(status.tolist(), dtype=pl.Utf8),
        vcpu_overcommit=pl.Series(overcommit),
    )
    return hosts.with_columns(
        host_id=pl.format("{}-h{}", "rack", pl.col("slot").cast(pl.Utf8).str.zfill(2)),
        vcpu_overcommit=pl.when(pl.col("host_class") == "general").then("vcpu_overcommit").otherwise(1.0),
        cpu_score=(pl.col("clock_ghz") / REFERENCE_CLOCK_GHZ).round(3),
        storage_iops=pl.col("disks") * pl.col("storage_type").replace_strict(IOPS_PER_DISK, return_dtype=pl.Float64),
    ).sort("zone", "rack", "slot")


def _powered_down(rng: np.random.Generator, bare: pl.DataFrame, share: float) -> np.ndarray:
    """(H,) bool: round(share × the up hosts of each host class), drawn at random within the class."""
    dark = np.zeros(bare.height, dtype=bool)
    classes = bare["host_class"].to_numpy()
    up = (bare["status"] == "up").to_numpy()
    for host_class in sorted(set(classes.tolist())):
        members = np.flatnonzero((classes == host_class) & up)
        count = round(share * members.size)
        if count:
            dark[rng.choice(members, size=count, replace=False)] = True
    return dark


def _load_lean(rng: np.random.Generator, bare: pl.DataFrame) -> pl.DataFrame:
    """Per host: the weights of its load profile with jitter, and its disk and NIC load shares."""
    n = bare.height
    shares = np.array([p.share for p in LOAD_PROFILES])
    profile = rng.choice(len(LOAD_PROFILES), size=n, p=shares / shares.sum())

    def weight(resource: str) -> np.ndarray:
        base = np.array([getattr(p, resource) for p in LOAD_PROFILES])[profile]
        return base * rng.uniform(1 - LOAD_JITTER, 1 + LOAD_JITTER, size=n)

    return pl.DataFrame({
        "host_id": bare["host_id"],
        "weight_vcpu": weight("vcpu"),
        "weight_ram_gib": weight("ram_gib"),
        "weight_gpu": weight("gpu"),
        "storage_share": rng.uniform(*STORAGE_LOAD_RANGE, size=n),
        "net_share": rng.uniform(*NET_LOAD_RANGE, size=n),
    })


def _load_level(capacity: np.ndarray, weight: np.ndarray, counted: np.ndarray, target_used: float,
                ceiling: float) -> float:
    """Level ℓ with Σ over counted hosts of capacity × min(ℓ × weight, ceiling) ≈ target_used (bisection)."""
    def used(level: float) -> float:
        return float((capacity * np.minimum(level * weight, ceiling))[counted].sum())

    low, high = 0.0, 16.0
    if target_used <= 0:
        return 0.0
    if used(high) <= target_used:
        return high
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if used(middle) < target_used else (low, middle)
    return (low + high) / 2


def _with_load(bare: pl.DataFrame, lean: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Existing load calibrated so demand ÷ free capacity of up hosts meets TARGET_DEMAND_OVER_FREE."""
    hosts = bare.join(lean, on="host_id", how="left", maintain_order="left")
    dark = hosts["dark"].to_numpy() if "dark" in hosts.columns else np.zeros(hosts.height, dtype=bool)
    up = (hosts["status"] == "up").to_numpy() & ~dark
    running = (hosts["status"] != "down").to_numpy() & ~dark
    vcpu_capacity = np.floor(hosts["vcpu"].to_numpy() * hosts["vcpu_overcommit"].to_numpy())
    ram_capacity = hosts["ram_gib"].to_numpy().astype(float)
    loads: dict[str, np.ndarray] = {}
    for resource, capacity in (("vcpu", vcpu_capacity), ("ram_gib", ram_capacity)):
        weight = hosts[f"weight_{resource}"].to_numpy()
        target_used = capacity[up].sum() - requests[resource].sum() / TARGET_DEMAND_OVER_FREE[resource]
        level = _load_level(capacity, weight, up, target_used, MAX_HOST_LOAD)
        loads[resource] = np.floor(capacity * np.minimum(level * weight, MAX_HOST_LOAD)) * running
    gpu_capacity = hosts["gpu"].to_numpy().astype(float)
    used_gpu = np.zeros(hosts.height)
    models = hosts["gpu_model"].to_numpy()
    for model in sorted(hosts["gpu_model"].drop_nulls().unique()):
        of_model = models == model
        demand = requests.filter(pl.col("gpu_model") == model)["gpu"].sum()
        target_used = gpu_capacity[up & of_model].sum() - demand / TARGET_DEMAND_OVER_FREE["gpu"]
        weight = hosts["weight_gpu"].to_numpy()
        level = _load_level(gpu_capacity, weight, up & of_model, target_used, 1.0)
        used_gpu[of_model] = np.round(gpu_capacity * np.minimum(level * weight, 1.0))[of_model]
    return hosts.with_columns(
        used_vcpu=pl.Series(loads["vcpu"].astype(np.int64)),
        used_ram_gib=pl.Series(loads["ram_gib"].astype(np.int64)),
        used_gpu=pl.Series((used_gpu * running).astype(np.int64)),
        used_storage_gib=(pl.col("storage_gib") * pl.col("storage_share")).floor().cast(pl.Int64),
        used_net_gbps=(pl.col("net_gbps") * pl.col("net_share")).round(1),
    ).with_columns(
        [pl.when(pl.Series(~running)).then(0).otherwise(pl.col(c)).alias(c)
         for c in ("used_storage_gib", "used_net_gbps")]
    )


# --- requests -------------------------------------------------------------------------


def _pick(rng: np.random.Generator, choices: tuple[tuple[object, float], ...], size: int) -> np.ndarray:
    """Draw size values from (value, weight) pairs."""
    values = np.empty(len(choices), dtype=object)
    values[:] = [value for value, _ in choices]
    weights = np.array([weight for _, weight in choices], dtype=float)
    return values[rng.choice(len(choices), size=size, p=weights / weights.sum())]


def _batch_sizes(rng: np.random.Generator, size: int) -> np.ndarray:
    """VMs per tenant batch, after the Azure V1 batch-size distribution."""
    buckets = rng.choice(len(AZURE_BATCH_SIZES), size=size, p=np.array([b[2] for b in AZURE_BATCH_SIZES]) /
                         sum(b[2] for b in AZURE_BATCH_SIZES))
    low = np.array([b[0] for b in AZURE_BATCH_SIZES])[buckets]
    high = np.array([b[1] for b in AZURE_BATCH_SIZES])[buckets]
    return rng.integers(low, high + 1)


def _shapes(rng: np.random.Generator, app: AppProfile, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vcpu, ram_gib, gpu) of size requests of one app type, before the vcpu cap."""
    gpu = np.zeros(size, dtype=np.int64)
    if app.shape.startswith("azure"):
        memory = app.shape == "azure-memory"
        family = [f for f in AZURE_FLAVOURS if (f[2] / f[1] >= MEMORY_FLAVOUR_GIB_PER_VCPU) == memory]
        counts = np.array([f[3] for f in family], dtype=float)
        flavour = rng.choice(len(family), size=size, p=counts / counts.sum())
        batch = _batch_sizes(rng, size)
        vcpu = np.array([f[1] for f in family])[flavour] * batch
        ram = np.array([f[2] for f in family])[flavour] * batch
    elif app.shape == "openb-cpu":
        counts = np.array([s[2] for s in OPENB_CPU_POD_SHAPES], dtype=float)
        pod = rng.choice(len(OPENB_CPU_POD_SHAPES), size=size, p=counts / counts.sum())
        batch = _batch_sizes(rng, size)
        vcpu = np.ceil(np.array([s[0] for s in OPENB_CPU_POD_SHAPES])[pod]) * batch
        ram = np.array([s[1] for s in OPENB_CPU_POD_SHAPES])[pod] * batch
    else:  # openb-gpu
        gpu = _pick(rng, TRAINING_GPU_COUNTS, size).astype(np.int64)
        where = rng.random(size)
        single = gpu == 1
        cores = np.where(single, np.interp(where, OPENB_QUANTILES, OPENB_CORES_PER_GPU_SINGLE),
                         np.interp(where, OPENB_QUANTILES, OPENB_CORES_PER_GPU_MULTI))
        gib = np.where(single, np.interp(where, OPENB_QUANTILES, OPENB_GIB_PER_GPU_SINGLE),
                       np.interp(where, OPENB_QUANTILES, OPENB_GIB_PER_GPU_MULTI))
        vcpu, ram = np.ceil(cores * gpu), gib * gpu
    return vcpu.astype(float), ram.astype(float), gpu


def _raw_requests(rng: np.random.Generator, n_requests: int, bare: pl.DataFrame, replicas_cap: int) -> pl.DataFrame:
    """Requests drawn from the app profiles, before they are fitted to the fleet."""
    shares = np.array([a.share for a in APP_PROFILES])
    app_of_request = rng.choice(len(APP_PROFILES), size=n_requests, p=shares / shares.sum())
    up_gpus = (bare.filter((pl.col("status") == "up") & pl.col("gpu_model").is_not_null())
               .group_by("gpu_model").agg(pl.col("gpu").sum()).sort("gpu_model"))
    columns: dict[str, np.ndarray] = {name: np.zeros(n_requests) for name in
                                      ("vcpu", "ram_gib", "gpu", "storage_gib", "net_gbps", "priority", "replicas")}
    for name in ("storage_type", "gpu_model", "latency_class"):
        columns[name] = np.full(n_requests, None, dtype=object)
    for index, app in enumerate(APP_PROFILES):
        rows = np.flatnonzero(app_of_request == index)
        size = rows.size
        vcpu, ram, gpu = _shapes(rng, app, size)
        scale = np.minimum(1.0, app.max_vcpu / vcpu)
        vcpu = np.ceil(vcpu * scale)
        ram = np.maximum(np.ceil(ram * scale), np.ceil(vcpu * _MIN_LOCAL_RAM_GIB_PER_VCPU))
        if gpu.any() and up_gpus.height:
            columns["gpu_model"][rows] = _pick(rng, tuple(zip(up_gpus["gpu_model"], up_gpus["gpu"])), size)
        elif gpu.any():
            gpu[:] = 0  # no GPU host is up: train on CPUs
        low, high = app.storage_gib
        storage = np.exp(rng.uniform(np.log(low), np.log(high), size=size))
        columns["storage_gib"][rows] = np.ceil(storage / 10) * 10
        columns["storage_type"][rows] = _pick(rng, app.storage_tiers, size)
        net = (vcpu * app.net_gbps_per_vcpu + gpu * TRAINING_NET_GBPS_PER_GPU) * rng.uniform(0.5, 1.5, size=size)
        columns["net_gbps"][rows] = np.maximum(np.round(net, 1), 0.1)
        columns["latency_class"][rows] = _pick(rng, app.latency, size)
        columns["priority"][rows] = rng.integers(app.priority[0], app.priority[1] + 1, size=size)
        columns["replicas"][rows] = min(app.replicas, replicas_cap)
        columns["vcpu"][rows], columns["ram_gib"][rows], columns["gpu"][rows] = vcpu, ram, gpu
    max_shards = np.zeros(n_requests, dtype=np.int64)
    for latency, choices in MAX_SHARDS_BY_LATENCY.items():
        rows = np.flatnonzero(columns["latency_class"] == latency)
        max_shards[rows] = _pick(rng, choices, rows.size).astype(np.int64)
    zipf = 1.0 / np.arange(1, N_USERS + 1) ** USER_ZIPF_EXPONENT
    user = rng.choice(N_USERS, size=n_requests, p=zipf / zipf.sum())
    width = max(4, len(str(n_requests)))
    return pl.DataFrame({
        "request_id": [f"req-{i + 1:0{width}d}" for i in range(n_requests)],
        "user_id": [f"u{u + 1:02d}" for u in user],
        "app_type": [APP_PROFILES[a].name for a in app_of_request],
        "vcpu": columns["vcpu"].astype(np.int64),
        "ram_gib": columns["ram_gib"].astype(np.int64),
        "storage_gib": columns["storage_gib"].astype(np.int64),
        "gpu": columns["gpu"].astype(np.int64),
        "net_gbps": columns["net_gbps"],
        "storage_type": pl.Series(columns["storage_type"].tolist(), dtype=pl.Utf8),
        "gpu_model": pl.Series(columns["gpu_model"].tolist(), dtype=pl.Utf8),
        "priority": columns["priority"].astype(np.int64),
        "max_shards": max_shards,
        "replicas": columns["replicas"].astype(np.int64),
        "latency_class": pl.Series(columns["latency_class"].tolist(), dtype=pl.Utf8),
        "evictable": np.zeros(n_requests, dtype=bool),  # nothing runs yet: re-planning sets it per scenario
        "min_cpu_score": np.zeros(n_requests),          # no performance needs in the seeded fleets yet
        "min_storage_iops": np.zeros(n_requests),
        "untouched_ram_gib": np.zeros(n_requests, dtype=np.int64),  # drawn once the sizes are final
    }, schema=_REQUEST_SCHEMA)


# Share of a VM's RAM it never touched: 1 − (its peak memory use over the whole trace ÷ its provisioned memory),
# Bitbrains Rnd (vm-usage/bitbrains-rnd/usage_hourly.csv.gz, max of mem_usage_kb_max ÷ max of mem_capacity_kb
# per VM, all 500 VMs over 91 days) at the quantiles UNTOUCHED_QUANTILES. A VM's all-time peak is the cautious
# reading (at the p99 of its hourly peaks the median share is 0.72); 29% of VMs never touched half their RAM,
# where Pond (ASPLOS 2023) found about half of Azure's.
UNTOUCHED_QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
UNTOUCHED_SHARES = (0.0, 0.033, 0.089, 0.268, 0.594, 0.84, 0.989)


def _with_untouched(rng: np.random.Generator, requests: pl.DataFrame) -> pl.DataFrame:
    """untouched_ram_gib: the RAM each request is expected never to touch (a share drawn from Bitbrains)."""
    share = np.interp(rng.random(requests.height), UNTOUCHED_QUANTILES, UNTOUCHED_SHARES)
    return requests.with_columns(untouched_ram_gib=pl.Series(
        np.floor(requests["ram_gib"].to_numpy() * share).astype(np.int64)))


# --- fitting requests to the fleet ----------------------------------------------------


def free_capacity(hosts: pl.DataFrame) -> pl.DataFrame:
    """Free capacity of each up host: capacity (vcpu × vcpu_overcommit) minus existing load."""
    return hosts.filter(pl.col("status") == "up").select(
        "host_id", "zone", "rack", "storage_type", "gpu_model",
        *[free_expr(r).alias(r) for r in RESOURCES],
    )


def _fits_in_zone(free: dict[str, np.ndarray], request: dict[str, object]) -> bool:
    """Greedy: GPU host first, then the hosts covering most of what is left, proportional parts."""
    storage_ok = (free["storage_gib"] >= request["storage_gib"]) & (free["tier"] >= tier_rank(request["storage_type"]))
    if np.unique(free["rack"][storage_ok]).size < request["replicas"]:
        return False
    left = np.array([request["vcpu"], request["ram_gib"], request["net_gbps"]], dtype=float)
    room = np.stack([free["vcpu"], free["ram_gib"], free["net_gbps"]]).astype(float)
    taken = np.zeros(room.shape[1], dtype=bool)
    hosts_left = int(request["max_shards"])
    if request["gpu"] > 0:
        gpu_ok = ((free["gpu_model"] == request["gpu_model"]) & (free["gpu"] >= request["gpu"])
                  & (room[0] >= 1) & (room[1] >= _MIN_LOCAL_RAM_GIB_PER_VCPU))
        if not gpu_ok.any():
            return False
        hosts_left -= 1
        taken |= _take(room, left, np.where(gpu_ok, _coverage(room, left), -1.0), min_vcpu=1)
    for _ in range(hosts_left):
        if (left <= 1e-9).all():
            break
        taken |= _take(room, left, np.where(taken, -1.0, _coverage(room, left)))
    return bool((left <= 1e-9).all())


def _coverage(room: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Share of what is left that each host can take whole (same proportions as the request)."""
    need = left > 1e-9
    if not need.any():
        return np.ones(room.shape[1])
    return np.minimum(1.0, (room[need] / left[need, None]).min(axis=0))


def _take(room: np.ndarray, left: np.ndarray, score: np.ndarray, min_vcpu: int = 0) -> np.ndarray:
    """Give the best-scoring host its share of what is left (at least min_vcpu); mark it taken."""
    host = int(np.argmax(score))
    share = max(float(score[host]), 0.0)
    vcpu = min(max(math.floor(share * left[0] + 1e-9), min_vcpu), room[0, host], left[0])
    ram = min(max(math.floor(share * left[1] + 1e-9), math.ceil(vcpu * _MIN_LOCAL_RAM_GIB_PER_VCPU)),
              room[1, host], left[1])
    net = min(share * left[2], room[2, host])
    if share >= 1.0 - 1e-12:
        vcpu, ram, net = left
    part = np.array([vcpu, ram, net])
    left -= part
    room[:, host] -= part
    marked = np.zeros(room.shape[1], dtype=bool)
    marked[host] = True
    return marked


def _free_by_zone(hosts: pl.DataFrame) -> dict[str, dict[str, np.ndarray]]:
    """Free capacity of up hosts as numpy columns per zone, with the storage tier ranked."""
    free = free_capacity(hosts).with_columns(
        tier=pl.col("storage_type").replace_strict({t: tier_rank(t) for t in ("hdd", "ssd", "nvme")},
                                                   return_dtype=pl.Int64))
    return {zone: {c: part[c].to_numpy() for c in part.columns}
            for (zone,), part in sorted(free.partition_by("zone", as_dict=True).items())}


def _request_columns(requests: pl.DataFrame) -> dict[str, np.ndarray]:
    """Request demand as numpy columns (storage tier ranked), for host × request matrices."""
    return {
        "vcpu": requests["vcpu"].to_numpy(), "ram_gib": requests["ram_gib"].to_numpy(),
        "net_gbps": requests["net_gbps"].to_numpy(), "gpu": requests["gpu"].to_numpy(),
        "gpu_model": requests["gpu_model"].to_numpy(), "storage_gib": requests["storage_gib"].to_numpy(),
        "tier": np.array([tier_rank(t) for t in requests["storage_type"]], dtype=np.int64),
        "replicas": requests["replicas"].to_numpy(),
    }


def _one_host_fit(free: dict[str, np.ndarray], asked: dict[str, np.ndarray]) -> np.ndarray:
    """requests × hosts: the host holds the request's vcpu, RAM, NIC share and GPUs whole."""
    fits = ((free["vcpu"][None, :] >= asked["vcpu"][:, None]) & (free["ram_gib"][None, :] >= asked["ram_gib"][:, None])
            & (free["net_gbps"][None, :] >= asked["net_gbps"][:, None]))
    gpu_ok = ((free["gpu_model"][None, :] == asked["gpu_model"][:, None])
              & (free["gpu"][None, :] >= asked["gpu"][:, None]))
    return fits & ((asked["gpu"] == 0)[:, None] | gpu_ok)


def _storage_fit(free: dict[str, np.ndarray], asked: dict[str, np.ndarray]) -> np.ndarray:
    """Per request: the zone has `replicas` distinct racks with a host that holds a whole copy at its tier."""
    holds = ((free["storage_gib"][None, :] >= asked["storage_gib"][:, None])
             & (free["tier"][None, :] >= asked["tier"][:, None]))
    racks, rack_of_host = np.unique(free["rack"], return_inverse=True)
    on_rack = np.zeros((free["rack"].size, racks.size), dtype=np.int64)
    on_rack[np.arange(free["rack"].size), rack_of_host] = 1
    return ((holds.astype(np.int64) @ on_rack) > 0).sum(axis=1) >= asked["replicas"]


def fits_one_host(hosts: pl.DataFrame, requests: pl.DataFrame) -> pl.Series:
    """Whether each request's vcpu, RAM, NIC share and GPUs fit whole on one up host (whole-VM placement alone)."""
    asked = _request_columns(requests)
    fits = np.zeros(requests.height, dtype=bool)
    for free in _free_by_zone(hosts).values():
        fits |= _one_host_fit(free, asked).any(axis=1)
    return pl.Series("fits_one_host", fits, dtype=pl.Boolean)


def _placeability(hosts: pl.DataFrame, requests: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Per request: fits the fleet alone (greedy), and its storage copies alone fit some zone."""
    asked = _request_columns(requests)
    by_zone = _free_by_zone(hosts)
    storage_fits = {zone: _storage_fit(free, asked) for zone, free in by_zone.items()}
    fits = np.zeros(requests.height, dtype=bool)
    for zone, free in by_zone.items():  # fast path: whole on one host of the zone
        fits |= storage_fits[zone] & _one_host_fit(free, asked).any(axis=1)
    for row in np.flatnonzero(~fits):
        request = requests.row(int(row), named=True)
        fits[row] = any(storage_fits[zone][row] and _fits_in_zone(free, request)
                        for zone, free in by_zone.items())
    storage_anywhere = np.zeros(requests.height, dtype=bool)
    for zone_fits in storage_fits.values():
        storage_anywhere |= zone_fits
    return fits, storage_anywhere


def placeable_alone(hosts: pl.DataFrame, requests: pl.DataFrame) -> pl.Series:
    """Whether each request fits the fleet's free capacity if it were the only one (greedy, so sufficient)."""
    return pl.Series("placeable_alone", _placeability(hosts, requests)[0], dtype=pl.Boolean)


def _fit_alone(hosts: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Scale down, round by round, the requests that do not fit the fleet alone."""
    free = free_capacity(hosts).filter((pl.col("vcpu") >= 1) & (pl.col("ram_gib") >= _MIN_LOCAL_RAM_GIB_PER_VCPU))
    most_free_gpus = dict(free.group_by("gpu_model").agg(pl.col("gpu").max()).drop_nulls().iter_rows())
    best_model = max(most_free_gpus, key=lambda m: (most_free_gpus[m], m)) if most_free_gpus else None
    fits, storage_fits = _placeability(hosts, requests)
    for _ in range(MAX_SHRINK_ROUNDS):
        if fits.all():
            return requests
        failing = pl.Series(~fits)
        requests = _shrink(requests.with_columns(failing=failing, storage_fails=pl.Series(~storage_fits)),
                           most_free_gpus, best_model).drop("failing", "storage_fails")
        rows = np.flatnonzero(~fits)
        fits[rows], storage_fits[rows] = _placeability(hosts, requests[rows])
    raise ValueError("the fleet is too small or too loaded for some requests even after shrinking them")


def _shrink(requests: pl.DataFrame, most_free_gpus: dict[str, int], best_model: str | None) -> pl.DataFrame:
    """Scale the `failing` requests by SHRINK_FACTOR; move their GPUs to a model and count some host has free."""
    failing = pl.col("failing")
    free_of_model = pl.col("gpu_model").replace_strict(most_free_gpus, default=0, return_dtype=pl.Int64)
    # a tier no rack offers steps down (nvme → ssd → hdd); at the lowest tier, copies step down
    lower_tier = pl.col("storage_type").replace_strict({"nvme": "ssd", "ssd": "hdd", "hdd": None}, default=None,
                                                       return_dtype=pl.Utf8)
    storage_stuck = pl.col("storage_fails") & (pl.col("storage_type").is_null() | (pl.col("storage_type") == "hdd"))
    return requests.with_columns(
        gpu_model=pl.when(failing & (pl.col("gpu") > 0) & (free_of_model == 0))
        .then(pl.lit(best_model, dtype=pl.Utf8)).otherwise("gpu_model"),
        storage_type=pl.when(pl.col("storage_fails")).then(lower_tier).otherwise("storage_type"),
        replicas=pl.when(storage_stuck).then((pl.col("replicas") - 1).clip(1)).otherwise("replicas"),
    ).with_columns(
        # whole GPU boards come in powers of two: 8 that do not fit become 4, not 6
        gpu=pl.when(failing & (pl.col("gpu") > 0))
        .then(pl.lit(2).pow(pl.min_horizontal("gpu", free_of_model).clip(1).log(2).floor()).cast(pl.Int64)
              * (free_of_model > 0))
        .otherwise("gpu"),
        vcpu=pl.when(failing).then((pl.col("vcpu") * SHRINK_FACTOR).floor().clip(1)).otherwise("vcpu").cast(pl.Int64),
        storage_gib=pl.when(failing).then((pl.col("storage_gib") * SHRINK_FACTOR).floor().clip(1))
        .otherwise("storage_gib").cast(pl.Int64),
        net_gbps=pl.when(failing).then((pl.col("net_gbps") * SHRINK_FACTOR).round(1).clip(0.1)).otherwise("net_gbps"),
        ram_gib=pl.when(failing).then((pl.col("ram_gib") * SHRINK_FACTOR).floor()).otherwise("ram_gib"),
    ).with_columns(
        ram_gib=pl.max_horizontal("ram_gib", (pl.col("vcpu") * _MIN_LOCAL_RAM_GIB_PER_VCPU).ceil(), 1).cast(pl.Int64),
        gpu_model=pl.when(pl.col("gpu") > 0).then("gpu_model").otherwise(None),
    )


# --- summaries ------------------------------------------------------------------------


def demand_over_free(hosts: pl.DataFrame, requests: pl.DataFrame) -> pl.DataFrame:
    """Aggregate demand ÷ free capacity of up hosts, per resource (GPUs also per model), fleet and per zone.

    A zone's ratio assumes demand spread evenly over zones: demand ÷ (zones × the zone's free capacity).
    Storage demand counts every replica.
    """
    free = free_capacity(hosts)
    n_zones = hosts["zone"].n_unique()
    demand = requests.with_columns(storage_gib=pl.col("storage_gib") * pl.col("replicas"))
    rows = []
    resources = [(r, pl.lit(True), pl.lit(True)) for r in ("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu")]
    resources += [(f"gpu:{m}", pl.col("gpu_model") == m, pl.col("gpu_model") == m)
                  for m in sorted(hosts["gpu_model"].drop_nulls().unique())]
    for name, host_filter, request_filter in resources:
        column = name.split(":")[0]
        asked = float(demand.filter(request_filter)[column].sum())
        for zone, share in [("all", 1)] + [(z, n_zones) for z in sorted(free["zone"].unique())]:
            in_zone = free.filter(host_filter & ((pl.col("zone") == zone) if zone != "all" else pl.lit(True)))
            available = float(in_zone[column].sum())
            ratio = asked / (share * available) if available else (math.inf if asked else 0.0)
            rows.append((name, zone, asked, available, ratio))
    return pl.DataFrame(rows, schema={"resource": pl.Utf8, "zone": pl.Utf8, "demand": pl.Float64,
                                      "free": pl.Float64, "ratio": pl.Float64}, orient="row")


# --- the demo -------------------------------------------------------------------------


def demo_fleet() -> tuple[pl.DataFrame, pl.DataFrame]:
    """The demo's hosts and requests, generated (what the committed Parquet files hold). The demo requests
    state no untouched_ram_gib: `shardplan nightly` predicts it from the demo history
    (shardplan.forecasting.untouched), as it would for an operator's requests."""
    hosts, requests = generate_fleet(DEMO_HOSTS, DEMO_REQUESTS, DEMO_SEED, DEMO_ZONES)
    return hosts, requests.with_columns(untouched_ram_gib=pl.lit(None, dtype=pl.Int64))


def write_demo(directory: str | Path) -> tuple[Path, Path]:
    """Write the demo fleet as hosts.parquet and requests.parquet into directory, atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts, requests = demo_fleet()
    host_path, request_path = directory / HOST_FILE, directory / REQUEST_FILE
    write_parquet_atomically(hosts, host_path, compression="zstd")
    write_parquet_atomically(requests, request_path, compression="zstd")
    return host_path, request_path


def demo_dir() -> Path:
    """Where the installed demo Parquet files live (package data of `data.demo`)."""
    return Path(str(importlib.resources.files("shardplan.data.demo")))


def main(argv: list[str] | None = None) -> None:
    """`python -m shardplan.data.generator --demo` rewrites the embedded demo; other flags write any seeded fleet."""
    parser = argparse.ArgumentParser(prog="python -m shardplan.data.generator", description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true",
                        help="write the embedded demo fleet (default folder: the installed data/demo)")
    parser.add_argument("--out", type=Path, help="folder to write hosts.parquet and requests.parquet into")
    parser.add_argument("--hosts", type=int, default=DEMO_HOSTS)
    parser.add_argument("--requests", type=int, default=DEMO_REQUESTS)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--zones", type=int, default=DEMO_ZONES)
    args = parser.parse_args(argv)
    if args.demo:
        host_path, request_path = write_demo(args.out or demo_dir())
        hosts, requests = pl.read_parquet(host_path), pl.read_parquet(request_path)
    elif args.out:
        hosts, requests = generate_fleet(args.hosts, args.requests, args.seed, args.zones)
        args.out.mkdir(parents=True, exist_ok=True)
        host_path, request_path = args.out / HOST_FILE, args.out / REQUEST_FILE
        write_parquet_atomically(hosts, host_path, compression="zstd")
        write_parquet_atomically(requests, request_path, compression="zstd")
    else:
        parser.error("give --demo or --out DIR")
    print(f"wrote {host_path} ({hosts.height} hosts) and {request_path} ({requests.height} requests)")
    with pl.Config(tbl_rows=-1, float_precision=2):
        print(demand_over_free(hosts, requests).filter(pl.col("zone") == "all"))


if __name__ == "__main__":
    main()
