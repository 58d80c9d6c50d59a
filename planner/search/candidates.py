"""Candidate hosts per request, Nova-filter style: each filter says how many hosts it dropped.

Filters run in a fixed order (status → GPU model → capacity → storage tier/space) and the
first one a host fails is the reason counted for it. Survivors are ranked by a documented
score and kept per zone to the best ``top_k`` equivalence classes (hosts with identical
free capacity, price, rack and tags); members of a kept class enter as a prefix, so the
model can order them to break symmetry.

Score of a host for a request (higher is better), on the class representative, in score points; the
weights are options (defaults shown):
    score_coverage  (2.0) × coverage   share of the request's demand (mean over demanded dims, capped at 1)
                                       the host's free capacity could take
  + score_active    (1.0) × active     the host already runs load: no activation cost
  + score_tightness (0.5) × tightness  1 − mean leftover share after a whole placement (best fit)
  − score_price     (0.5) × price      cost_per_hour per free vcpu relative to the fleet's median, capped at
                                       score_price_cap (4.0)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

from shardplan.models.pool_bound import HostPools
from shardplan.models.problem import (
    COST_UNITS_PER_DOLLAR,
    GPU,
    HOT_RESOURCES,
    NET,
    NET_UNITS_PER_GBPS,
    RAM,
    STORAGE,
    VCPU,
    RemoteMemory,
)
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import capacity_expr, tier_rank
from shardplan.topology import distance, rack_pairs

PERFORMANCE_EPSILON = 1e-9
"""A host meets a performance need at most this far below it (floating-point slack only)."""


@dataclass(frozen=True)
class Fleet:
    """Host arrays in solver units, built once per run from the validated hosts table."""

    host_ids: list[str]
    free: np.ndarray         # (H, 5) int64
    capacity: np.ndarray     # (H, 5) int64
    cost: np.ndarray         # (H,) float $/h
    active: np.ndarray       # (H,) bool
    up: np.ndarray           # (H,) bool
    rack: np.ndarray         # (H,) int64
    zone: np.ndarray         # (H,) int64
    tier: np.ndarray         # (H,) int64
    gpu_model: np.ndarray    # (H,) object
    host_class: np.ndarray   # (H,) int64 equivalence class id
    rack_names: list[str]
    zone_names: list[str]
    held: np.ndarray | None = None  # (H, 5) room running parts that may stay take (re-planning); None: none
    cpu_score: np.ndarray | None = None     # (H,) float: what min_cpu_score is compared with (None: all 1.0)
    storage_iops: np.ndarray | None = None  # (H,) float: what min_storage_iops is compared with (None: all 0)

    def cpu_ok(self, minimum: float) -> np.ndarray:
        """(H,) bool: hosts fast enough for a compute part of a request asking `minimum` (invariant 10)."""
        if minimum <= 0:
            return np.ones(self.n_hosts, dtype=bool)
        score = np.ones(self.n_hosts) if self.cpu_score is None else self.cpu_score
        return score >= minimum - PERFORMANCE_EPSILON

    def iops_ok(self, minimum: float) -> np.ndarray:
        """(H,) bool: hosts whose storage is fast enough for a copy of a request asking `minimum`."""
        if minimum <= 0:
            return np.ones(self.n_hosts, dtype=bool)
        iops = np.zeros(self.n_hosts) if self.storage_iops is None else self.storage_iops
        return iops >= minimum - PERFORMANCE_EPSILON

    @property
    def n_hosts(self) -> int:
        return len(self.host_ids)

    @property
    def holds_running(self) -> np.ndarray:
        """(H,) bool: a running request's part may stay on the host (it is not interchangeable)."""
        return np.zeros(self.n_hosts, dtype=bool) if self.held is None else self.held.sum(axis=1) > 0

    def room_view(self) -> "Fleet":
        """The fleet as a new request sees it: free capacity less what running parts hold."""
        if self.held is None:
            return self
        return dataclasses.replace(self, free=np.clip(self.free - self.held, 0, None), held=None)


