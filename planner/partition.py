"""Partitioned planning: the fleet cut into cells of whole racks, each cell's share of the requests planned
by the engine as a Dask task, their plans merged into one warm start for a global pass over the whole fleet.

    cells   = split(hosts, requests, k, seed)     racks of every zone dealt over k cells, requests dealt at random
    results = run_cells(...)                      engine.plan() per cell: a Dask task (or in process, serially)
    merged  = merge(cells, results, n_requests)   the cells' plans in global host and request indices
    plan    = engine.plan(..., initial=merged)    the global pass: the merged plan is a warm-start candidate, then
                                                  ruin and recreate places what no cell could hold, across
                                                  cell borders, and consolidation / LNS improve the whole

Re-planning (`current`, what runs now): a running request whose parts all sit in one cell goes to that cell
with its current rows, so the cell's plan is an edit of what runs there (moves priced, its non-evictable
requests kept, its share of max_moves); a request running across cells is planned by the global pass only:
the cells see its parts as load on their hosts, and the merged plan keeps it where it runs (when it may
stay). The global pass re-plans the whole against the full current placement, so invariant 11, the move
budget and the moves table are those of a monolithic re-plan.

POP (Narayanan et al., SOSP 2021) splits granular allocation problems into random sub-problems the same way.
A cell is a union of whole racks, so every invariant a cell's plan keeps (one zone per request, replica
racks distinct, capacity) holds in the merged plan: cells share no host. The global pass is the ordinary
pipeline, so its plan is checked like any other.

Determinism: a cell's plan depends on its tables, its seed and its time limit (deterministic budget), and
its time limit on the command's, k and the worker count (the cells run in waves of `workers`); Dask's
scheduling order changes none of them. A task on a worker that dies is re-run by Dask on another.
"""
from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import polars as pl

from shardplan.cluster import dask_client
from shardplan.models.problem import Assignment
from shardplan.planner.engine import Plan, Progress, new_budget, plan, set_aside
from shardplan.planner.replan import CurrentPlacement
from shardplan.planner.search.budget import SearchBudget, Stop
from shardplan.planner.search.running import build_running
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import RESOURCES

AUTO_MAX_PARTITIONS = 16
"""The most cells the automatic choice makes."""
MIN_PARTITIONED_PAIRS = 500_000
"""Below this many request × host pairs (the demo's 240 hosts × 500 requests is 120,000) the automatic choice
is one monolithic plan: starting a cluster would cost more than splitting gains."""
CELL_SLACK = 0.9
CELL_START_S = 3.0
"""A cell's time limit is CELL_SLACK × its wave's share of the cells' grant less CELL_START_S: a fresh worker
imports the planner and receives the cell's tables before its budget starts (measured 2–4 s on 2 cores);
cut closer, the last cell of a wave missed the cells' deadline and its requests waited for the global pass."""


def partitions_for(options: PlanOptions, n_hosts: int, n_requests: int) -> int:
    """options.partitions, or (0) 1 below MIN_PARTITIONED_PAIRS, else k = ⌈(pairs / cell_pairs)^¼⌉ between 1
    and 16 for pairs = hosts × requests:
    2 at 500 hosts × 1,250 requests, 4 at 2,000 × 5,000, 8 at 10,000 × 25,000 — the fourth root, because
    benchmarks/scale.py measured the best K doubling while the pairs grow sixteenfold (K = 2 best of 1, 2, 4, 8
    at 500 hosts; 4 and 8 within 1% at 2,000; all side by side in its table)."""
    if options.partitions > 0:
        return options.partitions
    if n_hosts * n_requests < MIN_PARTITIONED_PAIRS:
        return 1
    k = math.ceil((n_hosts * n_requests / options.cell_pairs) ** 0.25 - 1e-9)
    return int(min(AUTO_MAX_PARTITIONS, max(1, k)))


@dataclass(frozen=True)
class Cell:
    """One sub-problem: row indices of its hosts and its requests in the full tables."""

    index: int
    hosts: np.ndarray
    requests: np.ndarray


