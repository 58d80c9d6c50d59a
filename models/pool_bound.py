"""The pool LP: a bound for fleets too large for the full LP, built through HiGHS's array API (highspy).

Hosts that look alike to every request (zone, GPU model, the CPU-speed and storage classes the requests'
needs tell apart, and the shape of what they have free: GiB per free vcpu, in powers of two) form a pool;
each pool is one big host holding its members' free capacity, paid for pro rata (y_h ∈ [0, 1] per host
that is off). A request is placed fractionally over the pools its invariants allow:

- requests alike (same pools, GPU model, one host or several, remote memory or not, GiB per vcpu within
  a factor √2, vcpu within a factor 2) share the pool variables, each keeping its own placed share, so
  the LP's size follows the fleet's variety, not its size;
- a request on one host (max_shards 1, or whole mode) brings its RAM, network and GPUs in proportion to
  its vcpu (between its class's least and most), only to pools with a member that holds all of it at once;
- a request that may span hosts buys each resource apart, but on every pool its RAM covers its local
  RAM per vcpu (invariant 4), and, unless it may hold remote memory, at most max_ram_skew × its GiB per
  vcpu plus 1 (the part cap of invariant 4, rounded up); its GPUs sit on pools of its model, beside at
  least one of its vcpu per host (invariant 5);
- each host gives at most min(free vcpu, free RAM ÷ local RAM per vcpu) vcpu, since every vcpu placed
  there brings its local RAM along;
- storage copies (replicas × size) go to storage pools of a high-enough tier and IOPS.

Every plan that keeps the invariants maps onto this LP at the same or a higher objective (its parts summed
per pool; the zone, the rack spread, the remote-memory price, hot spots, speed and moves are ≥ 0 and left
out), so its optimum is a lower bound. Unlike the zone-aggregate LP it does not let a RAM-hungry request
buy its vcpu on hosts whose RAM is gone, nor a GPU request its GPUs from another model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import highspy
import numpy as np

from shardplan.models.lp_bound import quiet_banner
from shardplan.models.problem import GPU, NET, RAM, STORAGE, VCPU, PlacementProblem, PlanStatus, SolveResult

COMPUTE = (VCPU, RAM, NET, GPU)


@dataclass(frozen=True)
class HostPools:
    """Which hosts pool together and which pools each request may use (problem order), from the invariants
    alone (not from the model's candidate lists, so the bound holds for every valid plan)."""

    compute_pool: np.ndarray   # (H,) int: compute pool of the host, −1 where no part may go (down, or full)
    storage_pool: np.ndarray   # (H,) int: storage pool of the host, −1 where no copy may go
    compute_ok: np.ndarray     # (R, P) bool: the request's vcpu and RAM may go to the pool
    gpu_ok: np.ndarray         # (R, P) bool: its GPUs may (the pool's hosts have its model)
    storage_ok: np.ndarray     # (R, Q) bool: its storage copies may

    @property
    def n_compute(self) -> int:
        return int(self.compute_ok.shape[1])

    @property
    def n_storage(self) -> int:
        return int(self.storage_ok.shape[1])


class _Lp:
    """Columns and COO rows, handed to HiGHS in one call."""

    def __init__(self) -> None:
        self.cost: list[float] = []
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.row_lower: list[float] = []
        self.row_upper: list[float] = []

    def column(self, cost: float, upper: float) -> int:
        self.cost.append(cost)
        self.lower.append(0.0)
        self.upper.append(upper)
        return len(self.cost) - 1

    def row(self, cols, values, lower: float, upper: float) -> None:
        index = len(self.row_lower)
        self.rows.append(np.full(len(cols), index, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.values.append(np.asarray(values, dtype=float))
        self.row_lower.append(lower)
        self.row_upper.append(upper)

    def solve(self, time_limit_s: float, offset: float) -> tuple[str, float | None]:
        n_rows = len(self.row_lower)
        rows = np.concatenate(self.rows) if self.rows else np.zeros(0, dtype=np.int64)
        cols = np.concatenate(self.cols) if self.cols else np.zeros(0, dtype=np.int64)
        values = np.concatenate(self.values) if self.values else np.zeros(0)
        order = np.lexsort((cols, rows))
        rows, cols, values = rows[order], cols[order], values[order]
        starts = np.searchsorted(rows, np.arange(n_rows)).astype(np.int32)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = len(self.cost), n_rows
        lp.col_cost_ = np.asarray(self.cost)
        lp.col_lower_, lp.col_upper_ = np.asarray(self.lower), np.asarray(self.upper)
        lp.row_lower_, lp.row_upper_ = np.asarray(self.row_lower), np.asarray(self.row_upper)
        lp.offset_ = offset
        lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
        lp.a_matrix_.start_ = np.append(starts, len(values)).astype(np.int32)
        lp.a_matrix_.index_ = cols.astype(np.int32)
        lp.a_matrix_.value_ = values
        with quiet_banner():  # the banner is printed on construction
            solver = highspy.Highs()
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("time_limit", max(float(time_limit_s), 0.1))
        solver.passModel(lp)
        solver.run()
        status = solver.getModelStatus()
        if status == highspy.HighsModelStatus.kOptimal:
            return "optimal", float(solver.getInfo().objective_function_value)
        if status == highspy.HighsModelStatus.kInfeasible:
            return "infeasible", None
        return "not solved", None


def vcpu_room(problem: PlacementProblem) -> np.ndarray:
    """(H,) the most vcpu a host can take: its free vcpu, and no more than its free RAM holds local RAM for."""
    num, den = problem.local_ram_per_vcpu
    free = problem.free
    if num <= 0:
        return free[:, VCPU].astype(float)
    return np.minimum(free[:, VCPU], free[:, RAM] * den // num).astype(float)


def request_classes(problem: PlacementProblem, pools: HostPools) -> np.ndarray:
    """(R,) class of each request: alike in what they may use (pools, GPU model, one host or several, remote
    memory or not), in GiB per vcpu (within a factor √2) and in vcpu (within a factor 2)."""
    d = problem.demand
    single = (problem.max_shards <= 1) | bool(problem.whole)
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.where(d[:, VCPU] > 0, np.floor(2 * np.log2(np.maximum(d[:, RAM], 1) / np.maximum(d[:, VCPU], 1))), 99)
        size = np.where(d[:, VCPU] > 0, np.floor(np.log2(np.maximum(d[:, VCPU], 1))), -1)
    keys = np.column_stack([single, problem.allow_remote, shape, size, d[:, GPU] > 0, d[:, STORAGE] > 0,
                            pools.compute_ok, pools.gpu_ok, pools.storage_ok]).astype(np.int64)
    _, classes = np.unique(keys, axis=0, return_inverse=True)
    return classes.reshape(-1)


def pool_bound(problem: PlacementProblem, pools: HostPools, time_limit_s: float = 60.0) -> SolveResult:
    """Solve the pool LP; status optimal means `objective` is a valid lower bound (solver units).
    Requests alike (`request_classes`) share the pool variables, each keeping its own placed share, so
    the LP's size follows the fleet's variety rather than its size; a class's shares obey the loosest
    of its members' rules (their GiB per vcpu between the class's least and most), still a relaxation."""
    start = time.perf_counter()
    p = problem
    lp = _Lp()
    num, den = p.local_ram_per_vcpu
    free = p.free.astype(float)
    supply = free.copy()
    supply[:, VCPU] = vcpu_room(p)
    usable = (pools.compute_pool >= 0) | (pools.storage_pool >= 0)
    opened = {int(h): lp.column(float(p.cost[h]), 1.0) for h in np.flatnonzero(usable & ~p.active)}
    gpus_per_host = np.zeros(pools.n_compute)
    for h in np.flatnonzero(pools.compute_pool >= 0):
        gpus_per_host[pools.compute_pool[h]] = max(gpus_per_host[pools.compute_pool[h]], free[h, GPU])
    compute_use: dict[tuple[int, int], tuple[list[int], list[float]]] = {}
    storage_use: dict[int, tuple[list[int], list[float]]] = {}

    def use(table, key, col: int) -> None:
        cols, coefs = table.setdefault(key, ([], []))
        cols.append(col)
        coefs.append(1.0)

    single = (p.max_shards <= 1) | bool(p.whole)
    holds = _holds_whole(p, pools, single)
    weight = p.unplaced_weight.astype(float)
    demand = p.demand.astype(float)
    placed = np.array([lp.column(-weight[r], 1.0) for r in range(p.n_requests)], dtype=np.int64)
    classes = request_classes(p, pools)
    for members in _members(classes, int(classes.max()) + 1 if len(classes) else 0):
        r0 = int(members[0])
        d = demand[members]
        total = d.sum(axis=0)
        one = bool(single[r0]) and total[VCPU] > 0
        amounts: dict[int, list[int]] = {k: [] for k in COMPUTE}
        with np.errstate(divide="ignore", invalid="ignore"):
            per_vcpu = d / np.maximum(d[:, VCPU:VCPU + 1], 1)
        lo, hi = per_vcpu.min(axis=0), per_vcpu.max(axis=0)
        skew = None
        if p.ram_skew is not None and not p.allow_remote[r0] and total[VCPU] > 0:
            # RAM on a vcpu part ≤ skew × the request's GiB per vcpu × its vcpu, rounded up: + 1 GiB per part,
            # so per vcpu at most 1 more
            skew = p.ram_skew[0] * hi[RAM] / p.ram_skew[1] + 1.0
        for q in np.flatnonzero(pools.compute_ok[r0]):
            if d[:, GPU].any() and one and not pools.gpu_ok[r0, q]:
                continue
            fitting = holds[members, q] if one else np.ones(len(members), dtype=bool)
            if one and not fitting.any():
                continue
            room = d[fitting].sum(axis=0)
            cols = {}
            for k in COMPUTE:
                if total[k] <= 0 or (k == GPU and (not pools.gpu_ok[r0, q] or total[VCPU] <= 0)):
                    continue
                cols[k] = lp.column(0.0, float(room[k]))
                amounts[k].append(cols[k])
                use(compute_use, (int(q), k), cols[k])
            vcpu = cols.get(VCPU)
            if vcpu is None:
                continue
            if one:  # on one host each resource comes in the request's own proportion to its vcpu
                for k in (RAM, NET, GPU):
                    if k in cols:
                        lp.row([cols[k], vcpu], [1.0, -lo[k]], 0.0, np.inf)
                        lp.row([cols[k], vcpu], [1.0, -hi[k]], -np.inf, 0.0)
                continue
            if RAM in cols and num > 0:
                lp.row([cols[RAM], vcpu], [1.0, -num / den], 0.0, np.inf)
            if RAM in cols and skew is not None:
                lp.row([cols[RAM], vcpu], [1.0, -skew], -np.inf, 0.0)
            if GPU in cols:  # each host holding its GPUs holds ≥ 1 of its vcpu, and ≤ gpus_per_host GPUs
                lp.row([cols[GPU], vcpu], [1.0, -max(gpus_per_host[q], 1.0)], -np.inf, 0.0)
        for k in COMPUTE:
            if total[k] > 0:
                lp.row([*amounts[k], *placed[members]], [1.0] * len(amounts[k]) + list(-d[:, k]), 0.0, 0.0)
        if total[STORAGE] > 0:
            copies = []
            for q in np.flatnonzero(pools.storage_ok[r0]):
                s = lp.column(0.0, float((p.replicas[members] * d[:, STORAGE]).sum()))
                copies.append(s)
                use(storage_use, int(q), s)
            need = p.replicas[members].astype(float) * d[:, STORAGE]
            lp.row([*copies, *placed[members]], [1.0] * len(copies) + list(-need), 0.0, 0.0)
    members_c = _members(pools.compute_pool, pools.n_compute)
    members_s = _members(pools.storage_pool, pools.n_storage)
    for (q, k), (cols, coefs) in compute_use.items():
        _capacity_row(lp, cols, coefs, members_c[q], supply[:, k], p.active, opened)
    for q, (cols, coefs) in storage_use.items():
        _capacity_row(lp, cols, coefs, members_s[q], free[:, STORAGE], p.active, opened)
    status, value = lp.solve(time_limit_s - (time.perf_counter() - start), float(weight.sum()))
    wall = time.perf_counter() - start
    if status == "optimal":
        return SolveResult(PlanStatus.OPTIMAL, value, value, 0.0, wall, "highs-pool-lp")
    mapped = PlanStatus.INFEASIBLE if status == "infeasible" else PlanStatus.TIMEOUT_NO_SOLUTION
    return SolveResult(mapped, None, None, None, wall, "highs-pool-lp")


def _members(pool: np.ndarray, n: int) -> list[np.ndarray]:
    order = np.argsort(pool, kind="stable")
    keys = pool[order]
    return [order[np.searchsorted(keys, q):np.searchsorted(keys, q, side="right")] for q in range(n)]


def _capacity_row(lp: _Lp, cols: list[int], coefs: list[float], members: np.ndarray, supply: np.ndarray,
                  active: np.ndarray, opened: dict[int, int]) -> None:
    """Σ use ≤ Σ_{active members} supply + Σ_{off members} supply · y_h."""
    on = float(supply[members[active[members]]].sum())
    off = [int(h) for h in members[~active[members]] if supply[h] > 0]
    lp.row([*cols, *(opened[h] for h in off)], [*coefs, *(-supply[h] for h in off)], -np.inf, on)


def _holds_whole(problem: PlacementProblem, pools: HostPools, single: np.ndarray) -> np.ndarray:
    """(R, P) bool: for requests on one host, pools with a member whose free room holds all of it at once
    (vcpu, RAM, network and GPUs); True elsewhere."""
    out = np.ones((problem.n_requests, pools.n_compute), dtype=bool)
    rows = np.flatnonzero(single)
    if not len(rows):
        return out
    hosts = np.flatnonzero(pools.compute_pool >= 0)
    # distinct free vectors per pool are few: test each request against those
    keys = np.column_stack([pools.compute_pool[hosts], problem.free[hosts][:, list(COMPUTE)]])
    shapes = np.unique(keys, axis=0)
    need = problem.demand[rows][:, list(COMPUTE)]
    for lo in range(0, len(rows), 512):
        block = need[lo:lo + 512]
        fits = np.all(shapes[None, :, 1:] >= block[:, None, :], axis=2)  # (B, S)
        holds = np.zeros((len(block), pools.n_compute), dtype=bool)
        for q in range(pools.n_compute):
            mine = shapes[:, 0] == q
            if mine.any():
                holds[:, q] = fits[:, mine].any(axis=1)
        out[rows[lo:lo + 512]] = holds
    return out
