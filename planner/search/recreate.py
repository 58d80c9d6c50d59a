"""Ruin and recreate: place more priority-weighted demand on a fleet that cannot hold every request.

When demand exceeds the room, the warm start leaves requests waiting and CP-SAT, on
hundreds of requests split over many hosts, improves it only slowly. This is the
classic local search for that case (Schrimpf et al. 2000, "Record breaking
optimization results using the ruin and recreate principle"; Christiaens and
Vanden Berghe 2020, "Slack induction by string removals"):

1. Ruin: draw a waiting request (chance in proportion to its unplaced weight) and a
   zone where it has compute candidates; take its max_shards candidates there plus
   one, at random, and remove the requests holding a part or a storage copy on them
   (at most MAX_REMOVED, a random subset when more).
2. Recreate: that request, the removed ones and a few other waiting requests that may
   use those hosts are inserted one by one, in decreasing unplaced weight with some
   noise (now and then in random order), by the FFD baseline's placement routine in
   its best-fit form (whole on the best-fitting host, else split over the roomiest
   hosts first, storage copies on distinct racks) restricted to each request's own
   candidates, so every invariant holds by construction.
3. The move is kept when the main objective (unplaced weight + activation cost + spread
   + moves) is no worse, else undone. Equal moves are kept, so the search can walk across
   plateaus. The tie-breaking terms (touched remote memory, speed, hot spots) do not
   decide a move: counted in the acceptance they cut the plateaus into pieces (on a
   contested 200-host fleet the search then placed 11% less demand in the same moves);
   the best plan seen by the whole objective is returned instead.

The budget is counted in moves, so a fixed seed gives the same plan; the search
budget's wall-clock cap (planner.search.budget) can stop it earlier. The engine runs it on wide candidate sets (`shardplan.planner.engine.wide_search`):
every host that passes the filters, not only the model's best top_k classes. Interchangeable empty hosts are relabelled by first use at the
end, so the CP-SAT symmetry rules accept the plan as a hint.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from shardplan.models.problem import (
    GPU,
    HOT_RESOURCES,
    RAM,
    STORAGE,
    VCPU,
    Assignment,
    PlacementProblem,
    canonical_groups,
    evaluate,
    host_usage,
    hot_spots,
    remote_gib,
    request_spread,
)
from shardplan.planner.search.baselines import place, shape_room
from shardplan.planner.search.budget import SearchStats, Stop

NOISE = 0.25
"""Recreate order: unplaced weight × a random factor in [1 − NOISE, 1 + NOISE] ..."""
RANDOM_ORDER = 0.05
"""... except in this share of the moves, which take the requests in random order (a big request that
first fit put first can then go last; on two dev fleets a larger share placed less)."""
MAX_REMOVED = 40
"""A ruin removes at most this many requests (a random subset when more touch its hosts)."""
EXTRA_WAITING = 8
"""Other waiting requests that may use a ruined host, offered a place in the recreate."""
FIT_SHARE = 0.5
"""Share of the ruins whose hosts are drawn by how much of the request they could hold once emptied
(`_ruined_hosts`), the rest uniformly."""
FIT_FLOOR = 0.01
"""... the weight of a host that could hold none of it, beside 1 for one that could hold a whole part."""
CLOSE_SHARE = 0.25
"""Share of the moves that, while the plan has switched a paid-for host on, try to switch one off instead:
the host (drawn in proportion to its cost × its idle share) is emptied and barred, and what it held is
recreated elsewhere with the waiting requests that may use it. Kept, like every move, only when the
objective is no worse: the price of a host is then a reason to move, not only the demand left waiting."""


@dataclass(frozen=True)
class _Hosts:
    """The host arrays the greedy placement reads, on the problem's free capacity."""

    zone: np.ndarray
    rack: np.ndarray
    capacity: np.ndarray
    active: np.ndarray
    cost: np.ndarray