def split(hosts: pl.DataFrame, requests: pl.DataFrame, k: int, seed: int,
          current: pl.DataFrame | None = None) -> list[Cell]:
    """k cells of whole racks. In every zone the racks are shuffled (seeded) and each goes to the cell
    holding least of that zone so far — GPU racks first, balanced by GPUs, then the others by vCPUs — so
    every cell has a slice of every zone and of every kind of host. Requests are dealt at random (seeded),
    those asking for GPUs apart from the rest, so every cell gets its share of each. With `current` (the
    running parts, shards columns) a running request goes to the cell that holds all its parts, or to no
    cell when they sit in several (:func:`spanning`)."""
    rng = np.random.default_rng(seed)
    host_cell = np.full(hosts.height, -1, dtype=np.int64)
    racks = hosts["rack"].to_numpy()
    zones = hosts["zone"].to_numpy()
    gpus = hosts["gpu"].to_numpy().astype(float)
    vcpus = hosts["vcpu"].to_numpy().astype(float)
    for zone in sorted(set(zones.tolist())):
        in_zone = zones == zone
        names = sorted(set(racks[in_zone].tolist()))
        shuffled = [names[i] for i in rng.permutation(len(names))]
        rows = {name: np.flatnonzero(in_zone & (racks == name)) for name in shuffled}
        rack_gpus = {name: gpus[rows[name]].sum() for name in shuffled}
        gpu_load, cpu_load = np.zeros(k), np.zeros(k)
        for name in sorted(shuffled, key=lambda n: rack_gpus[n] == 0):  # stable: GPU racks first, shuffled
            has_gpu = rack_gpus[name] > 0
            load = gpu_load if has_gpu else cpu_load
            cell = int(np.lexsort((np.arange(k), cpu_load, load))[0])
            host_cell[rows[name]] = cell
            gpu_load[cell] += rack_gpus[name]
            cpu_load[cell] += vcpus[rows[name]].sum()
    order = rng.permutation(requests.height)
    wants_gpu = requests["gpu"].to_numpy()[order] > 0
    dealt = np.concatenate([order[wants_gpu], order[~wants_gpu]])
    request_cell = np.empty(requests.height, dtype=np.int64)
    request_cell[dealt] = np.arange(requests.height) % k
    if current is not None and current.height:
        cell_of_host = dict(zip(hosts["host_id"].to_list(), host_cell.tolist()))
        row_of = {rid: i for i, rid in enumerate(requests["request_id"].to_list())}
        for rid, where in current.group_by("request_id").agg(pl.col("host_id").unique()).iter_rows():
            cells = {cell_of_host[h] for h in where}
            request_cell[row_of[rid]] = cells.pop() if len(cells) == 1 else -1
    return [Cell(c, np.flatnonzero(host_cell == c), np.flatnonzero(request_cell == c)) for c in range(k)]


def spanning(cells: list[Cell], n_requests: int) -> np.ndarray:
    """(R,) bool: requests in no cell (running across cells), which only the global pass plans."""
    out = np.ones(n_requests, dtype=bool)
    for cell in cells:
        out[cell.requests] = False
    return out


def across_load(current: CurrentPlacement | None, requests: pl.DataFrame, across: np.ndarray) -> pl.DataFrame | None:
    """Per host, what the requests in no cell hold there (columns _<resource>, shardplan.schema.RESOURCES);
    None when nothing runs across cells."""
    if current is None or not across.any():
        return None
    ids = requests["request_id"].filter(pl.Series(across)).implode()
    return (current.shards.filter(pl.col("request_id").is_in(ids))
            .group_by("host_id").agg(pl.col(r).sum().alias(f"_{r}") for r in RESOURCES))


def cell_tables(hosts: pl.DataFrame, requests: pl.DataFrame, cell: Cell,
                current: CurrentPlacement | None, load: pl.DataFrame | None
                ) -> tuple[pl.DataFrame, pl.DataFrame, CurrentPlacement | None]:
    """A cell's hosts, requests and current placement. `load` (:func:`across_load`): what requests running
    across cells hold on the cell's hosts, added to their used_* columns, as other tenants' load is."""
    cell_hosts, cell_requests = hosts[cell.hosts], requests[cell.requests]
    if current is None:
        return cell_hosts, cell_requests, None
    if load is not None:
        cell_hosts = (cell_hosts.join(load, on="host_id", how="left")
                      .with_columns((pl.col(f"used_{r}") + pl.col(f"_{r}").fill_null(0))
                                    .cast(cell_hosts.schema[f"used_{r}"]).alias(f"used_{r}") for r in RESOURCES)
                      .drop(f"_{r}" for r in RESOURCES))
    ids = cell_requests["request_id"].implode()
    mine = CurrentPlacement(current.shards.filter(pl.col("request_id").is_in(ids)), current.source, ())
    return cell_hosts, cell_requests, mine


