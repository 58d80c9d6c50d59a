"""A Lagrangian bound for fleets too large for the full LP: capacity rows priced, each request alone.

The placement problem's hard part is that requests share hosts. Price every host's capacity in every
resource at λ ≥ 0 and drop the capacity rows: the problem falls apart into one small problem per request
("where would r go, if each unit cost λ?") and one per host ("switch it on?"). For any λ ≥ 0

    L(λ) = Σ_r min(w_r, c_r(λ)) + Σ_{h off} min(0, cost_h − λ_h·free_h) − Σ_{h on} λ_h·free_h

is a lower bound on the objective, where w_r is r's unplaced weight and c_r(λ) is a lower bound on what
placing r alone costs at prices λ (Geoffrion 1974; Fisher, Management Science 1981). Subgradient ascent
(Polyak steps towards the plan's value, halved when the bound stalls) looks for the λ that proves most.
Only the unplaced weight and the price of switching hosts on are kept; the spread, remote-memory,
hot-spot, speed and move terms are ≥ 0 and left out, which can only lower the bound.

c_r(λ), per zone, the cheapest of the request's candidates (the model's: the bound is the model's):
- a request on one host (max_shards 1, or whole mode) is exact: the cheapest candidate with room for all
  of its vcpu, RAM, network and GPUs (GPUs of its model);
- a request that may span m > 1 hosts buys each resource apart, the cheapest units first within each
  host's free capacity (fractional, so a relaxation), and only in a zone where its m roomiest hosts hold
  that resource in full (a necessary condition of every placement);
- its storage copies are exact: the cheapest host of each rack, the `replicas` cheapest racks.
Every relaxation lowers c_r, so L(λ) stays a valid bound whatever the search does. Unlike the
zone-aggregate LP it keeps every host's capacity apart and a single-host request whole, which is where
that LP says nothing (it pools a zone into one host).
"""
from __future__ import annotations

import time

import numpy as np

from shardplan.models.problem import GPU, NET, RAM, STORAGE, VCPU, PlacementProblem, PlanStatus, SolveResult

COMPUTE = (VCPU, RAM, NET, GPU)
INF = np.inf


