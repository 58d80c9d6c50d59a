"""Plain data handed to the mathematical programs, and their typed results.

Everything here is integers in solver units (net in Mbit/s, cost in milli-dollars
per hour) so CP-SAT, the LP bound and the baselines read the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property

import numpy as np

# Resource order inside every array: vcpu, ram_gib, storage_gib, net (Mbit/s), gpu.
VCPU, RAM, STORAGE, NET, GPU = range(5)
NET_UNITS_PER_GBPS = 1000
COST_UNITS_PER_DOLLAR = 1000


BREACH = 10 ** 12
"""Solver units charged per breach of a hard rule of re-planning (a running request that must be placed left
unplaced, a voluntary disruption past the budget): the local searches, which minimise the objective, then
never accept a breach; CP-SAT has the rules as constraints."""

Part = tuple[int, int, int, int, int]  # (host, vcpu, ram, own net, gpu)


@dataclass(frozen=True)
class Current:
    """What runs now, per request of the problem (None: not running), in solver units.

    Keeping a running request exactly where it is costs nothing. Disrupting it (moving any part, or
    dropping it) costs `disrupt_weight`; each GiB of RAM or storage copy that moves costs `gib_weight`.
    `mandatory` requests must move (a host is no longer up, or can no longer hold their parts): they are
    never kept and do not count against the budget. `must_place` requests (running, not evictable, not
    mandatory) stay placed (invariant 11). At most `max_moves` other running requests are disrupted
    (−1: no budget); `outside` are those disrupted outside a sub-problem (LNS), counted against it."""

    parts: list[tuple[Part, ...] | None]     # sorted
    copies: list[tuple[int, ...] | None]     # storage copy hosts, in replica order
    mandatory: np.ndarray                    # (R,) bool
    must_place: np.ndarray                   # (R,) bool
    disrupt_weight: np.ndarray               # (R,) int64
    gib_weight: int
    max_moves: int = -1
    outside: int = 0

    @property
    def running(self) -> np.ndarray:
        return np.array([p is not None for p in self.parts], dtype=bool)

    def kept(self, r: int, placed: bool, parts, copies) -> bool:
        current = self.parts[r]
        return (current is not None and placed and not self.mandatory[r] and tuple(sorted(parts)) == current
                and set(copies) == set(self.copies[r]))

    def disrupted(self, r: int, placed: bool, parts, copies) -> bool:
        return self.parts[r] is not None and not self.kept(r, placed, parts, copies)

    def voluntary(self, r: int, placed: bool, parts, copies) -> bool:
        """Disrupted, and not forced: what the budget counts."""
        return not self.mandatory[r] and self.disrupted(r, placed, parts, copies)

    def moved_gib(self, r: int, placed: bool, parts, copies, storage_gib: int) -> int:
        """GiB of the current parts (RAM) and copies (storage) that are not where they were; 0 when unplaced."""
        current = self.parts[r]
        if current is None or not placed:
            return 0
        now = list(parts)
        gib = 0
        for part in current:
            if part in now:
                now.remove(part)
            else:
                gib += part[2]
        return gib + storage_gib * len(set(self.copies[r]) - set(copies))

    def charge(self, r: int, placed: bool, parts, copies, storage_gib: int) -> int:
        """Move cost of request `r` in this state, solver units (the breach of must_place included)."""
        if self.parts[r] is None or self.kept(r, placed, parts, copies):
            return 0
        breach = BREACH if self.must_place[r] and not placed else 0
        return int(self.disrupt_weight[r]) + self.gib_weight * self.moved_gib(r, placed, parts, copies,
                                                                              storage_gib) + breach

    def budget_breach(self, voluntary: int) -> int:
        """The charge for `voluntary` disruptions (this problem's own) past the budget."""
        if self.max_moves < 0:
            return 0
        return BREACH * max(0, voluntary + self.outside - self.max_moves)

    def take(self, index: np.ndarray, outside: int) -> "Current":
        """The rows of a sub-problem, with `outside` voluntary disruptions made elsewhere."""
        return Current([self.parts[i] for i in index], [self.copies[i] for i in index], self.mandatory[index],
                       self.must_place[index], self.disrupt_weight[index], self.gib_weight, self.max_moves,
                       outside)


@dataclass(frozen=True)
class RemoteMemory:
    """How memory held on a host where the request runs no vcpu (remote memory) is priced, per request.

    A request's remote GiB X may not exceed `cap`. While X ≤ `untouched` (the GiB it is expected never to
    touch) every remote GiB costs `untouched_mbps` of the memory host's NIC and slows nothing; past it the
    planner cannot tell which pages are touched, so every remote GiB costs `touched_mbps` and the
    X − untouched touched GiB cost `touched_price` each (solver units) and slow the request down. Flat
    pricing (`flat`) is untouched = 0 throughout: every remote GiB at one rate, as before use pricing."""

    touched_mbps: int
    untouched_mbps: int
    untouched: np.ndarray       # (R,) GiB
    cap: np.ndarray             # (R,) most remote GiB
    touched_price: np.ndarray   # (R,) solver units per touched remote GiB

    @classmethod
    def flat(cls, rate_mbps: int, allow: np.ndarray, ram: np.ndarray) -> "RemoteMemory":
        n = len(allow)
        return cls(int(rate_mbps), int(rate_mbps), np.zeros(n, dtype=np.int64),
                   np.where(allow, ram, 0).astype(np.int64), np.zeros(n, dtype=np.int64))

    def rate(self, r: int, remote_gib: int) -> int:
        """NIC Mbit/s per remote GiB of request `r` holding `remote_gib` GiB remotely."""
        return self.untouched_mbps if remote_gib <= self.untouched[r] else self.touched_mbps

    def touched(self, r: int, remote_gib: int) -> int:
        return max(0, int(remote_gib) - int(self.untouched[r]))

    def tiers(self, r: int) -> list[tuple[int, int]]:
        """(most remote GiB, Mbit/s per remote GiB) to try in turn: within the untouched GiB first."""
        cap, untouched = int(self.cap[r]), int(self.untouched[r])
        if cap <= 0:
            return []
        if 0 < untouched < cap:
            return [(untouched, self.untouched_mbps), (cap, self.touched_mbps)]
        return [(cap, self.untouched_mbps if untouched >= cap else self.touched_mbps)]

    def take(self, index: np.ndarray) -> "RemoteMemory":
        return RemoteMemory(self.touched_mbps, self.untouched_mbps, self.untouched[index], self.cap[index],
                            self.touched_price[index])


SKEW_DEN = 1000
"""max_ram_skew is rounded to 1/SKEW_DEN, the same in the planner and the checker."""


def skew_ratio(skew: float | None) -> tuple[int, int] | None:
    """max_ram_skew as the integer ratio every rule below uses (None: no cap)."""
    return None if skew is None else (int(round(float(skew) * SKEW_DEN)), SKEW_DEN)


def part_ram_cap(ram: int, vcpu: int, part_vcpu: int, skew: tuple[int, int] | None) -> int | None:
    """Most GiB a part with `part_vcpu` of a request's `vcpu` and `ram` may hold (invariant 4): skew × its
    vcpu share of the RAM, rounded up; None where no cap applies (no skew, or a part without vcpu)."""
    if skew is None or part_vcpu <= 0 or vcpu <= 0:
        return None
    num, den = skew
    d = den * int(vcpu)
    return (num * int(ram) * int(part_vcpu) + d - 1) // d


def remote_gib(parts) -> int:
    """GiB of a request's parts held where it runs no vcpu."""
    return sum(int(p[2]) for p in parts if p[1] == 0)


@dataclass(frozen=True)
class PlacementProblem:
    """A fleet's free capacity, the requests and each request's candidate hosts."""

    free: np.ndarray            # (H, 5) int64: capacity left for new shards
    cost: np.ndarray            # (H,) int64: milli-$/h if the host becomes active
    active: np.ndarray          # (H,) bool: already active (existing load), no activation cost
    rack: np.ndarray            # (H,) int64
    zone: np.ndarray            # (H,) int64
    demand: np.ndarray          # (R, 5) int64
    unplaced_weight: np.ndarray  # (R,) int64: objective charge if the request stays unplaced
    spread_weight: np.ndarray   # (R,) int64: charge per extra host and extra rack spanned
    max_shards: np.ndarray      # (R,) int64: hosts its compute, memory and GPU may span
    replicas: np.ndarray        # (R,) int64: storage copies on distinct racks
    allow_remote: np.ndarray    # (R,) bool: may hold memory on hosts without its vcpu
    compute_candidates: list[np.ndarray]  # per request: host indices for compute/memory/GPU parts
    gpu_ok: list[np.ndarray]    # per request: bool per compute candidate, GPU model fits
    storage_candidates: list[np.ndarray]  # per request: host indices that can hold a whole storage copy
    symmetry_groups: list[np.ndarray] = field(default_factory=list)  # interchangeable empty hosts, in order
    whole: bool = False         # one host per VM; the primary storage copy sits with the compute
    remote_mbps_per_gib: int = 50
    local_ram_per_vcpu: tuple[int, int] = (1, 2)  # ram*den >= num*vcpu on every part
    ram_skew: tuple[int, int] | None = None  # a part with vcpu holds ≤ part_ram_cap GiB (invariant 4); None: no cap
    time_limit_s: float = 30.0  # nominal seconds (deterministic mode: × deterministic_units_per_s of CP-SAT time)
    wall_limit_s: float | None = None  # hard wall-clock cap (the search budget's); None: time_limit_s in wall mode, none else
    workers: int = 2
    seed: int = 0
    deterministic: bool = True   # deterministic time limit + interleaved search (reproducible plans)
    deterministic_units_per_s: float = 0.25  # deterministic-time units granted per second of time_limit_s
    current: Current | None = None  # what runs now (re-planning); None: a fresh packing
    remote: RemoteMemory | None = None  # use-priced remote memory; None: flat (remote_mbps_per_gib, allow_remote)
    hot_room: np.ndarray | None = None  # (H, 5) load the plan may add before the host is a hot spot in that
    # resource (−1: hot already, or not counted); None: no hot-spot term
    hot_price: int = 0                  # solver units per host and resource the plan makes hot
    speed_price: np.ndarray | None = None   # (R,) solver units per vcpu per unit of cpu_score below the best
    speed_deficit: np.ndarray | None = None  # (H,) the best up host's cpu_score less this host's
    rack_distance: np.ndarray | None = None  # (K, K) rack-pair distance (topology; 1 = the default pair);
    # None: every extra rack counts 1

    @cached_property
    def memory(self) -> RemoteMemory:
        """The remote-memory rule of every request (flat unless `remote` is given)."""
        if self.remote is not None:
            return self.remote
        return RemoteMemory.flat(self.remote_mbps_per_gib, self.allow_remote, self.demand[:, RAM])

    def part_traffic(self, r: int, parts) -> list[int]:
        """Remote-memory NIC traffic of each of request `r`'s parts (0 where it runs vcpu)."""
        rate = self.memory.rate(r, remote_gib(parts))
        return [rate * int(p[2]) if p[1] == 0 else 0 for p in parts]

    def speed_cost(self, r: int, h: int) -> int:
        """Solver units per vcpu of request `r` on host `h`: what the host's slowness costs the request."""
        if self.speed_price is None or self.speed_deficit is None or not self.speed_price[r]:
            return 0
        return int(round(float(self.speed_price[r]) * float(self.speed_deficit[h])))

    @property
    def n_hosts(self) -> int:
        return int(self.free.shape[0])

    @property
    def n_requests(self) -> int:
        return int(self.demand.shape[0])


class PlanStatus(str, Enum):
    """DESIGN.md's four statuses of a solver-facing result. How solvers map onto them: CP-SAT OPTIMAL →
    optimal, FEASIBLE → feasible, INFEASIBLE and MODEL_INVALID → infeasible, UNKNOWN (time out) →
    timeout_no_solution; an LP (PuLP/HiGHS) solved to optimality → optimal, proven infeasible →
    infeasible, anything else (time limit, unbounded, undefined, not solved) → timeout_no_solution,
    since only an optimal relaxation proves a bound."""

    OPTIMAL = "optimal"
    FEASIBLE = "feasible"
    INFEASIBLE = "infeasible"
    TIMEOUT_NO_SOLUTION = "timeout_no_solution"

    @property
    def has_solution(self) -> bool:
        return self in (PlanStatus.OPTIMAL, PlanStatus.FEASIBLE)

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class SolveResult:
    """What every solver-facing result carries."""

    status: PlanStatus
    objective: float | None
    best_bound: float | None
    gap: float | None
    wall_s: float
    solver: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", PlanStatus(self.status))  # a plain string is checked and converted

    def to_dict(self) -> dict[str, object]:
        return {"status": self.status.value, "objective": self.objective, "best_bound": self.best_bound,
                "gap": self.gap, "wall_s": round(self.wall_s, 3), "solver": self.solver}


def relative_gap(objective: float | None, bound: float | None) -> float | None:
    if objective is None or bound is None:
        return None
    return max(0.0, objective - bound) / max(abs(objective), 1e-9) if objective else 0.0


@dataclass
class Assignment:
    """Where each request went: compute parts (host, vcpu, ram, net, gpu) and storage copy hosts."""

    placed: np.ndarray                                   # (R,) bool
    parts: list[list[tuple[int, int, int, int, int]]]    # per request: (host, vcpu, ram, own net, gpu)
    storage_hosts: list[list[int]]                       # per request: host of copy 0, 1, ...

    @classmethod
    def empty(cls, n_requests: int) -> "Assignment":
        return cls(np.zeros(n_requests, dtype=bool), [[] for _ in range(n_requests)],
                   [[] for _ in range(n_requests)])

    def hosts_of(self, r: int) -> set[int]:
        """The hosts request `r`'s parts and storage copies sit on (empty when unplaced)."""
        if not self.placed[r]:
            return set()
        return {p[0] for p in self.parts[r]} | set(self.storage_hosts[r])

    def hosts_per_request(self) -> list[set[int]]:
        return [self.hosts_of(r) for r in range(len(self.placed))]

    def reordered(self, order: np.ndarray) -> "Assignment":
        """Request index space → problem order (position i holds request order[i])."""
        return Assignment(self.placed[order].copy(), [self.parts[r] for r in order],
                          [self.storage_hosts[r] for r in order])

    def restored(self, order: np.ndarray) -> "Assignment":
        """Problem order → request index space (the inverse of `reordered`)."""
        out = Assignment.empty(len(order))
        for i, r in enumerate(order):
            out.placed[r] = self.placed[i]
            out.parts[r] = self.parts[i]
            out.storage_hosts[r] = self.storage_hosts[i]
        return out

    def relabelled(self, mapping: dict[int, int]) -> "Assignment":
        """The same plan with hosts renamed by `mapping` (interchangeable hosts of a symmetry group)."""
        if not mapping:
            return self
        return Assignment(self.placed.copy(),
                          [[(mapping.get(p[0], p[0]), *p[1:]) for p in parts] for parts in self.parts],
                          [[mapping.get(h, h) for h in hosts] for hosts in self.storage_hosts])


@dataclass(frozen=True)
class ObjectiveTerms:
    """The objective as named terms, in solver units (milli-$/h)."""

    unplaced: int
    active_cost: int
    spread: int
    ruled_out: int = 0  # unplaced weight of requests no host passes the filters for: no plan changes it, not in total
    moves: int = 0      # cost of disrupting what runs (re-planning), breaches of its hard rules included
    remote: int = 0     # touched remote memory: touched_price per touched remote GiB (use pricing)
    hot_spots: int = 0  # hot_price per host and resource the plan pushes past the headroom threshold
    speed: int = 0      # latency-sensitive vcpu on slower hosts: speed_price × vcpu × cpu_score deficit

    @property
    def total(self) -> int:
        return self.unplaced + self.active_cost + self.spread + self.moves + self.remote + self.hot_spots + self.speed

    def to_dict(self) -> dict[str, float]:
        scale = COST_UNITS_PER_DOLLAR
        return {"unplaced_penalty": self.unplaced / scale, "active_host_cost_per_hour": self.active_cost / scale,
                "spread_penalty": self.spread / scale, "move_cost": self.moves / scale,
                "remote_memory_penalty": self.remote / scale, "hot_spot_penalty": self.hot_spots / scale,
                "speed_penalty": self.speed / scale, "total": self.total / scale,
                "ruled_out_penalty_not_in_total": self.ruled_out / scale}


def symmetry_views(problem: PlacementProblem, group: np.ndarray) -> list[tuple[int, list[int], list[int]]] | None:
    """For a symmetry group: per request that may use it, in problem order, the positions of the group's
    members in its compute and storage candidate lists. None when some request sees only part of the
    group (its members are then not interchangeable for that request, and the group may not be reordered)."""
    member = {int(h) for h in group}
    views = []
    for r in range(problem.n_requests):
        compute = [i for i, h in enumerate(problem.compute_candidates[r]) if int(h) in member]
        storage = [i for i, h in enumerate(problem.storage_candidates[r])
                   if problem.demand[r, STORAGE] > 0 and int(h) in member]
        if any(0 < len(x) < len(group) for x in (compute, storage)):
            return None
        if compute or storage:
            views.append((r, compute, storage))
    return views


def canonical_groups(problem: PlacementProblem, assignment: Assignment) -> Assignment:
    """Relabel the used members of each symmetry group (interchangeable empty hosts on one rack) onto
    the group's first members, in order of first use over the requests, as the CP-SAT symmetry rules
    expect. Groups some request sees only in part are left alone (the model does not reorder them)."""
    groups = [group for group in problem.symmetry_groups if symmetry_views(problem, group) is not None]
    return relabel_by_first_use(assignment, groups, range(problem.n_requests))


def relabel_by_first_use(assignment: Assignment, groups: list, order) -> Assignment:
    """The one relabelling of interchangeable hosts: the used members of each group (disjoint lists of
    hosts, in their canonical order) are renamed onto the group's first members, in order of first use
    over the requests in `order` (parts, then storage copies)."""
    group_of = {int(h): g for g, members in enumerate(groups) for h in members}
    taken = [0] * len(groups)
    mapping: dict[int, int] = {}
    for r in order:
        if not assignment.placed[r]:
            continue
        for h in [p[0] for p in assignment.parts[r]] + list(assignment.storage_hosts[r]):
            g = group_of.get(int(h))
            if g is None or h in mapping:
                continue
            mapping[h] = int(groups[g][taken[g]])
            taken[g] += 1
    return assignment.relabelled(mapping)


def members_a_request_may_span(problem: PlacementProblem, r: int, uses_storage: bool, group_size: int) -> int:
    """Distinct members of one symmetry group (hosts on one rack) request `r` can hold: its compute
    parts span at most max_shards hosts, and at most one storage copy sits on the rack (copies lie on
    distinct racks; in whole mode copy 0 sits with the VM)."""
    extra = 1 if uses_storage and not problem.whole else 0
    return min(group_size, int(problem.max_shards[r]) + extra)


def span_count(parts: list[tuple[int, int, int, int, int]], rack: np.ndarray,
               distance: np.ndarray | None = None) -> float:
    """Extra hosts + what the racks cost that compute, memory and GPU parts span (storage copies do not
    count): what the spread penalty charges per unit of a request's weight. The racks cost their number less
    one, or with a topology (`distance`) the star around the best of them (`rack_star`, unrounded)."""
    hosts = {p[0] for p in parts}
    if not hosts:
        return 0
    racks = {int(rack[h]) for h in hosts}
    if distance is None:
        return (len(hosts) - 1) + (len(racks) - 1)
    return (len(hosts) - 1) + min(float(distance[k, list(racks)].sum()) for k in racks)


def rack_units(weight: int, distance: float) -> int:
    """Solver units a request of spread `weight` pays for a rack at `distance` from its star's centre."""
    return int(round(weight * float(distance)))


def rack_star(weight: int, racks, distance: np.ndarray) -> tuple[int, int]:
    """(solver units, centre) of the star a request of spread `weight` pays for `racks` under a topology: the
    least over its racks k of Σ over its racks l of `rack_units`(weight, distance[k, l]), and the k that gives
    it (the lowest on ties); the CP-SAT model's `rack_star` and `rack_centre`."""
    racks = sorted(racks)
    return min((sum(rack_units(weight, distance[k, l]) for l in racks), k) for k in racks)


def request_spread(problem: PlacementProblem, r: int, parts: list[tuple[int, int, int, int, int]]) -> int:
    """Spread charge of request `r` on `parts` (solver units): its weight × `span_count`, the rack terms
    rounded pair by pair as the CP-SAT model has them."""
    weight = int(problem.spread_weight[r])
    if problem.rack_distance is None or not weight:
        return weight * int(span_count(parts, problem.rack))
    hosts = {p[0] for p in parts}
    if not hosts:
        return 0
    racks = {int(problem.rack[h]) for h in hosts}
    return weight * (len(hosts) - 1) + rack_star(weight, racks, problem.rack_distance)[0]


def evaluate(problem: PlacementProblem, assignment: Assignment) -> ObjectiveTerms:
    """Objective terms of an assignment (same formula as the CP-SAT objective)."""
    unplaced = int(problem.unplaced_weight[~assignment.placed].sum())
    used = np.zeros(problem.n_hosts, dtype=bool)
    spread = 0
    for r in np.flatnonzero(assignment.placed):
        used[list(assignment.hosts_of(r))] = True
        spread += request_spread(problem, r, assignment.parts[r])
    active_cost = int(problem.cost[used & ~problem.active].sum())
    return ObjectiveTerms(unplaced, active_cost, spread, moves=move_cost(problem, assignment),
                          remote=remote_penalty(problem, assignment), hot_spots=hot_spot_penalty(problem, assignment),
                          speed=speed_penalty(problem, assignment))


HOT_RESOURCES = (VCPU, RAM)
"""The resources the hot-spot term watches (the ones a plan strands: a host full in one, idle in the other)."""


def hot_spots(problem: PlacementProblem, usage: np.ndarray) -> np.ndarray:
    """(H, len(HOT_RESOURCES)) bool: the plan's `usage` pushes the host past its hot-spot room."""
    if problem.hot_room is None:
        return np.zeros((problem.n_hosts, len(HOT_RESOURCES)), dtype=bool)
    room = problem.hot_room[:, HOT_RESOURCES]
    return (room >= 0) & (usage[:, HOT_RESOURCES] > room)


def hot_spot_penalty(problem: PlacementProblem, assignment: Assignment) -> int:
    if problem.hot_room is None or not problem.hot_price:
        return 0
    return int(problem.hot_price) * int(hot_spots(problem, host_usage(problem, assignment)).sum())


def speed_penalty(problem: PlacementProblem, assignment: Assignment) -> int:
    """Σ over placed requests' parts: vcpu × speed_cost(request, host)."""
    if problem.speed_price is None or not problem.speed_price.any():
        return 0
    return sum(int(p[1]) * problem.speed_cost(int(r), int(p[0]))
               for r in np.flatnonzero(assignment.placed) if problem.speed_price[r] for p in assignment.parts[r])


def remote_penalty(problem: PlacementProblem, assignment: Assignment) -> int:
    """The touched remote GiB of every placed request at its touched_price (solver units)."""
    memory = problem.memory
    if not memory.touched_price.any():
        return 0
    return sum(int(memory.touched_price[r]) * memory.touched(r, remote_gib(assignment.parts[r]))
               for r in np.flatnonzero(assignment.placed))


def move_cost(problem: PlacementProblem, assignment: Assignment) -> int:
    """The re-planning term of the objective: disruptions and moved GiB, plus BREACH per broken hard rule."""
    current = problem.current
    if current is None:
        return 0
    total, voluntary = 0, 0
    for r in np.flatnonzero(current.running):
        args = (int(r), bool(assignment.placed[r]), assignment.parts[r], assignment.storage_hosts[r])
        total += current.charge(*args, int(problem.demand[r, STORAGE]))
        voluntary += current.voluntary(*args)
    return total + current.budget_breach(voluntary)


def host_usage(problem: PlacementProblem, assignment: Assignment) -> np.ndarray:
    """(H, 5) resources an assignment takes on each host, remote-memory traffic included."""
    return assignment_usage(assignment, problem.demand[:, STORAGE], problem.memory, problem.n_hosts)


def assignment_usage(assignment: Assignment, storage_gib: np.ndarray, remote: RemoteMemory | int,
                     n_hosts: int) -> np.ndarray:
    """(H, 5) room an assignment takes on each host (storage_gib per copy of each request; memory held where
    the request has no vcpu adds NIC traffic by `remote`'s rule, or a flat Mbit/s per GiB): the one usage
    rule the searches, the warm start and what runs share."""
    usage = np.zeros((n_hosts, 5), dtype=np.int64)
    for r in np.flatnonzero(assignment.placed):
        parts = assignment.parts[r]
        rate = remote if isinstance(remote, (int, np.integer)) else remote.rate(int(r), remote_gib(parts))
        for h, v, m, n, g in parts:
            usage[h, VCPU] += v
            usage[h, RAM] += m
            usage[h, NET] += n + (rate * m if v == 0 else 0)
            usage[h, GPU] += g
        for h in assignment.storage_hosts[r]:
            usage[h, STORAGE] += storage_gib[r]
    return usage
