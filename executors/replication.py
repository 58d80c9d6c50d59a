"""Replicated key-value storage of one request across its storage copies (simulated cluster).

A deterministic discrete-event simulation: copies on distinct racks in two zones,
clients bound to a coordinator copy, messages with latency, and a seeded fault
schedule (host crash and restart, rack or zone partitions, slow hosts, copy moves,
a crash in the middle of a move, clock skew).

Protocol. A write first asks a read quorum for the key's version, then stores a
new version at a write quorum and is acknowledged; a read asks a read quorum,
takes the newest version and writes it back to a write quorum before answering
(read repair). Quorums are options; majority by default.

Versions. Each version carries a hybrid-logical-clock stamp (physical ms, logical
counter, writer node) and a version vector. Conflict rule: when two versions'
vectors are concurrent, the last writer by HLC stamp wins (ties by node id) and
the loser's vector entries are merged into the winner's, so the result descends
from both and every copy converges to it. Anti-entropy: every copy periodically
exchanges its versions with a random peer; it brings recovered and moved copies
up to date.
"""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Callable

from shardplan.executors.repl_checker import HistoryVerdict, Op, check_history


@dataclass(frozen=True, order=True)
class Stamp:
    """Hybrid logical clock stamp; the writer's node breaks ties, so stamps are totally ordered."""

    physical_ms: int
    logical: int
    node: str


VersionVector = tuple[tuple[str, int], ...]


def vv_merge(a: VersionVector, b: VersionVector) -> VersionVector:
    merged = dict(a)
    for node, count in b:
        merged[node] = max(merged.get(node, 0), count)
    return tuple(sorted(merged.items()))


def vv_concurrent(a: VersionVector, b: VersionVector) -> bool:
    """Neither vector descends from the other."""
    left, right = dict(a), dict(b)
    nodes = set(left) | set(right)
    return (any(left.get(n, 0) > right.get(n, 0) for n in nodes)
            and any(right.get(n, 0) > left.get(n, 0) for n in nodes))


@dataclass(frozen=True)
class Version:
    stamp: Stamp
    value: str
    clock: VersionVector


def resolve(stored: Version | None, incoming: Version) -> tuple[Version, bool]:
    """The version a copy keeps, and whether the two were concurrent (a conflict resolved by HLC)."""
    if stored is None:
        return incoming, False
    conflict = vv_concurrent(stored.clock, incoming.clock)
    winner = incoming if incoming.stamp > stored.stamp else stored
    clock = vv_merge(stored.clock, incoming.clock)
    return Version(winner.stamp, winner.value, clock), conflict


@dataclass(frozen=True)
class ReplicationOptions:
    """Knobs of the replication layer and of one fault schedule; times in simulated ms."""

    copies: int = 3
    write_quorum: int | None = None
    """Copies that must store a write before it is acknowledged (None: majority)."""
    read_quorum: int | None = None
    """Copies a read (and a write's version query) must hear from (None: majority)."""
    read_repair: bool = True
    keys: int = 3
    clients: int = 4
    ops_per_client: int = 25
    latency_ms: tuple[int, int] = (1, 8)
    op_timeout_ms: int = 80
    think_ms: tuple[int, int] = (0, 12)
    anti_entropy_ms: int = 30
    heal_ms: int = 400
    """Time after the last fault is healed during which anti-entropy runs before the final reads."""
    max_skew_ms: int = 40
    faults: tuple[int, int] = (3, 7)
    """Range of fault events per schedule."""

    def quorums(self) -> tuple[int, int]:
        majority = self.copies // 2 + 1
        return (self.write_quorum or majority, self.read_quorum or majority)


@dataclass(eq=False)
class Replica:
    """One storage copy: its store survives crashes; its HLC moves on."""

    name: str
    rack: str
    zone: str
    skew_ms: int
    store: dict[str, Version] = field(default_factory=dict)
    up: bool = True
    slow_ms: int = 0
    last: tuple[int, int] = (0, 0)
    retired: bool = False

    def tick(self, now_ms: float, observed: Stamp | None) -> Stamp:
        """HLC send event, moved past anything observed so the new stamp orders after it."""
        physical = max(int(now_ms) + self.skew_ms, 0)
        candidates = [(physical, 0), (self.last[0], self.last[1] + 1)]
        if observed is not None:
            candidates.append((observed.physical_ms, observed.logical + 1))
        self.last = max(candidates)
        return Stamp(self.last[0], self.last[1], self.name)

    def merge(self, key: str, version: Version) -> bool:
        kept, conflict = resolve(self.store.get(key), version)
        self.store[key] = kept
        return conflict