class _Pairs:
    """The request × candidate-host pairs, grouped by (request, zone) segments, as flat arrays."""

    def __init__(self, problem: PlacementProblem) -> None:
        p = problem
        self.n_requests, self.n_hosts = p.n_requests, p.n_hosts
        zones = int(p.zone.max()) + 1 if p.n_hosts else 1
        self.zones = zones
        lengths = np.array([len(c) for c in p.compute_candidates], dtype=np.int64)
        self.r = np.repeat(np.arange(p.n_requests), lengths)
        self.h = (np.concatenate([np.asarray(c, dtype=np.int64) for c in p.compute_candidates])
                  if lengths.sum() else np.zeros(0, dtype=np.int64))
        gpu_ok = (np.concatenate([np.asarray(g, dtype=bool) for g in p.gpu_ok])
                  if lengths.sum() else np.zeros(0, dtype=bool))
        self.seg = self.r * zones + p.zone[self.h]          # (request, zone) segment of each compute pair
        demand = p.demand
        single = (p.max_shards <= 1) | bool(p.whole)
        self.single = single
        # single-host requests: the candidates with room for everything at once
        room = np.all(p.free[self.h][:, list(COMPUTE)] >= demand[self.r][:, list(COMPUTE)], axis=1)
        room &= gpu_ok | (demand[self.r, GPU] == 0)
        keep = single[self.r] & room
        self.one_r, self.one_h, self.one_seg = self.r[keep], self.h[keep], self.seg[keep]
        # spanning requests, per resource: eligible pairs, and the zones where the m roomiest hold it
        self.span: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        spanning = ~single[self.r]
        n_seg = p.n_requests * zones
        ok_seg = np.ones(n_seg, dtype=bool)
        for k in COMPUTE:
            need = demand[self.r, k] > 0
            eligible = spanning & need & (p.free[self.h, k] > 0)
            if k == GPU:
                eligible &= gpu_ok
            seg, h = self.seg[eligible], self.h[eligible]
            free = p.free[h, k].astype(float)
            # the m roomiest hosts of each segment must hold the demand
            order = np.lexsort((-free, seg))
            seg_sorted, free_sorted = seg[order], free[order]
            rank = _rank_in_segment(seg_sorted)
            m = p.max_shards[seg_sorted // zones]
            top = np.zeros(n_seg)
            np.add.at(top, seg_sorted[rank < m], free_sorted[rank < m])
            needs = np.zeros(n_seg, dtype=bool)
            needs[self.seg[spanning & need]] = True
            seg_demand = np.zeros(n_seg)
            seg_demand[self.seg[spanning & need]] = demand[self.seg[spanning & need] // zones, k]
            ok_seg &= ~needs | (top >= seg_demand)
            self.span[k] = (seg, h, free, demand[seg // zones, k].astype(float))
        # a spanning request's segment exists where it has a candidate
        has = np.zeros(n_seg, dtype=bool)
        has[self.seg[spanning]] = True
        self.span_ok = has & ok_seg
        # storage copies: candidates per (request, zone) segment, with their racks
        s_len = np.array([len(c) for c in p.storage_candidates], dtype=np.int64)
        s_r = np.repeat(np.arange(p.n_requests), s_len)
        s_h = (np.concatenate([np.asarray(c, dtype=np.int64) for c in p.storage_candidates])
               if s_len.sum() else np.zeros(0, dtype=np.int64))
        fits = p.free[s_h, STORAGE] >= demand[s_r, STORAGE]
        s_r, s_h = s_r[fits], s_h[fits]
        self.s_seg, self.s_h = s_r * zones + p.zone[s_h], s_h
        self.s_rack = p.rack[s_h]
        self.s_size = demand[s_r, STORAGE].astype(float)
        replicas = np.maximum(p.replicas, 1)
        racks = np.zeros(n_seg, dtype=np.int64)
        first = _first_of_groups(self.s_seg, self.s_rack, np.zeros(len(s_h)))
        np.add.at(racks, self.s_seg[first], 1)
        needs_storage = demand[:, STORAGE] > 0
        seg_req = np.arange(n_seg) // zones
        self.storage_ok = ~needs_storage[seg_req] | (racks >= replicas[seg_req])
        self.replicas = replicas
        self.needs_storage = needs_storage


def _rank_in_segment(seg_sorted: np.ndarray) -> np.ndarray:
    """0, 1, 2, … within each run of equal values of a sorted array."""
    n = len(seg_sorted)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.r_[0, np.flatnonzero(np.diff(seg_sorted)) + 1]
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    return rank


def _first_of_groups(seg: np.ndarray, rack: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Indices of the cheapest element of every (seg, rack) group."""
    if len(seg) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((price, rack, seg))
    s, r = seg[order], rack[order]
    new = np.r_[True, (np.diff(s) != 0) | (np.diff(r) != 0)]
    return order[new]


def _evaluate(problem: PlacementProblem, pairs: _Pairs, lam: np.ndarray,
              complete: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """L(λ) and its subgradient (usage of the requests' cheapest placements less the capacity). A request
    whose candidates are not every host that passes its filters (`complete` False) may be cheaper elsewhere:
    its c_r is taken as 0, the one lower bound that holds, so the bound is the fleet's, not only the model's."""
    p = problem
    n_seg = pairs.n_requests * pairs.zones
    usage = np.zeros((p.n_hosts, 5))
    seg_cost = np.full(n_seg, INF)
    # single-host requests: exact
    one_cost = (lam[pairs.one_h][:, list(COMPUTE)] * p.demand[pairs.one_r][:, list(COMPUTE)]).sum(axis=1)
    best_one = np.full(n_seg, INF)
    np.minimum.at(best_one, pairs.one_seg, one_cost)
    seg_cost = np.minimum(seg_cost, best_one)
    # spanning requests: each resource bought apart, cheapest first
    span_cost = np.where(pairs.span_ok, 0.0, INF)
    fills = {}
    for k, (seg, h, free, need) in pairs.span.items():
        price = lam[h, k]
        order = np.lexsort((price, seg))
        s, f, d, pr = seg[order], free[order], need[order], price[order]
        cum = np.cumsum(f)
        starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1] if len(s) else np.zeros(0, dtype=np.int64)
        base = np.repeat(cum[starts] - f[starts], np.diff(np.r_[starts, len(s)])) if len(s) else cum
        before = cum - f - base                          # filled in the segment before this host
        x = np.clip(d - before, 0.0, f)
        cost = np.zeros(n_seg)
        np.add.at(cost, s, pr * x)
        span_cost = span_cost + cost
        fills[k] = (s, h[order], x)
    spanning_seg = pairs.span_ok
    seg_cost = np.where(spanning_seg, np.minimum(seg_cost, span_cost), seg_cost)
    # storage copies: cheapest host per rack, the `replicas` cheapest racks
    s_price = lam[pairs.s_h, STORAGE] * pairs.s_size
    first = _first_of_groups(pairs.s_seg, pairs.s_rack, s_price)
    fs, fp = pairs.s_seg[first], s_price[first]
    order = np.lexsort((fp, fs))
    fs, fp, fh = fs[order], fp[order], pairs.s_h[first][order]
    rank = _rank_in_segment(fs)
    take = rank < pairs.replicas[fs // pairs.zones]
    storage_cost = np.zeros(n_seg)
    np.add.at(storage_cost, fs[take], fp[take])
    storage_cost = np.where(pairs.storage_ok, storage_cost, INF)
    total = seg_cost + storage_cost
    per_request = total.reshape(pairs.n_requests, pairs.zones)
    zone_of = np.argmin(per_request, axis=1)
    c = per_request[np.arange(pairs.n_requests), zone_of]
    if complete is not None:
        c = np.where(complete, c, 0.0)
    w = p.unplaced_weight.astype(float)
    placed = c < w
    value = float(np.minimum(w, c).sum())
    chosen = np.zeros(n_seg, dtype=bool)
    counted = placed if complete is None else placed & complete  # the others use nothing of the candidates
    chosen[np.flatnonzero(counted) * pairs.zones + zone_of[counted]] = True
    # usage of the chosen placements (for the subgradient)
    single_seg = chosen & pairs.single[np.arange(n_seg) // pairs.zones]
    if len(pairs.one_seg):
        pick = np.full(n_seg, -1, dtype=np.int64)
        hit = single_seg[pairs.one_seg] & (one_cost == best_one[pairs.one_seg])
        idx = np.flatnonzero(hit)
        pick[pairs.one_seg[idx[::-1]]] = idx[::-1]      # one pair per segment (the first cheapest)
        rows = pick[single_seg & (pick >= 0)]
        np.add.at(usage, (pairs.one_h[rows], slice(None)), _compute_demand(p, pairs.one_r[rows]))
    span_seg = chosen & ~single_seg
    for k, (s, h, x) in fills.items():
        use = span_seg[s] & (x > 0)
        np.add.at(usage[:, k], h[use], x[use])
    use = chosen[fs] & take & pairs.needs_storage[fs // pairs.zones]
    np.add.at(usage[:, STORAGE], fh[use], pairs.s_size[first][order][use])
    # hosts: on ones pay for their capacity, off ones are switched on where the prices pay for them
    free = p.free.astype(float)
    worth = (lam * free).sum(axis=1)
    on = p.active.astype(bool)
    value -= float(worth[on].sum())
    opened = ~on & (p.cost < worth)
    value += float((p.cost[opened] - worth[opened]).sum())
    capacity = free * (on | opened)[:, None]
    return value, usage - capacity


def _compute_demand(p: PlacementProblem, r: np.ndarray) -> np.ndarray:
    out = np.zeros((len(r), 5))
    for k in COMPUTE:
        out[:, k] = p.demand[r, k]
    return out


def lagrangian_bound(problem: PlacementProblem, time_limit_s: float = 30.0, upper: float | None = None,
                     iterations: int = 400, theta_start: float = 0.5, patience: int = 8,
                     complete: np.ndarray | None = None) -> SolveResult:
    """The best L(λ) subgradient ascent finds in `time_limit_s` (or `iterations`); `upper`: the plan's
    objective (solver units), the target of the Polyak steps; `complete`: per request, whether its candidates
    are every host its filters pass (None: the bound is the model's, over its candidates). The result is a valid bound at any stop:
    status feasible (a dual point, not a proven optimum of the dual), objective = best_bound = the bound."""
    start = time.perf_counter()
    p = problem
    if p.n_requests == 0:
        return SolveResult(PlanStatus.FEASIBLE, 0.0, 0.0, None, time.perf_counter() - start, "lagrangian")
    pairs = _Pairs(p)
    w = p.unplaced_weight.astype(float)
    # the resources' units differ by orders of magnitude (GPUs against Mbit/s): the ascent runs on prices per
    # typical host's capacity of each resource, so no resource's subgradient drowns the others
    unit = np.array([max(float(np.median(p.free[p.free[:, k] > 0, k])) if (p.free[:, k] > 0).any() else 1.0, 1.0)
                     for k in range(5)])
    lam = np.zeros((p.n_hosts, 5))
    best_lam = lam
    target = float(upper) if upper is not None else float(w.sum())
    best, theta, stall = -INF, theta_start, 0
    done = 0
    while done < iterations and time.perf_counter() - start < time_limit_s:
        value, g = _evaluate(p, pairs, lam, complete)
        done += 1
        if value > best:
            best, best_lam, stall = value, lam, 0
        else:
            stall += 1
            if stall >= patience:
                theta, stall, lam = theta / 2, 0, best_lam  # restart from the best point with shorter steps
                continue
        if theta < 1e-5:
            break
        g = np.where((lam <= 0) & (g < 0), 0.0, g) / unit   # projected (a zero price cannot fall), in units
        norm = float((g * g).sum())
        if norm <= 0:
            break  # the cheapest placements fit every host: L(λ) is the optimum of the relaxation
        step = theta * max(target - value, 1e-6 * max(target, 1.0)) / norm
        lam = np.maximum(lam * unit + step * g, 0.0) / unit
    wall = time.perf_counter() - start
    bound = max(best, 0.0)
    return SolveResult(PlanStatus.FEASIBLE, bound, bound, None, wall, f"lagrangian ({done} subgradient steps)")