def build_fleet(hosts: pl.DataFrame, held: np.ndarray | None = None) -> Fleet:
    """Free capacity = capacity (vcpu × overcommit) − existing load, clipped at zero; `held`: the room
    running parts take (hosts holding some are classes of their own)."""
    vcpu_cap = hosts.select(capacity_expr("vcpu")).to_series().to_numpy()
    capacity = np.column_stack([
        vcpu_cap, hosts["ram_gib"].to_numpy(), hosts["storage_gib"].to_numpy(),
        np.floor(hosts["net_gbps"].to_numpy() * NET_UNITS_PER_GBPS + 1e-9).astype(np.int64),
        hosts["gpu"].to_numpy()]).astype(np.int64)
    used = np.column_stack([
        hosts["used_vcpu"].to_numpy(), hosts["used_ram_gib"].to_numpy(), hosts["used_storage_gib"].to_numpy(),
        np.ceil(hosts["used_net_gbps"].to_numpy() * NET_UNITS_PER_GBPS - 1e-9).astype(np.int64),
        hosts["used_gpu"].to_numpy()]).astype(np.int64)
    free = np.clip(capacity - used, 0, None)
    active = used.sum(axis=1) > 0
    racks = hosts["rack"].to_list()
    zones = hosts["zone"].to_list()
    rack_names = sorted(set(racks))
    zone_names = sorted(set(zones))
    rack = np.array([rack_names.index(x) for x in racks], dtype=np.int64)
    zone = np.array([zone_names.index(x) for x in zones], dtype=np.int64)
    tier = np.array([tier_rank(t) for t in hosts["storage_type"].to_list()], dtype=np.int64)
    gpu_model = np.array([m or "" for m in hosts["gpu_model"].to_list()], dtype=object)
    up = (hosts["status"] == "up").to_numpy()
    cost = hosts["cost_per_hour"].to_numpy().astype(float)
    held_rows = [()] * len(zone) if held is None else [tuple(x) for x in held.tolist()]
    cpu_score = hosts["cpu_score"].to_numpy().astype(float)
    storage_iops = hosts["storage_iops"].to_numpy().astype(float)
    # hosts of one class are interchangeable for every filter: speed and IOPS are part of the key
    keys = [(z, r, tuple(f), c, a, t, g, u, k, cs, io) for z, r, f, c, a, t, g, u, k, cs, io in
            zip(zone, rack, free.tolist(), cost, active, tier, gpu_model, up, held_rows, cpu_score, storage_iops)]
    class_of: dict[tuple, int] = {}
    host_class = np.array([class_of.setdefault(k, len(class_of)) for k in keys], dtype=np.int64)
    return Fleet(hosts["host_id"].to_list(), free, capacity, cost, active, up, rack, zone, tier, gpu_model,
                 host_class, rack_names, zone_names, held, cpu_score, storage_iops)


def rack_distances(fleet: Fleet, topology: tuple, latency_us: float, bandwidth_gbps: float) -> np.ndarray | None:
    """(K, K) distance between the fleet's racks, relative to a pair at the defaults (PlanOptions.topology):
    mean(latency / `latency_us`, `bandwidth_gbps` / bandwidth), 0 on the diagonal; None without a topology
    (every other rack 1, the spread penalty's count). Zone rows first, then rack pairs over them; names this
    fleet lacks (a partition's hosts) are skipped."""
    if not topology:
        return None
    k = len(fleet.rack_names)
    zone_of = np.zeros(k, dtype=np.int64)
    zone_of[fleet.rack] = fleet.zone
    rack_index = {name: i for i, name in enumerate(fleet.rack_names)}
    latency = np.full((k, k), float(latency_us))
    bandwidth = np.full((k, k), float(bandwidth_gbps))
    pairs = rack_pairs(topology, {name: fleet.zone_names[zone_of[i]] for name, i in rack_index.items()})
    for (a, b), (lat, bw) in pairs.items():
        latency[rack_index[a], rack_index[b]] = lat
        bandwidth[rack_index[a], rack_index[b]] = bw
    out = distance(latency, bandwidth, latency_us, bandwidth_gbps)
    np.fill_diagonal(out, 0.0)
    return out


@dataclass(frozen=True)
class Candidates:
    """Per request: compute and storage candidate host indices, GPU fit, and drop counts per reason."""

    compute: list[np.ndarray]
    gpu_ok: list[np.ndarray]
    storage: list[np.ndarray]
    reasons: pl.DataFrame          # request_id, role, reason, hosts
    symmetry_groups: list[np.ndarray]
    member_cap: int


def request_arrays(requests: pl.DataFrame) -> dict[str, np.ndarray]:
    """Demand in solver units and the per-request attributes the filters need."""
    demand = np.column_stack([
        requests["vcpu"].to_numpy(), requests["ram_gib"].to_numpy(), requests["storage_gib"].to_numpy(),
        np.ceil(requests["net_gbps"].to_numpy() * NET_UNITS_PER_GBPS - 1e-9),
        requests["gpu"].to_numpy()]).astype(np.int64)
    return {
        "demand": demand,
        "tier": np.array([tier_rank(t) for t in requests["storage_type"].to_list()], dtype=np.int64),
        "gpu_model": np.array([m or "" for m in requests["gpu_model"].to_list()], dtype=object),
        "max_shards": requests["max_shards"].to_numpy().astype(np.int64),
        "replicas": requests["replicas"].to_numpy().astype(np.int64),
        "low_latency": (requests["latency_class"] == "low").to_numpy(),
        "min_cpu": _column_or(requests, "min_cpu_score", 0.0),
        "min_iops": _column_or(requests, "min_storage_iops", 0.0),
    }