@dataclass(eq=False)
class ClientOp:
    """A client operation in flight: phase 1 asks for versions, phase 2 stores (write or read repair)."""

    process: int
    f: str
    key: str
    value: str | None
    remaining: int
    coordinator: Replica | None = None
    phase: int = 1
    replies: list[Version | None] = field(default_factory=list)
    acks: int = 0
    version: Version | None = None
    done: bool = False


@dataclass(frozen=True)
class FaultEvent:
    at_ms: int
    kind: str  # crash | partition_racks | partition_zones | slow | move | crash_in_move
    slot: int = 0
    duration_ms: int = 0
    slow_ms: int = 0


@dataclass
class ScheduleResult:
    seed: int
    faults: list[FaultEvent]
    verdict: HistoryVerdict
    conflicts: int
    moves_done: int
    moves_aborted: int
    history: list[Op]


def random_schedule(rng: random.Random, options: ReplicationOptions, horizon_ms: int) -> list[FaultEvent]:
    """A seeded fault schedule over the client phase."""
    kinds = ("crash", "partition_racks", "partition_zones", "slow", "move", "crash_in_move")
    events = []
    for _ in range(rng.randint(*options.faults)):
        events.append(FaultEvent(at_ms=rng.randint(0, max(horizon_ms - 50, 1)), kind=rng.choice(kinds),
                                 slot=rng.randrange(options.copies), duration_ms=rng.randint(30, 250),
                                 slow_ms=rng.randint(10, 60)))
    return sorted(events, key=lambda e: e.at_ms)


