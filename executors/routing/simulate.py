"""Discrete-event replay of a VM's tasks through a routing policy, on SimPy.

A task becomes *ready* when it has arrived and its parents have finished; the policy then routes it to a compute
part, where it waits in that part's queue (first come first served, with backfilling of the next
`backfill` queued tasks that fit) until the part has its cores free: the part's vcpu less the other tenants'
live load (:mod:`~shardplan.executors.routing.load`) less the cores its running tasks hold. A task needing more
cores than the load leaves starts when the part is otherwise idle (it never exceeds the part's vcpu). It then runs
for

    input transfer + work_core_s / (cores × cpu_score) × (1 + remote share × slowdown) + task_overhead_s

where the input transfer moves its parents' output from the parts they ran on (by distance, :class:`~shardplan.
executors.routing.vm.Distances`), and the remote share is the part of its memory that does not fit in the part's
local RAM beside what its running tasks hold (that memory lives on the VM's remote-memory host, or the nearest
other part). `dispatch_interval_s` makes the workflow manager start at most one task per interval (a Makeflow
master is one process; calibrated on the recorded BLAST runs, see benchmarks/routing.py).

The schedule (DESIGN.md): task_id, host_id, shard, start_s, end_s, cores, remote_gib (remote memory GiB +
input GiB fetched from other parts).
"""
from __future__ import annotations

import heapq
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import simpy

from shardplan.executors.routing.load import LoadSeries, idle
from shardplan.executors.routing.policies import Policy, get_policy
from shardplan.executors.routing.tasks import TaskSet
from shardplan.executors.routing.vm import VirtualMachine

SCHEDULE_SCHEMA = {"task_id": pl.Utf8, "host_id": pl.Utf8, "shard": pl.Int64, "start_s": pl.Float64,
                   "end_s": pl.Float64, "cores": pl.Int64, "remote_gib": pl.Float64}


@dataclass(frozen=True)
class SimOptions:
    """What shapes a replay besides the policy: `backfill` (queued tasks scanned for one that fits, ≥ 1),
    `task_overhead_s` (seconds added to every task: staging, process start), `dispatch_interval_s` (the
    workflow manager starts at most one task per interval; 0 = no limit), `late_scan` (waiting tasks a
    late-binding policy looks at per event)."""

    backfill: int = 8
    task_overhead_s: float = 0.0
    dispatch_interval_s: float = 0.0
    late_scan: int = 32


@dataclass
class PartState:
    """A compute part's live state during the replay."""

    vcpu: int
    available: int           # vcpu less the other tenants' load now
    gpu_free: int
    busy: int = 0            # cores of running tasks
    mem_used: float = 0.0
    queue: deque = field(default_factory=deque)
    queued_cores: int = 0
    queued_core_s: float = 0.0   # work of the queued tasks, core-seconds at this part's speed
    running: list = field(default_factory=list)  # heap of (end_s, cores, gpus, task)


@dataclass
class Replay:
    """A finished replay: the schedule and its figures."""

    policy: str
    schedule: pl.DataFrame
    makespan_s: float
    mean_slowdown: float
    p99_slowdown: float
    remote_gib: float
    decision_us_median: float
    decision_us_p99: float
    wall_s: float
    unfinished: int

    def figures(self) -> dict[str, float]:
        return {"policy": self.policy, "makespan_s": self.makespan_s, "mean_slowdown": self.mean_slowdown,
                "p99_slowdown": self.p99_slowdown, "remote_gib": self.remote_gib,
                "decision_us_median": self.decision_us_median, "decision_us_p99": self.decision_us_p99,
                "wall_s": self.wall_s, "unfinished": self.unfinished}


