"""LP relaxation of the placement model through PuLP (HiGHS, else CBC): a lower bound on the objective.

Same variables and constraint families as the CP-SAT model with integrality dropped; the
zone choice and the rack terms of the spread penalty are left out too, which can only
lower the optimum, so the value stays a valid bound.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time

import numpy as np
import pulp

from shardplan.models.problem import GPU, NET, RAM, STORAGE, VCPU, PlacementProblem, PlanStatus, SolveResult

HANDOVER_S_PER_KVAR = 0.03
"""Seconds PuLP takes per 1,000 variables to hand the model to HiGHS and read the values back, outside
HiGHS's own time limit (measured: 1.4 s past the limit at 81,000 variables on 2 cores; about twice that)."""


def _left(time_limit_s: float, start: float, lp: pulp.LpProblem) -> float:
    """What is left of `time_limit_s` for HiGHS once the model is built: the limit covers building the LP
    in PuLP too (several seconds for 40,000 pairs) and handing it over, so the bound keeps to its share."""
    handover = HANDOVER_S_PER_KVAR * lp.numVariables() / 1000
    return max(time_limit_s - (time.perf_counter() - start) - handover, 0.1)


def _solver(time_limit_s: float):
    for name in ("HiGHS", "HiGHS_CMD", "PULP_CBC_CMD"):
        try:
            solver = pulp.getSolver(name, msg=False, timeLimit=time_limit_s)
        except Exception:  # not installed under that name
            continue
        if solver.available():
            return solver
    raise RuntimeError("no LP solver available to PuLP (install highspy)")


