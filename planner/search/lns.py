"""Large-neighbourhood search around CP-SAT: free a few hosts, re-place the requests that touch
them plus unplaced requests that could use them, keep the answer only if the objective drops.

This is how a fleet too large for one CP-SAT model is still planned by CP-SAT: each
neighbourhood is a small placement problem solved exactly as the monolithic one would be
(same constraint families, same objective), with everything outside it held fixed.
Neighbourhoods are chosen by a seeded generator, and the budget is counted in CP-SAT's
deterministic time, so a fixed seed gives the same plan.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from shardplan.models.placement import solve_placement
from shardplan.models.problem import STORAGE, Assignment, PlacementProblem, evaluate, host_usage
from shardplan.planner.search.budget import SearchStats, Stop


def _touching(assignment: Assignment, n_hosts: int) -> list[set[int]]:
    on_host: list[set[int]] = [set() for _ in range(n_hosts)]
    for r in np.flatnonzero(assignment.placed):
        for p in assignment.parts[r]:
            on_host[p[0]].add(int(r))
        for h in assignment.storage_hosts[r]:
            on_host[h].add(int(r))
    return on_host


def subproblem(problem: PlacementProblem, assignment: Assignment, requests: list[int], hosts: set[int],
               time_limit_s: float) -> tuple[PlacementProblem, Assignment]:
    """The requests re-placed on `hosts` with everything else fixed; and their current placement as hint."""
    index = np.array(requests, dtype=np.int64)
    released = Assignment(assignment.placed[index].copy(), [assignment.parts[r] for r in requests],
                          [assignment.storage_hosts[r] for r in requests])
    usage_all = host_usage(problem, assignment)
    usage_released = host_usage(dataclasses.replace(problem, demand=problem.demand[index],
                                                    remote=problem.memory.take(index)), released) \
        if len(requests) else np.zeros_like(usage_all)
    free = problem.free - usage_all + usage_released
    # a host stays active (no activation charge) if requests outside the neighbourhood still use it
    held = (usage_all - usage_released).sum(axis=1) > 0
    allowed = np.zeros(problem.n_hosts, dtype=bool)
    allowed[list(hosts)] = True
    keep = lambda c: c[allowed[c]]  # noqa: E731
    compute = [keep(problem.compute_candidates[r]) for r in requests]
    gpu_ok = [problem.gpu_ok[r][allowed[problem.compute_candidates[r]]] for r in requests]
    storage = [keep(problem.storage_candidates[r]) for r in requests]
    free = np.clip(free, 0, None)
    active = problem.active | held
    # hosts the neighbourhood empties completely and that are alike again form symmetry groups
    # (only within a symmetry group of the full problem: its members share every tag, GPU model and tier)
    group_of = {int(h): g for g, members in enumerate(problem.symmetry_groups) for h in members}
    classes: dict[tuple, list[int]] = {}
    for h in sorted(hosts):
        if not active[h] and h in group_of:
            classes.setdefault((group_of[h], tuple(free[h])), []).append(h)
    groups = [np.array(g, dtype=np.int64) for g in classes.values() if len(g) > 1]
    sub = dataclasses.replace(
        problem, free=free, active=active, demand=problem.demand[index],
        unplaced_weight=problem.unplaced_weight[index], spread_weight=problem.spread_weight[index],
        max_shards=problem.max_shards[index], replicas=problem.replicas[index],
        allow_remote=problem.allow_remote[index], compute_candidates=compute, gpu_ok=gpu_ok,
        storage_candidates=storage, symmetry_groups=groups, time_limit_s=time_limit_s,
        current=None if problem.current is None else problem.current.take(index, _outside(problem, assignment, requests)),
        remote=problem.memory.take(index),
        hot_room=None if problem.hot_room is None else _hot_room(problem.hot_room, usage_all - usage_released),
        speed_price=None if problem.speed_price is None else problem.speed_price[index])
    return sub, released


def _hot_room(room: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The hot-spot room left to a neighbourhood once the load outside it is counted (−1: hot already)."""
    left = room - outside
    return np.where((room < 0) | (left < 0), -1, left)


def _outside(problem: PlacementProblem, assignment: Assignment, requests: list[int]) -> int:
    """Voluntary disruptions of running requests outside the neighbourhood: the sub-problem's budget is
    what they leave of max_moves."""
    current, inside = problem.current, set(requests)
    return sum(current.voluntary(int(r), bool(assignment.placed[r]), assignment.parts[r], assignment.storage_hosts[r])
               for r in np.flatnonzero(current.running) if int(r) not in inside)