def remote_memory(requests: pl.DataFrame, options: PlanOptions) -> RemoteMemory:
    """Each request's remote-memory rule in solver units (options.remote_memory_pricing; request index
    space). Use pricing: up to untouched_ram_gib (unknown: 0) remote at the untouched rate; past it every
    remote GiB at the touched rate, at most max_slowdown ÷ remote_slowdown_per_share of the RAM touched and
    remote, each touched GiB at touched_remote_price."""
    ram = requests["ram_gib"].to_numpy().astype(np.int64)
    latency = requests["latency_class"].to_list()
    touched_mbps = int(round(options.remote_memory_gbps_per_gib * NET_UNITS_PER_GBPS))
    if options.remote_memory_pricing == "flat":
        return RemoteMemory.flat(touched_mbps, ~(requests["latency_class"] == "low").to_numpy(), ram)
    untouched = np.minimum(_column_or(requests, "untouched_ram_gib", 0.0).astype(np.int64), ram)
    share = np.array([options.max_slowdown(c) / options.remote_slowdown_per_share for c in latency])
    touched = np.floor(share * ram + 1e-9).astype(np.int64)
    price = np.array([int(round(options.touched_remote_price(c) * COST_UNITS_PER_DOLLAR)) for c in latency],
                     dtype=np.int64)
    return RemoteMemory(touched_mbps, int(round(options.untouched_remote_gbps_per_gib * NET_UNITS_PER_GBPS)),
                        untouched, np.minimum(untouched + touched, ram), price)


def modelled_slowdown(memory: RemoteMemory, r: int, remote_gib: int, ram_gib: int,
                      options: PlanOptions) -> float:
    """Slowdown of request `r` from its touched remote GiB (flat pricing: every remote GiB counts as touched)."""
    if ram_gib <= 0:
        return 0.0
    return options.remote_slowdown_per_share * memory.touched(r, remote_gib) / ram_gib


def hot_room(fleet: Fleet, options: PlanOptions) -> np.ndarray:
    """(H, 5) load a plan may add to each host before it passes hot_spot_threshold of its capacity in that
    resource (vcpu and RAM; −1 for the others, for hosts past it already, and for hosts without any)."""
    capacity = fleet.capacity.astype(float)
    room = np.floor(options.hot_spot_threshold * capacity + 1e-9) - (capacity - fleet.free)
    room = np.where((room < 0) | (capacity <= 0), -1, room).astype(np.int64)
    watched = np.zeros(5, dtype=bool)
    watched[list(HOT_RESOURCES)] = True
    room[:, ~watched] = -1
    return room


def speed_prices(requests: pl.DataFrame, options: PlanOptions) -> np.ndarray:
    """(R,) solver units per vcpu per unit of cpu_score deficit: by latency class, none for a request that
    states min_cpu_score (its need is a filter)."""
    price = np.array([options.speed_price(c) for c in requests["latency_class"].to_list()])
    needs = _column_or(requests, "min_cpu_score", 0.0) > 0
    return np.rint(np.where(needs, 0.0, price) * COST_UNITS_PER_DOLLAR).astype(np.int64)


def speed_deficit(fleet: Fleet) -> np.ndarray:
    """(H,) the fastest up host's cpu_score less each host's (0 for the fastest)."""
    best = float(fleet.cpu_score[fleet.up].max()) if fleet.up.any() else 0.0
    return np.clip(best - fleet.cpu_score, 0.0, None)


def _column_or(frame: pl.DataFrame, name: str, default: float) -> np.ndarray:
    if name not in frame.columns:
        return np.full(frame.height, default)
    return frame[name].fill_null(default).to_numpy().astype(float)


def _class_representatives(fleet: Fleet) -> tuple[np.ndarray, list[np.ndarray]]:
    n_classes = int(fleet.host_class.max()) + 1 if fleet.n_hosts else 0
    members = [np.flatnonzero(fleet.host_class == c) for c in range(n_classes)]
    return np.array([m[0] for m in members], dtype=np.int64), members


def _scores(fleet: Fleet, reps: np.ndarray, demand: np.ndarray, options: PlanOptions) -> np.ndarray:
    """(R, C) score of each class representative for each request (see module docstring)."""
    free = fleet.free[reps].astype(float)                       # (C, 5)
    d = demand.astype(float)                                    # (R, 5)
    demanded = d > 0
    ratio = np.where(demanded[:, None, :], np.minimum(free[None, :, :] / np.maximum(d[:, None, :], 1), 1.0), 0)
    n_dims = np.maximum(demanded.sum(axis=1), 1)[:, None]
    coverage = ratio.sum(axis=2) / n_dims
    leftover = np.where(demanded[:, None, :], np.clip(free[None] - d[:, None], 0, None) / np.maximum(free[None], 1), 0)
    tightness = 1.0 - leftover.sum(axis=2) / n_dims
    per_vcpu = fleet.cost[reps] / np.maximum(fleet.free[reps, VCPU], 1)
    median = float(np.median(per_vcpu)) if per_vcpu.size else 1.0
    price = per_vcpu / max(median, 1e-9)
    return (options.score_coverage * coverage + options.score_active * fleet.active[reps][None, :]
            + options.score_tightness * tightness - options.score_price * np.minimum(price, options.score_price_cap)[None, :])