class ReplicatedStore:
    """The simulation of one request's replicated store under one fault schedule."""

    def __init__(self, options: ReplicationOptions, seed: int) -> None:
        self.options = options
        self.rng = random.Random(seed)
        self.seed = seed
        self.now = 0.0
        self.queue: list[tuple[float, int, Callable[..., None], tuple]] = []
        self.counter = 0
        self.slots: list[Replica] = []
        for i in range(options.copies):
            zone = f"z{0 if i < (options.copies + 1) // 2 else 1}"
            self.slots.append(Replica(f"n{i}", f"{zone}-r{i}", zone, self.rng.randint(-options.max_skew_ms, options.max_skew_ms)))
        self.cut: set[frozenset[str]] = set()  # rack pairs that cannot talk
        self.history: list[Op] = []
        self.conflicts = 0
        self.moves_done = 0
        self.moves_aborted = 0
        self.write_quorum, self.read_quorum = options.quorums()
        self.accepting = True

    # --- event loop and network ----------------------------------------------------------
    def at(self, when: float, handler: Callable[..., None], *args: object) -> None:
        self.counter += 1
        heapq.heappush(self.queue, (when, self.counter, handler, args))

    def run_until(self, until: float) -> None:
        while self.queue and self.queue[0][0] <= until:
            when, _, handler, args = heapq.heappop(self.queue)
            self.now = when
            handler(*args)
        self.now = max(self.now, until)

    def can_talk(self, a: Replica, b: Replica) -> bool:
        return a.up and b.up and not a.retired and not b.retired and (a.rack == b.rack or frozenset((a.rack, b.rack)) not in self.cut)

    def send(self, source: Replica, slot: int, handler: Callable[..., None], *args: object) -> None:
        """Deliver to whichever copy holds ``slot`` at delivery time, if the network and both ends allow."""
        target = self.slots[slot]
        if not self.can_talk(source, target):
            return
        low, high = self.options.latency_ms
        delay = (0.2 if source is target else self.rng.uniform(low, high)) + source.slow_ms + target.slow_ms
        self.at(self.now + delay, self._deliver, source, slot, target, handler, args)

    def _deliver(self, source: Replica, slot: int, target: Replica, handler: Callable[..., None], args: tuple) -> None:
        if self.slots[slot] is target and self.can_talk(source, target):
            handler(target, *args)

    # --- client operations ---------------------------------------------------------------
    def _finish(self, op: ClientOp, kind: str, value: str | None) -> None:
        if op.done:
            return
        op.done = True
        self.history.append(Op(op.process, kind, op.f, op.key, value, self.now))
        self.at(self.now + self.rng.uniform(*self.options.think_ms), self._next_op, op.process, op.remaining - 1)

    def _next_op(self, process: int, remaining: int) -> None:
        if remaining <= 0 or not self.accepting:
            return
        key = f"k{self.rng.randrange(self.options.keys)}"
        if self.rng.random() < 0.5:
            self.start_op(process, "write", key, f"{key}-p{process}-{remaining}", remaining)
        else:
            self.start_op(process, "read", key, None, remaining)

    def start_op(self, process: int, f: str, key: str, value: str | None, remaining: int = 0) -> None:
        op = ClientOp(process, f, key, value, remaining)
        self.history.append(Op(process, "invoke", f, key, value, self.now))
        slot = process % self.options.copies
        coordinator = self.slots[slot]
        if not coordinator.up:
            self._finish(op, "fail", None)
            return
        op.coordinator = coordinator
        self.at(self.now + self.options.op_timeout_ms, self._timeout, op)
        for target in range(self.options.copies):
            self.send(coordinator, target, self._on_query, op)

    def _timeout(self, op: ClientOp) -> None:
        # A write that may have reached some copies is indeterminate; a read that timed out did nothing.
        self._finish(op, "info" if op.f == "write" else "fail", None)

    def _on_query(self, replica: Replica, op: ClientOp) -> None:
        coordinator = op.coordinator
        if coordinator in self.slots:
            self.send(replica, self.slots.index(coordinator), self._on_query_reply, op, replica.store.get(op.key))

    def _on_query_reply(self, coordinator: Replica, op: ClientOp, version: Version | None) -> None:
        if op.done or op.phase != 1 or coordinator is not op.coordinator:
            return
        op.replies.append(version)
        if len(op.replies) < self.read_quorum:
            return
        op.phase = 2
        seen = [v for v in op.replies if v is not None]
        newest = max(seen, key=lambda v: v.stamp) if seen else None
        if op.f == "write":
            clock: VersionVector = ()
            for v in seen:
                clock = vv_merge(clock, v.clock)
            counts = dict(clock)
            counts[coordinator.name] = counts.get(coordinator.name, 0) + 1
            stamp = coordinator.tick(self.now, newest.stamp if newest else None)
            op.version = Version(stamp, op.value, tuple(sorted(counts.items())))
        else:
            op.version = newest
            if newest is None or not self.options.read_repair:
                self._finish(op, "ok", None if newest is None else newest.value)
                return
        for target in range(self.options.copies):
            self.send(coordinator, target, self._on_store, op)

    def _on_store(self, replica: Replica, op: ClientOp) -> None:
        if replica.merge(op.key, op.version):
            self.conflicts += 1
        if op.coordinator in self.slots:
            self.send(replica, self.slots.index(op.coordinator), self._on_store_ack, op)

    def _on_store_ack(self, coordinator: Replica, op: ClientOp) -> None:
        if op.done or coordinator is not op.coordinator:
            return
        op.acks += 1
        if op.acks >= self.write_quorum:
            self._finish(op, "ok", op.version.value)

    # --- anti-entropy ----------------------------------------------------------------------
    def _anti_entropy(self, slot: int) -> None:
        replica = self.slots[slot]
        if replica.up:
            peer = self.rng.choice([s for s in range(self.options.copies) if s != slot])
            self.send(replica, peer, self._on_exchange, slot, dict(replica.store), True)
        self.at(self.now + self.options.anti_entropy_ms, self._anti_entropy, slot)

    def _on_exchange(self, replica: Replica, from_slot: int, versions: dict[str, Version], reply: bool) -> None:
        for key, version in versions.items():
            if replica.merge(key, version):
                self.conflicts += 1
        if reply:
            self.send(replica, from_slot, self._on_exchange, self.slots.index(replica), dict(replica.store), False)

    # --- faults -----------------------------------------------------------------------------
    def _apply_fault(self, fault: FaultEvent) -> None:
        replica = self.slots[fault.slot]
        if fault.kind == "crash":
            replica.up = False
            self.at(self.now + fault.duration_ms, self._restart, replica)
        elif fault.kind == "slow":
            replica.slow_ms = fault.slow_ms
            self.at(self.now + fault.duration_ms, self._unslow, replica)
        elif fault.kind in ("partition_racks", "partition_zones"):
            racks = [s.rack for s in self.slots]
            if fault.kind == "partition_zones":
                side = {s.rack for s in self.slots if s.zone == replica.zone}
            else:
                side = {replica.rack}
            pairs = {frozenset((a, b)) for a in side for b in racks if b not in side}
            self.cut |= pairs
            self.at(self.now + fault.duration_ms, self._heal_pairs, pairs)
        elif fault.kind in ("move", "crash_in_move"):
            self._start_move(fault)

    def _restart(self, replica: Replica) -> None:
        replica.up = True

    def _unslow(self, replica: Replica) -> None:
        replica.slow_ms = 0

    def _heal_pairs(self, pairs: set[frozenset[str]]) -> None:
        self.cut -= pairs

    def _start_move(self, fault: FaultEvent) -> None:
        """Make-before-break: a new copy on a fresh rack of the same zone is filled, caught up, then swapped in."""
        old = self.slots[fault.slot]
        if not old.up or old.retired:
            self.moves_aborted += 1
            return
        new = Replica(f"{old.name}m{self.counter}", f"{old.zone}-m{self.counter}", old.zone, old.skew_ms,
                      store=dict(old.store), last=old.last)
        if fault.kind == "crash_in_move":  # the source crashes while the copy is being filled
            self.at(self.now + fault.duration_ms / 2, self._crash_source, old, fault.duration_ms)
        self.at(self.now + fault.duration_ms, self._finish_move, fault.slot, old, new)

    def _crash_source(self, old: Replica, down_ms: float) -> None:
        old.up = False
        self.at(self.now + down_ms, self._restart, old)

    def _finish_move(self, slot: int, old: Replica, new: Replica) -> None:
        if not old.up or self.slots[slot] is not old:
            self.moves_aborted += 1  # the half-filled copy is discarded; the old one stays
            return
        for key, version in old.store.items():  # catch up with what the old copy took during the fill
            new.merge(key, version)
        new.last = max(new.last, old.last)
        for pair in list(self.cut):  # the new rack inherits the old rack's partitions
            if old.rack in pair:
                (other,) = pair - {old.rack}
                self.cut.add(frozenset((new.rack, other)))
        old.retired = True
        self.slots[slot] = new
        self.moves_done += 1

    # --- one schedule -------------------------------------------------------------------------
    def run(self, faults: list[FaultEvent]) -> None:
        horizon = self.options.ops_per_client * 25
        for fault in faults:
            self.at(fault.at_ms, self._apply_fault, fault)
        for slot in range(self.options.copies):
            self.at(self.rng.uniform(0, self.options.anti_entropy_ms), self._anti_entropy, slot)
        for process in range(self.options.clients):
            self.at(self.rng.uniform(0, 5), self._next_op, process, self.options.ops_per_client)
        self.run_until(horizon + 400)
        self.accepting = False
        self.run_until(self.now + self.options.op_timeout_ms * 2)  # let operations in flight finish
        for replica in self.slots:  # heal everything
            replica.up, replica.slow_ms = True, 0
        self.cut.clear()
        self.run_until(self.now + self.options.heal_ms)
        for process_offset, key in enumerate(f"k{k}" for k in range(self.options.keys)):
            self.start_op(self.options.clients + process_offset, "read", key, None)
        self.run_until(self.now + self.options.op_timeout_ms * 2)
        for replica in self.slots:
            for k in range(self.options.keys):
                version = replica.store.get(f"k{k}")
                self.history.append(Op(-1, "ok", "final", f"k{k}", None if version is None else version.value,
                                       self.now, node=replica.name))


