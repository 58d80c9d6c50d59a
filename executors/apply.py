"""Apply a plan directory through a registered executor, journaled and resumable."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from shardplan.executors.actions import Action, ActionPlan, plan_actions
from shardplan.executors.base import Executor, ExecutorError, HostSpec, Part, TargetPlan, executor_class, load_target
from shardplan.executors.journal import Journal


class ApplyError(RuntimeError):
    """An apply stopped: the action that failed (recorded in the journal) and why."""


class UnsafePlan(ApplyError):
    """No order of actions reaches the plan without over-committing capacity or dropping a copy."""

    def __init__(self, plan: ActionPlan) -> None:
        super().__init__(plan.explain_stuck())
        self.plan = plan


@dataclass(frozen=True)
class ApplyReport:
    apply_id: int
    resumed: bool
    actions_total: int
    actions_run: int
    wall_s: float

    @property
    def actions_per_s(self) -> float:
        return self.actions_run / self.wall_s if self.wall_s > 0 else 0.0


def open_executor(name: str, state_path: str | Path, hosts: dict[str, HostSpec] | None) -> Executor:
    """Instantiate the executor registered under ``name``."""
    return executor_class(name)(state_path, hosts)


def matches_target(parts: list[Part], target: TargetPlan) -> list[str]:
    """Differences between a cluster's parts and the plan (empty when they match exactly)."""
    have = {p.place: p for p in parts}
    want = {p.place: p for p in target.parts}
    problems = [f"missing {want[k].label}" for k in sorted(set(want) - set(have))]
    problems += [f"unexpected {have[k].label}" for k in sorted(set(have) - set(want))]
    for place in sorted(set(have) & set(want)):
        if not have[place].same_shape(want[place]) or not have[place].complete:
            problems.append(f"{have[place].label} differs from the plan")
    return problems


def dry_run(plan_dir: str | Path, executor_name: str, state_path: str | Path) -> ActionPlan:
    """The actions an apply would run (the journal's remaining ones when resuming), without running them."""
    target = load_target(plan_dir)
    state_path = Path(state_path)
    if not state_path.exists():
        return plan_actions([], target)
    journal = Journal(state_path)
    try:
        run = journal.unfinished()
        if run is not None and run.plan_hash == target.plan_hash:
            return ActionPlan([e.action for e in journal.entries(run.apply_id) if e.state != "done"])
    finally:
        journal.close()
    with open_executor(executor_name, state_path, target.hosts) as executor:
        return plan_actions(executor.current_parts(), target)


def apply_plan(plan_dir: str | Path, executor_name: str, state_path: str | Path, action_delay_ms: float = 0.0,
               on_action: Callable[[Action], None] | None = None, executor: Executor | None = None) -> ApplyReport:
    """Bring the cluster to the plan, resuming an interrupted apply of the same plan if there is one."""
    started = time.perf_counter()
    target = load_target(plan_dir)
    journal = Journal(state_path)
    own_executor = executor is None
    try:
        journal.set_meta("executor", executor_name)
        journal.set_meta("hosts", [h.to_record() for h in target.hosts.values()])
        if executor is None:
            executor = open_executor(executor_name, state_path, target.hosts)
        if hasattr(executor, "step_delay_s"):
            executor.step_delay_s = action_delay_ms / 1000.0
        run = journal.unfinished()
        if run is not None and run.plan_hash == target.plan_hash:
            run = journal.resume(run)
        else:
            if run is not None:
                journal.supersede(run)
            try:
                current = executor.current_parts()
            except ExecutorError as exc:
                unread = journal.start(str(plan_dir), target.plan_hash, executor_name, [])
                journal.finish(unread.apply_id, "failed", f"cannot read the cluster's current parts: {exc}")
                raise ApplyError(f"cannot read the cluster's current parts, nothing applied: {exc}") from exc
            plan = plan_actions(current, target)
            if not plan.ok:
                stuck = journal.start(str(plan_dir), target.plan_hash, executor_name, [])
                journal.finish(stuck.apply_id, "stuck", plan.explain_stuck())
                raise UnsafePlan(plan)
            run = journal.start(str(plan_dir), target.plan_hash, executor_name, plan.actions)
        entries = journal.entries(run.apply_id)
        ran = 0
        for entry in entries:
            if entry.state == "done":
                continue
            action = entry.action
            journal.mark_started(run.apply_id, action.seq)
            if action_delay_ms:
                time.sleep(action_delay_ms / 1000.0)
            try:
                executor.apply(action)
            except Exception as exc:
                message = f"{exc.__class__.__name__}: {exc}"
                journal.mark_failed(run.apply_id, action.seq, message)
                journal.finish(run.apply_id, "failed", f"action {action.seq} ({action.kind.value} {action.part.label}): {message}")
                raise ApplyError(f"action {action.seq} ({action.kind.value} {action.part.label}) failed: {message}; "
                                 "run apply again to resume") from exc
            journal.mark_done(run.apply_id, action.seq)
            ran += 1
            if on_action is not None:
                on_action(action)
        problems = matches_target(executor.current_parts(), target)
        if problems:
            message = "cluster differs from the plan after the apply: " + "; ".join(problems[:10])
            journal.finish(run.apply_id, "failed", message)
            raise ApplyError(message)
        journal.finish(run.apply_id, "done")
        return ApplyReport(run.apply_id, run.resumed, len(entries), ran, time.perf_counter() - started)
    finally:
        if own_executor and executor is not None:
            executor.close()
        journal.close()


def current_status(state_path: str | Path) -> tuple[str, list[Part]]:
    """The executor recorded in the state file and the parts it holds now."""
    state_path = Path(state_path)
    if not state_path.exists():
        raise FileNotFoundError(f"{state_path}: no such state file")
    journal = Journal(state_path)
    try:
        name = str(journal.meta("executor", "sim"))
        hosts = {r["host_id"]: HostSpec.from_record(r) for r in journal.meta("hosts", [])}
    finally:
        journal.close()
    with open_executor(name, state_path, hosts or None) as executor:
        return name, executor.current_parts()
