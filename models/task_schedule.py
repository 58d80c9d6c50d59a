"""The exact schedule of a small window of tasks on a VM's parts (CP-SAT): the offline reference every routing
policy is measured against.

Each task goes to one part (an optional interval per eligible part); it starts after it arrives and after each
parent ends; its interval holds its cores for its run time there plus the transfer of each parent's output that
ran on another part (by the two parts' distance: what the simulator charges, the task fetching its input on its
cores); the tasks on a part never use more cores than it has at once (a cumulative constraint). The objective
is the makespan. Times are integers in `resolution_s` units,
rounded up, so the optimum is that of the rounded problem (reported beside it: status, objective, bound, gap, time).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model

from shardplan.models.problem import PlanStatus, SolveResult, relative_gap


@dataclass(frozen=True)
class WindowProblem:
    """Plain data: per task its arrival, cores, GPUs and run time on each part (None: not eligible); per edge
    (parent, child) the transfer seconds between every two parts; per part its vcpu and GPUs."""

    arrival: list[float]
    cores: list[int]
    gpu: list[int]
    run_s: list[list[float | None]]
    edges: list[tuple[int, int, list[list[float]]]]
    vcpu: list[int]
    part_gpu: list[int]
    time_limit_s: float = 10.0
    resolution_s: float = 0.01
    workers: int = 2
    seed: int = 0


@dataclass(frozen=True)
class WindowSchedule:
    result: SolveResult          # objective and bound: makespan in seconds
    part: list[int]
    start_s: list[float]
    end_s: list[float]


def solve_window(problem: WindowProblem) -> WindowSchedule:
    began = time.perf_counter()
    step = problem.resolution_s
    ticks = lambda s: int(math.ceil(s / step - 1e-9))  # noqa: E731
    n, m = len(problem.cores), len(problem.vcpu)
    horizon = ticks(max(problem.arrival, default=0.0)) + sum(
        ticks(max(r for r in row if r is not None)) for row in problem.run_s) + sum(
        ticks(max(max(pair) for pair in transfer)) for _u, _v, transfer in problem.edges) + 1
    model = cp_model.CpModel()
    start = [model.NewIntVar(ticks(problem.arrival[t]), horizon, f"s{t}") for t in range(n)]
    end = [model.NewIntVar(0, horizon, f"e{t}") for t in range(n)]
    on: list[dict[int, cp_model.IntVar]] = []
    for t in range(n):
        mine = {p: model.NewBoolVar(f"x{t}_{p}") for p in range(m)
                if problem.run_s[t][p] is not None and problem.cores[t] <= problem.vcpu[p]
                and problem.gpu[t] <= problem.part_gpu[p]}
        if not mine:
            raise ValueError(f"task {t} fits no part")
        model.AddExactlyOne(mine.values())
        on.append(mine)
    incoming: list[list[tuple[int, int, int, cp_model.IntVar]]] = [[] for _ in range(n)]  # (part of v, delay, b)
    for u, v, transfer in problem.edges:
        model.Add(start[v] >= end[u])
        for pu, xu in on[u].items():
            for pv, xv in on[v].items():
                delay = ticks(transfer[pu][pv])
                if delay > 0:
                    both = model.NewBoolVar(f"b{u}_{v}_{pu}_{pv}")
                    model.AddMultiplicationEquality(both, [xu, xv])
                    incoming[v].append((pv, delay, both))
    per_part: list[list[tuple[cp_model.IntervalVar, int]]] = [[] for _ in range(m)]
    gpu_part: list[list[tuple[cp_model.IntervalVar, int]]] = [[] for _ in range(m)]
    for t in range(n):
        for p, chosen in on[t].items():
            fetch = [(delay, both) for pv, delay, both in incoming[t] if pv == p]
            length = max(ticks(problem.run_s[t][p]), 1)
            size = model.NewIntVar(length, length + sum(d for d, _ in fetch), f"d{t}_{p}")
            model.Add(size == length + sum(d * b for d, b in fetch))
            interval = model.NewOptionalIntervalVar(start[t], size, end[t], chosen, f"i{t}_{p}")
            per_part[p].append((interval, problem.cores[t]))
            if problem.gpu[t]:
                gpu_part[p].append((interval, problem.gpu[t]))
    for p in range(m):
        if per_part[p]:
            model.AddCumulative([i for i, _ in per_part[p]], [c for _, c in per_part[p]], problem.vcpu[p])
        if gpu_part[p]:
            model.AddCumulative([i for i, _ in gpu_part[p]], [g for _, g in gpu_part[p]], problem.part_gpu[p])
    makespan = model.NewIntVar(0, horizon, "makespan")
    model.AddMaxEquality(makespan, end)
    model.Minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(problem.time_limit_s)
    solver.parameters.num_workers = int(problem.workers)
    solver.parameters.random_seed = int(problem.seed)
    code = solver.Solve(model)
    wall = time.perf_counter() - began
    status = {cp_model.OPTIMAL: PlanStatus.OPTIMAL, cp_model.FEASIBLE: PlanStatus.FEASIBLE,
              cp_model.INFEASIBLE: PlanStatus.INFEASIBLE}.get(code, PlanStatus.TIMEOUT_NO_SOLUTION)
    if not status.has_solution:
        return WindowSchedule(SolveResult(status, None, None, None, wall, "cp-sat"), [], [], [])
    objective, bound = solver.ObjectiveValue() * step, solver.BestObjectiveBound() * step
    parts = [next(p for p, x in on[t].items() if solver.Value(x)) for t in range(n)]
    return WindowSchedule(SolveResult(status, objective, bound, relative_gap(objective, bound), wall, "cp-sat"),
                          parts, [solver.Value(start[t]) * step for t in range(n)],
                          [solver.Value(end[t]) * step for t in range(n)])
