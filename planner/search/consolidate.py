"""Consolidation: empty paid-for hosts by consistent neighbourhood search over single-host placements.

CP-SAT proves bounds and solves small placements well, but on vector-packing-like
fleets (every request fits somewhere, the cost is the hosts kept on) it rarely finds
the packing with one host fewer in a few seconds. This is the classic way to find
it (Gent 1998; Buljubašić and Vasquez 2016, "Consistent neighborhood search for
one-dimensional bin packing and two-dimensional vector packing"):

1. Pick a lightly loaded paid-for host (the victim) and one more (the spare); take
   every request off both and bar them. The requests wait in a set S.
2. Put every waiting request that fits on an open host (best fit).
3. Take one waiting request at random, and on each open host it may use find the
   cheapest set of one or two requests whose removal makes room (cost = their size,
   a request's size being the sum over resources of its share of the largest host).
   Do the cheapest such swap: the evicted requests join S and may not return to
   that host for a few moves (tabu). Repeat from 2.
4. When what waits fits on the spare together, the victim stays empty: one host
   fewer. When the size in S has not dropped for `patience` moves, undo the round
   and try another victim. (Working with a spare, as Buljubašić and Vasquez do with
   two bins, turns "place everything" into "make S small enough for one host",
   a smoother target: on ten VBP dev instances, 10,000 moves each, it saved 12–13
   hosts over the warm start where rounds without a spare saved 8.)

Only requests whose whole placement sits on one host move (whole-VM placements and
single-part sharded ones with at most their own storage copy); multi-part requests
and extra storage replicas stay where they are, and hosts holding them are never
emptied. A move keeps every invariant: the request lands on one of its own compute
candidates (GPU model included) that is also a storage candidate when it has
storage, and within the host's free capacity in all five resources. Re-planning, a
round is kept only when the host's cost outweighs the moves it took (their disruption and GiB,
options disruption_cost and move_cost_per_gib) within the move budget. The budget is
counted in moves, so a fixed seed gives the same plan; the search budget's wall-clock
cap (planner.search.budget) can stop it earlier. Interchangeable empty hosts (a symmetry group) are relabelled by first use
at the end, so the hosts left empty are the group's last ones, as the CP-SAT symmetry
rules expect of a hint.
"""
from __future__ import annotations

import time

import numpy as np

from shardplan.models.problem import (
    GPU,
    STORAGE,
    Assignment,
    PlacementProblem,
    canonical_groups,
    evaluate,
    host_usage,
)
from shardplan.planner.search.budget import SearchStats, Stop

MOVE_HOSTS = 64
"""A move looks at every host a waiting request may use, or at a random sample of this many."""
TABU_MOVES = (7, 15)
"""An evicted request may not return to the host it left for a random number of moves in this range."""


