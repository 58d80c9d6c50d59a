"""First-fit decreasing baselines: whole-VM (what most schedulers do) and a greedy sharded variant.

Requests go in decreasing priority × normalised size; hosts in a fixed order (already active
first, then catalogue order). Whole: the first host that fits the VM (and its primary storage
copy), further copies on other racks of the same zone. Sharded: if no host fits whole, fill up
to max_shards hosts in order, each part carrying its local RAM per vcpu, and (latency classes
medium and tolerant) the RAM left over as remote memory on hosts with free RAM and NIC.
"""
from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from shardplan.models.problem import GPU, NET, RAM, STORAGE, VCPU, Assignment, RemoteMemory
from shardplan.planner.search.candidates import Fleet


class HostArrays(Protocol):
    """What the greedy placement reads of the hosts (a `Fleet` is one): per host, zone and rack ids,
    the capacity a best fit is measured against, whether it already runs load, and what switching it on
    costs (any unit)."""

    zone: np.ndarray
    rack: np.ndarray
    capacity: np.ndarray
    active: np.ndarray
    cost: np.ndarray


SIZE_MEASURES = ("sum", "max", "l2")
"""How a request's size is measured for the decreasing order, over demand / fleet max capacity."""


def ffd_order(demand: np.ndarray, priority: np.ndarray, fleet: Fleet, measure: str = "sum",
              priority_first: bool = False) -> np.ndarray:
    """Request indices by decreasing priority × size (sum, max or L2 norm of the normalised demand), or
    (`priority_first`) by decreasing priority, then size: the greedy knapsack's order, since a request's
    unplaced weight is its priority × its size, so priority is the weight each unit of room earns."""
    scale = np.maximum(fleet.capacity.max(axis=0), 1).astype(float)
    share = demand / scale
    size = {"sum": share.sum(axis=1), "max": share.max(axis=1), "l2": np.sqrt((share ** 2).sum(axis=1))}[measure]
    if priority_first:
        return np.lexsort((-size, -np.asarray(priority, dtype=float)))
    return np.argsort(-size * priority, kind="stable")


def host_order(fleet: Fleet) -> np.ndarray:
    return np.concatenate([np.flatnonzero(fleet.active), np.flatnonzero(~fleet.active)])


def first_fit(fleet: Fleet, demand: np.ndarray, tier: np.ndarray, gpu_model: np.ndarray,
              max_shards: np.ndarray, replicas: np.ndarray, low_latency: np.ndarray, order: np.ndarray,
              sharded: bool, min_local_ram_per_vcpu: float, remote_mbps_per_gib: int = 50,
              best_fit: bool = False, min_cpu: np.ndarray | None = None,
              min_iops: np.ndarray | None = None, remote: RemoteMemory | None = None,
              copy_apart: bool = False, skew: tuple[int, int] | None = None,
              gpu_aware: bool = False) -> Assignment:
    """FFD over the requests in `order` (best_fit: the fitting host with least capacity left over;
    copy_apart: see `place`, off for the classic baseline; gpu_aware: GPU hosts last for a request without
    GPUs and first (of its model) for one with GPUs, whose parts there keep to their GPUs' share of the
    host's vcpu, see `place`);
    returns an assignment in request index space. `min_cpu` / `min_iops`: the requests' performance needs
    (invariant 10): parts only on hosts fast enough, copies only on storage fast enough. `remote`: how
    remote memory is priced (default flat: remote_mbps_per_gib, none for latency class low). `skew`: the most
    RAM a part may hold for its vcpu (models.problem.part_ram_cap; None: no cap)."""
    memory = remote or RemoteMemory.flat(remote_mbps_per_gib, ~low_latency, demand[:, RAM])
    free = fleet.free.copy()
    hosts = host_order(fleet)
    up_hosts = hosts[fleet.up[hosts]]
    with_gpus = fleet.capacity[up_hosts, GPU] > 0
    cpu_first = np.concatenate([up_hosts[~with_gpus], up_hosts[with_gpus]])
    assignment = Assignment.empty(demand.shape[0])
    for r in order:
        d = demand[r]
        gpu_fit = (gpu_model[r] == "") | (fleet.gpu_model == gpu_model[r])
        compute_hosts = up_hosts
        if gpu_aware:
            mine = with_gpus & gpu_fit[up_hosts] if d[GPU] > 0 else None
            compute_hosts = cpu_first if mine is None else np.concatenate([up_hosts[mine], up_hosts[~mine]])
        if min_cpu is not None and min_cpu[r] > 0:
            compute_hosts = compute_hosts[fleet.cpu_ok(min_cpu[r])[compute_hosts]]
        storage_hosts = up_hosts[fleet.tier[up_hosts] >= tier[r]]
        if min_iops is not None and min_iops[r] > 0:
            storage_hosts = storage_hosts[fleet.iops_ok(min_iops[r])[storage_hosts]]
        placed = place(fleet, free, compute_hosts, storage_hosts, d, gpu_fit, replicas[r],
                       max_shards[r] if sharded else 1, min_local_ram_per_vcpu, memory.tiers(int(r)), best_fit,
                       copy_apart, skew, gpu_share=gpu_aware)
        if placed is None:
            continue
        parts, copies = placed
        assignment.placed[r] = True
        assignment.parts[r] = parts
        assignment.storage_hosts[r] = copies
    return assignment