def run_schedule(seed: int, options: ReplicationOptions = ReplicationOptions()) -> ScheduleResult:
    """One seeded fault schedule against the replicated store, judged by the history checker."""
    store = ReplicatedStore(options, seed)
    faults = random_schedule(random.Random(seed * 7919 + 1), options, options.ops_per_client * 25)
    store.run(faults)
    return ScheduleResult(seed, faults, check_history(store.history), store.conflicts, store.moves_done,
                          store.moves_aborted, store.history)


@dataclass
class FaultRunTotals:
    schedules: int = 0
    acknowledged_writes: int = 0
    lost_writes: int = 0
    stale_reads: int = 0
    diverged: int = 0
    reads: int = 0
    conflicts: int = 0
    schedules_with_violations: int = 0

    def add(self, result: ScheduleResult) -> None:
        self.schedules += 1
        self.acknowledged_writes += result.verdict.acknowledged_writes
        self.lost_writes += result.verdict.lost_writes
        self.stale_reads += result.verdict.stale_reads
        self.diverged += result.verdict.diverged
        self.reads += result.verdict.reads
        self.conflicts += result.conflicts
        self.schedules_with_violations += int(not result.verdict.ok)


def run_schedules(n: int, seed: int, options: ReplicationOptions = ReplicationOptions(),
                  on_result: Callable[[ScheduleResult], None] | None = None) -> tuple[list[ScheduleResult], FaultRunTotals]:
    """``n`` schedules with seeds derived from ``seed``; histories are dropped to keep memory small."""
    results, totals = [], FaultRunTotals()
    for i in range(n):
        result = run_schedule(seed * 100_003 + i, options)
        result.history = []
        totals.add(result)
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results, totals
