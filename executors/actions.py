"""From the current parts and a target plan to an ordered, safe list of actions.

Moves are make-before-break: the new part is created, its storage copied and
verified, and only then is the old part deleted. The order is found by replaying
the actions on a :class:`ClusterModel`: frees first, then copies, then allocations,
each only when it fits capacity and keeps every request at its copy floor.
Actions that can never run are reported, with the wait-for cycle when there is one.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from enum import StrEnum

from executors.base import CAPACITY_SLACK, HostSpec, Part, TargetPlan
from planner.schema import RESOURCES


class ActionKind(StrEnum):
    CREATE = "create_part"
    RESIZE = "resize_part"
    COPY = "copy_replica"
    DELETE = "delete_part"


@dataclass(frozen=True)
class Action:
    """One idempotent step. ``part`` is the part as the action leaves it (for a delete, the part removed)."""

    seq: int
    kind: ActionKind
    part: Part
    reason: str
    previous: Part | None = None
    """resize: the part before the change."""
    move_from: str | None = None
    """create/copy/delete that belong to a move: the host the part leaves."""

    def describe(self) -> str:
        return f"{self.kind.value:<13} {self.part.label:<24} {self.reason}"

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "kind": self.kind.value, "part": self.part.to_record(),
                           "reason": self.reason, "move_from": self.move_from,
                           "previous": None if self.previous is None else self.previous.to_record()})

    @classmethod
    def from_json(cls, text: str) -> "Action":
        record = json.loads(text)
        return cls(seq=record["seq"], kind=ActionKind(record["kind"]), part=Part.from_record(record["part"]),
                   reason=record["reason"], move_from=record["move_from"],
                   previous=None if record["previous"] is None else Part.from_record(record["previous"]))

    def frees(self) -> bool:
        """Deletes and shrinking resizes only give capacity back."""
        if self.kind is ActionKind.DELETE:
            return True
        if self.kind is ActionKind.RESIZE and self.previous is not None:
            return all(getattr(self.part, r) <= getattr(self.previous, r) for r in RESOURCES)
        return False


@dataclass(frozen=True)
class StuckAction:
    action: Action
    why: str


@dataclass
class ActionPlan:
    """The ordered actions, plus those that could not be ordered safely and why."""

    actions: list[Action]
    stuck: list[StuckAction] = field(default_factory=list)
    cycle: list[Action] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.stuck

    def explain_stuck(self) -> str:
        lines = [f"{len(self.stuck)} action(s) cannot run without over-committing capacity or losing a copy:"]
        lines += [f"  {s.action.kind.value} {s.action.part.label}: {s.why}" for s in self.stuck]
        if self.cycle:
            lines.append("wait-for cycle: " + " -> ".join(f"{a.kind.value} {a.part.label}" for a in self.cycle))
        return "\n".join(lines)


def copy_floors(current: list[Part], target: TargetPlan, hosts: dict[str, HostSpec]) -> dict[str, int]:
    """Complete storage copies (on distinct racks) each request must keep at every step.

    The plan's ``replicas``, capped by what the request has before the apply (a new
    copy cannot exist before it is made); 0 for requests the plan removes.
    """
    model = ClusterModel(hosts, current)
    planned = {p.request_id for p in target.parts if p.holds_storage}
    return {request_id: min(target.replicas.get(request_id, 1), model.copy_racks(request_id)) for request_id in planned}


class ClusterModel:
    """Parts and free capacity per host, replayed action by action (no I/O)."""

    def __init__(self, hosts: dict[str, HostSpec], parts: list[Part]) -> None:
        self.hosts = hosts
        self.parts: dict[tuple[str, int, str], Part] = {p.place: p for p in parts}
        self.free: dict[str, dict[str, float]] = {h: spec.capacity() for h, spec in hosts.items()}
        for part in parts:
            self._charge(part.host_id, part.demand(), +1)

    def _charge(self, host_id: str, demand: dict[str, float], sign: int) -> None:
        if host_id in self.free:
            for resource, amount in demand.items():
                self.free[host_id][resource] -= sign * amount

    def rack_of(self, host_id: str) -> str:
        spec = self.hosts.get(host_id)
        return spec.rack if spec else f"?{host_id}"

    def copy_racks(self, request_id: str, without: tuple[str, int, str] | None = None) -> int:
        """Distinct racks that hold a complete storage part of the request."""
        return len({self.rack_of(p.host_id) for place, p in self.parts.items()
                    if p.request_id == request_id and p.holds_storage and p.complete and place != without})

    def has_copy_source(self, part: Part) -> bool:
        return any(p.request_id == part.request_id and p.holds_storage and p.complete and place != part.place
                   for place, p in self.parts.items())

    def extra_demand(self, action: Action) -> dict[str, float]:
        """What the action allocates on its host (negative entries free capacity)."""
        if action.kind is ActionKind.CREATE:
            existing = self.parts.get(action.part.place)
            if existing is None:
                return action.part.demand()
            return {r: getattr(action.part, r) - getattr(existing, r) for r in RESOURCES}
        if action.kind is ActionKind.RESIZE:
            existing = self.parts.get(action.part.place) or action.previous
            return {r: getattr(action.part, r) - getattr(existing, r) for r in RESOURCES}
        if action.kind is ActionKind.DELETE and action.part.place in self.parts:
            return {r: -v for r, v in self.parts[action.part.place].demand().items()}
        return {r: 0.0 for r in RESOURCES}

    def violation(self, action: Action, floors: dict[str, int]) -> str | None:
        """Why the action cannot run now (capacity, copy floor, missing source), or None."""
        part = action.part
        if action.kind is ActionKind.COPY:
            if part.place not in self.parts:
                return "the part to fill does not exist yet"
            if not self.has_copy_source(part):
                return f"no complete copy of {part.request_id} to copy from"
            return None
        if action.kind is ActionKind.DELETE:
            existing = self.parts.get(part.place)
            if existing is None or not (existing.holds_storage and existing.complete):
                return None
            floor = floors.get(part.request_id, 0)
            left = self.copy_racks(part.request_id, without=part.place)
            if left < floor:
                return f"would leave {part.request_id} with {left} of {floor} complete copies on distinct racks"
            return None
        free = self.free.get(part.host_id)
        if free is None:
            return f"host {part.host_id} is not in the hosts table"
        for resource, amount in self.extra_demand(action).items():
            if amount > 0 and amount > free[resource] + CAPACITY_SLACK:
                return f"needs {resource} {amount:g} on {part.host_id}, {max(free[resource], 0):g} free"
        return None

    def apply(self, action: Action) -> None:
        part = action.part
        if action.kind is ActionKind.DELETE:
            existing = self.parts.pop(part.place, None)
            if existing is not None:
                self._charge(part.host_id, existing.demand(), -1)
            return
        if action.kind is ActionKind.COPY:
            self.parts[part.place] = self.parts[part.place].with_changes(complete=True)
            return
        self._charge(part.host_id, self.extra_demand(action), +1)
        existing = self.parts.get(part.place)
        complete = part.complete if existing is None else existing.complete
        self.parts[part.place] = part.with_changes(complete=complete)


def diff_actions(current: list[Part], target: TargetPlan) -> tuple[list[Action], dict[int, list[int]]]:
    """The unordered actions that turn ``current`` into the target, and what each waits for."""
    by_key: dict[tuple[str, int], list[Part]] = defaultdict(list)
    for part in current:
        by_key[part.key].append(part)
    has_source = {p.request_id for p in current if p.holds_storage and p.complete}
    actions: list[Action] = []
    waits: dict[int, list[int]] = defaultdict(list)

    def add(kind: ActionKind, part: Part, reason: str, previous: Part | None = None, move_from: str | None = None) -> int:
        actions.append(Action(seq=len(actions), kind=kind, part=part, reason=reason, previous=previous, move_from=move_from))
        return len(actions) - 1

    for wanted in target.parts:
        present = by_key.pop(wanted.key, [])
        here = next((p for p in present if p.host_id == wanted.host_id), None)
        elsewhere = [p for p in present if p.host_id != wanted.host_id]
        move_from = elsewhere[0].host_id if elsewhere else None
        ready: list[int] = []  # actions the old copies' deletion must wait for
        needs_fill = wanted.holds_storage and wanted.request_id in has_source
        if here is None:
            why = f"move from {move_from}" if move_from else "new in the plan"
            created = add(ActionKind.CREATE, wanted.with_changes(complete=not needs_fill), why, move_from=move_from)
            ready.append(created)
            if needs_fill:
                copied = add(ActionKind.COPY, wanted.with_changes(complete=True),
                             f"fill and verify the storage copy ({why})", move_from=move_from)
                waits[copied].append(created)
                ready.append(copied)
        else:
            resized = None
            if not here.same_shape(wanted):
                changed = [f"{c} {getattr(here, c)}→{getattr(wanted, c)}" for c in ("vcpu", "ram_gib", "storage_gib",
                           "net_gbps", "gpu", "replica", "role") if getattr(here, c) != getattr(wanted, c)]
                resized = add(ActionKind.RESIZE, wanted.with_changes(complete=here.complete),
                              "resize: " + ", ".join(changed), previous=here)
                ready.append(resized)
            if wanted.holds_storage and not here.complete:
                copied = add(ActionKind.COPY, wanted.with_changes(complete=True),
                             "finish filling an interrupted storage copy", move_from=move_from)
                if resized is not None:
                    waits[copied].append(resized)
                ready.append(copied)
        for old in elsewhere:
            deleted = add(ActionKind.DELETE, old, f"release after move to {wanted.host_id}", move_from=old.host_id)
            waits[deleted].extend(ready)
    for leftover in by_key.values():
        for old in leftover:
            add(ActionKind.DELETE, old, "not in the plan")
    return actions, waits


def plan_actions(current: list[Part], target: TargetPlan, hosts: dict[str, HostSpec] | None = None) -> ActionPlan:
    """Order the actions safely: frees first, then copies, then allocations; report what cannot run."""
    hosts = target.hosts if hosts is None else hosts
    actions, waits = diff_actions(current, target)
    floors = copy_floors(current, target, hosts)
    model = ClusterModel(hosts, current)
    pending = list(range(len(actions)))
    done: set[int] = set()
    order: list[Action] = []

    def phase(i: int) -> int:
        action = actions[i]
        return 0 if action.frees() else 1 if action.kind is ActionKind.COPY else 2

    while pending:
        chosen = None
        for wanted_phase in (0, 1, 2):
            for i in pending:
                if phase(i) == wanted_phase and all(w in done for w in waits[i]) and model.violation(actions[i], floors) is None:
                    chosen = i
                    break
            if chosen is not None:
                break
        if chosen is None:
            break
        model.apply(actions[chosen])
        done.add(chosen)
        pending.remove(chosen)
        order.append(actions[chosen])
    renumbered = [Action(seq=n, kind=a.kind, part=a.part, reason=a.reason, previous=a.previous, move_from=a.move_from)
                  for n, a in enumerate(order)]
    if not pending:
        return ActionPlan(renumbered)
    stuck = []
    for i in pending:
        unmet = [actions[w] for w in waits[i] if w not in done]
        why = model.violation(actions[i], floors) or (
            "waits for " + ", ".join(f"{a.kind.value} {a.part.label}" for a in unmet))
        stuck.append(StuckAction(actions[i], why))
    return ActionPlan(renumbered, stuck, _wait_cycle(actions, waits, pending, model, floors))


def _wait_cycle(actions: list[Action], waits: dict[int, list[int]], pending: list[int], model: ClusterModel,
                floors: dict[str, int]) -> list[Action]:
    """A cycle in the wait-for graph of the stuck actions (capacity waits on frees of the same host)."""
    graph: dict[int, list[int]] = {i: [w for w in waits[i] if w in pending] for i in pending}
    for i in pending:
        reason = model.violation(actions[i], floors) or ""
        if reason.startswith("needs"):
            graph[i] += [j for j in pending if j != i and actions[j].part.host_id == actions[i].part.host_id
                         and actions[j].frees()]
        elif reason.startswith("would leave"):
            graph[i] += [j for j in pending if j != i and actions[j].part.request_id == actions[i].part.request_id
                         and actions[j].kind in (ActionKind.CREATE, ActionKind.COPY)]
    state: dict[int, int] = {}
    stack: list[int] = []

    def visit(node: int) -> list[int] | None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in pending:
        if start not in state:
            found = visit(start)
            if found:
                return [actions[i] for i in found]
    return []