def place(hosts: HostArrays, free: np.ndarray, compute: np.ndarray, storage: np.ndarray, d: np.ndarray,
          gpu_fit: np.ndarray, replicas: int, max_shards: int, ratio: float, tiers: list[tuple[int, int]],
          best_fit: bool = False, copy_apart: bool = True,
          skew: tuple[int, int] | None = None, gpu_share: bool = False) -> tuple[list, list[int]] | None:
    """Place one request greedily on `free` (updated in place): whole on one of the `compute` hosts (in
    their order, or best fit), else split over up to `max_shards` of them; storage copies on `storage`
    hosts. `gpu_fit` is a mask over all hosts. `tiers`: (most remote GiB, Mbit/s per remote GiB) to try in
    turn (RemoteMemory.tiers; empty: no remote memory). `copy_apart`: a request placed whole may keep its
    primary storage copy off its compute host (the searches); False: copy 0 beside the compute, as a classic
    scheduler's local disk (the FFD baseline). `gpu_share`: a request with GPUs that may span hosts is split
    first so that its part on a GPU host takes no more of the host's free vcpu than its GPUs' share of the
    host's free GPUs (the rest of its vcpu elsewhere), leaving that vcpu to the next GPU request; whole, or
    split as usual, only where that fails. Returns (parts, storage copy hosts) or None."""
    placed = None
    if gpu_share and d[GPU] > 0 and max_shards > 1:
        for limit, rate in tiers or [(0, 0)]:
            placed = _place_sharded(hosts, free, compute, storage, d, gpu_fit, replicas, max_shards, ratio, rate,
                                    limit, tiers, skew, gpu_share=True)
            if placed is not None:
                return placed
    placed = _place_whole(hosts, free, compute, storage, d, gpu_fit, replicas, tiers,
                          best_fit, copy_apart) if local_ram_holds(d, ratio) else None
    for limit, rate in (tiers or [(0, 0)]) if placed is None and max_shards > 1 else ():
        placed = _place_sharded(hosts, free, compute, storage, d, gpu_fit, replicas, max_shards, ratio, rate, limit,
                                tiers, skew)
        if placed is not None:
            break
    return placed


def local_ram_holds(d: np.ndarray, ratio: float) -> bool:
    """Invariant 4 for a request in one part: its RAM covers ratio × its vcpu."""
    return d[VCPU] == 0 or d[RAM] >= ratio * d[VCPU] - 1e-9


def shape_room(free: np.ndarray, d: np.ndarray, ratio: float) -> np.ndarray:
    """How much of a request of demand `d` each host's free room (rows of `free`) holds in its own shape:
    vcpu, bounded by the free RAM at its GiB per vcpu (at least `ratio`); RAM for a request without vcpu.
    The order to split in: a host roomy in vcpu but short of RAM holds less than its free vcpu say."""
    if d[VCPU] <= 0:
        return free[:, RAM].astype(np.float64)
    per = max(float(d[RAM]) / float(d[VCPU]), ratio)
    return np.minimum(free[:, VCPU], free[:, RAM] / per) if per > 0 else free[:, VCPU].astype(np.float64)


def _storage_copies(hosts: HostArrays, free: np.ndarray, storage: np.ndarray, d: np.ndarray,
                    replicas: int, zone: int, first: int | None) -> list[int] | None:
    """Hosts for the storage copies on distinct racks of one zone among `storage`, `first` holding copy 0."""
    if d[STORAGE] == 0:
        return []
    chosen = [first] if first is not None else []
    racks = {int(hosts.rack[first])} if first is not None else set()
    ok = (hosts.zone[storage] == zone) & (free[storage, STORAGE] >= d[STORAGE])
    for h in storage[ok]:
        if len(chosen) == replicas:
            break
        if int(hosts.rack[h]) in racks or int(h) in chosen:
            continue
        chosen.append(int(h))
        racks.add(int(hosts.rack[h]))
    return chosen if len(chosen) == replicas else None