class Simulation:
    def __init__(self, vm: VirtualMachine, tasks: TaskSet, policy: Policy, loads: list[LoadSeries] | None = None,
                 options: SimOptions | None = None, fixed: list[int] | None = None) -> None:
        self.vm, self.tasks, self.policy = vm, tasks, policy
        # plain lists: the hot paths read one task at a time, and a list item is several times cheaper than numpy's
        self.work, self.cores = tasks.work.tolist(), [int(c) for c in tasks.cores]
        self.memory, self.gpu, self.input_gib = tasks.memory.tolist(), [int(g) for g in tasks.gpu], tasks.input_gib.tolist()
        self.local_ram = [p.local_ram_gib for p in vm.parts]
        self.speed = [p.cpu_score for p in vm.parts]
        self.options = options or SimOptions()
        self.loads = loads or [idle() for _ in vm.parts]
        if len(self.loads) < len(vm.parts):
            self.loads = [*self.loads, *[idle() for _ in range(len(vm.parts) - len(self.loads))]]
        self.fixed = fixed
        self.env = simpy.Environment()
        self.levels = vm.levels()
        self.remote_levels = [vm.remote_level(p) for p in vm.parts]
        self.state = [PartState(p.vcpu, p.vcpu, p.gpu) for p in vm.parts]
        n = len(tasks)
        self.waiting = np.array([len(p) for p in tasks.parents])
        self.part_of = np.full(n, -1)
        self.ready_at = np.full(n, np.nan)
        self.start = np.full(n, np.nan)
        self.end = np.full(n, np.nan)
        self.remote = np.zeros(n)
        self.remote_mem = np.zeros(n)
        self.decisions: list[int] = []
        self.done = 0
        self.all_done = self.env.event()
        self.next_dispatch = 0.0
        self.gpu_parts = [i for i, p in enumerate(vm.parts) if p.gpu > 0]
        self.all_parts = list(range(len(vm.parts)))
        self._eligible: dict[tuple[int, int], list[int]] = {}
        self.late = bool(getattr(policy, "late_binding", False)) and fixed is None
        # late binding: (−chain below, the policy's order key, arrival order, task) not yet placed
        self.pool: list[tuple[float, tuple, int, int]] = []
        self.own: list[float] = []
        self.rank = self._upward_rank() if self.late else None
        self.backfill_short = self.late and bool(getattr(policy, "backfill_short", False))
        self.short: list[tuple[float, int, int]] = []   # the same waiting tasks, shortest first (backfilling)
        self.waiting_core_s = 0.0   # Σ over the late-bound tasks not yet started of cores × mean run
        self._by_end: list[list | None] = [None] * len(vm.parts)
        self.placed = [False] * len(tasks)
        self.wake_pending = False
        self.seq = 0

    # --- what policies read -------------------------------------------------------------------------------

    def input_by_part(self, task: int) -> dict[int, float]:
        """GiB of the task's input held on each part (its parents' outputs, split evenly over its parents)."""
        parents = self.tasks.parents[task]
        if not parents:
            return {}
        share = self.input_gib[task] / len(parents)
        held: dict[int, float] = {}
        for parent in parents:
            part = int(self.part_of[parent])
            held[part] = held.get(part, 0.0) + max(share, 1e-9)
        return held

    def transfer_s(self, task: int, part: int) -> tuple[float, float]:
        """(seconds, GiB) to bring the task's input to `part` from where its parents ran."""
        if not self.tasks.parents[task]:
            return 0.0, 0.0
        seconds, moved = 0.0, 0.0
        for source, gib in self.input_by_part(task).items():
            if source != part and source >= 0:
                seconds += self.vm.distances.transfer_s(gib, self.levels[source][part])
                moved += gib
        return seconds, moved

    def remote_share(self, task: int, part: int) -> float:
        memory = self.memory[task]
        if memory <= 0:
            return 0.0
        over = self.state[part].mem_used + memory - self.local_ram[part]
        return min(over, memory) / memory if over > 0 else 0.0

    def costs(self, task: int, part: int) -> tuple[float, float, float]:
        """(running time on `part` now, input GiB fetched from other parts, GiB of its memory held remotely): the
        one rule a policy's estimate and the replay's start both use."""
        transfer, moved = self.transfer_s(task, part)
        share = self.remote_share(task, part)
        slow = 1.0 + share * self.vm.distances.slowdown(self.remote_levels[part]) if share else 1.0
        run = transfer + self.work[task] / (self.cores[task] * self.speed[part]) * slow + self.options.task_overhead_s
        return run, moved, share * self.memory[task]

    def assess(self, task: int, part: int) -> tuple[float, float]:
        """(running time on `part` now, GiB it would move there: input fetched + memory held remotely)."""
        run, moved, remote = self.costs(task, part)
        return run, moved + remote

    def run_s(self, task: int, part: int) -> float:
        """Running time on `part` now (no wait): transfer + compute slowed by remote memory + overhead."""
        return self.assess(task, part)[0]

    def estimate_finish(self, task: int, part: int) -> float:
        """When the task would finish if queued on `part` now (the shardplan policy's estimate)."""
        state = self.state[part]
        now = self.env.now
        cores = self.cores[task]
        free = state.available - state.busy
        if free >= cores and not state.queue:
            wait = 0.0
        else:
            running = sum((end - now) * c for end, c, _g, _t in state.running)
            backlog = running + state.queued_core_s
            wait = backlog / max(state.available, 1)
        return now + wait + self.run_s(task, part)

    def when_free(self, part: int, cores: int, claimed: int = 0, gpu: int = 0) -> float:
        """When `cores` cores (and `gpu` GPUs) are free on `part` for a new task, if nothing else starts there and
        the load stays as it is now (`claimed`: cores already promised to tasks waiting for this part)."""
        state = self.state[part]
        now = self.env.now
        free = state.available - state.busy - claimed
        gpus = state.gpu_free
        if free >= cores and gpus >= gpu:
            return now
        if state.busy == 0 and claimed == 0 and gpus >= gpu:
            return now  # a task bigger than what the load leaves runs when the part is otherwise idle
        moment = now
        ends = self._by_end[part]
        if ends is None:  # the running tasks by end time, kept until one starts or ends there
            ends = self._by_end[part] = sorted(state.running)
        for end, c, g, _t in ends:
            free += c
            gpus += g
            moment = end
            if free >= cores and gpus >= gpu:
                return moment
        return moment

    def _upward_rank(self) -> np.ndarray:
        """The longest chain of mean run times below a task (HEFT's upward rank less the task's own run): tasks that
        hold up most work go first; among equal chains (tasks with no children, the many leaves of a split), the
        policy's order (see `ready`)."""
        speed = float(np.mean(self.speed))
        mean_run = self.tasks.work / (self.tasks.cores * speed)
        self.own = mean_run.tolist()
        below = np.zeros(len(self.tasks))
        for task in reversed(self.tasks.order):
            children = self.tasks.children[task]
            if children:
                below[task] = max(below[c] + mean_run[c] for c in children)
        return below

    # --- the replay ---------------------------------------------------------------------------------------

    def eligible(self, task: int) -> list[int]:
        """The parts that can ever run the task: enough vcpu and GPUs (ValueError when none has both)."""
        key = (self.cores[task], self.gpu[task])
        found = self._eligible.get(key)
        if found is None:
            found = [i for i, p in enumerate(self.vm.parts) if p.vcpu >= key[0] and p.gpu >= key[1]]
            if not found:
                raise ValueError(f"task {self.tasks.ids[task]!r} needs {key[0]} cores and {key[1]} GPU(s) on one "
                                 f"part; no part of {self.vm.request_id} has both")
            self._eligible[key] = found
        return found

    def ready(self, task: int, wait: float = 0.0) -> None:
        """`wait`: late binding, the wait the task faces (see `_release`)."""
        self.ready_at[task] = self.env.now
        if self.late:
            self.seq += 1
            # among equal chains, the policy's order (`order_key`): it sees the task's mean run and its wait
            key = self.policy.order_key(self.env.now, self.own[task], wait)
            self.waiting_core_s += self.own[task] * self.cores[task]
            heapq.heappush(self.pool, (-float(self.rank[task]), key, self.seq, task))
            if self.backfill_short:
                heapq.heappush(self.short, (self.own[task], self.seq, task))
            self.place_pool()
            return
        if self.fixed is not None:
            part = self.fixed[task]
        else:
            began = time.perf_counter_ns()
            part = self.policy.choose(task, self.eligible(task), self)
            self.decisions.append(time.perf_counter_ns() - began)
        self.part_of[task] = part
        state = self.state[part]
        state.queue.append(task)
        state.queued_cores += self.cores[task]
        state.queued_core_s += self.work[task] / self.speed[part]
        self.dispatch(part)

    def dispatch(self, part: int) -> None:
        state = self.state[part]
        scanned = 0
        queue = state.queue
        while queue and scanned < len(queue) and scanned < self.options.backfill:
            task = queue[scanned]
            cores = self.cores[task]
            fits = (state.busy + cores <= state.available or state.busy == 0) and self.gpu[task] <= state.gpu_free
            if not fits:
                scanned += 1
                continue
            if self.options.dispatch_interval_s > 0 and self.env.now < self.next_dispatch:
                wake = self.env.timeout(self.next_dispatch - self.env.now)
                wake.callbacks.append(lambda _e, p=part: self.dispatch(p))
                return
            del queue[scanned]
            self._start(task, part)
            self.next_dispatch = self.env.now + self.options.dispatch_interval_s

    def place_pool(self) -> None:
        """Late binding: the waiting tasks, most critical first, each placed where it would finish earliest; a task
        whose best part is busy waits for it (its cores are promised, so no later task takes them) and the next one
        is looked at, up to `late_scan` tasks per event."""
        if not self.pool:
            return
        if self.options.dispatch_interval_s > 0 and self.env.now < self.next_dispatch:
            if not self.wake_pending:
                self.wake_pending = True
                wake = self.env.timeout(self.next_dispatch - self.env.now)
                wake.callbacks.append(lambda _e: self._wake())
            return
        claimed = [0] * len(self.state)
        free = [s.available - s.busy for s in self.state]
        if max(free) <= 0 and all(s.busy > 0 for s in self.state):
            return
        held = []
        scanned = 0
        while self.pool and scanned < self.options.late_scan:
            item = heapq.heappop(self.pool)
            task = item[-1]
            if self.placed[task]:  # started by the backfill since it was queued
                continue
            scanned += 1
            began = time.perf_counter_ns()
            part, now = self.policy.place(task, self.eligible(task), self, claimed)
            self.decisions.append(time.perf_counter_ns() - began)
            cores = self.cores[task]
            if now:
                self.part_of[task] = part
                self._start(task, part, queued=False)
                free[part] -= cores
                if self.options.dispatch_interval_s > 0:
                    self.next_dispatch = self.env.now + self.options.dispatch_interval_s
                    break
            else:
                claimed[part] += cores
                held.append(item)
            if all(f - c <= 0 for f, c in zip(free, claimed)):
                break
        for item in held:
            heapq.heappush(self.pool, item)
        if self.backfill_short and self.options.dispatch_interval_s <= 0 and any(f - c > 0 for f, c in zip(free, claimed)):
            self._backfill(free, claimed)

    def _backfill(self, free: list[int], claimed: list[int]) -> None:
        """Cores no waiting task is promised go to the shortest waiting tasks that can start on them now (EASY
        backfilling: the tasks ahead keep their promised cores, so they start no later for it)."""
        put_back = []
        misses = 0
        while self.short and misses < self.options.late_scan:
            item = heapq.heappop(self.short)
            task = item[2]
            if self.placed[task]:
                continue
            cores, gpu = self.cores[task], self.gpu[task]
            fits = [p for p in self.eligible(task) if free[p] - claimed[p] >= cores and self.state[p].gpu_free >= gpu]
            if not fits:
                put_back.append(item)
                misses += 1
                continue
            began = time.perf_counter_ns()
            part, _ = self.policy.place(task, fits, self, claimed)
            self.decisions.append(time.perf_counter_ns() - began)
            self.part_of[task] = part
            self._start(task, part, queued=False)
            free[part] -= cores
            if all(f - c <= 0 for f, c in zip(free, claimed)):
                break
        for item in put_back:
            heapq.heappush(self.short, item)

    def _wake(self) -> None:
        self.wake_pending = False
        self.place_pool()

    def _start(self, task: int, part: int, queued: bool = True) -> None:
        state = self.state[part]
        cores = self.cores[task]
        if queued:
            state.queued_cores -= cores
            state.queued_core_s -= self.work[task] / self.speed[part]
        duration, moved, remote = self.costs(task, part)
        now = self.env.now
        self.placed[task] = True
        if self.late:
            self.waiting_core_s -= self.own[task] * cores
        self.start[task] = now
        self.remote_mem[task] = remote
        self.remote[task] = remote + moved
        state.busy += cores
        state.gpu_free -= self.gpu[task]
        state.mem_used += self.memory[task]
        heapq.heappush(state.running, (now + duration, cores, self.gpu[task], task))
        self._by_end[part] = None
        event = self.env.timeout(duration)
        event.callbacks.append(lambda _e, t=task, p=part: self._finish(t, p))

    def _finish(self, task: int, part: int) -> None:
        state = self.state[part]
        now = self.env.now
        self.end[task] = now
        cores = self.cores[task]
        state.busy -= cores
        state.gpu_free += self.gpu[task]
        state.mem_used -= self.memory[task]
        # drop this task's entry from the running heap
        for i, entry in enumerate(state.running):
            if entry[3] == task:
                state.running[i] = state.running[-1]
                state.running.pop()
                heapq.heapify(state.running)
                self._by_end[part] = None
                break
        self.done += 1
        released = []
        for child in self.tasks.children[task]:
            self.waiting[child] -= 1
            if self.waiting[child] == 0:
                released.append(child)
        self._release(released)
        if self.late:
            self.place_pool()
        else:
            self.dispatch(part)
        if self.done == len(self.tasks):
            self.all_done.succeed()

    def _release(self, tasks) -> None:
        """Tasks whose parents are done: those whose arrival has come are ready together, the others at their
        arrival, each group of one arrival time together. Each task of such a burst faces the same wait, whatever
        order they are handed over in: the waiting tasks' core-seconds, the whole burst's included, over the
        cores the load leaves now."""
        now = self.env.now
        burst: list[int] = []
        later: dict[float, list[int]] = {}
        for task in tasks:
            arrival = float(self.tasks.arrival[task])
            if arrival > now:
                later.setdefault(arrival, []).append(int(task))
            else:
                burst.append(int(task))
        for arrival, group in later.items():
            event = self.env.timeout(arrival - now)
            event.callbacks.append(lambda _e, g=group: self._release(g))
        wait = 0.0
        if self.late and burst:
            cores = max(sum(max(s.available, 1) for s in self.state), 1)
            wait = (self.waiting_core_s + sum(self.own[t] * self.cores[t] for t in burst)) / cores
        for task in burst:
            self.ready(task, wait)

    def _load(self, part: int, series: LoadSeries) -> None:
        taken = series.cores_taken(self.vm.parts[part].vcpu)
        state = self.state[part]
        state.available = int(self.vm.parts[part].vcpu - taken[0])

        def step(i: int) -> None:
            state.available = int(self.vm.parts[part].vcpu - taken[i])
            if self.late:
                self.place_pool()
            else:
                self.dispatch(part)
            if i + 1 < len(taken):
                event = self.env.timeout(series.times[i + 1] - series.times[i])
                event.callbacks.append(lambda _e: step(i + 1))

        if len(taken) > 1:
            event = self.env.timeout(series.times[1])
            event.callbacks.append(lambda _e: step(1))

    def run(self) -> Replay:
        began = time.perf_counter()
        for part, series in enumerate(self.loads[:len(self.vm.parts)]):
            self._load(part, series)
        self._release([int(t) for t in np.flatnonzero(self.waiting == 0)])
        if len(self.tasks):
            self.env.run(until=self.all_done)
        wall = time.perf_counter() - began
        return self._replay(wall)

    def _replay(self, wall: float) -> Replay:
        tasks, vm = self.tasks, self.vm
        finished = ~np.isnan(self.end)
        parts = self.part_of
        schedule = pl.DataFrame({
            "task_id": [tasks.ids[i] for i in np.flatnonzero(finished)],
            "host_id": [vm.parts[parts[i]].host_id for i in np.flatnonzero(finished)],
            "shard": [vm.parts[parts[i]].shard for i in np.flatnonzero(finished)],
            "start_s": self.start[finished], "end_s": self.end[finished],
            "cores": tasks.cores[finished].astype(np.int64), "remote_gib": self.remote[finished],
        }, schema=SCHEDULE_SCHEMA)
        ideal = tasks.work / (tasks.cores * vm.fastest)
        slowdown = (self.end - self.ready_at)[finished] / np.maximum(ideal[finished], 1e-9)
        decisions = np.array(self.decisions, dtype=float) / 1000.0 if self.decisions else np.zeros(1)
        return Replay(self.policy.name if self.fixed is None else "replay", schedule,
                      float(np.nanmax(self.end)) if finished.any() else 0.0,
                      float(slowdown.mean()) if len(slowdown) else 0.0,
                      float(np.percentile(slowdown, 99)) if len(slowdown) else 0.0,
                      float(self.remote.sum()), float(np.median(decisions)), float(np.percentile(decisions, 99)),
                      wall, int((~finished).sum()))


