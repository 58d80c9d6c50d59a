"""The decomposition engine as stages you can call one by one; `plan()` is their composition.

    fleet       = build_fleet(hosts)                                    host arrays in solver units
    start       = warm_start(fleet, requests, options, budget)          best of six greedy constructions
    searched    = wide_search(fleet, requests, options, start, budget)  ruin and recreate over wide candidates
    stage       = build_model_input(fleet, requests, options, start, searched)
                                                                        the model's candidates and problem
    search      = solve(stage.problem, stage.hint, options, budget, …)  consolidation, CP-SAT, LNS
    bound       = relax(stage.problem, search, options, budget)         LP (or zone-aggregate LP) bound
    outcome     = assign_and_check(...)                                 tables, the invariants, fallback
    report      = PlanReport(...)                                       plan.json, serialised once

A caller (a test, a what-if) can stop after any stage, or take `stage.problem`, build a
`shardplan.models.placement.PlacementModel` from it, add a constraint family or an objective term and
solve it again. Every stage runs under one `SearchBudget` (shardplan.planner.search.budget).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np
import polars as pl

from shardplan.models.lagrangian import lagrangian_bound
from shardplan.models.lp_bound import aggregate_bound, lp_bound
from shardplan.models.placement import PlacementModel
from shardplan.models.pool_bound import HostPools, pool_bound
from shardplan.models.problem import (
    COST_UNITS_PER_DOLLAR,
    NET_UNITS_PER_GBPS,
    RAM,
    STORAGE,
    Assignment,
    ObjectiveTerms,
    PlacementProblem,
    PlanStatus,
    SolveResult,
    assignment_usage,
    canonical_groups,
    evaluate,
    relabel_by_first_use,
    relative_gap,
    remote_gib,
    skew_ratio,
    span_count,
)
from shardplan.planner.replan import CurrentPlacement, compare, move_reasons, moved_requests
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.baselines import SIZE_MEASURES, ffd_order, first_fit
from shardplan.planner.search.budget import SearchBudget, SearchStats, Stop
from shardplan.planner.search.candidates import (
    FILTER_REASONS,
    Candidates,
    Fleet,
    build_fleet,
    find_candidates,
    host_pools,
    hot_room,
    modelled_slowdown,
    rack_distances,
    remote_memory,
    request_arrays,
    speed_deficit,
    speed_prices,
)
from shardplan.planner.search.consolidate import consolidate
from shardplan.planner.search.lns import improve
from shardplan.planner.search.recreate import keep_where_they_run, ruin_and_recreate
from shardplan.planner.search.running import Running, build_running
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import REQUESTS_OUT_OPTIONAL, REQUESTS_OUT_SCHEMA, SHARDS_SCHEMA

Progress = Callable[[str], None]

STAGES = ("fleet", "baseline", "search", "candidates", "solve", "bound", "assign", "check")
"""The stages `plan` reports to its progress callback, in order."""

KIND_COLUMN = "kind"
"""Optional requests column; rows whose kind is RESERVATION_KIND are reservation blocks."""
RESERVATION_KIND = "reservation"


def package_version() -> str:
    try:
        return version("shardplan")
    except PackageNotFoundError:
        return "0+unknown"


def inputs_hash(hosts: pl.DataFrame, requests: pl.DataFrame) -> str:
    """sha256 over the validated tables (column names, types and values)."""
    digest = hashlib.sha256()
    for table in (hosts, requests):
        digest.update(json.dumps(table.columns).encode())
        digest.update(table.hash_rows(seed=0).to_numpy().tobytes())
    return digest.hexdigest()


# --- typed reports ------------------------------------------------------------------------


def in_dollars(result: SolveResult) -> dict[str, object]:
    """A solver result with objective and bound converted from milli-$ to $ per hour."""
    out = result.to_dict()
    for key in ("objective", "best_bound"):
        if out[key] is not None:
            out[key] = out[key] / COST_UNITS_PER_DOLLAR
    return out


@dataclass(frozen=True)
class WarmStart:
    """The construction heuristics' best plan (request index space) and the FFD baseline."""

    assignment: Assignment
    order: np.ndarray        # the FFD order: the problem's request order, which the symmetry rules rely on
    heuristic: str
    ffd: Assignment
    variants: int            # construction heuristics that ran
    initial_total: int | None = None  # the objective of the plan handed in (`initial`), solver units

    def report(self, problem: PlacementProblem) -> dict[str, object]:
        terms = evaluate(problem, self.assignment.reordered(self.order))
        out = {"heuristic": self.heuristic, "objective": terms.total / COST_UNITS_PER_DOLLAR,
               "placed": int(self.assignment.placed.sum()), "variants": self.variants}
        if self.initial_total is not None:
            out["initial_objective"] = self.initial_total / COST_UNITS_PER_DOLLAR
        return out


@dataclass(frozen=True)
class CpSatReport:
    """What the monolithic CP-SAT solve did."""

    result: SolveResult
    variables: int
    constraints: int
    deterministic_s: float
    stopped_by: Stop
    started_s: float = 0.0   # the budget's clock when the solve started
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)  # (s since start, objective, bound)

    def to_dict(self) -> dict[str, object]:
        return {**in_dollars(self.result), "variables": self.variables, "constraints": self.constraints,
                "deterministic_s": round(self.deterministic_s, 3), "stopped_by": self.stopped_by.value}


@dataclass
class WideSearch:
    """Ruin and recreate run before the model is built, over wide candidate sets."""

    assignment: Assignment  # request index space; the warm start when the search found nothing better
    stats: SearchStats | None  # None: nothing waited, or the search is disabled
    candidate_pairs: int = 0
    top_k: int = 0
    narrow: bool = False    # the wide pass did not fit (wide_fits): ruin and recreate over the model's candidates

    @property
    def improved(self) -> bool:
        return self.stats is not None and self.stats.gained

    def to_dict(self) -> dict | None:
        if self.stats is None:
            return None
        return {**self.stats.to_dict(), "candidate_pairs": self.candidate_pairs, "top_k": self.top_k,
                "candidates": "model" if self.narrow else "wide"}


@dataclass
class SearchResult:
    """Best assignment found (problem order), a proven bound if any, and what each phase did."""

    assignment: Assignment
    bound: float | None
    proved_optimal: bool
    label: str
    pairs: int
    cp_sat: CpSatReport | None = None
    lns: SearchStats | None = None
    consolidation: SearchStats | None = None
    recreate: WideSearch | None = None