class _Packing:
    """Movable requests' hosts and every host's room left, as plain Python lists (the moves touch five
    numbers at a time, where numpy's per-call overhead would dominate)."""

    def __init__(self, problem: PlacementProblem, assignment: Assignment) -> None:
        self.problem = problem
        n_hosts = problem.n_hosts
        cap = problem.free.astype(np.int64)
        self.cap: list[tuple[int, ...]] = [tuple(int(x) for x in row) for row in cap]
        self.room: list[list[int]] = [list(map(int, row)) for row in cap - host_usage(problem, assignment)]
        self.host_of: dict[int, int] = {}
        self.vector: dict[int, tuple[int, ...]] = {}
        self.allowed: dict[int, np.ndarray] = {}
        self.fixed = np.zeros(n_hosts, dtype=bool)   # holds a request that cannot move
        self.on: list[set[int]] = [set() for _ in range(n_hosts)]
        self._sets: dict[int, set[int]] = {}
        current = problem.current  # re-planning: voluntary disruptions of the plan as it stands
        self.voluntary = 0 if current is None else sum(
            int(current.voluntary(int(r), bool(assignment.placed[r]), assignment.parts[r], assignment.storage_hosts[r]))
            for r in np.flatnonzero(current.running))
        self.pending_voluntary = 0
        for r in np.flatnonzero(assignment.placed):
            r = int(r)
            parts = assignment.parts[r]
            hosts = {p[0] for p in parts} | set(assignment.storage_hosts[r])
            movable = len(parts) == 1 and len(hosts) == 1
            if movable:
                h, v, m, n, g = parts[0]
                allowed = self._allowed_hosts(r)
                movable = h in set(allowed.tolist())
            if not movable:
                for h in hosts:
                    self.fixed[h] = True
                continue
            stored = int(problem.demand[r, STORAGE]) if assignment.storage_hosts[r] else 0
            self.vector[r] = (int(v), int(m), stored, int(n + problem.part_traffic(r, parts)[0]), int(g))
            self.allowed[r] = allowed
            self.host_of[r] = int(h)
            self.on[h].add(r)
        largest = np.maximum(cap.max(axis=0), 1).astype(float)
        self.size: dict[int, float] = {r: float((np.array(v) / largest).sum()) for r, v in self.vector.items()}
        self.inverse_cap = [tuple(1.0 / c if c > 0 else 0.0 for c in row) for row in self.cap]

    def _allowed_hosts(self, r: int) -> np.ndarray:
        problem = self.problem
        compute = problem.compute_candidates[r]
        if problem.demand[r, GPU] > 0:
            compute = compute[problem.gpu_ok[r]]
        if problem.demand[r, STORAGE] > 0:
            compute = np.intersect1d(compute, problem.storage_candidates[r])
        return compute.astype(np.int64)

    def allowed_set(self, r: int) -> set[int]:
        found = self._sets.get(r)
        if found is None:
            found = self._sets[r] = set(self.allowed[r].tolist())
        return found

    def open_hosts(self) -> np.ndarray:
        """(H,) bool: hosts that hold something or are active anyway (no activation charge to use them)."""
        return np.array([bool(self.on[h]) or bool(self.problem.active[h]) for h in range(self.problem.n_hosts)])

    def load_share(self, h: int) -> float:
        """Sum over resources of the share of `h`'s capacity in use."""
        return sum((c - left) * inv for c, left, inv in zip(self.cap[h], self.room[h], self.inverse_cap[h]))

    def place(self, r: int, h: int) -> None:
        room = self.room[h]
        for d, x in enumerate(self.vector[r]):
            room[d] -= x
        self.host_of[r] = h
        self.on[h].add(r)

    def remove(self, r: int) -> None:
        h = self.host_of.pop(r)
        room = self.room[h]
        for d, x in enumerate(self.vector[r]):
            room[d] += x
        self.on[h].discard(r)

    def snapshot(self) -> tuple:
        return [list(x) for x in self.room], dict(self.host_of), [set(s) for s in self.on]

    def restore(self, saved: tuple) -> None:
        self.room, self.host_of, self.on = [list(x) for x in saved[0]], dict(saved[1]), [set(s) for s in saved[2]]

    def _charge_at(self, r: int, h: int) -> tuple[int, int]:
        """Re-planning: (move cost, 1 if a voluntary disruption) of movable running request `r` on host `h`."""
        current = self.problem.current
        v, m, stored, n, g = self.vector[r]
        traffic = self.problem.part_traffic(r, [(h, v, m, 0, g)])[0]
        parts, copies = [(h, v, m, n - traffic, g)], ([h] if stored else [])
        return (current.charge(r, True, parts, copies, int(self.problem.demand[r, STORAGE])),
                int(current.voluntary(r, True, parts, copies)))

    def round_cost(self, before: dict[int, int]) -> int:
        """Re-planning: what the moves since `before` (a snapshot of host_of) cost, in solver units, a budget
        breach included; 0 for a fresh packing. Only requests whose host changed are priced."""
        current = self.problem.current
        if current is None:
            return 0
        cost, voluntary = 0, 0
        for r, h in self.host_of.items():
            old = before[r]
            if old != h and current.parts[r] is not None:
                (c1, v1), (c0, v0) = self._charge_at(r, h), self._charge_at(r, old)
                cost, voluntary = cost + c1 - c0, voluntary + v1 - v0
        self.pending_voluntary = voluntary
        return cost + current.budget_breach(self.voluntary + voluntary) - current.budget_breach(self.voluntary)

    def write(self, assignment: Assignment) -> Assignment:
        """The assignment with every movable request on its current host."""
        out = Assignment(assignment.placed.copy(), [list(p) for p in assignment.parts],
                         [list(s) for s in assignment.storage_hosts])
        for r in self.allowed:
            h = self.host_of[r]
            _, v, m, n, g = out.parts[r][0]
            out.parts[r] = [(h, v, m, n, g)]
            if out.storage_hosts[r]:
                out.storage_hosts[r] = [h]
        return out