def _place_whole(hosts, free, compute, storage, d, gpu_fit, replicas, tiers, best_fit=False, copy_apart=False):
    """Whole on one compute host (the first that fits, or the best fit); its storage copies on distinct racks
    of its zone, copy 0 on the compute host itself (the classic scheduler's local disk) or, with
    copy_apart, elsewhere in the zone when no fitting host can hold it too."""
    need = d[[VCPU, RAM, NET, GPU]].copy()
    if d[VCPU] == 0 and d[RAM] > 0:  # memory without vcpu is remote memory: NIC traffic, and only if allowed
        rate = tier_rate(tiers, int(d[RAM]))
        if rate is None:
            return None
        need[2] += rate * d[RAM]
    room = free[compute]
    fits = ((room[:, VCPU] >= need[0]) & (room[:, RAM] >= need[1]) & (room[:, NET] >= need[2])
            & (room[:, GPU] >= need[3]))
    if d[GPU] > 0:
        fits &= gpu_fit[compute]
    local = np.ones(len(compute), dtype=bool)
    if d[STORAGE] > 0:
        can_store = np.zeros(free.shape[0], dtype=bool)
        can_store[storage] = True
        local = can_store[compute] & (room[:, STORAGE] >= d[STORAGE])
        if not copy_apart:
            fits &= local
    order = compute[fits]
    if best_fit and len(order) > 1:
        # least normalised capacity left over; already-active hosts before empty ones, and of the empty ones
        # (switching one on is paid for) the one where the request's share costs least first
        left = ((free[order] - d) / np.maximum(hosts.capacity[order], 1)).sum(axis=1)
        untouched = np.all(free[order] == hosts.capacity[order], axis=1) & ~hosts.active[order]
        order = order[np.lexsort((left, np.where(untouched, switch_on_price(hosts, order, d), 0.0), untouched))]
    # hosts that hold the primary copy beside the compute first; with copy_apart, then the others
    holds_copy = np.zeros(free.shape[0], dtype=bool)
    holds_copy[compute[fits & local]] = True
    order = np.concatenate([order[holds_copy[order]], order[~holds_copy[order]]])
    for h in order:
        copies = _storage_copies(hosts, free, storage, d, replicas, int(hosts.zone[h]),
                                 int(h) if d[STORAGE] > 0 and holds_copy[h] else None)
        if copies is None:
            continue
        free[h, [VCPU, RAM, NET, GPU]] -= need
        for c in copies:
            free[c, STORAGE] -= d[STORAGE]
        return [(int(h), int(d[VCPU]), int(d[RAM]), int(d[NET]), int(d[GPU]))], copies
    return None


def tier_rate(tiers: list[tuple[int, int]], remote_gib: int) -> int | None:
    """Mbit/s per remote GiB of the first tier that holds `remote_gib` (RemoteMemory.rate's rule, on its
    tiers), None when none does."""
    return next((rate for limit, rate in tiers if remote_gib <= limit), None)


def switch_on_price(hosts: HostArrays, candidates: np.ndarray, d: np.ndarray) -> np.ndarray:
    """What the request's dominant share of each (empty) host costs: cost × max over vcpu, RAM and GPUs of
    demand ÷ capacity. Cost-aware best fit for bins of several prices: a cheap host the request fills is
    better value than a dear one it barely uses, and a big host is paid for by the requests it will take."""
    capacity = np.maximum(hosts.capacity[candidates][:, [VCPU, RAM, GPU]], 1)
    share = (d[[VCPU, RAM, GPU]][None, :] / capacity).max(axis=1)
    return hosts.cost[candidates] * share