def route(vm: VirtualMachine, tasks: TaskSet, policy: str = "shardplan", loads: list[LoadSeries] | None = None,
          options: SimOptions | None = None, seed: int = 0, fixed: list[int] | None = None) -> Replay:
    """Replay `tasks` on `vm` through the named policy (or a fixed part per task, `fixed`)."""
    return Simulation(vm, tasks, get_policy(policy, vm, seed=seed), loads, options, fixed).run()


def lower_bound(vm: VirtualMachine, tasks: TaskSet, loads: list[LoadSeries] | None = None) -> dict[str, float]:
    """No schedule can finish earlier than either: the critical path with every task at the VM's fastest part
    (arrivals included), or the moment the VM's capacity — Σ over parts of (vcpu less the live load) × cpu_score,
    integrated from the first arrival — has given the tasks' total work (without `loads`, the load is taken as
    none, which only lowers the bound). A task is never given more cores than the load leaves (but a part's only
    task; the bound ignores that exception)."""
    critical = tasks.critical_path_s(vm.fastest)
    first = float(tasks.arrival.min()) if len(tasks) else 0.0
    total = float(tasks.work.sum())
    capacity = sum(p.vcpu * p.cpu_score for p in vm.parts)
    volume = first + total / capacity
    if loads and total > 0:
        volume = _fill_time(vm, loads, first, total)
    return {"critical_path_s": critical, "work_over_capacity_s": volume, "lower_bound_s": max(critical, volume)}