@dataclass(frozen=True)
class CellResult:
    """What a cell's plan sends back: its assignment (cell indices) and figures; small, so cheap to move."""

    index: int
    placed: np.ndarray
    parts: list
    storage_hosts: list
    objective: float | None
    status: str
    wall_s: float
    pid: int
    cap_fired: bool = False   # the cell's wall-clock cap cut a phase short: a rerun may differ


def plan_cell(index: int, hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions,
              current: CurrentPlacement | None = None) -> CellResult:
    """One cell through the engine's pipeline (a Dask task): the plan is checked inside the cell too."""
    began = time.perf_counter()
    result = plan(hosts, requests, options, current=current)
    a = result.assignment
    return CellResult(index, a.placed, a.parts, a.storage_hosts, result.result.objective, result.result.status.value,
                      time.perf_counter() - began, os.getpid(),
                      bool(result.report is not None and result.report.budget.cap_fired))


def cell_options(options: PlanOptions, cell: Cell, time_limit_s: float, max_moves: int | None = None) -> PlanOptions:
    """A cell's options: its share of the time, one CP-SAT worker (a Dask worker is one core), no bound
    (the global pass proves the whole), never split again, its own seed; `max_moves`: its share of the
    move budget when re-planning."""
    return options.replace(time_limit_s=max(time_limit_s, 0.5), workers=1, lp_bound=False, partitions=1,
                           seed=options.seed + cell.index,
                           max_moves=options.max_moves if max_moves is None else max_moves)