class _State:
    """An assignment with its free capacity, host holders and objective kept up to date."""

    def __init__(self, problem: PlacementProblem, assignment: Assignment) -> None:
        self.problem = problem
        self.placed = assignment.placed.copy()
        self.parts = [list(p) for p in assignment.parts]
        self.copies = [list(s) for s in assignment.storage_hosts]
        self.free = problem.free.astype(np.int64) - host_usage(problem, assignment)
        self.holders: list[set[int]] = [set() for _ in range(problem.n_hosts)]
        self.opened: set[int] = set()  # paid-for hosts (not active, cost > 0) the plan holds something on
        self.unplaced = int(problem.unplaced_weight.sum())  # each placed request takes its weight off
        self.spread = 0
        self.cost = 0
        self.remote = 0  # touched remote GiB at their price (use pricing)
        self.speed = 0   # latency-sensitive vcpu on slower hosts
        hot = hot_spots(problem, problem.free - self.free)  # (H, len(HOT_RESOURCES)) hosts pushed past headroom
        self.hot_spots = int(problem.hot_price) * int(hot.sum())
        counted = problem.hot_room is not None and problem.hot_price > 0
        # plain lists: a move touches a few hosts, and numpy indexing per host costs more than the check
        self._hot_room = problem.hot_room[:, HOT_RESOURCES].tolist() if counted else None
        self._given = problem.free[:, HOT_RESOURCES].tolist() if counted else None
        self._hot_flags = hot.tolist()
        self._hot_price = int(problem.hot_price)
        current = problem.current
        # re-planning: each running request's move charge as if unplaced, replaced when it is placed
        self.moves = 0 if current is None else sum(current.charge(int(r), False, (), (), 0)
                                                   for r in np.flatnonzero(current.running))
        self.voluntary = 0 if current is None else int((current.running & ~current.mandatory).sum())
        for r in np.flatnonzero(self.placed):
            self._book(int(r), +1)

    @property
    def main(self) -> int:
        """The objective less its tie-breaking terms (touched remote memory, speed, hot spots)."""
        current = self.problem.current
        breach = 0 if current is None else current.budget_breach(self.voluntary)
        return self.unplaced + self.cost + self.spread + self.moves + breach

    @property
    def total(self) -> int:
        return self.main + self.remote + self.speed + self.hot_spots

    def _book(self, r: int, sign: int) -> None:
        """Objective terms and host holders for `r` joining (+1) or leaving (−1) the plan."""
        problem = self.problem
        current = problem.current
        if current is not None and current.parts[r] is not None:
            stored = int(problem.demand[r, STORAGE])
            there = current.charge(r, True, self.parts[r], self.copies[r], stored)
            gone = current.charge(r, False, (), (), stored)
            self.moves += sign * (there - gone)
            self.voluntary += sign * (int(current.voluntary(r, True, self.parts[r], self.copies[r])) - int(
                not current.mandatory[r]))
        self.unplaced -= sign * int(problem.unplaced_weight[r])
        self.spread += sign * request_spread(problem, r, self.parts[r])
        price = int(problem.memory.touched_price[r])
        if price:
            self.remote += sign * price * problem.memory.touched(r, remote_gib(self.parts[r]))
        if problem.speed_price is not None and problem.speed_price[r]:
            self.speed += sign * sum(int(p[1]) * problem.speed_cost(r, int(p[0])) for p in self.parts[r])
        for h in {p[0] for p in self.parts[r]} | set(self.copies[r]):
            before = bool(self.holders[h])
            (self.holders[h].add if sign > 0 else self.holders[h].discard)(r)
            if before != bool(self.holders[h]) and not problem.active[h]:
                self.cost += sign * int(problem.cost[h])
                if problem.cost[h] > 0:
                    (self.opened.add if sign > 0 else self.opened.discard)(h)

    def remove(self, r: int) -> tuple[list, list[int]]:
        """Take `r` out of the plan, giving its room back; returns its old parts and copies."""
        self._book(r, -1)
        problem = self.problem
        for (h, v, m, n, g), t in zip(self.parts[r], problem.part_traffic(r, self.parts[r])):
            self.free[h] += (v, m, 0, n + t, g)
        for h in self.copies[r]:
            self.free[h, STORAGE] += problem.demand[r, STORAGE]
        old = self.parts[r], self.copies[r]
        self.placed[r], self.parts[r], self.copies[r] = False, [], []
        self._rehot(old[0])
        return old

    def _rehot(self, parts) -> None:
        """The hot-spot flags (and term) of the hosts `parts` lie on, from their free room now."""
        if self._hot_room is None:
            return
        price, free = self._hot_price, self.free
        for h in {p[0] for p in parts}:
            flags = self._hot_flags[h]
            for k, (resource, room, given) in enumerate(zip(HOT_RESOURCES, self._hot_room[h], self._given[h])):
                now = room >= 0 and given - int(free[h, resource]) > room
                if now != flags[k]:
                    self.hot_spots += price if now else -price
                    flags[k] = now

    def put(self, r: int, parts: list, copies: list[int], take_room: bool = True) -> None:
        """Put `r` on `parts` and `copies` (its room already taken unless `take_room`)."""
        problem = self.problem
        if take_room:
            for (h, v, m, n, g), t in zip(parts, problem.part_traffic(r, parts)):
                self.free[h] -= (v, m, 0, n + t, g)
            for h in copies:
                self.free[h, STORAGE] -= problem.demand[r, STORAGE]
        self.placed[r], self.parts[r], self.copies[r] = True, list(parts), list(copies)
        self._book(r, +1)
        self._rehot(parts)

    def assignment(self) -> Assignment:
        return Assignment(self.placed.copy(), [list(p) for p in self.parts], [list(s) for s in self.copies])


