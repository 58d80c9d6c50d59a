"""Reservation sizing (pre-allocation) as a two-stage stochastic LP in Pyomo, solved by HiGHS.

For every row (a group — a user's application type — in one window of the night) and
resource, choose how much capacity to reserve, and on which host classes. Each scenario is
a possible peak demand of the window with its probability. Every reserved unit costs its
host class's price per unit-hour for the window's hours (what holding it costs: the
catalogue's `cost_per_hour` per unit of the class's hosts); peak demand above the
reservation is shortfall (penalty per unit-hour). The expected cost is least at the
newsvendor critical fractile 1 − price / penalty of the peak distribution, on the cheapest
class that suits the group, unless the free capacity of the classes, or the quantile floor,
binds.

Rows that share an envelope (`envelope_of`: the windows of one group) are held on hosts as
one block whose size is their largest: the class capacity counts the envelopes, so what
the sizing reserves is what the plan can hold.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from shardplan.models.problem import PlanStatus, SolveResult, relative_gap

SOLVERS: tuple[str, ...] = ("appsi_highs", "highs")
"""Pyomo solver names tried in order (both drive the installed highspy)."""


@dataclass(frozen=True)
class ReservationProblem:
    """Plain arrays: G rows (group × window), R resources, S scenarios, C host classes."""

    groups: tuple[str, ...]
    resources: tuple[str, ...]
    peaks: np.ndarray              # (G, R, S) peak demand of the row's window in each scenario
    probabilities: np.ndarray      # (S,) scenario weights, summing to 1
    floor: np.ndarray              # (G, R) reserve at least this (the quantile floor)
    classes: tuple[str, ...]
    class_capacity: np.ndarray     # (C, R) free capacity per host class; inf = unlimited
    suits: np.ndarray              # (G, C) bool: the row may reserve on hosts of this class
    reserve_price: np.ndarray      # (R,) or (C, R) $ per unit-hour of reserved capacity (per host class)
    shortfall_penalty: np.ndarray  # (R,) $ per unit-hour of peak demand above the reservation
    window_hours: float = 24.0
    time_limit_s: float = 30.0
    hours: np.ndarray | None = None        # (G,) hours of each row's window; None: window_hours for all
    envelope_of: np.ndarray | None = None  # (G,) int: rows with one id share one envelope; None: each its own

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.groups), len(self.resources), self.peaks.shape[2], len(self.classes)

    def row_hours(self) -> np.ndarray:
        return (np.full(len(self.groups), float(self.window_hours)) if self.hours is None
                else np.asarray(self.hours, dtype=float))

    def envelopes(self) -> np.ndarray:
        return np.arange(len(self.groups)) if self.envelope_of is None else np.asarray(self.envelope_of, dtype=int)

    def prices(self) -> np.ndarray:
        """(C, R) $ per unit-hour of reserved capacity on each class."""
        price = np.asarray(self.reserve_price, dtype=float)
        return np.broadcast_to(price, (len(self.classes), len(self.resources))) if price.ndim == 1 else price


@dataclass(frozen=True)
class ReservationSolution:
    """The typed solver result and the reserved amounts (zeros when no solution was found)."""

    result: SolveResult
    reserved: np.ndarray           # (G, R)
    by_class: np.ndarray           # (G, C, R) on which classes the reserved amounts are held
    expected_idle: np.ndarray      # (G, R) expected idle reserved units (against the scenario peaks)
    expected_shortfall: np.ndarray  # (G, R) expected peak demand above the reservation


def _solver(time_limit_s: float):
    """The first available Pyomo LP solver of SOLVERS, with its time limit set."""
    import pyomo.environ as pyo

    for name in SOLVERS:
        solver = pyo.SolverFactory(name)
        try:
            available = bool(solver.available())
        except Exception:  # a solver plugin whose library is missing raises instead of answering False
            available = False
        if available:
            config = getattr(solver, "config", None)
            if config is not None and hasattr(config, "time_limit"):  # the appsi / contrib.solver interfaces
                config.time_limit = time_limit_s
            else:
                solver.options["time_limit"] = time_limit_s
            return name, solver
    raise RuntimeError(f"no Pyomo LP solver available (tried {', '.join(SOLVERS)}; install highspy)")


def build_model(problem: ReservationProblem):
    """The Pyomo model: one constraint family per rule, the objective as named expressions
    (holding cost: what the reserved units cost their classes; shortfall cost: the expected
    peak demand left uncovered, at the penalty)."""
    import pyomo.environ as pyo

    n_groups, n_resources, n_scenarios, n_classes = problem.shape
    m = pyo.ConcreteModel("reservation_sizing")
    m.G, m.R, m.S = (pyo.RangeSet(0, n - 1) for n in (n_groups, n_resources, n_scenarios))
    m.GC = pyo.Set(dimen=2, initialize=[(g, c) for g in range(n_groups) for c in range(n_classes)
                                        if problem.suits[g, c]])
    m.placed = pyo.Var(m.GC, m.R, domain=pyo.NonNegativeReals)   # reserved units counted on class c
    m.short = pyo.Var(m.G, m.R, m.S, domain=pyo.NonNegativeReals)
    classes_of: dict[int, list[int]] = {}
    for g, c in m.GC:
        classes_of.setdefault(g, []).append(c)
    m.reserve = pyo.Expression(m.G, m.R, rule=lambda m, g, r: sum(m.placed[g, c, r] for c in classes_of.get(g, [])))
    add_shortfall(m, problem)
    add_quantile_floor(m, problem)
    add_class_capacity(m, problem)
    hours = problem.row_hours()
    price = problem.prices()
    p = problem.probabilities
    m.holding_cost = pyo.Expression(expr=sum(
        float(hours[g]) * float(price[c, r]) * m.placed[g, c, r] for g, c in m.GC for r in m.R))
    m.shortfall_cost = pyo.Expression(expr=sum(
        float(hours[g]) * float(p[s]) * float(problem.shortfall_penalty[r]) * m.short[g, r, s]
        for g in m.G for r in m.R for s in m.S))
    m.expected_cost = pyo.Objective(expr=m.holding_cost + m.shortfall_cost, sense=pyo.minimize)
    return m


def add_shortfall(m, problem: ReservationProblem) -> None:
    """short_s ≥ peak_s − reserve: the peak demand of scenario s that the reservation does not cover."""
    import pyomo.environ as pyo

    def rule(m, g, r, s):
        return m.short[g, r, s] + m.reserve[g, r] >= float(problem.peaks[g, r, s])

    m.shortfall = pyo.Constraint(m.G, m.R, m.S, rule=rule)


def add_quantile_floor(m, problem: ReservationProblem) -> None:
    """reserve ≥ floor, for groups that some host class suits (others cannot reserve at all)."""
    import pyomo.environ as pyo

    reachable = problem.suits.any(axis=1)

    def rule(m, g, r):
        if not reachable[g] or problem.floor[g, r] <= 0:
            return pyo.Constraint.Skip
        return m.reserve[g, r] >= float(problem.floor[g, r])

    m.quantile_floor = pyo.Constraint(m.G, m.R, rule=rule)


def add_class_capacity(m, problem: ReservationProblem) -> None:
    """Σ over envelopes of what they hold on class c ≤ the class's free capacity (finite ones only). An
    envelope holds on c at least what each of its rows places there (envelope ≥ placed); a row alone is
    its own envelope, so its placed amount counts directly."""
    import pyomo.environ as pyo

    envelope = problem.envelopes()
    finite = np.isfinite(np.asarray(problem.class_capacity, dtype=float))
    by_class: dict[int, list[int]] = {}
    for g, c in m.GC:
        by_class.setdefault(c, []).append(g)
    m.C = pyo.RangeSet(0, len(problem.classes) - 1) if problem.classes else pyo.Set(initialize=[])
    rows_of: dict[tuple[int, int], list[int]] = {}
    for c, rows in by_class.items():
        for g in rows:
            rows_of.setdefault((int(envelope[g]), c), []).append(g)
    shared = sorted(key for key, rows in rows_of.items() if len(rows) > 1 and finite[key[1]].any())
    m.EC = pyo.Set(dimen=2, initialize=shared)
    m.envelope = pyo.Var(m.EC, m.R, domain=pyo.NonNegativeReals)
    m.envelope_holds = pyo.Constraint(
        [(e, c, g, r) for e, c in shared for g in rows_of[e, c] for r in range(len(problem.resources))],
        rule=lambda m, e, c, g, r: m.envelope[e, c, r] >= m.placed[g, c, r])
    held_by: dict[int, list] = {}
    for (e, c), rows in rows_of.items():
        held_by.setdefault(c, []).append((e, rows))

    def rule(m, c, r):
        capacity = float(problem.class_capacity[c, r])
        if not math.isfinite(capacity) or not held_by.get(c):
            return pyo.Constraint.Skip
        return sum(m.envelope[e, c, r] if (e, c) in m.EC else m.placed[rows[0], c, r]
                   for e, rows in held_by[c]) <= capacity

    m.class_capacity = pyo.Constraint(m.C, m.R, rule=rule)


def solve_reservations(problem: ReservationProblem) -> ReservationSolution:
    """Build and solve the sizing LP; an infeasible model (floors above capacity) returns zeros."""
    import pyomo.environ as pyo

    started = time.perf_counter()
    n_groups, n_resources, n_scenarios, n_classes = problem.shape
    zeros = np.zeros((n_groups, n_resources))
    if n_groups == 0:
        return ReservationSolution(SolveResult(PlanStatus.OPTIMAL, 0.0, 0.0, 0.0, time.perf_counter() - started, "none"),
                                   zeros, np.zeros((0, n_classes, n_resources)), zeros, zeros)
    model = build_model(problem)
    name, solver = _solver(problem.time_limit_s)
    outcome = solver.solve(model, load_solutions=False)
    condition = str(outcome.solver.termination_condition)
    has_solution = condition in ("optimal", "maxTimeLimit", "feasible") and len(outcome.solution) > 0
    if condition == "optimal":
        status = PlanStatus.OPTIMAL
    elif has_solution:
        status = PlanStatus.FEASIBLE
    elif condition in ("infeasible", "infeasibleOrUnbounded"):
        status = PlanStatus.INFEASIBLE
    else:
        status = PlanStatus.TIMEOUT_NO_SOLUTION
    wall = time.perf_counter() - started
    if not has_solution:
        return ReservationSolution(SolveResult(status, None, None, None, wall, f"pyomo/{name}"),
                                   zeros, np.zeros((n_groups, n_classes, n_resources)), zeros, zeros)
    model.solutions.load_from(outcome)
    objective = float(pyo.value(model.expected_cost))
    bound = outcome.problem.lower_bound
    bound = objective if status == PlanStatus.OPTIMAL else (float(bound) if bound is not None and math.isfinite(bound) else None)
    reserved = np.array([[max(pyo.value(model.reserve[g, r]), 0.0) for r in range(n_resources)]
                         for g in range(n_groups)])
    by_class = np.zeros((n_groups, n_classes, n_resources))
    for g, c in model.GC:
        for r in range(n_resources):
            by_class[g, c, r] = max(pyo.value(model.placed[g, c, r]), 0.0)
    p = problem.probabilities
    idle = np.clip(reserved[:, :, None] - problem.peaks, 0.0, None) @ p
    short = np.clip(problem.peaks - reserved[:, :, None], 0.0, None) @ p
    return ReservationSolution(
        SolveResult(status, objective, bound, relative_gap(objective, bound), time.perf_counter() - started,
                    f"pyomo/{name}"),
        reserved, by_class, idle, short)
