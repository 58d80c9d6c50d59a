"""The router's offline reference: a window of tasks handed to the exact CP-SAT schedule
(shardplan.models.task_schedule) in the simulator's terms — run time at the part's speed plus the fixed overhead,
the parents' output fetched from other parts by distance — without memory contention or live load, so a policy's
replay of the same window under the same terms is comparable to it."""
from __future__ import annotations

import polars as pl

from shardplan.executors.routing.simulate import SCHEDULE_SCHEMA, SimOptions
from shardplan.executors.routing.tasks import TaskSet
from shardplan.executors.routing.vm import VirtualMachine
from shardplan.models.task_schedule import WindowProblem, WindowSchedule, solve_window


def window_problem(vm: VirtualMachine, tasks: TaskSet, options: SimOptions | None = None,
                   time_limit_s: float = 10.0, resolution_s: float = 0.01) -> WindowProblem:
    options = options or SimOptions()
    levels = vm.levels()
    run = [[float(tasks.work[t] / (tasks.cores[t] * p.cpu_score) + options.task_overhead_s) for p in vm.parts]
           for t in range(len(tasks))]
    edges = []
    for child, parents in enumerate(tasks.parents):
        if not parents:
            continue
        share = tasks.input_gib[child] / len(parents)
        for parent in parents:
            edges.append((parent, child, [[vm.distances.transfer_s(share, levels[a][b]) for b in range(len(vm.parts))]
                                          for a in range(len(vm.parts))]))
    return WindowProblem(list(map(float, tasks.arrival)), list(map(int, tasks.cores)), list(map(int, tasks.gpu)),
                         run, edges, [p.vcpu for p in vm.parts], [p.gpu for p in vm.parts], time_limit_s,
                         resolution_s)


def exact_schedule(vm: VirtualMachine, tasks: TaskSet, options: SimOptions | None = None,
                   time_limit_s: float = 10.0) -> tuple[WindowSchedule, pl.DataFrame]:
    """The optimal (or best found in the time) schedule of the window, and it as a schedule table."""
    solved = solve_window(window_problem(vm, tasks, options, time_limit_s))
    if not solved.part:
        return solved, pl.DataFrame(schema=SCHEDULE_SCHEMA)
    table = pl.DataFrame({"task_id": tasks.ids, "host_id": [vm.parts[p].host_id for p in solved.part],
                          "shard": [vm.parts[p].shard for p in solved.part], "start_s": solved.start_s,
                          "end_s": solved.end_s, "cores": [int(c) for c in tasks.cores],
                          "remote_gib": [0.0] * len(tasks)}, schema=SCHEDULE_SCHEMA)
    return solved, table
