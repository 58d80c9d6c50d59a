"""A placed request as the task router sees it: its parts, their hosts' speed, and the cost of reaching memory
and data that live on another part.

Tasks run on the request's *compute parts* (a part with vcpu > 0: its host's `cpu_score` sets how fast a
core-second goes, its local RAM is what a task may use without going remote). RAM the request holds on hosts
where it has no vcpu is *remote memory*; when the tasks running on a part need more memory than the part holds
locally, the rest lives there. Reaching another part costs latency and bandwidth by distance (same host, same
rack, other rack, or the plan's topology table for a pair of racks it names): :class:`Distances`, whose defaults
are documented with their units.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shardplan.plandir import PlanDir, read_plan_dir
from shardplan.topology import distance, rack_pairs


class VmError(ValueError):
    """A request that cannot be routed: not in the plan, not placed, no compute part."""


@dataclass(frozen=True)
class Distances:
    """Latency (µs) and bandwidth (Gbps) between two parts, by where their hosts are, and how remote memory slows
    a task. Defaults: same host 0.1 µs / 100 Gbps (memory bus, no NIC), same rack 5 µs / 25 Gbps (one ToR switch,
    a 25 GbE NIC), other rack 20 µs / 10 Gbps (through the spine, oversubscribed); remote memory slows a task by
    `remote_slowdown` per latency class of the memory's distance, in proportion to the share of its memory that
    is remote (a task with 40 % of its memory one rack away runs 0.4 × 1.0 = 40 % longer at the default): the
    far-memory studies GiantVM and FragVisor report 1.2–3× slowdowns for memory-bound work spread over hosts.

    `pairs` (from the plan's topology table, :func:`from_options`) sets latency and bandwidth for the rack pairs it
    names; such a pair's remote-memory slowdown is `remote_slowdown_other_rack` × its distance relative to the
    other-rack defaults (mean of latency / `other_rack_us` and `other_rack_gbps` / bandwidth: 1.0 at the
    defaults, as the planner's spread penalty counts it). Levels 0, 1, 2 are same host, same rack, other rack at
    the defaults; a named pair is level 3 + its index in `pairs`."""

    same_host_us: float = 0.1
    same_rack_us: float = 5.0
    other_rack_us: float = 20.0
    same_host_gbps: float = 100.0
    same_rack_gbps: float = 25.0
    other_rack_gbps: float = 10.0
    remote_slowdown_same_rack: float = 0.5
    remote_slowdown_other_rack: float = 1.0
    pairs: tuple = ()
    """((rack a, rack b), (latency µs, bandwidth Gbps)) for the rack pairs the topology names, both orders."""

    def _pair_index(self) -> Mapping[tuple[str, str], int]:
        index = self.__dict__.get("_index")
        if index is None:
            index = {pair: i for i, (pair, _) in enumerate(self.pairs)}
            object.__setattr__(self, "_index", index)
        return index

    @classmethod
    def from_options(cls, options: Mapping, racks: Mapping[str, str]) -> "Distances":
        """The distances a plan was made under: its options' other_rack_latency_us / other_rack_bandwidth_gbps
        (the defaults where absent) and its topology rows resolved over `racks` (rack → zone)."""
        base = cls()
        us = float(options.get("other_rack_latency_us") or base.other_rack_us)
        gbps = float(options.get("other_rack_bandwidth_gbps") or base.other_rack_gbps)
        rows = [tuple(row) for row in options.get("topology") or ()]
        pairs = tuple(sorted(rack_pairs(rows, racks).items()))
        return cls(other_rack_us=us, other_rack_gbps=gbps, pairs=pairs)

    def level(self, a: "Part | MemoryPart", b: "Part | MemoryPart") -> int:
        """0 same host, 1 same rack, 2 other rack at the defaults, 3 + i the topology's i-th named pair."""
        if a.host_id == b.host_id:
            return 0
        if a.rack == b.rack:
            return 1
        i = self._pair_index().get((a.rack, b.rack)) if self.pairs else None
        return 2 if i is None else 3 + i

    def gbps(self, level: int) -> float:
        if level >= 3:
            return self.pairs[level - 3][1][1]
        return (self.same_host_gbps, self.same_rack_gbps, self.other_rack_gbps)[level]

    def latency_s(self, level: int) -> float:
        if level >= 3:
            return self.pairs[level - 3][1][0] * 1e-6
        return (self.same_host_us, self.same_rack_us, self.other_rack_us)[level] * 1e-6

    def transfer_s(self, gib: float, level: int) -> float:
        """Seconds to move `gib` GiB between two parts `level` apart."""
        if gib <= 0 or level == 0:
            return 0.0
        return self.latency_s(level) + gib * 8 * 1.073741824 / self.gbps(level)

    def slowdown(self, level: int) -> float:
        if level >= 3:
            lat, bw = self.pairs[level - 3][1]
            return self.remote_slowdown_other_rack * distance(lat, bw, self.other_rack_us, self.other_rack_gbps)
        return (0.0, self.remote_slowdown_same_rack, self.remote_slowdown_other_rack)[level]


@dataclass(frozen=True)
class Part:
    """One compute part of a VM: where it runs and what it holds."""

    index: int            # position among the VM's compute parts (the schedule's `shard` is the plan's shard)
    shard: int
    host_id: str
    rack: str
    zone: str
    vcpu: int
    local_ram_gib: float
    gpu: int
    cpu_score: float
    mem_bw_gbps: float


@dataclass(frozen=True)
class MemoryPart:
    """RAM of the VM on a host where it has no vcpu (DESIGN.md: remote memory)."""

    host_id: str
    rack: str
    ram_gib: float


@dataclass(frozen=True)
class VirtualMachine:
    """A placed request's compute parts (in shard order), its remote memory and its storage copies' hosts."""

    request_id: str
    parts: tuple[Part, ...]
    memory: tuple[MemoryPart, ...] = ()
    storage_hosts: tuple[str, ...] = ()
    distances: Distances = field(default_factory=Distances)

    @property
    def total_vcpu(self) -> int:
        return sum(p.vcpu for p in self.parts)

    @property
    def max_part_vcpu(self) -> int:
        return max(p.vcpu for p in self.parts)

    @property
    def max_part_gpu(self) -> int:
        return max(p.gpu for p in self.parts)

    @property
    def fastest(self) -> float:
        return max(p.cpu_score for p in self.parts)

    def remote_level(self, part: Part) -> int:
        """Distance level from a part to its nearest remote memory, by slowdown (2 when the VM has none: memory then comes from the
        other compute parts, which are on other hosts)."""
        d = self.distances
        levels = [d.level(part, m) for m in self.memory if m.host_id != part.host_id]
        others = [d.level(part, p) for p in self.parts if p.host_id != part.host_id]
        return min(levels or others or [2], key=lambda level: (d.slowdown(level), level))

    def levels(self) -> list[list[int]]:
        """Distance level between every two compute parts."""
        return [[self.distances.level(a, b) for b in self.parts] for a in self.parts]

    def one_host(self) -> "VirtualMachine":
        """The same VM on one host with all its vcpu, RAM and GPUs local, at the parts' vcpu-weighted mean speed
        (the same compute capacity): the reference a split is measured against, so its cost is the split's own —
        data and memory across hosts, cores that cannot be pooled — not the parts' speed."""
        best = max(self.parts, key=lambda p: (p.vcpu, p.cpu_score))
        speed = sum(p.vcpu * p.cpu_score for p in self.parts) / self.total_vcpu
        whole = Part(0, best.shard, best.host_id, best.rack, best.zone, self.total_vcpu,
                     sum(p.local_ram_gib for p in self.parts) + sum(m.ram_gib for m in self.memory),
                     sum(p.gpu for p in self.parts), speed, best.mem_bw_gbps)
        return VirtualMachine(self.request_id, (whole,), (), self.storage_hosts, self.distances)


def vm_from_plan(plan: str | Path | PlanDir, request_id: str, distances: Distances | None = None) -> VirtualMachine:
    """The compute parts of `request_id` in a plan directory, with their hosts' cpu_score, mem_bw_gbps and rack."""
    plan = plan if isinstance(plan, PlanDir) else read_plan_dir(plan)
    where = f"{plan.path or 'plan'}"
    status = plan.requests_out.filter(pl.col("request_id") == request_id)
    if status.height == 0:
        raise VmError(f"{where}: request {request_id!r} is not in requests.parquet")
    if status["status"][0] != "placed":
        raise VmError(f"{where}: request {request_id!r} is {status['status'][0]}, not placed: nothing to route to")
    hosts = plan.hosts.select("host_id", "rack", "zone", "cpu_score", "mem_bw_gbps")
    shards = plan.shards.filter(pl.col("request_id") == request_id).join(hosts, on="host_id", how="left").sort("shard")
    compute = shards.filter(pl.col("vcpu") > 0)
    if compute.height == 0:
        raise VmError(f"{where}: request {request_id!r} has no part with vcpu")
    parts = tuple(Part(i, int(row["shard"]), row["host_id"], row["rack"], row["zone"], int(row["vcpu"]),
                       float(row["ram_gib"]), int(row["gpu"]), float(row["cpu_score"] or 1.0),
                       float(row["mem_bw_gbps"] or 0.0))
                  for i, row in enumerate(compute.iter_rows(named=True)))
    memory = tuple(MemoryPart(row["host_id"], row["rack"], float(row["ram_gib"]))
                   for row in shards.filter((pl.col("vcpu") == 0) & (pl.col("ram_gib") > 0)).iter_rows(named=True))
    storage = tuple(shards.filter(pl.col("storage_gib") > 0)["host_id"].to_list())
    if distances is None:
        racks = dict(plan.hosts.select("rack", "zone").unique().iter_rows())
        distances = Distances.from_options(plan.plan.get("options") or {}, racks)
    return VirtualMachine(request_id, parts, memory, storage, distances)
