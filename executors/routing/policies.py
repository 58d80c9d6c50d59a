"""Routing policies: one interface (`Policy.choose`), a registry by name.

A policy sees the task and the live state of every compute part (:class:`shardplan.executors.routing.simulate.
PartState`: its vcpu less the other tenants' load now, the cores its running tasks hold, what waits in its queue,
its speed, where the task's parents ran) and returns the index of the part to queue it on; only parts with the
GPUs the task needs are offered (`eligible`).

- `round_robin`: the next eligible part in turn (DESIGN.md's baseline; what a guest scheduler that ignores the
  split does).
- `random`: uniform over the eligible parts (seeded).
- `least_loaded`: the part with the least demand per core it can give now: (cores running + cores queued) /
  cores available.
- `power_of_two`: two eligible parts drawn at random, the less loaded of them (Sparrow's sampling).
- `locality`: the part that holds most of the task's input (its parents' outputs), unless its queue is longer than
  `locality_max_queue` tasks per available core; then the least loaded (delay scheduling's rule, with no delay).
- `shardplan` (the default): *late binding* — a ready task waits in the VM's own queue, most critical first
  (HEFT's upward rank: its run time plus its longest chain of descendants; among equal chains, short tasks that
  would mostly wait first, the rest longest first: `task_order`), and goes to the part where it would
  *finish* earliest: when that part has its cores free (what runs there and the tasks already promised to it),
  plus the transfer of its input from the parts its parents ran on, plus its run at the part's speed, slowed by
  the share of its memory that would be remote and by how far that memory is (:class:`~shardplan.executors.
  routing.vm.Distances`). When the best part is busy the task waits for it, and its cores are promised so that no
  later task takes them; among parts within `locality_slack` (2 % of the run) of the best finish, the one that
  holds most of its input wins. Cores that no waiting task is promised go to the shortest waiting tasks that fit
  them now (EASY backfilling: small tasks stop waiting behind long ones, and the tasks ahead keep their promised
  cores). A policy with `late_binding` set offers `place(task, eligible, sim, claimed)`
  → (part, start now?) instead of `choose`; the others queue each task on a part the moment it is ready.
"""
from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from shardplan.executors.routing.vm import VirtualMachine

POLICIES: dict[str, Callable[..., "Policy"]] = {}
DEFAULT_POLICY = "shardplan"
TASK_ORDERS = ("deadline", "longest_first", "short_then_long")
TASK_ORDER = "short_then_long"
"""Order of the waiting tasks that hold up equal chains (`task_order`):

- `deadline`: earliest deadline first, a task's deadline its ready time plus `deadline_factor` × its run (0: first
  come first served; large: shortest first);
- `longest_first`: longest run first (LPT: the last wave holds the short tasks, for the makespan);
- `short_then_long`: a task that waiting would slow more than `short_slowdown` times goes ahead, shortest first
  (SPT: its slowdown would be mostly waiting), the others longest first (LPT: for the makespan). The wait it faces
  is the waiting tasks' core-seconds, its own and those of the tasks released with it (the children of one parent
  are ready together, in whatever order they are handed over) over the cores the load leaves.

Chosen on held-out data (benchmarks/routing_tune.py: the Nextflow runs, Alibaba job samples disjoint from the scored
ones, and three busier such samples where the VM queues), never on the scored Makeflow and Alibaba runs: the lowest
median p99 slowdown against round-robin (then mean slowdown, then makespan) among the orders within 0.01 of the
best median makespan (there: short_then_long at short_slowdown 20, makespan 0.829x round-robin's and p99 0.247x;
first come first served 0.845x and 0.287x; longest first 0.829x and 0.425x)."""
DEADLINE_FACTOR = 0.0
"""`deadline` order's factor (see TASK_ORDER)."""
SHORT_SLOWDOWN = 20.0
"""`short_then_long`: a task is short when waiting the wait it faces would slow it more than this ((wait + run) /
run > this). Chosen with TASK_ORDER on the same held-out data by the same rule (2, 3, 5, 10, 20 and 50 tried)."""
DATA_S_PER_GIB = 8 * 1.073741824 / 10.0
"""shardplan's price of moving data, in seconds of finish time per GiB fetched from another part or held in remote
memory: 0.86 s, what one GiB takes on the default other-rack link (10 Gbps). The task's own transfer time is in its
finish already; this charges the move once more for the tenants who share that link. Set from that argument, not
fitted: on the Nextflow runs (benchmarks/routing_tune.py, not scored) no weight from 0 to 10 s/GiB changed a
makespan or a GiB moved, since those small workflows fit on the fastest part."""


def register_policy(name: str, factory: Callable[..., "Policy"]) -> None:
    POLICIES[name] = factory


def get_policy(name: str, vm: VirtualMachine, seed: int = 0, **options: float) -> "Policy":
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r} (known: {', '.join(POLICIES)})")
    return POLICIES[name](vm, seed=seed, **options)


class Policy:
    """Choose a part for a ready task. `sim` is the running simulation (its parts' state and the tasks' data)."""

    name = "policy"

    def __init__(self, vm: VirtualMachine, seed: int = 0, **options: float) -> None:
        self.vm = vm
        self.rng = _random.Random(seed)
        self.options = options

    def choose(self, task: int, eligible: list[int], sim) -> int:  # pragma: no cover - interface
        raise NotImplementedError