def _place_sharded(hosts, free, compute, storage, d, gpu_fit, replicas, max_shards, ratio, remote_mbps_per_gib,
                   remote_limit, tiers, skew=None, gpu_share=False):
    """Greedy split: vcpu parts in host order (each with its local RAM, at most `skew` × its vcpu share, and
    its GPUs), then up to `remote_limit` GiB of the RAM left over as remote-memory parts on hosts with free
    RAM and NIC, fitted at remote_mbps_per_gib (limit 0: every GiB local). The room taken is the traffic `tiers` price the remote
    GiB at in the end (the first tier that holds them: RemoteMemory.rate), never more than was fitted."""
    allow_remote = remote_limit > 0
    dv, dm, dn, dg = int(d[VCPU]), int(d[RAM]), int(d[NET]), int(d[GPU])
    need_ram = max(math.ceil(ratio - 1e-9), 0)
    # invariant 4's cap, part_ram_cap inlined: a part of v vcpu holds at most ⌈num × dm × v / (den × dv)⌉ GiB
    cap_num, cap_den = (skew[0] * dm, skew[1] * dv) if skew is not None and dv > 0 else (0, 0)
    zones = hosts.zone[compute]
    for zone in sorted(set(zones.tolist())):
        in_zone = compute[zones == zone]
        rem_v, rem_m, rem_n, rem_g = dv, dm, dn, dg
        parts: list[tuple[int, int, int, int, int]] = []
        zone_free = free[in_zone]
        keep = (zone_free[:, VCPU] > 0) & (zone_free[:, RAM] >= need_ram)
        usable, usable_free = in_zone[keep], zone_free[keep]
        # fail fast: even the max_shards roomiest hosts cannot hold its vcpu (or its GPUs)
        room = np.minimum(usable_free[:, VCPU], usable_free[:, RAM] // ratio if ratio > 0 else usable_free[:, VCPU])
        if np.sort(room)[-max_shards:].sum() < rem_v:
            continue
        usable_gpu = gpu_fit[usable]
        if rem_g and np.sort(np.where(usable_gpu, usable_free[:, GPU], 0))[-max_shards:].sum() < rem_g:
            continue
        rows = usable_free.tolist()
        for h, row, gpu_ok in zip(usable.tolist(), rows, usable_gpu.tolist()):
            if len(parts) == max_shards or rem_v == 0:
                break
            fv, fm, fn, fg = row[VCPU], row[RAM], row[NET], row[GPU]
            v = min(rem_v, fv, int(fm / ratio) if ratio > 0 else fv)
            if v == 0:
                continue
            g = min(rem_g, fg) if gpu_ok else 0
            if rem_g > g and len(parts) == max_shards - 1:
                continue  # the last vcpu part must take the remaining GPUs
            if gpu_share and fg > 0:
                if g == 0:
                    continue  # a GPU host's vcpu are kept for the GPUs on it
                v = min(v, max(-(-fv * g // fg), 1))
            need_local = math.ceil(ratio * v - 1e-9)
            keep_for_rest = math.ceil(ratio * (rem_v - v) - 1e-9)  # the later parts' local RAM
            m = max(need_local, min(fm, rem_m - keep_for_rest))
            cap = (cap_num * v + cap_den - 1) // cap_den if cap_den else None
            if cap is not None:
                m = max(need_local, min(m, cap))
            if m > fm or m > rem_m or (cap is not None and m > cap):
                continue
            n = rem_n if v == rem_v else int(round(rem_n * v / rem_v))
            n = min(n, fn)
            parts.append((int(h), int(v), int(m), int(n), int(g)))
            rem_v, rem_m, rem_n, rem_g = rem_v - v, rem_m - m, rem_n - n, rem_g - g
        if rem_v or rem_g:
            continue
        if rem_n and parts:  # own traffic the vcpu parts' NICs could not take: spread it where room is left
            for i, (h, v, m, n, g) in enumerate(parts):
                extra = min(rem_n, int(free[h, NET]) - n)
                if extra > 0:
                    parts[i] = (h, v, m, n + extra, g)
                    rem_n -= extra
        if rem_n or rem_m > remote_limit:
            continue
        used = {p[0] for p in parts}
        for h in in_zone[free[in_zone, RAM] > 0]:
            if rem_m == 0 or not allow_remote or len(parts) == max_shards:
                break
            if int(h) in used:
                continue
            fm, fn = int(free[h, RAM]), int(free[h, NET])
            m = min(rem_m, fm, fn // remote_mbps_per_gib if remote_mbps_per_gib else fm)
            if m <= 0:
                continue
            parts.append((int(h), 0, int(m), 0, 0))
            rem_m -= m
        if rem_m:
            continue
        # the storage copies last: nothing above takes room, and most splits fail before they get here
        copies = _storage_copies(hosts, free, storage, d, replicas, int(zone), None)
        if copies is None:
            continue
        remote = sum(p[2] for p in parts if p[1] == 0)
        rate = tier_rate(tiers, remote) if remote else 0
        for h, v, m, n, g in parts:
            traffic = rate * m if v == 0 else 0
            free[h, [VCPU, RAM, NET, GPU]] -= np.array([v, m, n + traffic, g])
        for c in copies:
            free[c, STORAGE] -= d[STORAGE]
        return parts, copies
    return None
