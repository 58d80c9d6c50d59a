"""The simulated cluster (executor ``sim``): hosts, parts and their stored keys in SQLite.

Every change of a part and its event record are written in one transaction, so the
event log replays exactly what the cluster went through, even across ``kill -9``.
Fault injection: host crash and restart, network partition between racks or zones,
slow hosts, and a crash in the middle of a storage copy (a move).
"""
from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path
from typing import ClassVar

from shardplan.executors.actions import Action, ActionKind, kept_complete
from shardplan.executors.base import CAPACITY_SLACK, Executor, ExecutorError, HostSpec, HostUnavailable, Part
from shardplan.executors.journal import connect
from shardplan.schema import RESOURCES

SCHEMA = """
CREATE TABLE IF NOT EXISTS sim_hosts (
    host_id TEXT PRIMARY KEY, zone TEXT NOT NULL, rack TEXT NOT NULL,
    vcpu REAL, ram_gib REAL, storage_gib REAL, net_gbps REAL, gpu REAL,
    status TEXT NOT NULL DEFAULT 'up', slow_ms INTEGER NOT NULL DEFAULT 0, libvirt_uri TEXT);
CREATE TABLE IF NOT EXISTS sim_parts (
    request_id TEXT NOT NULL, shard INTEGER NOT NULL, host_id TEXT NOT NULL, replica INTEGER NOT NULL,
    vcpu INTEGER, ram_gib INTEGER, storage_gib INTEGER, net_gbps REAL, gpu INTEGER, role TEXT,
    complete INTEGER NOT NULL, PRIMARY KEY (request_id, shard, host_id));
CREATE TABLE IF NOT EXISTS sim_store (
    request_id TEXT NOT NULL, shard INTEGER NOT NULL, host_id TEXT NOT NULL,
    key TEXT NOT NULL, value TEXT NOT NULL, version INTEGER NOT NULL,
    PRIMARY KEY (request_id, shard, host_id, key));
CREATE TABLE IF NOT EXISTS sim_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, event TEXT NOT NULL,
    request_id TEXT, shard INTEGER, host_id TEXT, replica INTEGER, vcpu INTEGER, ram_gib INTEGER,
    storage_gib INTEGER, net_gbps REAL, gpu INTEGER, role TEXT, complete INTEGER);
CREATE TABLE IF NOT EXISTS sim_partitions (level TEXT NOT NULL, side_a TEXT NOT NULL, side_b TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sim_faults (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
PART_FIELDS = ("request_id", "shard", "host_id", "replica", "vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu", "role")
SEED_KEYS_MAX = 32
"""Keys written into a brand-new storage copy (one per GiB, at most this many), so copies carry data to verify."""
COPY_CHUNK_KEYS = 8
"""Keys copied per transaction while filling a storage copy; an interruption leaves a partial, incomplete copy."""


class SimulatedCrash(BaseException):
    """The executor process 'dies' mid-action (BaseException, so nothing records it as a clean failure)."""


def store_digest(rows: list[tuple[str, str, int]]) -> str:
    """Digest of a storage copy's (key, value, version) rows; equal digests mean verified copies."""
    digest = hashlib.sha256()
    for key, value, version in sorted(rows):
        digest.update(f"{key}\x00{value}\x00{version}\n".encode())
    return digest.hexdigest()