@dataclass(frozen=True)
class FilterView:
    """What the filters read for one chunk of requests against the class representatives."""

    fleet: Fleet
    reps: np.ndarray          # (C,) representative host of each class
    free: np.ndarray          # (C, 5) the representatives' free capacity
    demand: np.ndarray        # (n, 5) the chunk's demand
    req: dict[str, np.ndarray]
    ratio: float              # min_local_ram_gib_per_vcpu
    zone_free: np.ndarray     # (Z, 5) free capacity of each zone's up hosts together

    def gpu_fit(self) -> np.ndarray:
        """(n, C) the class has a free GPU of the request's model (any model when none asked)."""
        model = self.req["gpu_model"][:, None]
        return (self.free[None, :, GPU] >= 1) & ((model == "") | (model == self.fleet.gpu_model[self.reps][None, :]))


@dataclass(frozen=True)
class HostFilter:
    """A named candidate filter: which hosts pass it for each request; it counts what it drops."""

    name: str
    reason: str                                   # what explain and requests.parquet say of a drop
    passes: Callable[[FilterView], np.ndarray]    # (n, C) bool
    mode: str | None = None                       # only in this mode (None: both)


ROOMIEST = 4
"""Per zone and resource (vcpu, RAM, network; GPUs per model), the classes with the most free room that a
request keeps among its candidates, past its filters, when its best-scored classes cannot hold it (`_holds`):
a request may span at most max_shards (≤ 4) hosts, and one whose best-scored classes are small could not be
placed at all within them. At 2,000 hosts ×
5,000 requests, 277 requests (36% of the unplaced weight) had no placement inside their top_k classes, while
the whole fleet holds every one of them (the Lagrangian bound's test, models/lagrangian.py)."""