def _fill_time(vm: VirtualMachine, loads: list[LoadSeries], first: float, total: float) -> float:
    """The first time T with ∫_first^T Σ_p (vcpu_p − load_p(t)) × cpu_score_p dt ≥ total."""
    series = [*loads[:len(vm.parts)], *[idle() for _ in range(len(vm.parts) - len(loads))]]
    moments = np.unique(np.concatenate([[first], *[s.times[s.times > first] for s in series]]))
    rates = np.zeros(len(moments))
    for part, s in zip(vm.parts, series):
        taken = s.cores_taken(part.vcpu)
        index = np.clip(np.searchsorted(s.times, moments, side="right") - 1, 0, len(taken) - 1)
        rates += np.maximum(part.vcpu - taken[index], 0) * part.cpu_score
    spans = np.diff(np.append(moments, np.inf))
    given = 0.0
    for moment, rate, span in zip(moments, rates, spans):
        if rate > 0 and given + rate * span >= total:
            return float(moment + (total - given) / rate)
        given += rate * span
    return float(moments[-1])


def split_cost(vm: VirtualMachine, tasks: TaskSet, loads: list[LoadSeries] | None = None, policy: str = "shardplan",
               seed: int = 0, split: Replay | None = None) -> dict[str, float | None]:
    """What the split costs the tasks: the makespan on the VM's parts against the same VM on one host of the same
    capacity (:meth:`VirtualMachine.one_host`) under the parts' pooled load. Above 1: the split slows the work."""
    from shardplan.executors.routing.load import pooled

    split = split or route(vm, tasks, policy, loads, seed=seed)
    whole = route(vm.one_host(), tasks, policy, None if loads is None else [pooled(loads, [p.vcpu for p in vm.parts])],
                  seed=seed)
    return {"split_makespan_s": split.makespan_s, "one_host_makespan_s": whole.makespan_s,
            "split_cost": split.makespan_s / whole.makespan_s if whole.makespan_s > 0 else None}