class SimExecutor(Executor):
    """Executor against the simulated cluster persisted in the ``--state`` SQLite file."""

    name: ClassVar[str] = "sim"
    supports: ClassVar[frozenset[str]] = frozenset({"fault_injection", "storage_copy", "persistent_state"})

    def __init__(self, state_path: str | Path, hosts: dict[str, HostSpec] | None = None, step_delay_s: float = 0.0) -> None:
        super().__init__(state_path, hosts)
        self.step_delay_s = step_delay_s
        self.connection = connect(self.state_path)
        self.connection.executescript(SCHEMA)
        if hosts:
            self._register_hosts(hosts)
        self.hosts = self._load_hosts()

    # --- hosts and faults -----------------------------------------------------------------
    def _register_hosts(self, hosts: dict[str, HostSpec]) -> None:
        self.connection.executemany(
            "INSERT INTO sim_hosts(host_id, zone, rack, vcpu, ram_gib, storage_gib, net_gbps, gpu, libvirt_uri) "
            "VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT(host_id) DO UPDATE SET zone=excluded.zone, rack=excluded.rack, "
            "vcpu=excluded.vcpu, ram_gib=excluded.ram_gib, storage_gib=excluded.storage_gib, "
            "net_gbps=excluded.net_gbps, gpu=excluded.gpu, libvirt_uri=excluded.libvirt_uri",
            [(h.host_id, h.zone, h.rack, h.vcpu, h.ram_gib, h.storage_gib, h.net_gbps, h.gpu, h.libvirt_uri)
             for h in hosts.values()])

    def _load_hosts(self) -> dict[str, HostSpec]:
        rows = self.connection.execute(
            "SELECT host_id, zone, rack, vcpu, ram_gib, storage_gib, net_gbps, gpu, status, libvirt_uri FROM sim_hosts").fetchall()
        return {row[0]: HostSpec(*row) for row in rows}

    def crash_host(self, host_id: str) -> None:
        """The host goes down; its parts stay on disk but nothing can reach them."""
        self._set_host(host_id, "status", "down")

    def restart_host(self, host_id: str) -> None:
        self._set_host(host_id, "status", "up")

    def slow_host(self, host_id: str, slow_ms: int) -> None:
        """Every action touching the host takes ``slow_ms`` longer."""
        self._set_host(host_id, "slow_ms", int(slow_ms))

    def _set_host(self, host_id: str, column: str, value: object) -> None:
        if host_id not in self.hosts:
            raise ExecutorError(f"unknown host {host_id!r}")
        self.connection.execute(f"UPDATE sim_hosts SET {column}=? WHERE host_id=?", (value, host_id))
        self.hosts = self._load_hosts()

    def partition(self, level: str, side_a: list[str], side_b: list[str]) -> None:
        """Cut the network between two groups of racks (level 'rack') or zones (level 'zone')."""
        if level not in ("rack", "zone"):
            raise ValueError("partition level must be 'rack' or 'zone'")
        self.connection.execute("INSERT INTO sim_partitions VALUES (?,?,?)", (level, ",".join(side_a), ",".join(side_b)))

    def heal(self) -> None:
        """Remove every network partition."""
        self.connection.execute("DELETE FROM sim_partitions")

    def arm_crash_in_copy(self, after_chunks: int = 1) -> None:
        """The next storage copy crashes the executor after ``after_chunks`` chunks (a crash mid-move)."""
        self.connection.execute("INSERT OR REPLACE INTO sim_faults VALUES ('crash_in_copy', ?)", (after_chunks,))

    def connected(self, host_a: str, host_b: str) -> bool:
        """Whether the two hosts can exchange data (no partition between their racks or zones)."""
        a, b = self.hosts[host_a], self.hosts[host_b]
        for level, side_a, side_b in self.connection.execute("SELECT level, side_a, side_b FROM sim_partitions"):
            where_a, where_b = (a.rack, b.rack) if level == "rack" else (a.zone, b.zone)
            left, right = set(side_a.split(",")), set(side_b.split(","))
            if (where_a in left and where_b in right) or (where_a in right and where_b in left):
                return False
        return True

    def _reach(self, host_id: str) -> None:
        spec = self.hosts.get(host_id)
        if spec is None:
            raise ExecutorError(f"host {host_id!r} is not in the simulated cluster")
        if spec.status != "up":
            raise HostUnavailable(f"host {host_id} is {spec.status}")
        slow_ms = self.connection.execute("SELECT slow_ms FROM sim_hosts WHERE host_id=?", (host_id,)).fetchone()[0]
        if slow_ms:
            time.sleep(slow_ms / 1000.0)

    # --- state ------------------------------------------------------------------------------
    def current_parts(self) -> list[Part]:
        rows = self.connection.execute(f"SELECT {', '.join(PART_FIELDS)}, complete FROM sim_parts "
                                       "ORDER BY request_id, shard, host_id").fetchall()
        return [Part(*row[:-1], complete=bool(row[-1])) for row in rows]

    def events(self) -> list[dict[str, object]]:
        cursor = self.connection.execute("SELECT * FROM sim_events ORDER BY seq")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def store_rows(self, part: Part) -> list[tuple[str, str, int]]:
        return self.connection.execute("SELECT key, value, version FROM sim_store WHERE request_id=? AND shard=? AND host_id=?",
                                       part.place).fetchall()

    def _part(self, place: tuple[str, int, str]) -> Part | None:
        row = self.connection.execute(f"SELECT {', '.join(PART_FIELDS)}, complete FROM sim_parts "
                                      "WHERE request_id=? AND shard=? AND host_id=?", place).fetchone()
        return None if row is None else Part(*row[:-1], complete=bool(row[-1]))

    def _log(self, cursor: sqlite3.Cursor, event: str, part: Part) -> None:
        cursor.execute("INSERT INTO sim_events(at, event, request_id, shard, host_id, replica, vcpu, ram_gib, storage_gib, "
                       "net_gbps, gpu, role, complete) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (time.time(), event, *[getattr(part, f) for f in PART_FIELDS], int(part.complete)))

    def _check_capacity(self, part: Part, previous: Part | None) -> None:
        used = self.connection.execute(
            f"SELECT {', '.join(f'COALESCE(SUM({r}), 0)' for r in RESOURCES)} FROM sim_parts WHERE host_id=?",
            (part.host_id,)).fetchone()
        capacity = self.hosts[part.host_id].capacity()
        for resource, in_use in zip(RESOURCES, used):
            after = in_use + getattr(part, resource) - (getattr(previous, resource) if previous else 0)
            if after > capacity[resource] + CAPACITY_SLACK and getattr(part, resource) > (getattr(previous, resource) if previous else 0):
                raise ExecutorError(f"host {part.host_id}: {resource} would be over-committed "
                                    f"({after:g} > {capacity[resource]:g}) by {part.label}")

    # --- actions ----------------------------------------------------------------------------
    def apply(self, action: Action) -> None:
        handler = {ActionKind.CREATE: self._create, ActionKind.RESIZE: self._resize,
                   ActionKind.COPY: self._copy, ActionKind.DELETE: self._delete}[action.kind]
        handler(action)

    def _write_part(self, event: str, part: Part, previous: Part | None, seed: bool) -> None:
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            self._check_capacity(part, previous)
            cursor.execute(f"INSERT OR REPLACE INTO sim_parts({', '.join(PART_FIELDS)}, complete) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (*[getattr(part, f) for f in PART_FIELDS], int(part.complete)))
            if previous is not None and previous.holds_storage and not part.holds_storage:
                cursor.execute("DELETE FROM sim_store WHERE request_id=? AND shard=? AND host_id=?", part.place)
            if seed:
                cursor.executemany("INSERT OR REPLACE INTO sim_store VALUES (?,?,?,?,?,?)",
                                   [(*part.place, f"block-{i:03d}", hashlib.sha1(f"{part.request_id}/{i}".encode()).hexdigest(), 1)
                                    for i in range(min(part.storage_gib, SEED_KEYS_MAX))])
            self._log(cursor, event, part)
            cursor.execute("COMMIT")
        except BaseException:
            cursor.execute("ROLLBACK")
            raise

    def _create(self, action: Action) -> None:
        part = action.part
        self._reach(part.host_id)
        existing = self._part(part.place)
        if existing is not None:
            if existing.same_shape(part):
                return
            self._reshape(existing, part)
            return
        self._write_part("create", part, None, seed=part.holds_storage and part.complete)

    def _reshape(self, existing: Part, part: Part) -> None:
        """Resize in place; a part that turns into a storage copy is empty until filled (seeded if it is the first)."""
        complete = kept_complete(existing, part)
        gains = part.holds_storage and not existing.holds_storage
        self._write_part("resize", part.with_changes(complete=complete), existing, seed=gains and complete)

    def _resize(self, action: Action) -> None:
        part = action.part
        self._reach(part.host_id)
        existing = self._part(part.place)
        if existing is None:
            raise ExecutorError(f"cannot resize {part.label}: no such part")
        if existing.same_shape(part):
            return
        self._reshape(existing, part)

    def _copy(self, action: Action) -> None:
        """Fill the destination copy from a complete, reachable copy of the request, verify, mark complete."""
        part = action.part
        self._reach(part.host_id)
        existing = self._part(part.place)
        if existing is None:
            raise ExecutorError(f"cannot copy into {part.label}: the part does not exist")
        if existing.complete:
            return
        sources = [p for p in self.current_parts() if p.request_id == part.request_id and p.holds_storage
                   and p.complete and p.place != part.place and self.hosts[p.host_id].status == "up"
                   and self.connected(p.host_id, part.host_id)]
        if not sources:
            raise HostUnavailable(f"no complete copy of {part.request_id} reachable from {part.host_id} to fill {part.label}")
        source = min(sources, key=lambda p: (p.host_id != action.move_from, p.shard != part.shard, p.host_id))
        self._reach(source.host_id)
        rows = sorted(self.store_rows(source))
        crash_after = self.connection.execute("SELECT value FROM sim_faults WHERE name='crash_in_copy'").fetchone()
        self.connection.execute("DELETE FROM sim_store WHERE request_id=? AND shard=? AND host_id=?", part.place)
        for n, start in enumerate(range(0, len(rows), COPY_CHUNK_KEYS), start=1):
            chunk = rows[start:start + COPY_CHUNK_KEYS]
            cursor = self.connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            cursor.executemany("INSERT OR REPLACE INTO sim_store VALUES (?,?,?,?,?,?)", [(*part.place, *row) for row in chunk])
            self._log(cursor, "fill", existing)
            cursor.execute("COMMIT")
            if crash_after is not None and n >= crash_after[0]:
                self.connection.execute("DELETE FROM sim_faults WHERE name='crash_in_copy'")
                raise SimulatedCrash(f"executor crashed while filling {part.label}")
            if self.step_delay_s:
                time.sleep(self.step_delay_s / 4)
        if store_digest(self.store_rows(part)) != store_digest(rows):
            raise ExecutorError(f"verification of {part.label} against {source.label} failed (digest mismatch)")
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("UPDATE sim_parts SET complete=1 WHERE request_id=? AND shard=? AND host_id=?", part.place)
        self._log(cursor, "complete", existing.with_changes(complete=True))
        cursor.execute("COMMIT")

    def _delete(self, action: Action) -> None:
        part = action.part
        existing = self._part(part.place)
        if existing is None:
            return
        self._reach(part.host_id)
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("DELETE FROM sim_parts WHERE request_id=? AND shard=? AND host_id=?", part.place)
        cursor.execute("DELETE FROM sim_store WHERE request_id=? AND shard=? AND host_id=?", part.place)
        self._log(cursor, "delete", existing)
        cursor.execute("COMMIT")

    def close(self) -> None:
        self.connection.close()