def _cheapest_eviction(pack: _Packing, r: int, h: int, tabu: dict[tuple[int, int], int], move: int
                       ) -> tuple[float, tuple[int, ...]] | None:
    """The lightest set of at most two non-tabu requests on `h` whose removal lets `r` fit (None: none)."""
    vector, room, cap = pack.vector[r], pack.room[h], pack.cap[h]
    short = [(d, x - left) for d, (x, left) in enumerate(zip(vector, room)) if x > left]
    if not short:
        return 0.0, ()
    if any(x > c for x, c in zip(vector, cap)):
        return None
    others = [x for x in pack.on[h] if tabu.get((x, h), -1) < move]
    size, vectors = pack.size, pack.vector
    best_weight, best = float("inf"), None
    for i, x in enumerate(others):
        vx, wx = vectors[x], size[x]
        if wx >= best_weight:
            continue
        if all(vx[d] >= need for d, need in short):
            best_weight, best = wx, (x,)
            continue
        for y in others[i + 1:]:
            weight = wx + size[y]
            if weight < best_weight:
                vy = vectors[y]
                if all(vx[d] + vy[d] >= need for d, need in short):
                    best_weight, best = weight, (x, y)
    return None if best is None else (best_weight, best)


def _best_fit(pack: _Packing, r: int, hosts) -> int | None:
    """The host (of `hosts`) where `r` fits with the least room left (summed shares), or None."""
    vector = pack.vector[r]
    best, best_left = None, float("inf")
    for h in hosts:
        room = pack.room[h]
        if all(x <= left for x, left in zip(vector, room)):
            left = sum((left - x) * inv for x, left, inv in zip(vector, room, pack.inverse_cap[h]))
            if left < best_left:
                best, best_left = h, left
    return best


def consolidate(problem: PlacementProblem, assignment: Assignment, max_moves: int, seed: int = 0,
                patience: int = 2000, wall_limit_s: float | None = None
                ) -> tuple[Assignment, SearchStats]:
    """Empty paid-for hosts one at a time while `max_moves` last; returns the plan and what was done.

    The returned plan is never worse than `assignment` (each round is kept only if every
    waiting request found a host again, and then the barred host's cost is saved)."""
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    pack = _Packing(problem, assignment)
    stats = SearchStats(start_objective=evaluate(problem, assignment).total, start_placed=int(assignment.placed.sum()),
                        detail={"rounds": 0, "hosts_emptied": 0, "movable_requests": len(pack.allowed)})
    paid = (problem.cost > 0) & ~problem.active
    tried: set[int] = set()
    passes_without_success = 0
    while stats.moves < max_moves:
        if wall_limit_s is not None and time.perf_counter() - began > wall_limit_s:
            stats.stopped_by = Stop.WALL_CAP
            break
        open_host = pack.open_hosts().tolist()
        emptiable = [h for h in range(problem.n_hosts) if paid[h] and pack.on[h] and not pack.fixed[h]
                     and all(any(x != h and open_host[x] for x in pack.allowed_set(r)) for r in pack.on[h])]
        if len(emptiable) < 2:  # a victim and a spare
            stats.stopped_by = Stop.DONE  # no host left to empty
            break
        candidates = [h for h in emptiable if h not in tried]
        if not candidates:  # every host was tried since the last success: again, the draws differ
            if problem.current is not None and passes_without_success >= 2:
                stats.stopped_by = Stop.DONE  # re-planning: no host left whose freeing pays for its moves
                break
            passes_without_success += 1
            tried.clear()
            candidates = emptiable
        share = np.array([pack.load_share(h) for h in candidates])
        lightest = np.argsort(share, kind="stable")[:2]
        victim = candidates[int(lightest[int(rng.integers(len(lightest)))])]
        others = [h for h in emptiable if h != victim]
        spare_share = np.array([pack.load_share(h) for h in others])
        light = np.argsort(spare_share, kind="stable")[:3]
        spare = others[int(light[int(rng.choice(len(light), size=1, replace=False)[0])])]
        stats.detail["rounds"] += 1
        before = pack.snapshot() if problem.current is not None else None
        emptied = _empty_host(pack, victim, spare, rng, max_moves, patience, stats, began, wall_limit_s)
        if emptied and (before is None or pack.round_cost(before[1]) < int(problem.cost[victim])):
            pack.voluntary += pack.pending_voluntary
            stats.detail["hosts_emptied"] += 1
            tried.clear()
            passes_without_success = 0
        else:
            if emptied:  # re-planning: freeing the host did not pay for the moves it took
                pack.restore(before)
                stats.moves += 1  # such a round costs a move even when everything fitted at once
            tried.add(victim)
    result = canonical_groups(problem, pack.write(assignment))  # emptied group members: in order again
    stats.final_objective = evaluate(problem, result).total
    if stats.final_objective > stats.start_objective:  # cannot happen: moves keep hosts; a guard, not a path
        result, stats.final_objective = assignment, stats.start_objective
    stats.final_placed = int(result.placed.sum())
    stats.wall_s = time.perf_counter() - began
    return result, stats