def _room_for(state: "_State", r: int, parts, copies) -> bool:
    """`parts` and `copies` of request `r` fit in the state's free room."""
    problem = state.problem
    need: dict[int, np.ndarray] = {}
    for (h, v, m, n, g), t in zip(parts, problem.part_traffic(r, parts)):
        need.setdefault(h, np.zeros(5, dtype=np.int64))
        need[h] += (v, m, 0, n + t, g)
    for h in copies:
        need.setdefault(h, np.zeros(5, dtype=np.int64))
        need[h][STORAGE] += problem.demand[r, STORAGE]
    return all((state.free[h] >= x).all() for h, x in need.items())


class _Inserter:
    """The FFD baseline's placement routine (best fit, roomiest hosts first for splits), restricted to
    each request's candidates."""

    def __init__(self, problem: PlacementProblem) -> None:
        self.problem = problem
        self.hosts = _Hosts(problem.zone, problem.rack, problem.free, problem.active, problem.cost)
        self.ratio = problem.local_ram_per_vcpu[0] / problem.local_ram_per_vcpu[1]
        self._gpu: dict[int, np.ndarray] = {}
        self._no_gpu = np.zeros(problem.n_hosts, dtype=bool)

    def gpu_fit(self, r: int) -> np.ndarray:
        if self.problem.demand[r, GPU] == 0:
            return self._no_gpu
        mask = self._gpu.get(r)
        if mask is None:
            mask = self._gpu[r] = np.zeros(self.problem.n_hosts, dtype=bool)
            mask[self.problem.compute_candidates[r][self.problem.gpu_ok[r]]] = True
        return mask

    def insert(self, state: _State, r: int) -> bool:
        problem = self.problem
        if self.put_back(state, r):
            return True
        compute = problem.compute_candidates[r]
        if not len(compute):
            return False
        # roomiest for its shape first, for splits
        compute = compute[np.argsort(-shape_room(state.free[compute], problem.demand[r], self.ratio), kind="stable")]
        found = place(self.hosts, state.free, compute, problem.storage_candidates[r], problem.demand[r],
                      self.gpu_fit(r), int(problem.replicas[r]), int(problem.max_shards[r]), self.ratio,
                      problem.memory.tiers(r), best_fit=True, skew=problem.ram_skew)
        if found is None:
            return False
        state.put(r, found[0], found[1], take_room=False)
        return True

    def put_back(self, state: _State, r: int) -> bool:
        """Re-planning: a running request goes back exactly where it runs when there is room (no move)."""
        current = self.problem.current
        if current is None or current.parts[r] is None or current.mandatory[r]:
            return False
        parts, copies = list(current.parts[r]), list(current.copies[r])
        if not _room_for(state, r, parts, copies):
            return False
        state.put(r, parts, copies)
        return True


