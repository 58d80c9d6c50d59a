"""The apply journal: every action and its state, in SQLite, before and after it runs.

An apply writes its whole ordered action list (all ``pending``) in one transaction,
marks each action ``started`` before executing it and ``done`` after. A run that was
interrupted (even by ``kill -9``) is found again by the plan's hash and resumed
from its first action that is not ``done``; actions are idempotent, so re-running a
``started`` one is safe.
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from shardplan.executors.actions import Action

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS applies (
    apply_id INTEGER PRIMARY KEY AUTOINCREMENT,
    plan_dir TEXT NOT NULL, plan_hash TEXT NOT NULL, executor TEXT NOT NULL,
    status TEXT NOT NULL,            -- running | done | failed | stuck | superseded
    n_actions INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 1,
    started_at REAL NOT NULL, finished_at REAL, error TEXT);
CREATE TABLE IF NOT EXISTS actions (
    apply_id INTEGER NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, request_id TEXT NOT NULL, shard INTEGER NOT NULL, host_id TEXT NOT NULL,
    action TEXT NOT NULL,            -- the Action as JSON
    state TEXT NOT NULL,             -- pending | started | done | failed
    runs INTEGER NOT NULL DEFAULT 0, started_at REAL, finished_at REAL, error TEXT,
    PRIMARY KEY (apply_id, seq));
"""

UNFINISHED = ("running", "failed")


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection tuned for crash safety: WAL, full fsync, waits on a busy file."""
    connection = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


@dataclass(frozen=True)
class ApplyRun:
    apply_id: int
    plan_hash: str
    status: str
    resumed: bool


@dataclass(frozen=True)
class JournalEntry:
    action: Action
    state: str
    runs: int
    error: str | None


class Journal:
    """SQLite journal of applies and their actions (lives in the ``--state`` file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.connection = connect(self.path)
        self.connection.executescript(SCHEMA)

    def close(self) -> None:
        self.connection.close()

    def set_meta(self, name: str, value: object) -> None:
        self.connection.execute("INSERT INTO meta(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=excluded.value",
                                (name, json.dumps(value)))

    def meta(self, name: str, default: object = None) -> object:
        row = self.connection.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return default if row is None else json.loads(row[0])

    def unfinished(self) -> ApplyRun | None:
        row = self.connection.execute(
            f"SELECT apply_id, plan_hash, status FROM applies WHERE status IN ({','.join('?' * len(UNFINISHED))}) "
            "ORDER BY apply_id DESC LIMIT 1", UNFINISHED).fetchone()
        return None if row is None else ApplyRun(row[0], row[1], row[2], resumed=True)

    def resume(self, run: ApplyRun) -> ApplyRun:
        self.connection.execute("UPDATE applies SET status='running', attempts=attempts+1, error=NULL WHERE apply_id=?",
                                (run.apply_id,))
        return ApplyRun(run.apply_id, run.plan_hash, "running", resumed=True)

    def supersede(self, run: ApplyRun) -> None:
        """An unfinished run for another plan: the new plan is computed from the state it left."""
        self.connection.execute("UPDATE applies SET status='superseded', finished_at=? WHERE apply_id=?",
                                (time.time(), run.apply_id))

    def start(self, plan_dir: str, plan_hash: str, executor: str, actions: list[Action]) -> ApplyRun:
        """Record a new run and its whole ordered action list, atomically."""
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        cursor.execute("INSERT INTO applies(plan_dir, plan_hash, executor, status, n_actions, started_at) VALUES (?,?,?,?,?,?)",
                       (plan_dir, plan_hash, executor, "running", len(actions), time.time()))
        apply_id = cursor.lastrowid
        cursor.executemany(
            "INSERT INTO actions(apply_id, seq, kind, request_id, shard, host_id, action, state) VALUES (?,?,?,?,?,?,?,'pending')",
            [(apply_id, a.seq, a.kind.value, a.part.request_id, a.part.shard, a.part.host_id, a.to_json()) for a in actions])
        cursor.execute("COMMIT")
        return ApplyRun(apply_id, plan_hash, "running", resumed=False)

    def entries(self, apply_id: int) -> list[JournalEntry]:
        rows = self.connection.execute("SELECT action, state, runs, error FROM actions WHERE apply_id=? ORDER BY seq",
                                       (apply_id,)).fetchall()
        return [JournalEntry(Action.from_json(text), state, runs, error) for text, state, runs, error in rows]

    def mark_started(self, apply_id: int, seq: int) -> None:
        self.connection.execute("UPDATE actions SET state='started', runs=runs+1, started_at=?, error=NULL "
                                "WHERE apply_id=? AND seq=?", (time.time(), apply_id, seq))

    def mark_done(self, apply_id: int, seq: int) -> None:
        self.connection.execute("UPDATE actions SET state='done', finished_at=? WHERE apply_id=? AND seq=?",
                                (time.time(), apply_id, seq))

    def mark_failed(self, apply_id: int, seq: int, error: str) -> None:
        self.connection.execute("UPDATE actions SET state='failed', finished_at=?, error=? WHERE apply_id=? AND seq=?",
                                (time.time(), error, apply_id, seq))

    def finish(self, apply_id: int, status: str, error: str | None = None) -> None:
        self.connection.execute("UPDATE applies SET status=?, finished_at=?, error=? WHERE apply_id=?",
                                (status, time.time(), error, apply_id))

    def runs(self) -> list[dict[str, object]]:
        cursor = self.connection.execute("SELECT * FROM applies ORDER BY apply_id")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
