"""First-fit decreasing baselines: whole-VM (what most schedulers do) and a greedy sharded variant.

Requests go in decreasing priority × normalised size; hosts in a fixed order (already active
first, then catalogue order). Whole: the first host that fits the VM (and its primary storage
copy), further copies on other racks of the same zone. Sharded: if no host fits whole, fill up
to max_shards hosts in order, each part carrying its local RAM per vcpu (no remote memory).
"""
from __future__ import annotations

import numpy as np

from models.problem import GPU, NET, RAM, STORAGE, VCPU, Assignment
from planner.candidates import Fleet


def ffd_order(demand: np.ndarray, priority: np.ndarray, fleet: Fleet) -> np.ndarray:
    """Request indices by decreasing priority × Σ demand/fleet max capacity (stable)."""
    scale = np.maximum(fleet.capacity.max(axis=0), 1).astype(float)
    size = (demand / scale).sum(axis=1) * priority
    return np.argsort(-size, kind="stable")


def host_order(fleet: Fleet) -> np.ndarray:
    return np.concatenate([np.flatnonzero(fleet.active), np.flatnonzero(~fleet.active)])


def first_fit(fleet: Fleet, demand: np.ndarray, tier: np.ndarray, gpu_model: np.ndarray,
              max_shards: np.ndarray, replicas: np.ndarray, low_latency: np.ndarray, order: np.ndarray,
              sharded: bool, min_local_ram_per_vcpu: float) -> Assignment:
    """FFD over the requests in `order`; returns an assignment in request index space."""
    free = fleet.free.copy()
    hosts = host_order(fleet)
    assignment = Assignment.empty(demand.shape[0])
    for r in order:
        d = demand[r]
        gpu_fit = (gpu_model[r] == "") | (fleet.gpu_model == gpu_model[r])
        placed = _place_whole(fleet, free, hosts, d, tier[r], gpu_fit, replicas[r])
        if placed is None and sharded and max_shards[r] > 1:
            placed = _place_sharded(fleet, free, hosts, d, tier[r], gpu_fit, replicas[r], max_shards[r],
                                    min_local_ram_per_vcpu)
        if placed is None:
            continue
        parts, copies = placed
        assignment.placed[r] = True
        assignment.parts[r] = parts
        assignment.storage_hosts[r] = copies
    return assignment


def _storage_copies(fleet: Fleet, free: np.ndarray, hosts: np.ndarray, d: np.ndarray, tier: int,
                    replicas: int, zone: int, first: int | None) -> list[int] | None:
    """Hosts for the storage copies on distinct racks of one zone, `first` holding copy 0."""
    if d[STORAGE] == 0:
        return []
    chosen = [first] if first is not None else []
    racks = {int(fleet.rack[first])} if first is not None else set()
    ok = fleet.up & (fleet.zone == zone) & (fleet.tier >= tier) & (free[:, STORAGE] >= d[STORAGE])
    for h in hosts[ok[hosts]]:
        if len(chosen) == replicas:
            break
        if int(fleet.rack[h]) in racks or int(h) in chosen:
            continue
        chosen.append(int(h))
        racks.add(int(fleet.rack[h]))
    return chosen if len(chosen) == replicas else None


def _place_whole(fleet, free, hosts, d, tier, gpu_fit, replicas):
    fits = fleet.up & np.all(free[:, [VCPU, RAM, NET, GPU]] >= d[[VCPU, RAM, NET, GPU]], axis=1)
    if d[GPU] > 0:
        fits &= gpu_fit
    if d[STORAGE] > 0:
        fits &= (fleet.tier >= tier) & (free[:, STORAGE] >= d[STORAGE])
    for h in hosts[fits[hosts]]:
        copies = _storage_copies(fleet, free, hosts, d, tier, replicas, int(fleet.zone[h]),
                                 int(h) if d[STORAGE] > 0 else None)
        if copies is None:
            continue
        free[h, [VCPU, RAM, NET, GPU]] -= d[[VCPU, RAM, NET, GPU]]
        for c in copies:
            free[c, STORAGE] -= d[STORAGE]
        return [(int(h), int(d[VCPU]), int(d[RAM]), int(d[NET]), int(d[GPU]))], copies
    return None


def _place_sharded(fleet, free, hosts, d, tier, gpu_fit, replicas, max_shards, ratio):
    for zone in np.unique(fleet.zone):
        in_zone = hosts[(fleet.zone[hosts] == zone) & fleet.up[hosts]]
        copies = _storage_copies(fleet, free, hosts, d, tier, replicas, int(zone), None)
        if copies is None:
            continue
        rem = d[[VCPU, RAM, NET, GPU]].astype(np.int64).copy()   # vcpu, ram, net, gpu
        parts = []
        for h in in_zone:
            if len(parts) == max_shards or not rem.any():
                break
            fv, fm, fn, fg = (int(x) for x in free[h, [VCPU, RAM, NET, GPU]])
            g = min(rem[3], fg) if gpu_fit[h] else 0
            v = min(rem[0], fv, int(fm / ratio) if ratio > 0 else fv)
            if g > 0 and v == 0:
                g = 0
            if rem[3] > 0 and g == 0 and len(parts) == max_shards - 1:
                continue  # the last part must take the GPUs
            left_vcpu = rem[0] - v
            need_local = int(np.ceil(ratio * v - 1e-9))
            m = min(fm, rem[1] - int(np.ceil(ratio * left_vcpu - 1e-9)))
            if v == 0:
                m = 0  # no remote memory in the greedy
            if m < need_local:
                continue
            last = left_vcpu == 0 and rem[1] - m == 0 and rem[3] - g == 0
            n = rem[2] if last else (int(round(rem[2] * v / rem[0])) if rem[0] else 0)
            if n > fn:
                if last:
                    continue
                n = fn
            if v + m + g + n == 0:
                continue
            parts.append((int(h), int(v), int(m), int(n), int(g)))
            rem -= np.array([v, m, n, g])
        if rem.any():
            continue
        for h, v, m, n, g in parts:
            free[h, [VCPU, RAM, NET, GPU]] -= np.array([v, m, n, g])
        for c in copies:
            free[c, STORAGE] -= d[STORAGE]
        return parts, copies
    return None