def move_shares(options: PlanOptions, cells: list[Cell], current: CurrentPlacement | None,
                requests: pl.DataFrame) -> list[int | None]:
    """Each cell's share of max_moves, in proportion to the running requests it holds (rounded down, so
    the shares never add up past the budget); None where there is no budget or no re-planning."""
    if current is None or options.max_moves < 0:
        return [None] * len(cells)
    running = set(current.running)
    ids = requests["request_id"].to_list()
    held = [sum(ids[r] in running for r in cell.requests) for cell in cells]
    total = max(len(running), 1)
    return [options.max_moves * n // total for n in held]


def merge(cells: list[Cell], results: list[CellResult | None], n_requests: int) -> Assignment:
    """The cells' plans in the full tables' request and host indices (a cell that did not finish adds nothing)."""
    merged = Assignment.empty(n_requests)
    for cell, res in zip(cells, results):
        if res is None:
            continue
        for j in np.flatnonzero(res.placed):
            r = int(cell.requests[j])
            merged.placed[r] = True
            merged.parts[r] = [(int(cell.hosts[h]), v, m, n, g) for h, v, m, n, g in res.parts[j]]
            merged.storage_hosts[r] = [int(cell.hosts[h]) for h in res.storage_hosts[j]]
    return merged


def keep_across(merged: Assignment, across: np.ndarray, hosts: pl.DataFrame, requests: pl.DataFrame,
                current: CurrentPlacement, options: PlanOptions) -> int:
    """The requests running across cells, where they run, in the merged plan (those that may stay; the
    cells held their room); how many."""
    running = build_running(hosts, requests, current, options, (hosts["status"] == "up").to_numpy())
    kept = running.kept()
    rows = np.flatnonzero(across & running.keepable)
    for r in rows:
        merged.placed[r], merged.parts[r], merged.storage_hosts[r] = True, kept.parts[r], kept.storage_hosts[r]
    return int(len(rows))


def run_cells(tables: list[tuple], cells: list[Cell], options: list[PlanOptions],
              client, wall_cap_s: float, on_done: Callable[[int], None],
              failures: dict[int, str]) -> list[CellResult | None]:
    """Every cell's plan (`tables`: its hosts, requests and current placement, :func:`cell_tables`): as
    Dask tasks on `client` (retried on another worker when one dies), or in this process one by one when
    client is None. A cell unfinished at `wall_cap_s`, or failed (its error goes in `failures`), adds
    nothing: its requests wait for the global pass."""
    results: list[CellResult | None] = [None] * len(cells)
    began = time.perf_counter()
    if client is None:
        for cell, opts, table in zip(cells, options, tables):
            if time.perf_counter() - began < wall_cap_s:
                try:
                    results[cell.index] = plan_cell(cell.index, *table[:2], opts, table[2])
                except Exception as exc:  # as on Dask: the global pass plans its requests
                    failures[cell.index] = f"{type(exc).__name__}: {exc}"
            on_done(cell.index)
        return results
    from distributed import as_completed

    futures = {client.submit(plan_cell, cell.index, *table[:2], opts, table[2],
                             key=f"shardplan-cell-{cell.index}-{os.getpid()}-{time.time_ns()}", pure=False,
                             retries=2, priority=-cell.index): cell.index
               for cell, opts, table in zip(cells, options, tables)}
    try:
        for future in as_completed(list(futures), timeout=max(wall_cap_s, 1.0)):
            try:
                results[futures[future]] = future.result()
            except Exception as exc:  # a cell that fails (its retries too) adds nothing; the global pass plans it
                failures[futures[future]] = f"{type(exc).__name__}: {exc}"
            on_done(futures[future])
    except TimeoutError:
        pass
    finally:
        for future in futures:
            future.cancel()
    return results


def plan_partitioned(hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions, k: int,
                     client=None, workers: int | None = None, address: str | None = None,
                     progress: Progress | None = None, on_cell: Callable[[int, int], None] | None = None,
                     budget: SearchBudget | None = None, serial: bool = False,
                     current: CurrentPlacement | None = None) -> Plan:
    """k cells as Dask tasks, then the global pass, under one budget (the command's, when given). `client`:
    a distributed.Client; else `address` (an existing scheduler); else a LocalCluster of `workers` processes
    (default: one per core, at most k) is started and closed. serial=True runs the cells here, one by one
    (the same plan: the reference run). `workers` fixes the cells' time limits, so give it with an address.
    `current`: what runs now (re-planning; the module docstring says how cells share it)."""
    options.validate()
    budget = budget or new_budget(options)
    set_aside(budget, options, hosts.height, requests.height, 0 if current is None else current.shards.height)
    cells = split(hosts, requests, k, options.seed, None if current is None else current.shards)
    across = spanning(cells, requests.height)
    load = across_load(current, requests, across)
    tables = [cell_tables(hosts, requests, cell, current, load) for cell in cells]
    shares = move_shares(options, cells, current, requests)
    where = "in process" if serial else ("given client" if client is not None else (address or "LocalCluster"))
    with contextlib.ExitStack() as stack:
        if client is None and not serial:
            with budget.fixed("dask_cluster"):
                client = stack.enter_context(dask_client(address, workers or max(1, min(k, os.cpu_count() or 1))))
        if workers is None:
            workers = 1 if client is None else max(len(client.scheduler_info().get("workers", {})), 1)
        waves = math.ceil(k / workers)
        grant = budget.grant("cells", options.cells_share)
        # a cell's own limit leaves room, in its wave's share, for the task to reach a worker and start there
        per_cell = max(CELL_SLACK * grant.seconds / waves - CELL_START_S, 0.5)
        wall_cap = max(min(max(grant.wall_cap_s, grant.seconds), budget.wall_left() - budget.before_s), 1.0)
        began = time.perf_counter()
        done: list[int] = []

        def finished(index: int) -> None:
            done.append(index)
            if on_cell is not None:
                on_cell(len(done), k)
        failures: dict[int, str] = {}
        results = run_cells(tables, cells, [cell_options(options, c, per_cell, m) for c, m in zip(cells, shares)],
                            client, wall_cap, finished, failures)
        wall = time.perf_counter() - began
    complete = all(r is not None for r in results)
    budget.charge(grant, grant.seconds if grant.deterministic else wall, wall,
                  Stop.BUDGET if complete else Stop.WALL_CAP)
    merged = merge(cells, results, requests.height)
    kept_across = 0
    if current is not None and across.any():
        kept_across = keep_across(merged, across, hosts, requests, current, options)
    label = f"{k} cells merged"
    out = plan(hosts, requests, options, progress=progress, budget=budget, initial=(merged, label), current=current)
    if out.report is not None:
        out.report.partitioned = {
            "partitions": k, "workers": workers, "cluster": where,
            "cell_time_limit_s": round(per_cell, 3), "cells_wall_s": round(wall, 3),
            "merged_placed": int(merged.placed.sum()),
            "running_across_cells": int(across.sum()) if current is not None else 0,
            "kept_across_cells": kept_across,
            "merged_objective": out.report.warm_start.get("initial_objective"),
            "merged_is_start": out.report.warm_start.get("heuristic") == label,
            "cells": [{"cell": c.index, "hosts": int(len(c.hosts)), "requests": int(len(c.requests)),
                       "placed": None if r is None else int(r.placed.sum()),
                       "objective": None if r is None else r.objective,
                       "status": ("failed" if c.index in failures else "unfinished") if r is None else r.status,
                       "error": failures.get(c.index),
                       "wall_s": None if r is None else round(r.wall_s, 3),
                       "wall_clock_cap_fired": None if r is None else r.cap_fired} for c, r in zip(cells, results)],
        }
    return out