@contextlib.contextmanager
def quiet_banner():
    """Silence the solver's banner, printed by native code straight to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def lp_bound(problem: PlacementProblem, time_limit_s: float = 60.0) -> SolveResult:
    """Solve the relaxation; status optimal means `objective` is a valid lower bound."""
    start = time.perf_counter()
    lp = pulp.LpProblem("placement_relaxation", pulp.LpMinimize)
    var = lp.add_variable if hasattr(lp, "add_variable") else pulp.LpVariable  # PuLP ≥ 3.3 attaches variables
    num, den = problem.local_ram_per_vcpu
    loads: dict[int, list[list[object]]] = {}
    users: dict[int, list[object]] = {}
    unplaced, spread = [], []
    for r in range(problem.n_requests):
        d = problem.demand[r]
        placed = var(f"p{r}", 0, 1)
        unplaced.append(int(problem.unplaced_weight[r]) * (1 - placed))
        uses = []
        sums = {VCPU: [], RAM: [], NET: [], GPU: []}
        for i, h in enumerate(problem.compute_candidates[r]):
            h = int(h)
            u = var(f"u{r}_{h}", 0, 1)
            uses.append(u)
            per = loads.setdefault(h, [[], [], [], [], []])
            users.setdefault(h, []).append(u)
            if problem.whole:
                for res in (VCPU, RAM, NET, GPU):
                    if d[res]:
                        per[res].append(int(d[res]) * u)
                continue
            sizes = {}
            for res in (VCPU, RAM, NET, GPU):
                top = int(min(d[res], problem.free[h][res]))
                if res == GPU and not problem.gpu_ok[r][i]:
                    top = 0
                if d[res] and top:
                    x = var(f"x{res}_{r}_{h}", 0, top)
                    sizes[res] = x
                    sums[res].append(x)
                    per[res].append(x)
                    lp += x <= int(d[res]) * u
            if VCPU in sizes and num > 0:
                lp += den * sizes.get(RAM, 0) >= num * sizes[VCPU]
            rate = min((rate for _, rate in problem.memory.tiers(r)), default=0)
            if RAM in sizes and problem.allow_remote[r] and rate > 0:
                # remote traffic ≥ rate·ram − rate·ram_top·has_vcpu, has_vcpu ≤ use and ≤ vcpu (as in CP-SAT), at
                # the lowest rate the request's rule has (use pricing: the untouched one; its cap on remote GiB
                # and the price of touched GiB are left out), which can only lower the optimum
                top_ram = int(min(d[RAM], problem.free[h][RAM]))
                t = var(f"t{r}_{h}", 0)
                has = 0
                if VCPU in sizes:
                    has = var(f"h{r}_{h}", 0, 1)
                    lp += has <= u
                    lp += has <= sizes[VCPU]
                lp += t >= rate * sizes[RAM] - rate * top_ram * has
                per[NET].append(t)
        if problem.whole:
            lp += pulp.lpSum(uses) == placed
        else:
            for res, terms in sums.items():
                if d[res]:
                    lp += pulp.lpSum(terms) == int(d[res]) * placed
        if uses and not problem.whole:
            lp += pulp.lpSum(uses) <= int(problem.max_shards[r])
            if problem.spread_weight[r] and problem.max_shards[r] > 1:
                extra = var(f"e{r}", 0)
                lp += extra >= pulp.lpSum(uses) - placed
                spread.append(int(problem.spread_weight[r]) * extra)
        if d[STORAGE] > 0:
            copies = []
            by_rack: dict[int, list[object]] = {}
            for h in problem.storage_candidates[r]:
                h = int(h)
                c = var(f"c{r}_{h}", 0, 1)
                copies.append(c)
                by_rack.setdefault(int(problem.rack[h]), []).append(c)
                loads.setdefault(h, [[], [], [], [], []])[STORAGE].append(int(d[STORAGE]) * c)
                users.setdefault(h, []).append(c)
            lp += pulp.lpSum(copies) == int(problem.replicas[r]) * placed
            for group in by_rack.values():
                if len(group) > 1:
                    lp += pulp.lpSum(group) <= 1
    cost = []
    for h, per in loads.items():
        act = 1
        if not problem.active[h]:
            act = var(f"a{h}", 0, 1)
            cost.append(int(problem.cost[h]) * act)
            for u in users[h]:
                lp += u <= act
        for res in range(5):
            if per[res]:
                lp += pulp.lpSum(per[res]) <= int(problem.free[h][res]) * act
    lp += pulp.lpSum(unplaced) + pulp.lpSum(cost) + pulp.lpSum(spread)
    with quiet_banner():
        lp.solve(_solver(_left(time_limit_s, start, lp)))
    wall = time.perf_counter() - start
    return _as_bound(lp, wall, "pulp-lp")


def _as_bound(lp: pulp.LpProblem, wall: float, solver: str) -> SolveResult:
    """Only a relaxation solved to optimality is a bound: PuLP reports a time-limited HiGHS run as
    'Optimal' with a merely feasible solution, so the solution status is checked too."""
    status = pulp.LpStatus.get(lp.status, "Undefined")
    if status != "Optimal" or getattr(lp, "sol_status", pulp.LpSolutionOptimal) != pulp.LpSolutionOptimal:
        # unbounded, undefined, not solved or time-limited: no bound proven (PlanStatus documents the mapping)
        mapped = PlanStatus.INFEASIBLE if status == "Infeasible" else PlanStatus.TIMEOUT_NO_SOLUTION
        return SolveResult(mapped, None, None, None, wall, solver)
    value = float(pulp.value(lp.objective) or 0.0)
    return SolveResult(PlanStatus.OPTIMAL, value, value, 0.0, wall, solver)


def aggregate_bound(problem: PlacementProblem, time_limit_s: float = 60.0) -> SolveResult:
    """A coarser relaxation for fleets too large for the full LP: each zone is one big host whose
    capacity is the free capacity of its hosts, paid for pro rata (y_h ∈ [0,1] per host); GPUs and storage
    are pooled per zone the same way, whatever their model or tier. Requests may be placed fractionally.
    Every plan of the full model is feasible here at the same or higher objective, so it is a bound."""
    start = time.perf_counter()
    lp = pulp.LpProblem("placement_aggregate", pulp.LpMinimize)
    var = lp.add_variable if hasattr(lp, "add_variable") else pulp.LpVariable
    zones = sorted({int(z) for z in problem.zone})
    share: dict[tuple[int, int], object] = {}
    objective = []
    for r in range(problem.n_requests):
        hosts = np.union1d(problem.compute_candidates[r], problem.storage_candidates[r]).astype(int)
        mine = sorted({int(problem.zone[h]) for h in hosts})
        parts = []
        for z in mine:
            x = var(f"x{r}_{z}", 0, 1)
            share[(r, z)] = x
            parts.append(x)
        if parts:
            lp += pulp.lpSum(parts) <= 1
        objective.append(int(problem.unplaced_weight[r]) * (1 - pulp.lpSum(parts)))
    usable = np.zeros(problem.n_hosts, dtype=bool)  # hosts some request may use (up, past the filters)
    for candidates in (*problem.compute_candidates, *problem.storage_candidates):
        usable[np.asarray(candidates, dtype=int)] = True
    opened = {}
    for h in np.flatnonzero(usable):
        if not problem.active[h]:
            opened[h] = var(f"y{h}", 0, 1)
            objective.append(int(problem.cost[h]) * opened[h])
    level = lambda h: 1 if problem.active[h] else opened[h]  # noqa: E731
    for z in zones:
        in_zone = [int(h) for h in np.flatnonzero(usable) if int(problem.zone[h]) == z]
        for resource in (VCPU, RAM, NET, GPU, STORAGE):
            need = []
            for (r, zz), x in share.items():
                if zz != z or problem.demand[r][resource] == 0:
                    continue
                amount = int(problem.demand[r][resource])
                if resource == STORAGE:
                    amount *= int(problem.replicas[r])
                need.append(amount * x)
            if not need:
                continue
            supply = [int(problem.free[h][resource]) * level(h) for h in in_zone if problem.free[h][resource] > 0]
            lp += pulp.lpSum(need) <= pulp.lpSum(supply)
    lp += pulp.lpSum(objective)
    with quiet_banner():
        lp.solve(_solver(_left(time_limit_s, start, lp)))
    return _as_bound(lp, time.perf_counter() - start, "pulp-aggregate-lp")