def ruin_and_recreate(problem: PlacementProblem, assignment: Assignment, max_moves: int, seed: int = 0,
                      wall_limit_s: float | None = None, relabel: bool = True) -> tuple[Assignment, SearchStats]:
    """Place more of the waiting demand while `max_moves` last; returns the plan (never worse than
    `assignment`; interchangeable empty hosts relabelled by first use unless not `relabel`, for a caller
    who relabels on another problem) and what was done."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    state = _State(problem, assignment)
    inserter = _Inserter(problem)
    stats = SearchStats(start_objective=state.total, start_placed=int(state.placed.sum()))
    has_candidates = np.array([len(c) > 0 for c in problem.compute_candidates], dtype=bool)
    best, best_total = assignment, state.total
    weight = problem.unplaced_weight.astype(float)
    wanting: list[list[int]] = [[] for _ in range(problem.n_hosts)]  # requests that may use each host
    for r, compute in enumerate(problem.compute_candidates):
        for h in compute.tolist():
            wanting[h].append(r)
    while stats.moves < max_moves:
        if wall_limit_s is not None and time.perf_counter() - began > wall_limit_s:
            stats.stopped_by = Stop.WALL_CAP
            break
        waiting = np.flatnonzero(~state.placed & has_candidates)
        if not len(waiting):
            stats.stopped_by = Stop.DONE  # nothing waits
            break
        stats.moves += 1
        closing = _host_to_close(problem, state, rng) if rng.random() < CLOSE_SHARE else None
        if closing is None:
            w = weight[waiting]
            seed_request = int(waiting[rng.choice(len(waiting), p=w / w.sum() if w.sum() > 0 else None)])
            ruined = _ruined_hosts(problem, seed_request, rng)
            removed = sorted(set().union(*(state.holders[h] for h in ruined)))
            if len(removed) > MAX_REMOVED:
                removed = sorted(int(x) for x in rng.choice(removed, size=MAX_REMOVED, replace=False))
        else:
            seed_request, ruined = None, np.array([closing])
            removed = sorted(state.holders[closing])  # all of them: the host is emptied
        before = state.main
        journal = [(r, state.remove(r)) for r in removed]
        journal_of = set(removed)
        others = sorted({r for h in ruined.tolist() for r in wanting[h]
                         if not state.placed[r] and r != seed_request and r not in journal_of})
        if len(others) > EXTRA_WAITING:
            others = [int(x) for x in rng.choice(others, size=EXTRA_WAITING, replace=False)]
        offered = ([] if seed_request is None else [seed_request]) + removed + others
        barred = None
        if closing is not None:  # no room on it while it is recreated
            barred, state.free[closing] = state.free[closing].copy(), 0
        if rng.random() < RANDOM_ORDER:
            sequence = rng.permutation(len(offered))
        else:
            sequence = np.argsort(-weight[offered] * rng.uniform(1.0 - NOISE, 1.0 + NOISE, size=len(offered)),
                                  kind="stable")
        inserted = []
        for i in sequence:
            r = offered[int(i)]
            if inserter.insert(state, r):
                inserted.append(r)
        if barred is not None:
            state.free[closing] = barred
        if state.main <= before:  # kept: no worse by the main objective
            stats.kept += 1
            stats.improved += int(state.main < before)
            if state.total < best_total:
                best, best_total = state.assignment(), state.total
            continue
        for r in inserted:  # undo: out with the new, back with the old
            state.remove(r)
        for r, (parts, copies) in journal:
            state.put(r, parts, copies)
    result = canonical_groups(problem, best) if relabel else best
    stats.final_objective = evaluate(problem, result).total
    stats.final_placed = int(result.placed.sum())
    stats.wall_s = time.perf_counter() - began
    return result, stats


def _host_to_close(problem: PlacementProblem, state: _State, rng: np.random.Generator) -> int | None:
    """A paid-for host the plan switched on, drawn in proportion to cost × idle share (the share of its
    vcpu and RAM left free, at least a tenth), or None when there is none."""
    if not state.opened:
        return None
    hosts = np.array(sorted(state.opened))
    capacity = np.maximum(problem.free[hosts][:, [VCPU, RAM]], 1)
    idle = np.clip(state.free[hosts][:, [VCPU, RAM]] / capacity, 0, 1).mean(axis=1)
    w = problem.cost[hosts] * np.maximum(idle, 0.1)
    return int(hosts[rng.choice(len(hosts), p=w / w.sum())])


def _ruined_hosts(problem: PlacementProblem, r: int, rng: np.random.Generator) -> np.ndarray:
    """max_shards + 1 of `r`'s compute candidates in one of their zones: at random, or (half the moves) in
    proportion to how much of one part's share of `r` the host could hold once emptied of the plan's parts
    (its vcpu, RAM and GPUs, the least of them): a 96-vcpu request split in two needs hosts with 48 vcpu
    to give, and a GPU request hosts with GPUs, which uniform draws among hundreds of candidates seldom
    find."""
    compute = problem.compute_candidates[r]
    zones = np.unique(problem.zone[compute])
    zone = zones[int(rng.integers(len(zones)))]
    in_zone = compute[problem.zone[compute] == zone]
    take = min(len(in_zone), int(problem.max_shards[r]) + 1)
    p = None
    if rng.random() < FIT_SHARE:  # the part's share is worked out only for the ruins that use it (a hot path)
        share = problem.demand[r, [VCPU, RAM, GPU]] / max(int(problem.max_shards[r]), 1)
        need = share > 0
        if need.any():
            fit = np.clip(problem.free[in_zone][:, [VCPU, RAM, GPU]][:, need] / share[need], 0.0, 1.0).min(axis=1)
            w = FIT_FLOOR + fit ** 2
            p = w / w.sum()
    return np.sort(rng.choice(in_zone, size=take, replace=False, p=p))


def keep_where_they_run(problem: PlacementProblem, assignment: Assignment, stuck: list[int]) -> Assignment | None:
    """Re-planning repair of a plan whose moves no executor can order (`stuck`, problem indices): each stuck
    request that may stay goes back exactly where it runs; what took its room there (requests not where they
    run, the lightest first, non-evictable running ones last) is taken out and placed again by the greedy
    placement (a running request first tries where it runs); a non-evictable running request that then finds
    no room goes back where it runs the same way. Only when no stuck request may stay are the others (new
    ones, forced moves) placed again, away from the hosts they were stuck on: putting the running ones back
    often lets the others' moves be ordered. Every part lies in free room, so capacity
    holds by construction, and each request is put back where it runs at most once. None when there is
    nothing to repair."""
    current = problem.current
    if current is None or not stuck:
        return None
    may_stay = [r for r in stuck if current.parts[r] is not None and not current.mandatory[r]]
    # one step at a time: with the running requests back, the others' moves may well be orderable
    elsewhere = [] if may_stay else list(stuck)
    state = _State(problem, assignment)
    inserter = _Inserter(problem)
    weight = problem.unplaced_weight
    was: dict[int, set[int]] = {}
    for r in may_stay + elsewhere:
        if state.placed[r]:
            parts, copies = state.remove(r)
            was[r] = {p[0] for p in parts} | set(copies)
    restored: set[int] = set()
    heaviest = lambda rs: sorted(rs, key=lambda x: (-int(weight[x]), x))  # noqa: E731
    while may_stay:
        displaced: list[int] = []
        for r in may_stay:
            restored.add(r)
            parts, copies = list(current.parts[r]), list(current.copies[r])
            hosts = {p[0] for p in parts} | set(copies)
            while not _room_for(state, r, parts, copies):
                blockers = [q for h in hosts for q in state.holders[h]
                            if not current.kept(q, True, state.parts[q], state.copies[q])]
                if not blockers:
                    break
                q = min(blockers, key=lambda x: (bool(current.must_place[x]), int(weight[x]), x))
                state.remove(q)
                displaced.append(q)
            if _room_for(state, r, parts, copies):
                state.put(r, parts, copies)
            else:
                displaced.append(r)
        may_stay = [r for r in heaviest(displaced) if not inserter.insert(state, r) and current.must_place[r]
                    and r not in restored]
    for r in heaviest(elsewhere):
        barred = sorted(was.get(r, ()))
        saved = state.free[barred].copy()
        state.free[barred] = 0
        inserter.insert(state, r)
        state.free[barred] = saved
    return state.assignment()
