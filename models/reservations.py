"""Reservation sizing (pre-allocation) as a two-stage stochastic LP in Pyomo, solved by HiGHS.

For every group (a user's application type) and resource, choose how much capacity to
reserve for the next window. Each scenario is a possible peak demand of the window with
its probability. Reserved capacity above the scenario's peak is idle for the whole
window (idle price per unit-hour); peak demand above the reservation is shortfall
(penalty per unit-hour). The expected cost is least at the newsvendor critical fractile
penalty / (penalty + idle price) of the peak distribution, unless the free capacity of
the host classes that suit the group, or the quantile floor, binds.
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
    """Plain arrays: G groups, R resources, S scenarios, C host classes."""

    groups: tuple[str, ...]
    resources: tuple[str, ...]
    peaks: np.ndarray              # (G, R, S) peak demand of the window in each scenario
    probabilities: np.ndarray      # (S,) scenario weights, summing to 1
    floor: np.ndarray              # (G, R) reserve at least this (the quantile floor)
    classes: tuple[str, ...]
    class_capacity: np.ndarray     # (C, R) free capacity per host class; inf = unlimited
    suits: np.ndarray              # (G, C) bool: the group may reserve on hosts of this class
    idle_price: np.ndarray         # (R,) $ per unit-hour of reserved capacity left idle
    shortfall_penalty: np.ndarray  # (R,) $ per unit-hour of peak demand above the reservation
    window_hours: float = 24.0
    time_limit_s: float = 30.0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return len(self.groups), len(self.resources), self.peaks.shape[2], len(self.classes)


@dataclass(frozen=True)
class ReservationSolution:
    """The typed solver result and the reserved amounts (zeros when no solution was found)."""

    result: SolveResult
    reserved: np.ndarray           # (G, R)
    by_class: np.ndarray           # (G, C, R) where the reserved amounts are counted against capacity
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
    """The Pyomo model: one constraint family per rule, the objective as named expressions.

    Idle capacity is not a variable: in scenario s it is reserve − peak_s + short_s (the
    reservation above the peak), so only the shortfall needs one.
    """
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
    hours = float(problem.window_hours)
    p = problem.probabilities
    expected_peak = problem.peaks @ p
    m.idle_cost = pyo.Expression(expr=hours * sum(
        float(problem.idle_price[r]) * (m.reserve[g, r] - float(expected_peak[g, r])
                                        + sum(float(p[s]) * m.short[g, r, s] for s in m.S))
        for g in m.G for r in m.R))
    m.shortfall_cost = pyo.Expression(expr=hours * sum(
        float(p[s]) * float(problem.shortfall_penalty[r]) * m.short[g, r, s] for g in m.G for r in m.R for s in m.S))
    m.expected_cost = pyo.Objective(expr=m.idle_cost + m.shortfall_cost, sense=pyo.minimize)
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
    """Σ over groups of what they reserve on class c ≤ the class's free capacity (finite ones only)."""
    import pyomo.environ as pyo

    by_class: dict[int, list[int]] = {}
    for g, c in m.GC:
        by_class.setdefault(c, []).append(g)
    m.C = pyo.RangeSet(0, len(problem.classes) - 1) if problem.classes else pyo.Set(initialize=[])

    def rule(m, c, r):
        capacity = float(problem.class_capacity[c, r])
        if not math.isfinite(capacity) or not by_class.get(c):
            return pyo.Constraint.Skip
        return sum(m.placed[g, c, r] for g in by_class[c]) <= capacity

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
