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

import pulp

from models.problem import GPU, NET, RAM, STORAGE, VCPU, PlacementProblem, SolveResult


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
def _quiet():
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
    num, den = problem.local_ram_per_vcpu
    loads: dict[int, list[list[object]]] = {}
    users: dict[int, list[object]] = {}
    unplaced, spread = [], []
    for r in range(problem.n_requests):
        d = problem.demand[r]
        placed = pulp.LpVariable(f"p{r}", 0, 1)
        unplaced.append(int(problem.unplaced_weight[r]) * (1 - placed))
        uses = []
        sums = {VCPU: [], RAM: [], NET: [], GPU: []}
        for i, h in enumerate(problem.compute_candidates[r]):
            h = int(h)
            u = pulp.LpVariable(f"u{r}_{h}", 0, 1)
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
                    x = pulp.LpVariable(f"x{res}_{r}_{h}", 0, top)
                    sizes[res] = x
                    sums[res].append(x)
                    per[res].append(x)
                    lp += x <= int(d[res]) * u
            if VCPU in sizes and num > 0:
                lp += den * sizes.get(RAM, 0) >= num * sizes[VCPU]
            if RAM in sizes and problem.allow_remote[r] and problem.remote_mbps_per_gib > 0:
                # remote traffic ≥ rate·ram − rate·ram_top·has_vcpu, has_vcpu ≤ use and ≤ vcpu (as in CP-SAT)
                rate = problem.remote_mbps_per_gib
                top_ram = int(min(d[RAM], problem.free[h][RAM]))
                t = pulp.LpVariable(f"t{r}_{h}", 0)
                has = 0
                if VCPU in sizes:
                    has = pulp.LpVariable(f"h{r}_{h}", 0, 1)
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
                extra = pulp.LpVariable(f"e{r}", 0)
                lp += extra >= pulp.lpSum(uses) - placed
                spread.append(int(problem.spread_weight[r]) * extra)
        if d[STORAGE] > 0:
            copies = []
            by_rack: dict[int, list[object]] = {}
            for h in problem.storage_candidates[r]:
                h = int(h)
                c = pulp.LpVariable(f"c{r}_{h}", 0, 1)
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
            act = pulp.LpVariable(f"a{h}", 0, 1)
            cost.append(int(problem.cost[h]) * act)
            for u in users[h]:
                lp += u <= act
        for res in range(5):
            if per[res]:
                lp += pulp.lpSum(per[res]) <= int(problem.free[h][res]) * act
    lp += pulp.lpSum(unplaced) + pulp.lpSum(cost) + pulp.lpSum(spread)
    with _quiet():
        lp.solve(_solver(time_limit_s))
    wall = time.perf_counter() - start
    status = pulp.LpStatus.get(lp.status, "Undefined")
    if status != "Optimal":
        return SolveResult("timeout_no_solution" if status == "Not Solved" else status.lower(), None, None, None,
                           wall, "pulp-lp")
    value = float(pulp.value(lp.objective) or 0.0)
    return SolveResult("optimal", value, value, 0.0, wall, "pulp-lp")