@dataclass
class PlanReport:
    """Everything plan.json holds, as one typed object serialised once (`to_dict`)."""

    result: SolveResult
    placed: int
    unplaced: int
    inputs_hash: str
    options: PlanOptions
    objective_terms: ObjectiveTerms
    search: SearchResult
    lp_relaxation: SolveResult | None
    baseline_ffd: ObjectiveTerms
    ffd_placed: int
    warm_start: dict[str, object]
    candidates: dict[str, int]
    checker_fallback: dict | None
    budget: SearchBudget
    version: str = field(default_factory=package_version)
    reserved: int | None = None                       # set by shardplan.planner.reservations
    reservation_blocks: dict[str, int] | None = None
    reservations: dict | None = None
    nightly: dict | None = None                       # set by shardplan.planner.nightly
    migration: dict | None = None                     # re-planning against what runs (DESIGN.md)
    partitioned: dict | None = None                   # set by shardplan.planner.partition

    def to_dict(self) -> dict[str, object]:
        search = self.search
        out: dict[str, object] = {
            **self.result.to_dict(),
            "placed": self.placed,
            "unplaced": self.unplaced,
            "inputs_hash": self.inputs_hash,
            "version": self.version,
            "options": self.options.to_dict(),
            "objective_terms": self.objective_terms.to_dict(),
            "cp_sat": search.cp_sat.to_dict() if search.cp_sat else None,
            "lns": search.lns.to_dict() if search.lns else None,
            "consolidation": search.consolidation.to_dict() if search.consolidation else None,
            "ruin_recreate": search.recreate.to_dict() if search.recreate else None,
            "lp_relaxation": in_dollars(self.lp_relaxation) if self.lp_relaxation else None,
            "baseline_ffd": {"objective": self.baseline_ffd.total / COST_UNITS_PER_DOLLAR, "placed": self.ffd_placed,
                             **self.baseline_ffd.to_dict()},
            "warm_start": self.warm_start,
            "candidates": self.candidates,
            "checker_fallback": self.checker_fallback,
            "budget": self.budget.to_dict(),
            "progress": self.progress(),
        }
        for key in ("reserved", "reservation_blocks", "reservations", "nightly", "migration", "partitioned"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


    def progress(self) -> list[dict[str, object]]:
        """The objective of the best plan each phase left and the bounds known, over the command's time ($/h;
        `t_s` from the budget's start): the warm start, each local search's result, every solution CP-SAT found
        with its bound (over the model's candidates), the LP bound and the final plan after assignment."""
        ended = {p.phase: p.end_s for p in self.budget.phases if p.end_s is not None}
        search, scale = self.search, COST_UNITS_PER_DOLLAR
        points: list[dict[str, object]] = []

        def add(phase: str, t: float | None, objective: float | None, bound: float | None = None) -> None:
            if t is not None and (objective is not None or bound is not None):
                points.append({"phase": phase, "t_s": round(t, 3), "objective": objective, "bound": bound})

        add("warm_start", ended.get("warm_start"), self.warm_start.get("objective"))
        if search.recreate is not None and search.recreate.stats is not None:
            add("ruin_recreate", ended.get("ruin_recreate"), search.recreate.stats.final_objective / scale)
        if search.consolidation is not None:
            add("consolidation", ended.get("consolidation"), search.consolidation.final_objective / scale)
        if search.cp_sat is not None:
            for t, objective, bound in search.cp_sat.trajectory:
                add("cp_sat", search.cp_sat.started_s + t, objective / scale, bound / scale)
            result = search.cp_sat.result
            add("cp_sat", ended.get("cp_sat"), None if result.objective is None else result.objective / scale,
                None if result.best_bound is None else result.best_bound / scale)
        if search.lns is not None:
            add("lns", ended.get("lns"), search.lns.final_objective / scale)
        if self.lp_relaxation is not None and self.lp_relaxation.objective is not None:
            add("lp_bound", ended.get("bound"), None, self.lp_relaxation.objective / scale)
        add("final", ended.get("check", ended.get("assign")), self.result.objective, self.result.best_bound)
        return sorted(points, key=lambda point: point["t_s"])


@dataclass
class Plan:
    """A solved plan: exportable tables plus everything that explains it."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    result: SolveResult
    report: PlanReport | None
    options: PlanOptions
    fleet: Fleet
    candidates: Candidates | None
    assignment: Assignment
    extra_json: dict | None = None   # plan.json of a plan made without the search (plan_ffd)
    current: pl.DataFrame | None = None  # what ran (re-planning): inputs/current.parquet
    moves: pl.DataFrame | None = None    # moves.parquet

    @property
    def plan_json(self) -> dict:
        return self.report.to_dict() if self.report is not None else dict(self.extra_json or {})

    @property
    def filter_counts(self) -> pl.DataFrame | None:
        """What each candidate filter dropped per request, as the solver saw it (filters.parquet)."""
        return None if self.candidates is None else self.candidates.reasons


# --- the problem in solver units --------------------------------------------------------------


def demand_units(requests: pl.DataFrame, options: PlanOptions) -> np.ndarray:
    """vcpu + ram_gib / demand_ram_gib_per_unit + gpu_units_per_gpu × gpu (at least 1 per request)."""
    units = (requests["vcpu"].to_numpy() + requests["ram_gib"].to_numpy() / options.demand_ram_gib_per_unit
             + options.gpu_units_per_gpu * requests["gpu"].to_numpy())
    return np.maximum(units, 1.0)


def unplaced_priority(requests: pl.DataFrame, options: PlanOptions) -> np.ndarray:
    """Priority as the objective and the FFD order weigh it: reservation blocks × reservation_weight."""
    priority = requests["priority"].to_numpy().astype(float)
    if KIND_COLUMN not in requests.columns:
        return priority
    is_block = (requests[KIND_COLUMN] == RESERVATION_KIND).fill_null(False).to_numpy()
    return np.where(is_block, priority * options.reservation_weight, priority)


def unplaced_weights(requests: pl.DataFrame, options: PlanOptions) -> np.ndarray:
    """Solver units charged per request left unplaced: priority × demand units × unplaced_weight."""
    return np.rint(unplaced_priority(requests, options) * demand_units(requests, options) * options.unplaced_weight
                   * COST_UNITS_PER_DOLLAR).astype(np.int64)


def ruled_out(candidates: Candidates) -> np.ndarray:
    """(R,) requests no host passed the compute filters for."""
    return np.array([len(c) == 0 for c in candidates.compute], dtype=bool)


def build_problem(fleet: Fleet, requests: pl.DataFrame, candidates: Candidates | None, options: PlanOptions,
                  order: np.ndarray, running: Running | None = None) -> PlacementProblem:
    """Solver-unit arrays for the requests in `order` (the FFD order, which the symmetry rules rely on);
    with `running`, what runs now and its move prices (re-planning)."""
    req = request_arrays(requests)
    weight = unplaced_weights(requests, options)
    if candidates is not None:  # a request no host passes the filters for weighs nothing: no plan can place it
        weight = np.where(ruled_out(candidates), 0, weight)
    spread = np.array([int(round(options.spread_weight(c) * COST_UNITS_PER_DOLLAR))
                       for c in requests["latency_class"].to_list()], dtype=np.int64)
    ratio = options.min_local_ram_gib_per_vcpu
    none = np.empty(0, dtype=np.int64)
    memory = remote_memory(requests, options)
    return PlacementProblem(
        free=fleet.free, cost=np.rint(fleet.cost * COST_UNITS_PER_DOLLAR).astype(np.int64), active=fleet.active,
        rack=fleet.rack, zone=fleet.zone, demand=req["demand"][order], unplaced_weight=weight[order],
        spread_weight=spread[order],
        max_shards=(np.ones_like(req["max_shards"]) if options.mode == "whole" else req["max_shards"])[order],
        replicas=req["replicas"][order], allow_remote=memory.cap[order] > 0,
        compute_candidates=[candidates.compute[r] for r in order] if candidates else [none] * len(order),
        gpu_ok=[candidates.gpu_ok[r] for r in order] if candidates else [none.astype(bool)] * len(order),
        storage_candidates=[candidates.storage[r] for r in order] if candidates else [none] * len(order),
        symmetry_groups=candidates.symmetry_groups if candidates and options.symmetry_breaking else [],
        whole=options.mode == "whole",
        remote_mbps_per_gib=int(round(options.remote_memory_gbps_per_gib * NET_UNITS_PER_GBPS)),
        local_ram_per_vcpu=(int(round(ratio * 1000)), 1000), ram_skew=skew_ratio(options.max_ram_skew),
        time_limit_s=options.time_limit_s, workers=options.workers, seed=options.seed,
        deterministic=options.deterministic, deterministic_units_per_s=options.deterministic_units_per_s,
        current=None if running is None else running.in_order(order), remote=memory.take(order),
        hot_room=hot_room(fleet, options), hot_price=int(round(options.hot_spot_price * COST_UNITS_PER_DOLLAR)),
        speed_price=speed_prices(requests, options)[order], speed_deficit=speed_deficit(fleet),
        rack_distance=rack_distances(fleet, options.topology, options.other_rack_latency_us,
                                     options.other_rack_bandwidth_gbps))


def candidate_pairs(compute: list[np.ndarray], storage: list[np.ndarray]) -> int:
    """(request, candidate host) pairs over compute and storage candidate lists."""
    return int(sum(len(c) for c in compute) + sum(len(s) for s in storage))


def waits(problem: PlacementProblem, assignment: Assignment) -> bool:
    """Some request that has a compute candidate is unplaced (more demand than room)."""
    return any(len(c) and not placed for c, placed in zip(problem.compute_candidates, assignment.placed))


# --- stage: budget ----------------------------------------------------------------------------


def new_budget(options: PlanOptions, started: float | None = None) -> SearchBudget:
    """The search budget of a run of `options` (started now unless the command started it earlier)."""
    return SearchBudget(options.time_limit_s, deterministic=options.deterministic,
                        units_per_s=options.deterministic_units_per_s, safety_factor=options.wall_safety_factor,
                        started=started)


FINISH_S_PER_KREQUEST = 0.2
"""Seconds kept after the bound, per 1,000 requests, beyond the first second: assignment, check, export and
the process's exit (measured 1.7 s past the bound at 5,000 requests on 2 cores, Dask workers closing)."""

MOVES_CHECK_S_PER_KPART = 0.12
"""Seconds set aside after the search per 1,000 running parts (re-planning): ordering the moves with the
executors' action planner and the moves table (measured 0.7 s at 12,000 parts on 2 cores; twice that)."""


def wide_fits(options: PlanOptions, n_hosts: int, n_requests: int) -> bool:
    """Whether the wide candidate pass of ruin and recreate fits: the fixed phases' estimate with it within
    60% of the limit (a rule on sizes and the limit, not the clock). At 10,000 hosts × 25,000 requests it
    took 98 s of a 361 s run that was given 300."""
    return 0.5 + options.fixed_s_per_mpair * n_hosts * n_requests / 1e6 <= 0.6 * options.time_limit_s


def set_aside(budget: SearchBudget, options: PlanOptions, n_hosts: int, n_requests: int,
              running_parts: int = 0) -> None:
    """What the fixed phases and the bound are expected to take, from the problem's size."""
    pairs = n_hosts * n_requests / 1e6
    per_mpair = options.fixed_s_per_mpair - (0.0 if wide_fits(options, n_hosts, n_requests)
                                             else options.wide_s_per_mpair)
    fixed = 0.5 + per_mpair * pairs
    # after the search: the model's candidate pass (it filters the same fleet as the wide pass, and takes
    # about as long), then assignment, check and export
    after = min(options.wide_s_per_mpair * pairs + 0.05 * fixed, fixed)
    bound = min(options.lp_time_limit_s, max(1.0, options.bound_share * options.time_limit_s,
                                             options.bound_s_per_krequest * n_requests / 1000)) if options.lp_bound else 0.0
    budget.finish_s = 1.0 + FINISH_S_PER_KREQUEST * n_requests / 1000  # kept after the bound, so set aside too
    budget.set_aside(fixed - after, after + bound + budget.finish_s + MOVES_CHECK_S_PER_KPART * running_parts / 1000)


# --- stage: warm start ------------------------------------------------------------------------


def run_ffd(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions, sharded: bool, measure: str = "sum",
            best_fit: bool = False, running: Running | None = None,
            copy_apart: bool = False, gpu_aware: bool = False,
            priority_first: bool = False) -> tuple[Assignment, np.ndarray]:
    """First-fit decreasing (whole, or greedy sharded) in request index space, and the order used. With
    `running`: what may stay stays where it is; the forced moves go first, into room nobody holds (their
    old room stays theirs until they have moved, so two forced moves never wait on each other, and what
    runs comes before what is new); then the new requests, in the room the forced moves left."""
    req = request_arrays(requests)
    order = ffd_order(req["demand"], unplaced_priority(requests, options), fleet, measure, priority_first)
    max_shards = req["max_shards"] if sharded else np.ones_like(req["max_shards"])
    memory = remote_memory(requests, options)

    def fit(view: Fleet, inserted: np.ndarray) -> Assignment:
        return first_fit(view, req["demand"], req["tier"], req["gpu_model"], max_shards, req["replicas"],
                         req["low_latency"], inserted, sharded, options.min_local_ram_gib_per_vcpu,
                         best_fit=best_fit, min_cpu=req["min_cpu"], min_iops=req["min_iops"], remote=memory,
                         copy_apart=copy_apart, skew=skew_ratio(options.max_ram_skew), gpu_aware=gpu_aware)

    if running is None:
        return fit(fleet.room_view(), order), order
    forced = fit(fleet.room_view(), order[running.mandatory[order]])
    left = np.clip(fleet.free - running.held_kept - assignment_usage(forced, req["demand"][:, STORAGE], memory,
                                                                     fleet.n_hosts), 0, None)
    assignment = fit(dataclasses.replace(fleet, free=left, held=None), order[~running.running[order]])
    kept = running.kept()
    for r in np.flatnonzero(running.keepable):
        assignment.placed[r], assignment.parts[r] = True, kept.parts[r]
        assignment.storage_hosts[r] = kept.storage_hosts[r]
    for r in np.flatnonzero(forced.placed):
        assignment.placed[r], assignment.parts[r] = True, forced.parts[r]
        assignment.storage_hosts[r] = forced.storage_hosts[r]
    return assignment, order


def warm_start(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions,
               budget: SearchBudget | None = None, running: Running | None = None,
               initial: tuple[Assignment, str] | None = None) -> WarmStart:
    """Best of the construction heuristics (three size measures × first fit / best fit × GPU-aware or not ×
    by priority × size or by priority first, baselines.first_fit), by objective;
    interchangeable empty hosts are relabelled by first use so the symmetry rules accept it. The first
    variant's plain answer is the FFD baseline. A variant after the first runs only while the budget's
    wall clock has room for one more. With `running` (re-planning) every variant keeps what may stay
    where it is and inserts the rest: the first is what a classic scheduler would do. `initial`: a plan
    made elsewhere (request index space, e.g. the cells' merged plans) and its name, one more candidate."""
    scorer = build_problem(fleet, requests, None, options, np.arange(requests.height), running)
    best = None
    initial_total = None if initial is None else evaluate(scorer, initial[0]).total
    if initial is not None:
        best = (initial_total, initial[0], None, initial[1])
    # the classic baseline first, then the GPU-aware best fit by priority, then summed size (the best of them
    # on seeded 500- and 1,000-host fleets: 5-12% below the next, and what runs when the size affords only
    # two), then the GPU-aware best fit by summed size, then the rest
    head = [("sum", False, False, False), ("sum", True, True, True), ("sum", True, True, False)]
    variants = head + [(m, b, g, f) for f in (False, True) for g in (False, True) for b in (False, True)
                       for m in SIZE_MEASURES if (m, b, g, f) not in head]
    # how many variants run is fixed by the problem's size, not by the clock, so plans stay reproducible
    affordable = max(1, int(options.warm_start_work // max(requests.height * fleet.n_hosts, 1)))
    began = time.perf_counter()
    ran = 0
    for measure, best_fit, gpu_aware, priority_first in variants[:affordable]:
        if ran and budget is not None and budget.wall_left() < (time.perf_counter() - began) / ran:
            budget.note_cap("warm_start_variants")
            break
        # the first variant is the classic baseline (copy 0 beside the compute); the others may keep it apart
        assignment, order = run_ffd(fleet, requests, options, options.mode == "sharded", measure, best_fit, running,
                                    copy_apart=ran > 0, gpu_aware=gpu_aware, priority_first=priority_first)
        ran += 1
        if ran == 1:
            first, first_order = assignment, order  # the classic baseline: first fit, decreasing by summed size
        total = evaluate(scorer, assignment).total
        if best is None or total < best[0]:
            by = f"priority, then {measure}" if priority_first else measure
            best = (total, assignment, order, f"{'GPU-aware ' if gpu_aware else ''}"
                                              f"{'best' if best_fit else 'first'}-fit decreasing by {by}")
    _, assignment, order, label = best
    order = first_order if order is None else order
    return WarmStart(canonical(fleet, assignment, order), order, label, first, ran, initial_total)


def canonical(fleet: Fleet, assignment: Assignment, order: np.ndarray) -> Assignment:
    """Relabel the members of each class of empty, interchangeable hosts in order of first use."""
    members: dict[int, list[int]] = {}
    for h in np.flatnonzero(fleet.up & ~fleet.active & ~fleet.holds_running):
        members.setdefault(int(fleet.host_class[h]), []).append(int(h))
    return relabel_by_first_use(assignment, list(members.values()), order)


# --- stage: wide search ---------------------------------------------------------------------


def search_options(options: PlanOptions, fleet: Fleet, n_requests: int) -> PlanOptions:
    """Candidate options for ruin and recreate: as many classes per zone as search_pair_budget affords
    (every host that passes the filters on the demo), never fewer than the model's top_k."""
    zones = max(len(np.unique(fleet.zone)), 1)
    per_zone = min(options.search_pair_budget // max(2 * n_requests * zones, 1), fleet.n_hosts)  # compute, storage
    return options.replace(top_k=max(options.top_k, int(per_zone)),
                           pair_budget=max(options.pair_budget, options.search_pair_budget))


def recreate(problem: PlacementProblem, hint: Assignment, options: PlanOptions,
             budget: SearchBudget) -> tuple[Assignment, SearchStats]:
    """Ruin and recreate from `hint` (problem order) for recreate_share of the search budget, charged."""
    grant = budget.grant("ruin_recreate", options.recreate_share)
    moves = grant.moves(options.recreate_moves_per_s)
    found, stats = ruin_and_recreate(problem, hint, moves, seed=options.seed, relabel=False,
                                     wall_limit_s=grant.wall_cap_s)
    # deterministic time: the moves made, in their share (stopping early because nothing waits hands the rest on)
    budget.charge(grant, grant.seconds * min(stats.moves / moves, 1.0) if grant.deterministic else stats.wall_s,
                  stats.wall_s, stats.stopped_by)
    return found, stats


def wide_search(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions, start: WarmStart,
                budget: SearchBudget, running: Running | None = None) -> WideSearch:
    """When the warm start leaves a request with somewhere to go unplaced, ruin and recreate for
    recreate_share of the search budget over wide candidate sets (`search_options`). The model's top_k
    keeps CP-SAT and the LP small; a local search need not be, and on the demo fleet the best-12 classes
    left it 5% short of the objective that every host gave (dev runs, 4,000 moves, 4 seeds)."""
    if options.recreate_share <= 0 or start.assignment.placed.all():
        budget.skip("ruin_recreate")
        return WideSearch(start.assignment, None)
    if not wide_fits(options, fleet.n_hosts, requests.height):
        return WideSearch(start.assignment, None, narrow=True)  # over the model's candidates (narrow_search)
    wide_options = search_options(options, fleet, requests.height)
    with budget.fixed("search_candidates"):
        must = start.assignment.hosts_per_request()
        if running is not None:
            must = [a | b for a, b in zip(must, staying_hosts(fleet, running))]
        wide = find_candidates(fleet, requests, wide_options, must_include=must)
        problem = build_problem(fleet, requests, wide, options, start.order, running)
        hint = start.assignment.reordered(start.order)
    if not waits(problem, hint):
        budget.skip("ruin_recreate")
        return WideSearch(start.assignment, None)
    found, stats = recreate(problem, hint, options, budget)
    return WideSearch(found.restored(start.order) if stats.gained else start.assignment, stats,
                      candidate_pairs(wide.compute, wide.storage), wide_options.top_k)


# --- stage: the model's candidates and problem ------------------------------------------------


@dataclass(frozen=True)
class ModelInput:
    """The model's candidates, its placement problem and the hints in problem order."""

    candidates: Candidates
    problem: PlacementProblem
    hint: Assignment         # the best plan so far, relabelled for the symmetry rules
    start_hint: Assignment   # the warm start
    ffd_hint: Assignment     # the FFD baseline


def staying_hosts(fleet: Fleet, running: Running) -> list[set[int]]:
    """Per request, the up hosts its running parts sit on (so it may stay there)."""
    return [{h for h in hosts if fleet.up[h]} for hosts in running.hosts()]


def build_model_input(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions, start: WarmStart,
                      searched: WideSearch, running: Running | None = None) -> ModelInput:
    """The best top_k classes per request, plus every host the warm start and the search used (so their
    plans are valid hints) and, re-planning, the hosts running parts sit on, and the placement problem."""
    must = [a | b for a, b in zip(start.assignment.hosts_per_request(), searched.assignment.hosts_per_request())]
    if running is not None:
        must = [a | b for a, b in zip(must, staying_hosts(fleet, running))]
    candidates = find_candidates(fleet, requests, options, must_include=must)
    problem = build_problem(fleet, requests, candidates, options, start.order, running)
    return ModelInput(candidates, problem, canonical_groups(problem, searched.assignment.reordered(start.order)),
                      start.assignment.reordered(start.order), start.ffd.reordered(start.order))


def narrow_search(stage: ModelInput, options: PlanOptions, start: WarmStart, budget: SearchBudget,
                  searched: WideSearch) -> tuple[ModelInput, WideSearch]:
    """Ruin and recreate over the model's candidates, when the wide pass did not fit (`wide_fits`): on a
    partitioned plan this is the global pass over what the cells left, across their borders."""
    if not searched.narrow:
        return stage, searched
    if not waits(stage.problem, stage.hint):
        budget.skip("ruin_recreate")
        return stage, WideSearch(searched.assignment, None)
    found, stats = recreate(stage.problem, stage.hint, options, budget)
    pairs = candidate_pairs(stage.problem.compute_candidates, stage.problem.storage_candidates)
    if not stats.gained:
        return stage, WideSearch(searched.assignment, stats, pairs, options.top_k, narrow=True)
    hint = canonical_groups(stage.problem, found)
    return (dataclasses.replace(stage, hint=hint),
            WideSearch(hint.restored(start.order), stats, pairs, options.top_k, narrow=True))


# --- stage: solve -----------------------------------------------------------------------------


def solve(problem: PlacementProblem, hint: Assignment, options: PlanOptions, budget: SearchBudget,
          solver_log: Callable[[str], None] | None = None, searched: WideSearch | None = None) -> SearchResult:
    """Consolidation first when every request with a candidate is placed (its share of what is left of
    the search budget); then monolithic CP-SAT on models up to `monolithic_pair_limit` pairs (its share),
    then large-neighbourhood search with CP-SAT on the rest of the budget from the best plan so far."""
    out = SearchResult(hint, None, False, "warm-start", candidate_pairs(problem.compute_candidates,
                                                                         problem.storage_candidates))
    labels: list[str] = []
    if searched is not None and searched.stats is not None:
        out.recreate = searched
        if searched.improved:
            labels.append("ruin-recreate")
    if options.consolidation_share > 0 and not waits(problem, hint):
        # emptying paid-for hosts when everything that can be placed is; its result is the hint from then on
        grant = budget.grant("consolidation", options.consolidation_share)
        moves = grant.moves(options.consolidation_moves_per_s)
        found, stats = consolidate(problem, hint, moves, seed=options.seed, wall_limit_s=grant.wall_cap_s)
        out.consolidation = stats
        if stats.gained:
            out.assignment = hint = found
            labels.append("consolidation")
        budget.charge(grant, grant.seconds if grant.deterministic else stats.wall_s, stats.wall_s, stats.stopped_by)
    else:
        budget.skip("consolidation")
    grant = budget.grant("cp_sat", 1.0 if options.lns_share <= 0 else 1.0 - options.lns_share)
    build_s = options.model_build_s_per_kpair * out.pairs / 1000
    if out.pairs > options.monolithic_pair_limit or grant.seconds <= 0:
        budget.skip("cp_sat")
    elif grant.wall_cap_s < 2 * build_s + 0.1:  # no time left to build the model, let alone search it
        budget.note_cap("cp_sat")
    else:
        began = time.perf_counter()
        model = PlacementModel.build(dataclasses.replace(problem, time_limit_s=grant.seconds))
        # the cap covers building the model too: the solve gets what building it left
        model.problem = dataclasses.replace(model.problem,
                                            wall_limit_s=max(grant.wall_cap_s - (time.perf_counter() - began), 0.01))
        solve_started = budget.elapsed()
        solution = model.solve(hint, log_callback=solver_log)
        wall = time.perf_counter() - began
        out.proved_optimal = solution.result.status == PlanStatus.OPTIMAL
        used = solution.deterministic_s / grant.units_per_s if grant.deterministic else wall
        charged = budget.charge(grant, used, wall, Stop.DONE if out.proved_optimal else Stop.BUDGET)
        out.cp_sat = CpSatReport(solution.result, solution.n_variables, solution.n_constraints,
                                 solution.deterministic_s, charged.stopped_by, solve_started, solution.trajectory)
        out.bound = solution.result.best_bound
        if solution.terms is not None and solution.terms.total <= evaluate(problem, hint).total:
            out.assignment = solution.assignment
            labels.append("cp-sat")
    grant = budget.grant("lns")
    if grant.seconds > 0 and not out.proved_optimal and options.lns_share > 0:
        out.assignment, stats = improve(problem, out.assignment, grant.solver_limit, seed=options.seed,
                                        wall_limit_s=grant.wall_cap_s, sub_time_s=options.lns_neighbourhood_s)
        out.lns = stats
        used = stats.deterministic_s / grant.units_per_s if grant.deterministic else stats.wall_s
        budget.charge(grant, used, stats.wall_s, stats.stopped_by)
        if stats.gained:
            labels.append("lns" if labels else "cp-sat-lns")
    else:
        budget.skip("lns")
    out.label = "+".join(labels) or "warm-start"
    return out


# --- stage: bound -----------------------------------------------------------------------------


def complete_candidates(candidates: Candidates, requests: pl.DataFrame, order: np.ndarray) -> np.ndarray:
    """Per request (problem order): its candidates are every host its filters pass (no `ranked_out`)."""
    ranked = candidates.reasons.filter(pl.col("filter") == "ranked_out")["request_id"].to_list()
    return ~requests["request_id"].is_in(ranked).to_numpy()[order]


def relax(problem: PlacementProblem, search: SearchResult, options: PlanOptions,
          budget: SearchBudget, complete: np.ndarray | None = None,
          pools: HostPools | None = None) -> SolveResult | None:
    """Within what the budget leaves after the search: the pool LP (`pools`; models.pool_bound), then the
    full LP relaxation in what is left, or above lp_pair_limit pairs the Lagrangian bound (`large_bound`);
    the best counts. Only an LP solved to optimality counts as a bound."""
    if not options.lp_bound:
        budget.skip("bound")
        return None
    grant = budget.tail_grant("bound", options.lp_time_limit_s)
    started = budget.elapsed()
    full = search.pairs <= options.lp_pair_limit
    if full and grant.seconds < 1.5 * options.lp_build_s_per_kpair * search.pairs / 1000 + 0.5:
        full = False  # building the full LP alone would pass the deadline: the pool LP is small
    if grant.seconds < 0.5:
        budget.note_cap("bound")
        return None
    if full:  # the pool LP first (cheap, so a bound is there even if the full LP runs out of time), then the full LP
        found = [] if pools is None else [pool_bound(problem, pools, grant.seconds)]
        left = grant.seconds - (budget.elapsed() - started)
        if left >= 0.5 or not found:
            found.append(lp_bound(problem, left))
        result = strongest(found, found[-1])
    else:  # the pool LP, then the Lagrangian bound (capacity rows priced) in what is left; the best counts
        result = large_bound(problem, search, options, grant.seconds, complete, pools)
    result = dataclasses.replace(result, wall_s=budget.elapsed() - started)
    stop = Stop.DONE if result.best_bound is not None else (
        Stop.WALL_CAP if result.wall_s >= grant.wall_cap_s else Stop.BUDGET)
    budget.charge(grant, result.wall_s, result.wall_s, stop)
    return result


def strongest(found: list[SolveResult], unproved: SolveResult) -> SolveResult:
    """The highest proven bound of `found`; `unproved` (the result to report) when none proved one."""
    proved = [r for r in found if r.best_bound is not None]
    return max(proved, key=lambda r: r.best_bound) if proved else unproved


def large_bound(problem: PlacementProblem, search: SearchResult, options: PlanOptions, seconds: float,
                complete: np.ndarray | None, pools: HostPools | None) -> SolveResult:
    """Above lp_pair_limit: the pool LP, the Lagrangian bound in what it leaves, and where the pool LP
    proved nothing the zone-aggregate LP after the Lagrangian's share; the best of them."""
    began = time.perf_counter()
    left = lambda: seconds - (time.perf_counter() - began)  # noqa: E731
    found: list[SolveResult] = []
    if pools is not None:
        found.append(pool_bound(problem, pools, seconds))
    pooled = bool(found) and found[0].best_bound is not None
    if left() >= 0.5 or not found:
        upper = evaluate(problem, search.assignment).total
        share = 1.0 if pooled else options.lagrangian_share
        found.append(lagrangian_bound(problem, share * left(), upper=upper, complete=complete))
    if not pooled and left() >= 0.5:
        found.append(aggregate_bound(problem, left()))
    return strongest(found, found[0])


def best_bound(search: SearchResult, lp: SolveResult | None) -> float | None:
    """The tighter of CP-SAT's bound and the relaxation's (solver units). A relaxation proves a bound when it
    sets best_bound: an LP only when solved to optimality (models.lp_bound), a Lagrangian dual point always."""
    bound = search.bound
    if lp is not None and lp.best_bound is not None and (bound is None or lp.best_bound > bound):
        bound = lp.best_bound
    return bound


# --- stage: assign and check ------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """The chosen plan (problem order) as tables, checked; `fallback` when the search's plan broke an invariant."""

    assignment: Assignment
    terms: ObjectiveTerms
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    improved: bool               # better than the warm start
    fallback: dict | None


def assign_and_check(hosts: pl.DataFrame, requests: pl.DataFrame, fleet: Fleet, options: PlanOptions,
                     stage: ModelInput, order: np.ndarray, search: SearchResult, budget: SearchBudget,
                     checker=check_plan, running: Running | None = None) -> Outcome:
    """The better of the search's plan and the warm start as tables, checked against the invariants;
    if the check fails (a bug, never a plan) the best valid plan of the warm start, the FFD baseline,
    (re-planning) what runs kept where it is, and nothing placed is taken instead, and the violations
    are recorded."""
    current = None if running is None else running.placement.shards

    stuck: set[str] = set()

    def check(shards: pl.DataFrame, requests_out: pl.DataFrame) -> list:
        stuck.clear()
        found = checker(hosts, requests, shards, requests_out, options, current=current)
        if found or current is None:
            return found
        messages, blocked = unorderable_moves(hosts, requests, current, shards)
        stuck.update(blocked)
        return messages
    problem = stage.problem
    chosen, terms = search.assignment, evaluate(problem, search.assignment)
    start_terms = evaluate(problem, stage.start_hint)
    improved = terms.total < start_terms.total
    if not improved:
        chosen, terms = stage.start_hint, start_terms
    with budget.fixed("assign"):
        shards, requests_out = assemble(fleet, requests, chosen.restored(order), options, stage.candidates, running)
    with budget.fixed("check"):
        violations = check(shards, requests_out)
        for _ in range(4 if running is not None else 0):  # moves no executor can order: keep those requests
            if not violations or not stuck:
                break
            repaired = keep_in_place(problem, chosen, requests, stuck, order)
            if repaired is None:
                break
            shards, requests_out = assemble(fleet, requests, repaired.restored(order), options, stage.candidates,
                                            running)
            chosen, violations = repaired, check(shards, requests_out)
            terms = evaluate(problem, chosen)
        if not violations and improved and terms.total > start_terms.total:  # the repair cost more than it won
            start = assemble(fleet, requests, stage.start_hint.restored(order), options, stage.candidates, running)
            if not check(*start):
                chosen, terms, (shards, requests_out) = stage.start_hint, start_terms, start
    if not violations:
        return Outcome(chosen, terms, shards, requests_out, terms.total < start_terms.total, None)
    fallback: dict = {"violations": [str(v) for v in violations[:20]], "violation_count": len(violations),
                      "broken": search.label}
    alternatives = [("warm start", stage.start_hint), ("first-fit decreasing", stage.ffd_hint)]
    if running is not None:
        alternatives.append(("what runs, kept where it is", running.kept().reordered(order)))
    for name, alternative in alternatives + [("nothing placed", Assignment.empty(len(order)))]:
        with budget.fixed(f"fallback: {name}"):
            shards, requests_out = assemble(fleet, requests, alternative.restored(order), options, stage.candidates,
                                            running)
            if not check(shards, requests_out):
                fallback["plan"] = name
                return Outcome(alternative, evaluate(problem, alternative), shards, requests_out, False, fallback)
    raise AssertionError("no fallback passed the checker")  # unreachable: what runs, kept, breaks no invariant


def keep_in_place(problem: PlacementProblem, chosen: Assignment, requests: pl.DataFrame, stuck: set[str],
                  order: np.ndarray) -> Assignment | None:
    """The plan (problem order) with the running requests whose moves could not be ordered put back where
    they run, and what took their room placed again (`keep_where_they_run`); None when none is stuck."""
    ids = requests["request_id"].to_list()
    return keep_where_they_run(problem, chosen, [p for p, r in enumerate(order.tolist()) if ids[r] in stuck])


def unorderable_moves(hosts: pl.DataFrame, requests: pl.DataFrame, current: pl.DataFrame,
                      shards: pl.DataFrame) -> tuple[list[str], set[str]]:
    """Re-planning: the plan must be reachable from what runs. The executors' action planner orders the moves
    within capacity (staging through free room where it finds some); what it cannot order is returned, so the
    plan is refused like one that breaks an invariant and the next valid alternative is taken."""
    from shardplan.executors.actions import plan_between

    ordered = plan_between(hosts, requests, current, shards)
    return ([f"moves cannot be ordered within capacity: {s.action.kind.value} {s.action.part.label}: {s.why}"
             for s in ordered.stuck], {s.action.part.request_id for s in ordered.stuck})


def solver_label(search: SearchResult, outcome: Outcome, lp: SolveResult | None, bound: float | None,
                 status: PlanStatus, heuristic: str) -> str:
    """Which phases made the plan (and proved its bound), or why the warm start stands."""
    if outcome.fallback is not None:
        return (f"checker fallback: {outcome.fallback['plan']} ({search.label} broke "
                f"{outcome.fallback['violation_count']} invariant checks)")
    if outcome.improved or status == PlanStatus.OPTIMAL:
        proved_by_lp = lp is not None and bound is not None and bound == lp.best_bound
        return "+".join([search.label] + ([lp.solver] if proved_by_lp else []))
    return f"warm-start fallback: {heuristic} ({search.label}: no better plan in time)"


# --- the pipeline -----------------------------------------------------------------------------


def plan(hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions,
         progress: Progress | None = None, solver_log: Callable[[str], None] | None = None,
         budget: SearchBudget | None = None, current: CurrentPlacement | None = None,
         initial: tuple[Assignment, str] | None = None) -> Plan:
    """The stages in order under one search budget (the command's, when given); see the module docstring.
    With `current` (what runs now, validated by shardplan.planner.replan.load_current) the plan is an edit
    of it: what may stay is kept unless moving it pays, within options.max_moves. `initial`: a plan made
    elsewhere (request index space) and its name, a warm-start candidate (shardplan.planner.partition)."""
    note = progress or (lambda _stage: None)
    options.validate()
    budget = budget or new_budget(options)
    set_aside(budget, options, hosts.height, requests.height, 0 if current is None else current.shards.height)
    note("fleet")
    with budget.fixed("fleet"):
        running = None
        if current is not None:
            running = build_running(hosts, requests, current, options, (hosts["status"] == "up").to_numpy())
        fleet = build_fleet(hosts, None if running is None else running.held)
    note("baseline")
    with budget.fixed("warm_start"):
        start = warm_start(fleet, requests, options, budget, running, initial)
    note("search")
    searched = wide_search(fleet, requests, options, start, budget, running)
    note("candidates")
    with budget.fixed("candidates"):
        stage = build_model_input(fleet, requests, options, start, searched, running)
    stage, searched = narrow_search(stage, options, start, budget, searched)
    note("solve")
    search = solve(stage.problem, stage.hint, options, budget, solver_log, searched)
    note("bound")
    lp = relax(stage.problem, search, options, budget,
               complete_candidates(stage.candidates, requests, start.order),
               host_pools(fleet, requests, start.order, stage.problem.free) if options.lp_bound else None)
    note("assign")
    outcome = assign_and_check(hosts, requests, fleet, options, stage, start.order, search, budget, running=running)
    bound_units = best_bound(search, lp)
    objective = outcome.terms.total / COST_UNITS_PER_DOLLAR
    bound = None if bound_units is None else min(bound_units, outcome.terms.total) / COST_UNITS_PER_DOLLAR
    gap = relative_gap(objective, bound)
    proved = search.proved_optimal and outcome.fallback is None or (gap is not None and gap < 1e-9)
    status = PlanStatus.OPTIMAL if proved else PlanStatus.FEASIBLE
    final = SolveResult(status, objective, bound, gap, budget.elapsed(),
                        solver_label(search, outcome, lp, bound_units, status, start.heuristic))
    assignment = outcome.assignment.restored(start.order)
    placed = int(assignment.placed.sum())
    report = PlanReport(
        result=final, placed=placed, unplaced=int(requests.height - placed), inputs_hash=inputs_hash(hosts, requests),
        options=options,
        objective_terms=dataclasses.replace(outcome.terms, ruled_out=int(
            unplaced_weights(requests, options)[ruled_out(stage.candidates)].sum())),
        search=search, lp_relaxation=lp, baseline_ffd=evaluate(stage.problem, stage.ffd_hint),
        ffd_placed=int(start.ffd.placed.sum()), warm_start=start.report(stage.problem),
        candidates={"pairs": candidate_pairs(stage.candidates.compute, stage.candidates.storage),
                    "member_cap": stage.candidates.member_cap,
                    "symmetry_groups": len(stage.candidates.symmetry_groups)},
        checker_fallback=outcome.fallback, budget=budget)
    moves = None
    if running is not None:
        with budget.fixed("moves"):
            moves, report.migration = migration(hosts, requests, running, outcome.shards, options)
    return Plan(hosts, requests, outcome.shards, outcome.requests_out, final, report, options, fleet,
                stage.candidates, assignment, current=None if current is None else current.shards, moves=moves)


def migration(hosts: pl.DataFrame, requests: pl.DataFrame, running: Running, shards: pl.DataFrame,
              options: PlanOptions) -> tuple[pl.DataFrame, dict]:
    """moves.parquet and plan.json's `migration`, from the tables (DESIGN.md's definition of a move)."""
    current = running.placement.shards
    moved = moved_requests(current, shards) - set(running.reasons)
    reasons = move_reasons(hosts, requests, current, shards, moved)
    moves, counts = compare(current, shards, requests, running.reasons, reasons)
    counts.update(max_moves=None if options.max_moves < 0 else options.max_moves, source=running.placement.source,
                  departed_requests=len(running.placement.departed),
                  mandatory_reasons=dict(list(running.reasons.items())[:50]))
    return moves, counts


def plan_ffd(hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions, sharded: bool) -> Plan:
    """The first-fit-decreasing baseline alone, as a full plan (whole-VM, or greedy sharded)."""
    start = time.perf_counter()
    fleet = build_fleet(hosts)
    ffd, order = run_ffd(fleet, requests, options, sharded=sharded)
    candidates = find_candidates(fleet, requests, options.replace(mode="sharded" if sharded else "whole"))
    problem = build_problem(fleet, requests, candidates, options, order)
    terms = evaluate(problem, ffd.reordered(order))
    wall = time.perf_counter() - start
    result = SolveResult(PlanStatus.FEASIBLE, terms.total / COST_UNITS_PER_DOLLAR, None, None, wall,
                         "ffd-sharded" if sharded else "ffd-whole")
    shards, requests_out = assemble(fleet, requests, ffd, options, candidates)
    placed = int(ffd.placed.sum())
    plan_json = {**result.to_dict(), "placed": placed, "unplaced": int(requests.height - placed),
                 "inputs_hash": inputs_hash(hosts, requests), "version": package_version(),
                 "options": options.to_dict(), "objective_terms": terms.to_dict()}
    return Plan(hosts, requests, shards, requests_out, result, None, options, fleet, candidates, ffd, plan_json)


# --- tables -----------------------------------------------------------------------------------


def assemble(fleet: Fleet, requests: pl.DataFrame, assignment: Assignment, options: PlanOptions,
             candidates: Candidates | None, running: Running | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """shards.parquet and requests.parquet rows from an assignment (request index space); a running
    request whose copies stay on the same hosts keeps their replica numbers."""
    rows: list[tuple] = []
    out: list[tuple] = []
    ids = requests["request_id"].to_list()
    demand = request_arrays(requests)["demand"]
    latency = requests["latency_class"].to_list()
    memory = remote_memory(requests, options)
    distance = rack_distances(fleet, options.topology, options.other_rack_latency_us, options.other_rack_bandwidth_gbps)
    filtered = unplaced_reasons(candidates) if not assignment.placed.all() else {}
    for r, request_id in enumerate(ids):
        if not assignment.placed[r]:
            out.append((request_id, "unplaced", 0, 0.0, 0.0, unplaced_reason(candidates, r, filtered, request_id),
                        0, 0.0))
            continue
        shard = 0
        hosts_used: set[int] = set()
        cost = 0.0
        remote = remote_gib(assignment.parts[r])
        rate = memory.rate(r, remote)
        for h, v, m, n, g in sorted(assignment.parts[r]):
            net = (n + (rate * m if v == 0 else 0)) / NET_UNITS_PER_GBPS
            role = "compute" if v > 0 else ("memory" if m > 0 else ("gpu" if g > 0 else "compute"))
            rows.append((request_id, shard, fleet.host_ids[h], 0, v, m, 0, net, g, role))
            shard += 1
            hosts_used.add(h)
            cost += fleet.cost[h] * _dominant_share(fleet, h, (v, m, 0, int(round(net * NET_UNITS_PER_GBPS)), g))
        copies = list(assignment.storage_hosts[r])
        compute_hosts = {p[0] for p in assignment.parts[r]}
        copies.sort(key=lambda h: (h not in compute_hosts, h))  # copy 0 beside the compute when possible
        was = None if running is None else running.copies[r]
        if was is not None and set(was) == set(copies):
            copies = list(was)
        for replica, h in enumerate(copies):
            rows.append((request_id, shard, fleet.host_ids[h], replica, 0, 0, int(demand[r, STORAGE]), 0.0, 0,
                         "storage" if replica == 0 else "replica"))
            shard += 1
            hosts_used.add(h)
            cost += fleet.cost[h] * _dominant_share(fleet, h, (0, 0, int(demand[r, STORAGE]), 0, 0))
        out.append((request_id, "placed", len(hosts_used), round(cost, 6),
                    options.spread_weight(latency[r]) * span_count(assignment.parts[r], fleet.rack, distance), None,
                    remote, round(modelled_slowdown(memory, r, remote, int(demand[r, RAM]), options), 6)))
    shards = pl.DataFrame(rows, schema=SHARDS_SCHEMA, orient="row")
    requests_out = pl.DataFrame(out, schema={**REQUESTS_OUT_SCHEMA, **REQUESTS_OUT_OPTIONAL}, orient="row")
    return shards, requests_out


def _dominant_share(fleet: Fleet, h: int, amounts: tuple[int, int, int, int, int]) -> float:
    """Largest share of the host's capacity a part takes: the part's share of the host's hourly cost."""
    cap = fleet.capacity[h]
    shares = [a / c for a, c in zip(amounts, cap) if c > 0 and a > 0]
    return max(shares, default=0.0)


def unplaced_reasons(candidates: Candidates | None) -> dict[str, str]:
    """Per request that no host passed the filters for: which filters ruled the hosts out, with counts,
    e.g. `no host: 212 lack ram_gib, 28 are below its storage tier` (the counts the solver saw)."""
    if candidates is None or candidates.reasons.height == 0:
        return {}
    counts = (candidates.reasons.filter(pl.col("role") == "compute")
              .group_by("request_id", "filter").agg(pl.col("hosts").sum())
              .sort(["request_id", "hosts", "filter"], descending=[False, True, False]))
    out: dict[str, list[str]] = {}
    for request_id, name, hosts in counts.iter_rows():
        out.setdefault(request_id, []).append(f"{hosts} {FILTER_REASONS.get(name, name)}")
    return {request_id: "no host: " + ", ".join(parts) for request_id, parts in out.items()}


def unplaced_reason(candidates: Candidates | None, r: int, filtered: dict[str, str], request_id: str) -> str:
    """Why a request stayed unplaced: the filters' counts when no host passed them, else capacity."""
    if candidates is None:
        return "not placed"
    if len(candidates.compute[r]) == 0:
        return filtered.get(request_id, "no host: the fleet has no host")
    return (f"capacity: its {len(candidates.compute[r])} candidate hosts could not hold it beside "
            f"higher-value requests within max_shards, zone and replica-rack limits")
