"""From the current parts and a target plan to an ordered, safe list of actions.

Moves are make-before-break: the new part is created, its storage copied and
verified, and only then is the old part deleted. The order is found by replaying
the actions on a :class:`ClusterModel`: frees first, then copies, then allocations,
each only when it fits capacity and keeps every request at its copy floor.
When parts wait on each other's capacity (full hosts swapping parts, common when a
whole fleet is re-planned), one of the parts that leaves a full host is first moved
to a staging host with room in the same zone (make-before-break there too) and
moved on to its planned host later. Actions that can never run are reported, with
the wait-for cycle when there is one.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shardplan.executors.base import (  # noqa: F401
    CAPACITY_SLACK,
    Action,
    ActionKind,
    HostSpec,
    Part,
    TargetPlan,
    hosts_from_frame,
    parts_from_frame,
)
from shardplan.schema import RESOURCES, tier_rank


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
        hosts = sorted({s.action.part.host_id for s in self.stuck})
        lines.append(f"what would free them: room on {', '.join(hosts[:8])}{' …' if len(hosts) > 8 else ''} (the parts "
                     "above wait for it). A plan made as an edit of what runs orders its moves within capacity: "
                     "`shardplan status --state STATE --format parquet --out current.parquet`, then `shardplan plan "
                     "… --current current.parquet` (or `--previous` the plan directory last applied), and apply that")
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
        self.by_request: dict[str, set[tuple[str, int, str]]] = defaultdict(set)
        self.free: dict[str, dict[str, float]] = {h: spec.capacity() for h, spec in hosts.items()}
        for part in parts:
            self.by_request[part.request_id].add(part.place)
            self._charge(part.host_id, part.demand(), +1)

    def _charge(self, host_id: str, demand: dict[str, float], sign: int) -> None:
        if host_id in self.free:
            for resource, amount in demand.items():
                self.free[host_id][resource] -= sign * amount

    def rack_of(self, host_id: str) -> str:
        spec = self.hosts.get(host_id)
        return spec.rack if spec else f"?{host_id}"

    def parts_of(self, request_id: str) -> list[Part]:
        return [self.parts[place] for place in self.by_request.get(request_id, ())]

    def copy_racks(self, request_id: str, without: tuple[str, int, str] | None = None) -> int:
        """Distinct racks that hold a complete storage part of the request."""
        return len({self.rack_of(p.host_id) for p in self.parts_of(request_id)
                    if p.holds_storage and p.complete and p.place != without})

    def has_copy_source(self, part: Part) -> bool:
        return any(p.holds_storage and p.complete and p.place != part.place for p in self.parts_of(part.request_id))

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
        existing = self.parts.get(part.place)
        drops_copy = existing is not None and existing.holds_storage and existing.complete and (
            action.kind is ActionKind.DELETE or not part.holds_storage)
        if drops_copy:  # a delete, or a resize that turns a storage copy into a part without storage
            floor = floors.get(part.request_id, 0)
            left = self.copy_racks(part.request_id, without=part.place)
            if left < floor:
                return f"would leave {part.request_id} with {left} of {floor} complete copies on distinct racks"
        if action.kind is ActionKind.DELETE:
            return None
        free = self.free.get(part.host_id)
        if free is None:
            return f"host {part.host_id} is not in the hosts table"
        status = self.hosts[part.host_id].status
        if existing is None and status != "up":
            return f"host {part.host_id} is {status}: it takes no new parts"
        for resource, amount in self.extra_demand(action).items():
            if amount > 0 and amount > free[resource] + CAPACITY_SLACK:
                return f"needs {resource} {amount:g} on {part.host_id}, {max(free[resource], 0):g} free"
        return None

    def apply(self, action: Action) -> None:
        part = action.part
        if action.kind is ActionKind.DELETE:
            existing = self.parts.pop(part.place, None)
            if existing is not None:
                self.by_request[part.request_id].discard(part.place)
                self._charge(part.host_id, existing.demand(), -1)
            return
        if action.kind is ActionKind.COPY:
            self.parts[part.place] = self.parts[part.place].with_changes(complete=True)
            return
        self._charge(part.host_id, self.extra_demand(action), +1)
        existing = self.parts.get(part.place)
        self.parts[part.place] = part.with_changes(complete=kept_complete(existing, part))
        self.by_request[part.request_id].add(part.place)


def kept_complete(existing: Part | None, part: Part) -> bool:
    """Completeness after creating or resizing ``part`` over ``existing`` (same place).

    A resize keeps the copy's state, unless the part gains or loses storage: then the
    new shape's own flag counts (a compute part turned into a storage copy is empty
    until it is filled; a part without storage is always complete).
    """
    if existing is None or existing.holds_storage != part.holds_storage:
        return part.complete or not part.holds_storage
    return existing.complete


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
            gains_storage = wanted.holds_storage and not here.holds_storage
            if not here.same_shape(wanted):
                changed = [f"{c} {getattr(here, c)}→{getattr(wanted, c)}" for c in ("vcpu", "ram_gib", "storage_gib",
                           "net_gbps", "gpu", "replica", "role") if getattr(here, c) != getattr(wanted, c)]
                # a part that becomes a storage copy is empty until filled (unless the request has no data yet)
                complete = (not needs_fill) if gains_storage else (here.complete or not wanted.holds_storage)
                resized = add(ActionKind.RESIZE, wanted.with_changes(complete=complete),
                              "resize: " + ", ".join(changed), previous=here)
                ready.append(resized)
            if wanted.holds_storage and (not here.complete or (gains_storage and needs_fill)):
                copied = add(ActionKind.COPY, wanted.with_changes(complete=True),
                             "fill and verify the storage copy (the part becomes one)" if gains_storage
                             else "finish filling an interrupted storage copy", move_from=move_from)
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


def plan_between(hosts: pl.DataFrame, requests: pl.DataFrame, before: pl.DataFrame, after: pl.DataFrame) -> ActionPlan:
    """The ordered actions from one shards table to another, on an input hosts table (the copies each request
    keeps from the requests table): what an apply of `after` onto `before` would run."""
    spec = hosts_from_frame(hosts)
    replicas = dict(requests.select("request_id", "replicas").iter_rows())
    target = TargetPlan(Path("."), parts_from_frame(after), spec, replicas, "plan")
    return plan_actions(list(parts_from_frame(before)), target, spec)


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

    staged: set[tuple[str, int]] = set()
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
            if _stage_a_leaver(actions, waits, pending, done, model, floors, staged):
                continue
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


def _staging_host(model: ClusterModel, part: Part, leaving: str, avoid: set[str],
                  booked: dict[str, dict[str, float]]) -> str | None:
    """An up host in the leaving host's zone with room for ``part``, on a tier / GPU model at least as good.

    A storage copy goes to a rack that holds no other copy of its request, so the copies
    stay on distinct racks. Hosts whose room is not booked by pending allocations come first.
    """
    origin = model.hosts[leaving]
    demand = part.demand()
    copy_racks = {model.rack_of(p.host_id) for p in model.parts_of(part.request_id) if p.holds_storage and p.place != part.place}
    best: tuple[tuple[bool, float], str] | None = None
    for host_id, spec in model.hosts.items():
        if host_id == leaving or host_id in avoid or spec.status != "up" or spec.zone != origin.zone:
            continue
        if (part.request_id, part.shard, host_id) in model.parts:
            continue
        if part.gpu and spec.gpu_model != origin.gpu_model:
            continue
        if part.holds_storage and (tier_rank(spec.storage_type) < tier_rank(origin.storage_type) or spec.rack in copy_racks):
            continue
        free = model.free[host_id]
        if any(amount > free[r] + CAPACITY_SLACK for r, amount in demand.items() if amount > 0):
            continue
        spare = [(free[r] - booked[host_id][r] - amount) / max(amount, 1e-9) for r, amount in demand.items() if amount > 0]
        worst = min(spare, default=0.0)
        score = (worst >= 0, worst)
        if best is None or score > best[0]:
            best = (score, host_id)
    return None if best is None else best[1]


def _stage_a_leaver(actions: list[Action], waits: dict[int, list[int]], pending: list[int], done: set[int],
                    model: ClusterModel, floors: dict[str, int], staged: set[tuple[str, int]]) -> bool:
    """Break a capacity deadlock: move one part that must leave a full host to a staging host first.

    An allocation waits for room on host H; a part on H is leaving, but its own move waits
    for room elsewhere (a cycle, or a chain ending in one). That part is moved make-before-break
    to a staging host with room now (create, fill and verify a storage copy, delete from H),
    and from there to its planned host later (its release waits for the planned copy). Each
    part is staged at most once, so the search ends. Returns whether anything was staged.
    """
    booked: dict[str, dict[str, float]] = defaultdict(lambda: {r: 0.0 for r in RESOURCES})
    for i in pending:
        if actions[i].kind in (ActionKind.CREATE, ActionKind.RESIZE):
            for resource, amount in model.extra_demand(actions[i]).items():
                booked[actions[i].part.host_id][resource] += max(amount, 0.0)
    for i in pending:
        blocked = actions[i]
        if blocked.kind not in (ActionKind.CREATE, ActionKind.RESIZE) or any(w not in done for w in waits[i]):
            continue
        why = model.violation(blocked, floors)
        if why is None or not why.startswith("needs"):
            continue
        full = blocked.part.host_id
        short = {r: amount - model.free[full][r] for r, amount in model.extra_demand(blocked).items()
                 if amount > model.free[full][r] + CAPACITY_SLACK}
        leavers = []
        for j in pending:
            release = actions[j]
            part = model.parts.get(release.part.place)
            if release.kind is not ActionKind.DELETE or release.part.host_id != full or part is None or part.key in staged:
                continue
            if not any(getattr(part, r) > 0 for r in short):
                continue
            covers = all(getattr(part, r) >= need for r, need in short.items())
            leavers.append((not covers, part.holds_storage, -sum(getattr(part, r) for r in short), j))
        for *_, j in sorted(leavers):
            release = actions[j]
            part = model.parts[release.part.place]
            if part.holds_storage and not part.complete:  # a half-filled copy counts for nothing: release it now
                staged.add(part.key)
                waits[j] = []
                return True
            destinations = {actions[w].part.host_id for w in waits[j]}
            host = _staging_host(model, part, full, destinations, booked)
            if host is None:
                continue
            staged.add(part.key)
            why = f"stage on {host} to free {full} for {blocked.part.label}"

            def add(kind: ActionKind, staged_part: Part, reason: str, move_from: str, after: list[int]) -> int:
                actions.append(Action(seq=len(actions), kind=kind, part=staged_part, reason=reason, move_from=move_from))
                waits[len(actions) - 1] = list(after)
                pending.append(len(actions) - 1)
                return len(actions) - 1

            staged_part = part.with_changes(host_id=host, complete=not part.holds_storage)
            ready = [add(ActionKind.CREATE, staged_part, why, full, [])]
            if part.holds_storage:
                ready.append(add(ActionKind.COPY, staged_part.with_changes(complete=True),
                                 f"fill and verify the staging copy ({why})", full, ready))
            onward = waits[j]
            waits[j] = ready
            target = f"after the move to {', '.join(sorted(destinations))}" if destinations else "once it is not needed"
            add(ActionKind.DELETE, staged_part.with_changes(complete=True), f"release the staging part {target}", host,
                ready + onward)
            return True
    return False


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