def _roomiest(fleet: Fleet, reps: np.ndarray, rep_free: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ROOMIEST classes of every zone by free vcpu, RAM and network (up hosts), and by free GPUs per
    GPU model: class indices."""
    up = fleet.up[reps]
    common: list[int] = []
    by_model: dict[str, list[int]] = {}
    for z in np.unique(fleet.zone[reps]):
        in_zone = np.flatnonzero((fleet.zone[reps] == z) & up)
        for k in (VCPU, RAM, NET):
            order = in_zone[np.argsort(-rep_free[in_zone, k], kind="stable")]
            common.extend(order[:ROOMIEST].tolist())
        models = fleet.gpu_model[reps][in_zone]
        for model in set(models.tolist()) - {""}:
            with_model = in_zone[(models == model) & (rep_free[in_zone, GPU] > 0)]
            order = with_model[np.argsort(-rep_free[with_model, GPU], kind="stable")]
            by_model.setdefault(model, []).extend(order[:ROOMIEST].tolist())
    gpu_any = sorted({c for classes in by_model.values() for c in classes})
    out = {model: np.array(sorted(set(classes)), dtype=np.int64) for model, classes in by_model.items()}
    out[""] = np.array(gpu_any, dtype=np.int64)
    return np.array(sorted(set(common)), dtype=np.int64), out


def _holds(fleet: Fleet, reps: np.ndarray, rep_free: np.ndarray, sizes: np.ndarray, classes: np.ndarray,
           d: np.ndarray, spans: int, gpu_model: str) -> bool:
    """Whether, in some zone, the `spans` roomiest hosts of these classes hold the request's vcpu, RAM,
    network and GPUs (of its model), each resource apart: a necessary condition of a placement."""
    if len(classes) == 0:
        return True  # nothing passed the filters: nothing to add
    zones = fleet.zone[reps[classes]]
    for z in np.unique(zones):
        in_zone = classes[zones == z]
        copies = np.minimum(sizes[in_zone], spans)
        ok = True
        for k in (VCPU, RAM, NET, GPU):
            if d[k] <= 0:
                continue
            free = rep_free[in_zone, k]
            if k == GPU and gpu_model:
                free = np.where(fleet.gpu_model[reps[in_zone]] == gpu_model, free, 0)
            room = np.repeat(free, copies)
            if np.sort(room)[::-1][:spans].sum() < d[k]:
                ok = False
                break
        if ok:
            return True
    return False


def _zone_free(fleet: Fleet) -> np.ndarray:
    zones = int(fleet.zone.max()) + 1 if fleet.n_hosts else 0
    out = np.zeros((zones, 5), dtype=np.int64)
    np.add.at(out, fleet.zone[fleet.up], fleet.free[fleet.up])
    return out


def _whole_fit(dim: int) -> Callable[[FilterView], np.ndarray]:
    return lambda v: v.free[None, :, dim] >= v.demand[:, dim, None]


def _zone_holds(v: FilterView) -> np.ndarray:
    """The request's demand (storage once per copy) fits its zone's free capacity, all up hosts together."""
    need = v.demand.copy()
    need[:, STORAGE] *= np.maximum(v.req["replicas"], 1)
    holds = np.all(v.zone_free[None, :, :] >= need[:, None, :], axis=2)   # (n, Z)
    return holds[:, v.fleet.zone[v.reps]]


def _zone_has_gpu_model(v: FilterView) -> np.ndarray:
    """Sharded: a GPU request needs a free GPU of its model somewhere in the zone (its other parts need not)."""
    fit = v.gpu_fit() & v.fleet.up[v.reps][None, :]
    zones = v.fleet.zone[v.reps]
    n_zones = int(v.fleet.zone.max()) + 1 if v.fleet.n_hosts else 0
    has = np.zeros((fit.shape[0], n_zones), dtype=bool)
    for z in range(n_zones):
        has[:, z] = fit[:, zones == z].any(axis=1)
    return (v.demand[:, GPU, None] == 0) | has[:, zones]


def _part_room(v: FilterView) -> np.ndarray:
    """Sharded: a part needs a vcpu with its local RAM, or (remote memory allowed) some RAM alone, or NIC
    room for some of the request's own traffic."""
    d = v.demand
    need_ram = np.maximum(np.ceil(v.ratio * np.minimum(d[:, VCPU], 1)), 1 if v.ratio > 0 else 0)
    can_vcpu = (v.free[None, :, VCPU] >= 1) & (v.free[None, :, RAM] >= need_ram[:, None])
    can_ram = (v.free[None, :, RAM] >= 1) & ~v.req["low_latency"][:, None] & (d[:, RAM, None] > 0)
    can_gpu = (d[:, GPU] > 0)[:, None] & v.gpu_fit() & can_vcpu
    can_net = (v.free[None, :, NET] >= 1) & (d[:, NET, None] > 0)  # a part may carry only some of its traffic
    takes = np.where(d[:, VCPU, None] > 0, can_vcpu | can_ram | can_net, can_ram | (v.free[None, :, NET] >= 1))
    return takes | can_gpu


def _rep_cpu(v: FilterView) -> np.ndarray:
    return np.ones(len(v.reps)) if v.fleet.cpu_score is None else v.fleet.cpu_score[v.reps]


def _rep_iops(v: FilterView) -> np.ndarray:
    return np.zeros(len(v.reps)) if v.fleet.storage_iops is None else v.fleet.storage_iops[v.reps]


def _stores(v: FilterView, ok: np.ndarray) -> np.ndarray:
    return (v.demand[:, STORAGE, None] == 0) | ok


COMPUTE_FILTERS: tuple[HostFilter, ...] = (
    HostFilter("status", "host not up (draining or down)", lambda v: np.broadcast_to(v.fleet.up[v.reps][None, :],
                                                                                      (v.demand.shape[0], len(v.reps)))),
    HostFilter("local_ram_rule", "the request's RAM is below min_local_ram_gib_per_vcpu × its vcpu (invariant 4): "
               "no part can hold its vcpu", lambda v: np.broadcast_to(
                   ((v.demand[:, VCPU] == 0) | (v.demand[:, RAM] >= v.ratio * v.demand[:, VCPU] - 1e-9))[:, None],
                   (v.demand.shape[0], len(v.reps)))),
    HostFilter("zone_capacity", "the free capacity of the host's whole zone is short of the request", _zone_holds),
    HostFilter("gpu_model", "no free GPU of the requested model on the host", lambda v: (v.demand[:, GPU, None] == 0)
               | v.gpu_fit(), mode="whole"),
    HostFilter("gpu_model", "no free GPU of the requested model anywhere in the host's zone", _zone_has_gpu_model,
               mode="sharded"),
    *(HostFilter(name, f"insufficient free {name}", _whole_fit(dim), mode="whole")
      for dim, name in ((VCPU, "vcpu"), (RAM, "ram_gib"), (NET, "net_gbps"), (GPU, "gpu"))),
    HostFilter("storage_tier", "storage tier below the requested one",
               lambda v: _stores(v, v.fleet.tier[v.reps][None, :] >= v.req["tier"][:, None]), mode="whole"),
    HostFilter("storage_gib", "insufficient free storage_gib",
               lambda v: _stores(v, v.free[None, :, STORAGE] >= v.demand[:, STORAGE, None]), mode="whole"),
    HostFilter("part_room", "no free vcpu with local RAM, nor RAM for remote memory", _part_room, mode="sharded"),
    HostFilter("cpu_score", "host cpu_score below the request's min_cpu_score (invariant 10)", lambda v: (
        v.req["min_cpu"][:, None] <= 0) | (_rep_cpu(v)[None, :] >= v.req["min_cpu"][:, None] - PERFORMANCE_EPSILON)),
    HostFilter("storage_iops", "host storage_iops below the request's min_storage_iops (invariant 10)",
               lambda v: _stores(v, (v.req["min_iops"][:, None] <= 0)
                                 | (_rep_iops(v)[None, :] >= v.req["min_iops"][:, None] - PERFORMANCE_EPSILON)),
               mode="whole"),
)
"""The compute-side filters in the order they run; the first a host fails is the reason counted for it."""

FILTER_REASONS: dict[str, str] = {
    "status": "not up (draining or down)",
    "local_ram_rule": "fail the local-RAM rule (the request's RAM < min_local_ram_gib_per_vcpu × its vcpu)",
    "zone_capacity": "lie in zones whose free capacity, all hosts together, is short of it",
    "gpu_model": "lack a free GPU of its model (whole: on the host; sharded: in the host's zone)",
    **{name: f"lack {name}" for name in ("vcpu", "ram_gib", "net_gbps", "gpu", "storage_gib")},
    "storage_tier": "are below its storage tier",
    "part_room": "lack room for any part (a vcpu with its local RAM, RAM for remote memory, or NIC room)",
    "cpu_score": "have a cpu_score below its min_cpu_score",
    "storage_iops": "have storage_iops below its min_storage_iops",
    "ranked_out": "ranked below the best top_k classes",
}
"""Each filter's name → what a drop by it means (storage copies use storage_tier and storage_gib too)."""


def find_candidates(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions,
                    must_include: list[set[int]] | None = None, chunk: int = 256) -> Candidates:
    """Filter, count reasons, rank and keep the best classes per zone for every request. Re-planning, the
    filters see what a host could hold if the running parts on it moved (so a request may displace
    them), the ranking the room they leave (hosts with room first)."""
    room = fleet.room_view()
    req = request_arrays(requests)
    demand = req["demand"]
    n_req = demand.shape[0]
    whole = options.mode == "whole"
    ratio = options.min_local_ram_gib_per_vcpu
    reps, members = _class_representatives(fleet)
    rep_free = fleet.free[reps]
    reason_rows: list[tuple[int, str, str, int]] = []
    compute_classes: list[np.ndarray] = []
    storage_classes: list[np.ndarray] = []
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    alive_hosts = np.zeros(n_req, dtype=np.int64)
    zone_free = _zone_free(fleet)
    roomy, roomy_gpu = _roomiest(fleet, reps, rep_free)
    for lo in range(0, n_req, chunk):
        hi = min(lo + chunk, n_req)
        d = demand[lo:hi]
        weight = sizes[None, :]
        view = FilterView(fleet, reps, rep_free, d, {k: v[lo:hi] for k, v in req.items()}, ratio, zone_free)
        alive = np.ones((hi - lo, len(reps)), dtype=bool)
        for host_filter in COMPUTE_FILTERS:
            if host_filter.mode not in (None, options.mode):
                continue
            drop = alive & ~host_filter.passes(view)
            _count(reason_rows, lo, "compute", host_filter.name, drop, weight)
            alive &= ~drop
        alive_hosts[lo:hi] = (alive * weight).sum(axis=1)
        score = np.where(alive, _scores(room, reps, d, options), -np.inf)
        spans = np.ones(hi - lo, dtype=np.int64) if whole else np.maximum(req["max_shards"][lo:hi], 1)
        for i, top in enumerate(_top_per_zone(score, fleet.zone[reps], options.top_k)):
            if _holds(fleet, reps, rep_free, sizes, top, d[i], int(spans[i]), req["gpu_model"][lo + i]):
                compute_classes.append(top)
                continue
            extra = roomy if d[i, GPU] == 0 else np.union1d(roomy, roomy_gpu.get(req["gpu_model"][lo + i], roomy_gpu[""]))
            compute_classes.append(np.union1d(top, extra[alive[i, extra]]))
        # storage copies: a whole copy on a host of a high-enough tier with room for it
        s_alive = np.broadcast_to(fleet.up[reps][None, :], (hi - lo, len(reps))).copy()
        stores = d[:, STORAGE] > 0
        drop = s_alive & (fleet.tier[reps][None, :] < req["tier"][lo:hi, None]) & stores[:, None]
        _count(reason_rows, lo, "storage", "storage_tier", drop, weight)
        s_alive &= ~drop
        drop = s_alive & (rep_free[None, :, STORAGE] < d[:, STORAGE, None]) & stores[:, None]
        _count(reason_rows, lo, "storage", "storage_gib", drop, weight)
        s_alive &= ~drop
        need_iops = req["min_iops"][lo:hi, None]
        drop = s_alive & (need_iops > 0) & (_rep_iops(view)[None, :] < need_iops - PERFORMANCE_EPSILON) & stores[:, None]
        _count(reason_rows, lo, "storage", "storage_iops", drop, weight)
        s_alive &= ~drop & stores[:, None]
        s_score = np.where(s_alive, -np.abs(fleet.tier[reps][None, :] - req["tier"][lo:hi, None]) +
                           1.0 * fleet.active[reps][None, :]
                           + room.free[reps][None, :, STORAGE] / max(room.free[reps][:, STORAGE].max(initial=1), 1),
                           -np.inf)
        storage_classes.extend(_top_per_zone(s_score, fleet.zone[reps], options.top_k, by_rack=fleet.rack[reps],
                                             extra=np.maximum(req["replicas"][lo:hi], 1)))
    cap = _member_cap(compute_classes, storage_classes, sizes, options.pair_budget, req)
    running = fleet.holds_running
    grouped = np.array([len(m) > 1 and not fleet.active[m[0]] and fleet.up[m[0]] and not running[m[0]]
                        for m in members], dtype=bool)
    compute, gpu_ok, storage = [], [], []
    for r in range(n_req):
        hosts = _members(compute_classes[r], members, cap)
        s_hosts = _members(storage_classes[r], members, cap)
        if whole and demand[r, STORAGE] > 0:
            s_hosts = np.union1d(s_hosts, hosts)
        if must_include is not None and must_include[r]:
            must = np.fromiter(must_include[r], dtype=np.int64)
            # a host of a symmetry group comes with the group's kept members, so the request sees the group
            # whole and the model keeps breaking its symmetry
            classes = np.unique(fleet.host_class[must])
            must = np.union1d(must, _members(classes[grouped[classes]], members, cap))
            hosts = np.union1d(hosts, must)
            if demand[r, STORAGE] > 0:
                s_hosts = np.union1d(s_hosts, must)
        # hosts the warm start or what runs used come back in even when a filter dropped them: performance
        # needs are hard (invariant 10), so they are applied again here
        hosts = np.sort(hosts[fleet.cpu_ok(req["min_cpu"][r])[hosts]])
        s_hosts = np.sort(s_hosts[(fleet.tier[s_hosts] >= req["tier"][r]) &
                                  (fleet.free[s_hosts, STORAGE] >= demand[r, STORAGE]) & fleet.up[s_hosts]
                                  & fleet.iops_ok(req["min_iops"][r])[s_hosts]])
        compute.append(hosts)
        gpu_ok.append((fleet.free[hosts, GPU] >= 1) & ((req["gpu_model"][r] == "") |
                                                       (fleet.gpu_model[hosts] == req["gpu_model"][r])))
        storage.append(s_hosts if demand[r, STORAGE] > 0 else np.empty(0, dtype=np.int64))
        ranked_out = int(alive_hosts[r]) - len(_members(compute_classes[r], members, cap))
        if ranked_out > 0:
            reason_rows.append((r, "compute", "ranked_out", ranked_out))
    reasons = pl.DataFrame(reason_rows, schema={"request": pl.Int64, "role": pl.Utf8, "filter": pl.Utf8,
                                                "hosts": pl.Int64}, orient="row")
    ids = requests["request_id"]
    reasons = reasons.with_columns(pl.col("request").map_elements(lambda i: ids[i], return_dtype=pl.Utf8)
                                   .alias("request_id"),
                                   pl.col("filter").replace_strict(FILTER_REASONS, default=pl.col("filter"))
                                   .alias("reason")).select("request_id", "role", "filter", "reason", "hosts")
    groups = [members[c][:cap] for c in range(len(members)) if grouped[c]]
    return Candidates(compute, gpu_ok, storage, reasons, groups, cap)


def _count(rows: list, offset: int, role: str, reason: str, mask: np.ndarray, weight: np.ndarray) -> None:
    counts = (mask * weight).sum(axis=1)
    for i in np.flatnonzero(counts):
        rows.append((offset + int(i), role, reason, int(counts[i])))


def _top_per_zone(score: np.ndarray, zone: np.ndarray, k: int, by_rack: np.ndarray | None = None,
                  extra: np.ndarray | None = None) -> list[np.ndarray]:
    """Best k classes per zone for each row, as sorted class indices (by_rack: first the best class of
    each distinct rack, max(k, extra + 2) of them, then the best of the rest up to k).

    Whole-matrix per zone (a stable sort of each row, ties to the lower index), so it stays cheap
    for thousands of requests; only the final split into one array per row loops."""
    rows = score.shape[0]
    chosen = np.zeros(score.shape, dtype=bool)
    for z in np.unique(zone):
        columns = np.flatnonzero(zone == z)
        order = np.argsort(-score[:, columns], axis=1, kind="stable")  # best first, per row
        ranked = columns[order]                                        # class index at each rank
        finite = np.isfinite(np.take_along_axis(score, ranked, axis=1))
        if by_rack is None:
            keep = finite & (np.arange(len(columns))[None, :] < k)
        else:
            racks, rack_at = np.unique(by_rack[ranked], return_inverse=True)
            rack_at = rack_at.reshape(ranked.shape)
            # a rank is the first of its rack when no better-ranked finite class shares the rack
            seen = np.zeros((rows, len(racks)), dtype=np.int64)
            first = np.zeros(ranked.shape, dtype=bool)
            every_row = np.arange(rows)
            for position in range(ranked.shape[1]):
                rack = rack_at[:, position]
                live = finite[:, position]
                first[:, position] = live & (seen[every_row, rack] == 0)
                seen[every_row, rack] += live
            need = np.full(rows, k) if extra is None else np.maximum(k, extra.astype(np.int64) + 2)
            picked = first & (np.cumsum(first, axis=1) <= need[:, None])
            room = np.maximum(k - picked.sum(axis=1), 0)
            rest = finite & ~picked
            keep = picked | (rest & (np.cumsum(rest, axis=1) <= room[:, None]))
        np.put_along_axis(chosen, ranked, keep, axis=1)
    return [np.flatnonzero(chosen[i]).astype(np.int64) for i in range(rows)]


def _member_cap(compute: list[np.ndarray], storage: list[np.ndarray], sizes: np.ndarray, budget: int,
                req: dict[str, np.ndarray]) -> int:
    """Largest members-per-class cap whose (request, host) pair count fits the budget."""
    largest = int(sizes.max(initial=1))
    floor_cap = int(max(req["max_shards"].max(initial=1), req["replicas"].max(initial=1)))

    def pairs(cap: int) -> int:
        return int(sum(np.minimum(sizes[c], cap).sum() for c in compute) +
                   sum(np.minimum(sizes[c], cap).sum() for c in storage))

    if pairs(largest) <= budget:
        return largest
    lo, hi = floor_cap, largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if pairs(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return max(lo, 1)


def _members(classes: np.ndarray, members: list[np.ndarray], cap: int) -> np.ndarray:
    if not len(classes):
        return np.empty(0, dtype=np.int64)
    return np.concatenate([members[c][:cap] for c in classes]).astype(np.int64)



POOL_RATIO_BUCKETS = (-2, 6)
"""A compute pool's hosts have free GiB per free vcpu within one power of two, from 2^-2 to 2^6 (clipped):
hosts of one shape pool together, so a RAM-hungry request cannot buy vcpu where the RAM is gone."""


def host_pools(fleet: Fleet, requests: pl.DataFrame, order: np.ndarray, free: np.ndarray) -> HostPools:
    """Pools for the pool LP (models.pool_bound), requests in problem order (`order`), over `free` (the
    problem's). Hosts pool by zone, GPU model, which of the requests' min_cpu_score values they meet and
    the shape of their free room; storage by zone, tier and which min_storage_iops values they meet. Only
    the invariants decide what a request may use (up hosts, its GPU model, its speed and IOPS needs, its
    storage tier), never the model's ranked candidates, so the bound holds for every valid plan."""
    req = request_arrays(requests)
    min_cpu, min_iops, tier = req["min_cpu"][order], req["min_iops"][order], req["tier"][order]
    gpu_model = req["gpu_model"][order]
    cpu_levels = np.unique(min_cpu[min_cpu > 0])
    iops_levels = np.unique(min_iops[min_iops > 0])
    cpu_rank = np.zeros(fleet.n_hosts, dtype=np.int64)
    for level in cpu_levels:
        cpu_rank += fleet.cpu_ok(float(level))
    iops_rank = np.zeros(fleet.n_hosts, dtype=np.int64)
    for level in iops_levels:
        iops_rank += fleet.iops_ok(float(level))
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(free[:, VCPU] > 0, np.floor(np.log2(np.maximum(free[:, RAM], 1) / np.maximum(free[:, VCPU], 1))),
                         POOL_RATIO_BUCKETS[1] + 1)
    shape = np.clip(shape, POOL_RATIO_BUCKETS[0], POOL_RATIO_BUCKETS[1] + 1).astype(np.int64)
    computes = fleet.up & ((free[:, VCPU] > 0) | (free[:, RAM] > 0))
    stores = fleet.up & (free[:, STORAGE] > 0)

    def pools_of(mask: np.ndarray, keys: list[tuple]) -> tuple[np.ndarray, list[int]]:
        index: dict[tuple, int] = {}
        pool = np.full(fleet.n_hosts, -1, dtype=np.int64)
        first: list[int] = []
        for h in np.flatnonzero(mask):
            q = index.setdefault(keys[h], len(index))
            if q == len(first):
                first.append(int(h))
            pool[h] = q
        return pool, first

    compute_pool, c_first = pools_of(computes, list(zip(fleet.zone.tolist(), fleet.gpu_model.tolist(),
                                                        cpu_rank.tolist(), shape.tolist())))
    storage_pool, s_first = pools_of(stores, list(zip(fleet.zone.tolist(), fleet.tier.tolist(), iops_rank.tolist())))
    c_rep, s_rep = np.array(c_first, dtype=np.int64), np.array(s_first, dtype=np.int64)
    n = len(order)
    compute_ok = np.ones((n, len(c_rep)), dtype=bool)
    for level in cpu_levels:
        compute_ok[min_cpu == level] = fleet.cpu_ok(float(level))[c_rep][None, :]
    gpu_ok = (gpu_model[:, None] != "") & (fleet.gpu_model[c_rep][None, :] == gpu_model[:, None])
    storage_ok = (fleet.tier[s_rep][None, :] >= tier[:, None])
    for level in iops_levels:
        storage_ok[min_iops == level] &= fleet.iops_ok(float(level))[s_rep][None, :]
    demand = req["demand"][order]
    storage_ok &= demand[:, STORAGE, None] > 0
    return HostPools(compute_pool, storage_pool, compute_ok, gpu_ok, storage_ok)
