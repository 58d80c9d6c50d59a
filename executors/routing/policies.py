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
- `shardplan` (the default): the part where the task is estimated to *finish* earliest — the wait for cores there
  (work queued and running ahead of it over the cores available, at the part's speed), the transfer of its input
  from the parts its parents ran on, its run at the part's speed, slowed by the share of its memory that would be
  remote and by how far that memory is (:class:`~shardplan.executors.routing.vm.Distances`).
"""
from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass

from shardplan.executors.routing.vm import VirtualMachine

POLICIES: dict[str, Callable[..., "Policy"]] = {}
DEFAULT_POLICY = "shardplan"


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
    """shardplan's router: earliest estimated finish time (see the module docstring)."""

    name = "shardplan"

    def choose(self, task: int, eligible: list[int], sim) -> int:
        if len(eligible) == 1:
            return eligible[0]
        return min(eligible, key=lambda p: (sim.estimate_finish(task, p), p))


for _policy in (RoundRobin, Random, LeastLoaded, PowerOfTwo, Locality, EarliestFinish):
    register_policy(_policy.name, _policy)


@dataclass(frozen=True)
class PolicyInfo:
    name: str
    doc: str


def describe() -> list[PolicyInfo]:
    return [PolicyInfo(name, (factory.__doc__ or "").strip().splitlines()[0] if factory.__doc__ else "")
            for name, factory in POLICIES.items()]