def improve(problem: PlacementProblem, start: Assignment, budget_s: float, seed: int = 0,
            hosts_per_neighbourhood: int = 16, max_requests: int = 60, sub_time_s: float = 0.5,
            wall_limit_s: float | None = None, on_iteration=None) -> tuple[Assignment, SearchStats]:
    """Destroy-and-repair until `budget_s` (deterministic units when the problem is deterministic, else
    seconds) is spent, or `wall_limit_s` (the search budget's wall-clock cap) ends it."""
    rng = np.random.default_rng(seed)
    current = Assignment(start.placed.copy(), [list(p) for p in start.parts], [list(s) for s in start.storage_hosts])
    stats = SearchStats(start_objective=evaluate(problem, current).total, start_placed=int(current.placed.sum()))
    began = time.perf_counter()
    racks = {int(k): np.flatnonzero(problem.rack == k) for k in np.unique(problem.rack)}
    wall_limit_s = float("inf") if wall_limit_s is None else wall_limit_s
    spent = lambda: stats.deterministic_s if problem.deterministic else time.perf_counter() - began  # noqa: E731
    while spent() < budget_s and time.perf_counter() - began < wall_limit_s:
        stats.moves += 1
        on_host = _touching(current, problem.n_hosts)
        unplaced = np.flatnonzero(~current.placed)
        hosts: set[int] = set()
        seed_request = None
        draw = rng.random()
        costed = np.flatnonzero((~problem.active) & np.array([bool(on_host[h]) for h in range(problem.n_hosts)]))
        if len(costed) > 1 and (draw >= 0.6 or not len(unplaced)) and draw < 0.9:
            # consolidation: one of the least used paid-for hosts, with others of its zone to absorb its parts
            usage = host_usage(problem, current)[costed] / np.maximum(problem.free[costed], 1)
            load = usage.max(axis=1)
            lightest = costed[np.argsort(load, kind="stable")[: max(3, len(costed) // 10)]]
            first = int(rng.choice(lightest))
            same_zone = [int(h) for h in np.flatnonzero(problem.zone == problem.zone[first]) if h != first
                         and (on_host[h] or problem.active[h])]
            # small neighbourhoods empty a host by repacking its neighbours; a few larger ones reshape more
            take = min(int(rng.integers(2, max(3, hosts_per_neighbourhood // 2))), len(same_zone))
            hosts.add(first)
            if take:
                hosts.update(int(h) for h in rng.choice(same_zone, size=take, replace=False))
        elif len(unplaced) and draw < 0.6 and problem.unplaced_weight[unplaced].sum() > 0:
            # (a request with no candidate weighs 0: it cannot seed a neighbourhood)
            weights = problem.unplaced_weight[unplaced].astype(float)
            seed_request = int(rng.choice(unplaced, p=weights / weights.sum()))
            pool = np.union1d(problem.compute_candidates[seed_request], problem.storage_candidates[seed_request])
            if not len(pool):
                continue
            take = min(hosts_per_neighbourhood, len(pool))
            hosts.update(int(h) for h in rng.choice(pool, size=take, replace=False))
        else:
            rack = int(rng.choice(list(racks)))
            members = racks[rack]
            take = min(hosts_per_neighbourhood, len(members))
            hosts.update(int(h) for h in rng.choice(members, size=take, replace=False))
        touching = sorted(set().union(*(on_host[h] for h in hosts)))
        if len(touching) > max_requests:
            touching = sorted(int(r) for r in rng.choice(touching, size=max_requests, replace=False))
        for r in touching:
            hosts |= current.hosts_of(r)
        room = max(max_requests - len(touching), 1)
        wanting = [int(r) for r in unplaced if np.isin(problem.compute_candidates[r], list(hosts)).any()
                   or (problem.demand[r][STORAGE] > 0 and np.isin(problem.storage_candidates[r], list(hosts)).any())]
        if seed_request is not None and seed_request not in wanting:
            wanting.append(seed_request)
        wanting.sort(key=lambda r: -int(problem.unplaced_weight[r]))
        requests = touching + wanting[:room]
        if not requests:
            continue
        sub, hint = subproblem(problem, current, requests, hosts, sub_time_s)
        left = wall_limit_s - (time.perf_counter() - began)
        if left <= 0:
            break
        sub = dataclasses.replace(sub, wall_limit_s=min(left, sub.wall_limit_s or left))
        before = evaluate(sub, hint).total
        solution = solve_placement(sub, hint=hint, complete=False)
        stats.deterministic_s += max(solution.deterministic_s, 0.01)
        if solution.terms is None or solution.terms.total >= before:
            continue
        for i, r in enumerate(requests):
            current.placed[r] = solution.assignment.placed[i]
            current.parts[r] = solution.assignment.parts[i]
            current.storage_hosts[r] = solution.assignment.storage_hosts[i]
        stats.improved += 1
        stats.kept += 1
        if on_iteration is not None:
            on_iteration(stats)
    stats.final_objective = evaluate(problem, current).total
    stats.final_placed = int(current.placed.sum())
    stats.wall_s = time.perf_counter() - began
    if stats.deterministic_s < budget_s if problem.deterministic else stats.wall_s < budget_s:
        stats.stopped_by = Stop.WALL_CAP
    return current, stats