def _fits_on(pack: _Packing, waiting: list[int], h: int) -> bool:
    """Every waiting request may use `h`, and all of them together fit on it."""
    total = [sum(pack.vector[r][d] for r in waiting) for d in range(5)]
    return all(h in pack.allowed_set(r) for r in waiting) and all(t <= left for t, left in zip(total, pack.room[h]))


def _empty_host(pack: _Packing, victim: int, spare: int, rng: np.random.Generator, max_moves: int,
                patience: int, stats: SearchStats, began: float, wall_limit_s: float | None) -> bool:
    """One round: take everything off `victim` and `spare`, bar both, and search until what waits fits
    on the spare again (True: the victim stays empty) or give up (the round is undone)."""
    saved = pack.snapshot()
    waiting = sorted(pack.on[victim] | pack.on[spare])
    for r in waiting:
        pack.remove(r)
    open_host = pack.open_hosts()
    open_host[[victim, spare]] = False
    usable: dict[int, np.ndarray] = {}
    tabu: dict[tuple[int, int], int] = {}
    best_left = float("inf")
    since_best = 0
    fresh = set(waiting)       # requests no host has been tried for yet
    changed: int | None = None  # the one host whose room may have grown since the last try
    while stats.moves < max_moves and since_best < patience:
        if wall_limit_s is not None and time.perf_counter() - began > wall_limit_s:
            break
        for r in sorted(waiting, key=lambda x: -pack.size[x]):  # whatever fits goes back at once
            hosts = usable.get(r)
            if hosts is None:
                hosts = usable[r] = pack.allowed[r][open_host[pack.allowed[r]]].tolist()
            if r not in fresh:  # it fitted nowhere before the last move, which only freed room on `changed`
                hosts = [changed] if changed is not None and open_host[changed] and \
                    changed in pack.allowed_set(r) else []
            h = _best_fit(pack, r, hosts)
            if h is not None:
                pack.place(r, h)
                waiting.remove(r)
        fresh.clear()
        changed = None
        if _fits_on(pack, waiting, spare):
            for r in waiting:
                pack.place(r, spare)
            return True
        left = sum(pack.size[x] for x in waiting)
        if left < best_left - 1e-12:
            best_left, since_best = left, 0
        else:
            since_best += 1
        stats.moves += 1
        best: tuple[float, int, int, tuple[int, ...]] | None = None
        r = waiting[int(rng.integers(len(waiting)))]
        hosts = usable[r]
        if len(hosts) > MOVE_HOSTS:  # large fleets: a random sample of the hosts, so moves stay fast
            hosts = [hosts[int(i)] for i in rng.choice(len(hosts), size=MOVE_HOSTS, replace=False)]
        for h in hosts:
            found = _cheapest_eviction(pack, r, h, tabu, stats.moves)
            if found is None:
                continue
            delta = found[0] - pack.size[r]
            if best is None or delta < best[0] or (delta == best[0] and rng.random() < 0.5):
                best = (delta, r, h, found[1])
        if best is None:
            continue
        _, r, h, evicted = best
        for x in evicted:
            pack.remove(x)
            waiting.append(x)
            fresh.add(x)
            tabu[(x, h)] = stats.moves + int(rng.integers(*TABU_MOVES))
        pack.place(r, h)
        waiting.remove(r)
        changed = h
    pack.restore(saved)
    return False