def pressure(state) -> float:
    """Demand per core a part can give now: (cores running + cores queued) / cores available."""
    return (state.busy + state.queued_cores) / max(state.available, 1)


class RoundRobin(Policy):
    name = "round_robin"

    def __init__(self, vm: VirtualMachine, seed: int = 0, **options: float) -> None:
        super().__init__(vm, seed, **options)
        self.next = 0

    def choose(self, task: int, eligible: list[int], sim) -> int:
        n = len(self.vm.parts)
        for step in range(n):
            part = (self.next + step) % n
            if part in eligible:
                self.next = part + 1
                return part
        return eligible[0]


class Random(Policy):
    name = "random"

    def choose(self, task: int, eligible: list[int], sim) -> int:
        return eligible[self.rng.randrange(len(eligible))]


class LeastLoaded(Policy):
    name = "least_loaded"

    def choose(self, task: int, eligible: list[int], sim) -> int:
        return min(eligible, key=lambda p: (pressure(sim.state[p]), p))


class PowerOfTwo(Policy):
    name = "power_of_two"

    def choose(self, task: int, eligible: list[int], sim) -> int:
        if len(eligible) == 1:
            return eligible[0]
        a, b = self.rng.sample(eligible, 2)
        return min((a, b), key=lambda p: (pressure(sim.state[p]), p))


class Locality(Policy):
    name = "locality"

    def choose(self, task: int, eligible: list[int], sim) -> int:
        held = sim.input_by_part(task)
        limit = self.options.get("locality_max_queue", 2.0)
        if held:
            best = max(eligible, key=lambda p: (held.get(p, 0.0), -p))
            state = sim.state[best]
            if held.get(best, 0.0) > 0 and state.queued_cores <= limit * max(state.available, 1):
                return best
        return min(eligible, key=lambda p: (pressure(sim.state[p]), p))


class EarliestFinish(Policy):
    """shardplan's router: earliest estimated finish time, bound late (see the module docstring)."""

    name = "shardplan"
    late_binding = True
    backfill_short = True

    def __init__(self, vm: VirtualMachine, seed: int = 0, **options: float) -> None:
        super().__init__(vm, seed, **options)
        self.task_order = str(options.get("task_order", TASK_ORDER))
        if self.task_order not in TASK_ORDERS:
            raise ValueError(f"unknown task_order {self.task_order!r} (known: {', '.join(TASK_ORDERS)})")
        self.deadline_factor = float(options.get("deadline_factor", DEADLINE_FACTOR))
        self.short_slowdown = float(options.get("short_slowdown", SHORT_SLOWDOWN))
        self.weight = float(options.get("data_s_per_gib", DATA_S_PER_GIB))
        self.slack = float(options.get("locality_slack", 0.02))

    def order_key(self, now: float, run: float, wait: float) -> tuple[float, ...]:
        """Where a ready task goes among the waiting tasks of equal chains (smallest first; see TASK_ORDER): `run`
        its mean run, `wait` the waiting core-seconds per core it faces."""
        if self.task_order == "longest_first":
            return (0.0, -run)
        if self.task_order == "short_then_long":
            return (0.0, run) if run * (self.short_slowdown - 1.0) < wait else (1.0, -run)
        return (now + self.deadline_factor * run, 0.0)

    def choose(self, task: int, eligible: list[int], sim) -> int:
        """Queue-at-arrival form (used when late binding is off): the part with the earliest estimated finish."""
        if len(eligible) == 1:
            return eligible[0]
        return min(eligible, key=lambda p: (sim.estimate_finish(task, p), p))

    def place(self, task: int, eligible: list[int], sim, claimed: list[int]) -> tuple[int, bool]:
        """(part, start now?): the part where the task would finish first — when its cores are free there (what
        runs and what waits for it counted), its input fetched, at the part's speed, slowed by remote memory;
        among parts within `locality_slack` of the best finish, the one that holds most of its input."""
        cores = sim.cores[task]
        now = sim.env.now
        weight = self.weight
        best: list[tuple[float, float, int]] = []
        gpu = sim.gpu[task]
        for part in eligible:
            free_at = sim.when_free(part, cores, claimed[part], gpu)
            run, moved = sim.assess(task, part)
            best.append(((free_at if free_at > now else now) + run + weight * moved, free_at, part))
        finish = min(b[0] for b in best)
        slack = self.slack * max(finish - now, 0.0)
        close = [b for b in best if b[0] <= finish + slack]
        if len(close) > 1:
            held = sim.input_by_part(task)
            close.sort(key=lambda b: (-held.get(b[2], 0.0), sim.remote_share(task, b[2]), b[0], b[2]))
        chosen = close[0] if len(close) > 1 else min(best)
        return chosen[2], chosen[1] <= now


for _policy in (RoundRobin, Random, LeastLoaded, PowerOfTwo, Locality, EarliestFinish):
    register_policy(_policy.name, _policy)


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    doc: str


def describe() -> list[PolicyInfo]:
    return [PolicyInfo(name, (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else "")
            for name, factory in POLICIES.items()]
