"""Replication checker, static and dynamic.

Static: replaying a plan's action sequence (or the simulated cluster's event log)
keeps every request at its floor of complete storage copies on distinct racks and
never over-commits a host, and ends in the plan.

Dynamic (Jepsen-style, from the recorded history alone, no system internals):
* lost write: an acknowledged write ``w`` whose key, after heal, holds a value
  written by an operation that finished before ``w`` began (or holds nothing);
* stale read: a successful read that returns a value written by an operation
  that finished before some other write began that was itself acknowledged
  before the read began (or returns nothing although a write was acknowledged);
* divergence: after heal, copies of a key that hold different values.
Writes that timed out are indeterminate: they may or may not have happened.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from shardplan.executors.actions import Action, ActionKind, ClusterModel, copy_floors
from shardplan.executors.base import CAPACITY_SLACK, HostSpec, Part, TargetPlan


@dataclass(frozen=True)
class Op:
    """One history record: ``kind`` is invoke, ok, fail (did not happen) or info (may have happened)."""

    process: int
    kind: str
    f: str  # read | write | final (a copy's value after heal, recorded per node)
    key: str
    value: str | None
    time: float
    node: str | None = None


@dataclass
class HistoryVerdict:
    acknowledged_writes: int = 0
    lost_writes: int = 0
    stale_reads: int = 0
    diverged: int = 0
    reads: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.lost_writes == 0 and self.stale_reads == 0 and self.diverged == 0


@dataclass(frozen=True)
class _Write:
    value: str
    invoked: float
    acked: float | None  # None: timed out (indeterminate) or failed


def _complete_ops(history: list[Op]) -> list[tuple[Op, Op]]:
    """(invoke, completion) pairs; each process runs one operation at a time."""
    open_ops: dict[int, Op] = {}
    pairs = []
    for op in history:
        if op.f == "final":
            continue
        if op.kind == "invoke":
            open_ops[op.process] = op
        elif op.process in open_ops:
            pairs.append((open_ops.pop(op.process), op))
    return pairs


def check_history(history: list[Op], max_examples: int = 5) -> HistoryVerdict:
    """Lost writes, stale reads and divergence, judged from the history alone."""
    verdict = HistoryVerdict()
    writes: dict[str, dict[str, _Write]] = defaultdict(dict)
    reads: list[tuple[Op, Op]] = []
    for invoke, done in _complete_ops(history):
        if invoke.f == "write" and done.kind != "fail":
            writes[invoke.key][invoke.value] = _Write(invoke.value, invoke.time, done.time if done.kind == "ok" else None)
        elif invoke.f == "read" and done.kind == "ok":
            reads.append((invoke, done))
    verdict.acknowledged_writes = sum(1 for per_key in writes.values() for w in per_key.values() if w.acked is not None)

    def precedes(a: _Write | None, b: _Write) -> bool:
        """a finished before b began (None, the empty initial value, precedes everything)."""
        return a is None or (a.acked is not None and a.acked < b.invoked)

    def note(text: str) -> None:
        if len(verdict.examples) < max_examples:
            verdict.examples.append(text)

    for invoke, done in reads:
        verdict.reads += 1
        per_key = writes[invoke.key]
        if done.value is not None and done.value not in per_key:
            verdict.stale_reads += 1
            note(f"read of {invoke.key} at {invoke.time:g} returned {done.value!r}, which nobody wrote")
            continue
        source = per_key.get(done.value) if done.value is not None else None
        newer = [w for w in per_key.values() if w.acked is not None and w.acked < invoke.time and precedes(source, w)]
        if newer:
            verdict.stale_reads += 1
            note(f"read of {invoke.key} at {invoke.time:g} returned {done.value!r} after {newer[0].value!r} was acknowledged")
    finals: dict[str, dict[str, str | None]] = defaultdict(dict)
    for op in history:
        if op.f == "final":
            finals[op.key][op.node or str(op.process)] = op.value
    for key, per_node in finals.items():
        values = set(per_node.values())
        if len(values) > 1:
            verdict.diverged += 1
            note(f"copies of {key} diverged after heal: {sorted(map(str, values))}")
        for write in writes[key].values():
            if write.acked is None:
                continue
            for node, value in per_node.items():
                holder = writes[key].get(value) if value is not None else None
                if (value is not None and holder is None) or precedes(holder, write):
                    verdict.lost_writes += 1
                    note(f"acknowledged write {write.value!r} lost: copy {node} holds {value!r} after heal")
                    break
    return verdict


# --- static checks -------------------------------------------------------------------------

@dataclass
class StaticVerdict:
    steps: int = 0
    violations: list[str] = field(default_factory=list)
    min_copy_margin: int | None = None
    """Smallest (complete copies on distinct racks − floor) seen over requests and steps."""

    @property
    def ok(self) -> bool:
        return not self.violations


class _Replay:
    def __init__(self, hosts: dict[str, HostSpec], current: list[Part], target: TargetPlan) -> None:
        self.model = ClusterModel(hosts, current)
        self.floors = copy_floors(current, target, hosts)
        self.verdict = StaticVerdict()

    def check(self, label: str) -> None:
        self.verdict.steps += 1
        for host_id, free in self.model.free.items():
            for resource, left in free.items():
                if left < -CAPACITY_SLACK:
                    self.verdict.violations.append(f"{label}: host {host_id} over-committed in {resource} by {-left:g}")
        for request_id, floor in self.floors.items():
            margin = self.model.copy_racks(request_id) - floor
            if self.verdict.min_copy_margin is None or margin < self.verdict.min_copy_margin:
                self.verdict.min_copy_margin = margin
            if margin < 0:
                self.verdict.violations.append(f"{label}: {request_id} has {floor + margin} complete copies on "
                                               f"distinct racks, floor {floor}")

    def finish(self, target: TargetPlan) -> StaticVerdict:
        have = {place: p for place, p in self.model.parts.items()}
        want = {p.place: p for p in target.parts}
        if set(have) != set(want) or any(not have[k].same_shape(want[k]) or not have[k].complete for k in want):
            self.verdict.violations.append("the sequence does not end in the plan")
        for request_id, replicas in target.replicas.items():
            if request_id in self.floors and self.model.copy_racks(request_id) < replicas:
                self.verdict.violations.append(f"{request_id} ends with fewer than {replicas} copies on distinct racks")
        return self.verdict


def check_action_sequence(current: list[Part], target: TargetPlan, actions: list[Action],
                          hosts: dict[str, HostSpec] | None = None) -> StaticVerdict:
    """Replay actions without trusting their order; report every capacity or copy-floor breach."""
    replay = _Replay(target.hosts if hosts is None else hosts, current, target)
    for action in actions:
        if action.kind is ActionKind.COPY and action.part.place not in replay.model.parts:
            replay.verdict.violations.append(f"step {action.seq}: copy into {action.part.label}, which does not exist")
            continue
        if action.kind is ActionKind.COPY and not replay.model.has_copy_source(action.part):
            replay.verdict.violations.append(f"step {action.seq}: copy into {action.part.label} with no complete source")
        replay.model.apply(action)
        replay.check(f"step {action.seq} ({action.kind.value} {action.part.label})")
    return replay.finish(target)


def check_event_log(initial: list[Part], events: list[dict[str, object]], target: TargetPlan,
                    hosts: dict[str, HostSpec] | None = None) -> StaticVerdict:
    """The same checks over the simulated cluster's recorded part events (what really happened)."""
    replay = _Replay(target.hosts if hosts is None else hosts, initial, target)
    kinds = {"create": ActionKind.CREATE, "resize": ActionKind.RESIZE, "complete": ActionKind.COPY, "delete": ActionKind.DELETE}
    for event in events:
        if event["event"] not in kinds:
            continue
        part = Part.from_record({**event, "complete": bool(event["complete"])})
        previous = replay.model.parts.get(part.place)
        replay.model.apply(Action(seq=int(event["seq"]), kind=kinds[event["event"]], part=part, reason="event", previous=previous))
        replay.check(f"event {event['seq']} ({event['event']} {part.label})")
    return replay.finish(target)
