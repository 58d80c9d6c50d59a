"""The decomposition engine: validate → candidates → build → solve → assign → (check → export).

Each stage is a function of its own so a what-if or a test can stop after any of them.
`plan()` runs them all and returns a :class:`Plan` with the shards, the per-request
outcome, the typed solver result and the named objective terms.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Callable

import numpy as np
import polars as pl

from models.lp_bound import aggregate_bound, lp_bound
from models.placement import solve_placement
from models.problem import (COST_UNITS_PER_DOLLAR, GPU, NET, NET_UNITS_PER_GBPS, RAM, STORAGE, VCPU, Assignment,
                            PlacementProblem, SolveResult, canonical_groups, evaluate, relative_gap)
from planner.baselines import SIZE_MEASURES, ffd_order, first_fit
from planner.budget import SearchBudget, SearchStats, Stop
from planner.candidates import FILTER_REASONS, Candidates, Fleet, build_fleet, find_candidates, request_arrays
from planner.checker import check_plan
from planner.consolidate import consolidate
from planner.lns import improve
from planner.options import PlanOptions
from planner.recreate import ruin_and_recreate
from planner.schema import REQUESTS_OUT_SCHEMA, SHARDS_SCHEMA

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


@dataclass
class Plan:
    """A solved plan: exportable tables plus everything that explains it."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame
    result: SolveResult
    plan_json: dict
    options: PlanOptions
    fleet: Fleet
    candidates: Candidates | None
    assignment: Assignment

    @property
    def filter_counts(self) -> pl.DataFrame | None:
        """What each candidate filter dropped per request, as the solver saw it (filters.parquet)."""
        return None if self.candidates is None else self.candidates.reasons


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
                  order: np.ndarray) -> PlacementProblem:
    """Solver-unit arrays for the requests in `order` (the FFD order, which the symmetry rules rely on)."""
    req = request_arrays(requests)
    weight = unplaced_weights(requests, options)
    if candidates is not None:  # a request no host passes the filters for weighs nothing: no plan can place it
        weight = np.where(ruled_out(candidates), 0, weight)
    spread = np.array([int(round(options.spread_weight(c) * COST_UNITS_PER_DOLLAR))
                       for c in requests["latency_class"].to_list()], dtype=np.int64)
    ratio = options.min_local_ram_gib_per_vcpu
    none = np.empty(0, dtype=np.int64)
    return PlacementProblem(
        free=fleet.free, cost=np.rint(fleet.cost * COST_UNITS_PER_DOLLAR).astype(np.int64), active=fleet.active,
        rack=fleet.rack, zone=fleet.zone, demand=req["demand"][order], unplaced_weight=weight[order],
        spread_weight=spread[order],
        max_shards=(np.ones_like(req["max_shards"]) if options.mode == "whole" else req["max_shards"])[order],
        replicas=req["replicas"][order], allow_remote=~req["low_latency"][order],
        compute_candidates=[candidates.compute[r] for r in order] if candidates else [none] * len(order),
        gpu_ok=[candidates.gpu_ok[r] for r in order] if candidates else [none.astype(bool)] * len(order),
        storage_candidates=[candidates.storage[r] for r in order] if candidates else [none] * len(order),
        symmetry_groups=candidates.symmetry_groups if candidates and options.symmetry_breaking else [],
        whole=options.mode == "whole",
        remote_mbps_per_gib=int(round(options.remote_memory_gbps_per_gib * NET_UNITS_PER_GBPS)),
        local_ram_per_vcpu=(int(round(ratio * 1000)), 1000),
        time_limit_s=options.time_limit_s, workers=options.workers, seed=options.seed,
        deterministic=options.deterministic, deterministic_units_per_s=options.deterministic_units_per_s)


def run_ffd(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions, sharded: bool, measure: str = "sum",
            best_fit: bool = False) -> tuple[Assignment, np.ndarray]:
    """First-fit decreasing (whole, or greedy sharded) in request index space, and the order used."""
    req = request_arrays(requests)
    order = ffd_order(req["demand"], unplaced_priority(requests, options), fleet, measure)
    max_shards = req["max_shards"] if sharded else np.ones_like(req["max_shards"])
    assignment = first_fit(fleet, req["demand"], req["tier"], req["gpu_model"], max_shards, req["replicas"],
                           req["low_latency"], order, sharded, options.min_local_ram_gib_per_vcpu,
                           int(round(options.remote_memory_gbps_per_gib * NET_UNITS_PER_GBPS)), best_fit)
    return assignment, order


def warm_start(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions,
               budget: SearchBudget | None = None) -> tuple[Assignment, np.ndarray, str, Assignment]:
    """Best of the construction heuristics (three size measures × first fit / best fit), by objective;
    interchangeable empty hosts are relabelled by first use so the symmetry rules accept it. Also returns
    the first variant's plain answer, the FFD baseline. A variant after the first runs only while the
    budget's wall clock has room for one more."""
    scorer = build_problem(fleet, requests, None, options, np.arange(requests.height))
    best = None
    variants = [(m, b) for b in (False, True) for m in SIZE_MEASURES]
    # how many variants run is fixed by the problem's size, not by the clock, so plans stay reproducible
    affordable = max(1, int(options.warm_start_work // max(requests.height * fleet.n_hosts, 1)))
    began = time.perf_counter()
    for ran, (measure, best_fit) in enumerate(variants[:affordable]):
        if ran and budget is not None and budget.wall_left() < (time.perf_counter() - began) / ran:
            budget.note_cap("warm_start")
            break
        assignment, order = run_ffd(fleet, requests, options, options.mode == "sharded", measure, best_fit)
        if best is None:
            first = assignment  # the classic baseline: first fit, decreasing by summed size
        total = evaluate(scorer, assignment).total
        if best is None or total < best[0]:
            best = (total, assignment, order, f"{'best' if best_fit else 'first'}-fit decreasing by {measure}")
    _, assignment, order, label = best
    return canonical(fleet, assignment, order), order, label, first


def canonical(fleet: Fleet, assignment: Assignment, order: np.ndarray) -> Assignment:
    """Relabel the members of each class of empty, interchangeable hosts in order of first use."""
    members = {}
    for h in np.flatnonzero(fleet.up & ~fleet.active):
        members.setdefault(int(fleet.host_class[h]), []).append(int(h))
    mapping: dict[int, int] = {}
    taken = {c: 0 for c in members}
    for r in order:
        if not assignment.placed[r]:
            continue
        for h in [p[0] for p in assignment.parts[r]] + list(assignment.storage_hosts[r]):
            c = int(fleet.host_class[h])
            if h in mapping or c not in members:
                continue
            mapping[h] = members[c][taken[c]]
            taken[c] += 1
    out = Assignment(assignment.placed.copy(), [[(mapping.get(p[0], p[0]), *p[1:]) for p in parts]
                                                 for parts in assignment.parts],
                     [[mapping.get(h, h) for h in hosts] for hosts in assignment.storage_hosts])
    return out


def _reorder(assignment: Assignment, order: np.ndarray) -> Assignment:
    """Assignment in request index space → problem order (position i holds request order[i])."""
    return Assignment(assignment.placed[order].copy(), [assignment.parts[r] for r in order],
                      [assignment.storage_hosts[r] for r in order])


def _restore(assignment: Assignment, order: np.ndarray) -> Assignment:
    out = Assignment.empty(len(order))
    for i, r in enumerate(order):
        out.placed[r] = assignment.placed[i]
        out.parts[r] = assignment.parts[i]
        out.storage_hosts[r] = assignment.storage_hosts[i]
    return out


@dataclass
class SearchResult:
    """Best assignment found (problem order), a proven bound if any, and what each phase did."""

    assignment: Assignment
    bound: float | None
    proved_optimal: bool
    label: str
    pairs: int
    monolithic: dict | None
    lns: dict | None
    consolidation: dict | None = None
    recreate: dict | None = None


def _pairs(compute: list[np.ndarray], storage: list[np.ndarray]) -> int:
    """(request, candidate host) pairs over compute and storage candidate lists."""
    return int(sum(len(c) for c in compute) + sum(len(s) for s in storage))


def _waits(problem: PlacementProblem, assignment: Assignment) -> bool:
    """Some request that has a compute candidate is unplaced (more demand than room)."""
    return any(len(c) and not placed for c, placed in zip(problem.compute_candidates, assignment.placed))


def _hosts_of(assignment: Assignment) -> list[set[int]]:
    """Per request (index space), the hosts its parts and storage copies sit on."""
    return [({p[0] for p in assignment.parts[r]} | set(assignment.storage_hosts[r])) if assignment.placed[r] else set()
            for r in range(len(assignment.placed))]


def search_options(options: PlanOptions, fleet: Fleet, n_requests: int) -> PlanOptions:
    """Candidate options for ruin and recreate: as many classes per zone as search_pair_budget affords
    (every host that passes the filters on the demo), never fewer than the model's top_k."""
    zones = max(len(np.unique(fleet.zone)), 1)
    per_zone = min(options.search_pair_budget // max(2 * n_requests * zones, 1), fleet.n_hosts)  # compute, storage
    return options.replace(top_k=max(options.top_k, int(per_zone)),
                           pair_budget=max(options.pair_budget, options.search_pair_budget))


def new_budget(options: PlanOptions, started: float | None = None) -> SearchBudget:
    """The search budget of a run of `options` (started now unless the command started it earlier)."""
    return SearchBudget(options.time_limit_s, deterministic=options.deterministic,
                        units_per_s=options.deterministic_units_per_s, safety_factor=options.wall_safety_factor,
                        started=started)


def set_aside(budget: SearchBudget, options: PlanOptions, n_hosts: int, n_requests: int) -> None:
    """What the fixed phases and the bound are expected to take, from the problem's size."""
    fixed = 0.5 + options.fixed_s_per_mpair * n_hosts * n_requests / 1e6
    bound = min(options.lp_time_limit_s, max(1.0, options.bound_share * options.time_limit_s)) if options.lp_bound else 0.0
    budget.set_aside(0.8 * fixed, 0.2 * fixed + bound)


@dataclass
class WideSearch:
    """Ruin and recreate run before the model is built, over wide candidate sets."""

    assignment: Assignment  # request index space; the warm start when the search found nothing better
    stats: SearchStats | None  # None: nothing waited, or the search is disabled
    candidate_pairs: int = 0
    top_k: int = 0

    @property
    def improved(self) -> bool:
        return self.stats is not None and self.stats.gained

    def to_dict(self) -> dict | None:
        if self.stats is None:
            return None
        return {**self.stats.to_dict(), "candidate_pairs": self.candidate_pairs, "top_k": self.top_k}


def recreate_wide(fleet: Fleet, requests: pl.DataFrame, options: PlanOptions, start: Assignment,
                  order: np.ndarray, budget: SearchBudget) -> WideSearch:
    """When the warm start leaves a request with somewhere to go unplaced, ruin and recreate for
    recreate_share of the search budget over wide candidate sets (`search_options`). The model's top_k
    keeps CP-SAT and the LP small; a local search need not be, and on the demo fleet the best-12 classes
    left it 5% short of the objective that every host gave (dev runs, 4,000 moves, 4 seeds)."""
    if options.recreate_share <= 0 or start.placed.all():
        budget.skip("ruin_recreate")
        return WideSearch(start, None)
    wide_options = search_options(options, fleet, requests.height)
    with budget.fixed("search_candidates"):
        wide = find_candidates(fleet, requests, wide_options, must_include=_hosts_of(start))
        problem = build_problem(fleet, requests, wide, options, order)
        hint = _reorder(start, order)
    if not _waits(problem, hint):
        budget.skip("ruin_recreate")
        return WideSearch(start, None)
    grant = budget.grant("ruin_recreate", options.recreate_share)
    moves = grant.moves(options.recreate_moves_per_s)
    found, stats = ruin_and_recreate(problem, hint, moves, seed=options.seed, relabel=False,
                                     wall_limit_s=grant.wall_cap_s)
    # deterministic time: the moves made, in their share (stopping early because nothing waits hands the rest on)
    budget.charge(grant, grant.seconds * min(stats.moves / moves, 1.0) if grant.deterministic else stats.wall_s,
                  stats.wall_s, stats.stopped_by)
    return WideSearch(_restore(found, order) if stats.gained else start, stats,
                      _pairs(wide.compute, wide.storage), wide_options.top_k)


def solve(problem: PlacementProblem, hint: Assignment, options: PlanOptions, budget: SearchBudget,
          solver_log: Callable[[str], None] | None = None, searched: WideSearch | None = None) -> SearchResult:
    """Consolidation first when every request with a candidate is placed (its share of what is left of
    the search budget); then monolithic CP-SAT on models up to `monolithic_pair_limit` pairs (its share),
    then large-neighbourhood search with CP-SAT on the rest of the budget from the best plan so far."""
    pairs = _pairs(problem.compute_candidates, problem.storage_candidates)
    best, bound, proved, label, monolithic, lns_stats = hint, None, False, "warm-start", None, None
    consolidation = recreate = None
    if searched is not None and searched.stats is not None:
        recreate = searched.to_dict()
        if searched.improved:
            label = "ruin-recreate"
    if options.consolidation_share > 0 and not _waits(problem, hint):
        # emptying paid-for hosts when everything that can be placed is; its result is the hint from then on
        grant = budget.grant("consolidation", options.consolidation_share)
        moves = grant.moves(options.consolidation_moves_per_s)
        found, stats = consolidate(problem, hint, moves, seed=options.seed, wall_limit_s=grant.wall_cap_s)
        consolidation = stats.to_dict()
        if stats.gained:
            best = hint = found
            label = "consolidation" if label == "warm-start" else f"{label}+consolidation"
        budget.charge(grant, grant.seconds if grant.deterministic else stats.wall_s, stats.wall_s, stats.stopped_by)
    else:
        budget.skip("consolidation")
    if pairs <= options.monolithic_pair_limit:
        grant = budget.grant("cp_sat", 1.0 if options.lns_share <= 0 else 1.0 - options.lns_share)
        solution = solve_placement(dataclasses.replace(problem, time_limit_s=grant.seconds,
                                                       wall_limit_s=grant.wall_cap_s),
                                   hint=hint, log_callback=solver_log)
        proved = solution.result.status == "optimal"
        used = solution.deterministic_s / grant.units_per_s if grant.deterministic else solution.result.wall_s
        charged = budget.charge(grant, used, solution.result.wall_s, Stop.DONE if proved else Stop.BUDGET)
        monolithic = {**_in_dollars(solution.result), "variables": solution.n_variables,
                      "constraints": solution.n_constraints, "deterministic_s": round(solution.deterministic_s, 3),
                      "stopped_by": charged.stopped_by.value}
        bound = solution.result.best_bound
        if solution.terms is not None and solution.terms.total <= evaluate(problem, hint).total:
            best, label = solution.assignment, ("cp-sat" if label == "warm-start" else f"{label}+cp-sat")
    else:
        budget.skip("cp_sat")
    grant = budget.grant("lns")
    if grant.seconds > 0 and not proved and options.lns_share > 0:
        best, stats = improve(problem, best, grant.solver_limit, seed=options.seed, wall_limit_s=grant.wall_cap_s,
                              sub_time_s=options.lns_neighbourhood_s)
        lns_stats = stats.to_dict()
        used = stats.deterministic_s / grant.units_per_s if grant.deterministic else stats.wall_s
        budget.charge(grant, used, stats.wall_s, stats.stopped_by)
        if stats.gained:
            label = "cp-sat-lns" if label == "warm-start" else f"{label}+lns"
    else:
        budget.skip("lns")
    return SearchResult(best, bound, proved, label, pairs, monolithic, lns_stats, consolidation, recreate)


def plan(hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions,
         progress: Progress | None = None, solver_log: Callable[[str], None] | None = None,
         budget: SearchBudget | None = None) -> Plan:
    """Warm start, wide search, candidates, CP-SAT and LNS, LP bound, all under one search budget (the
    command's, when given); the better of the search and the warm start is returned, labelled."""
    note = progress or (lambda _stage: None)
    options.validate()
    budget = budget or new_budget(options)
    started = time.perf_counter()
    set_aside(budget, options, hosts.height, requests.height)
    note("fleet")
    with budget.fixed("fleet"):
        fleet = build_fleet(hosts)
    note("baseline")
    with budget.fixed("warm_start"):
        start, order, start_label, ffd = warm_start(fleet, requests, options, budget)
    note("search")
    searched = recreate_wide(fleet, requests, options, start, order, budget)
    note("candidates")
    with budget.fixed("candidates"):
        # the model's candidates: the best top_k classes, plus every host the warm start and the search used
        must = [a | b for a, b in zip(_hosts_of(start), _hosts_of(searched.assignment))]
        candidates = find_candidates(fleet, requests, options, must_include=must)
        problem = build_problem(fleet, requests, candidates, options, order)
        hint = canonical_groups(problem, _reorder(searched.assignment, order))
        ffd_terms = evaluate(problem, _reorder(ffd, order))
        start_hint = _reorder(start, order)
        start_terms = evaluate(problem, start_hint)
    note("solve")
    search = solve(problem, hint, options, budget, solver_log, searched)
    chosen, terms = search.assignment, evaluate(problem, search.assignment)
    improved = terms.total < start_terms.total
    if not improved:
        chosen, terms = start_hint, start_terms
    bound_units = search.bound
    lp_result = None
    if options.lp_bound:
        note("bound")
        grant = budget.tail_grant("bound", options.lp_time_limit_s)
        relax = lp_bound if search.pairs <= options.lp_pair_limit else aggregate_bound
        lp_result = relax(problem, max(grant.seconds, 0.1))
        budget.charge(grant, lp_result.wall_s, lp_result.wall_s,
                      Stop.DONE if lp_result.status == "optimal" else Stop.BUDGET)
        if lp_result.status == "optimal" and (bound_units is None or lp_result.objective > bound_units):
            bound_units = lp_result.objective
    note("assign")
    with budget.fixed("assign"):
        shards, requests_out = assemble(fleet, requests, _restore(chosen, order), options, candidates, problem, order)
    note("check")
    with budget.fixed("check"):
        violations = check_plan(hosts, requests, shards, requests_out, options)
    fallback = None
    if violations:
        # a bug, never a plan: fall back to the best valid plan found (warm start, FFD, nothing placed)
        fallback = {"violations": [str(v) for v in violations[:20]], "violation_count": len(violations)}
        for name, alternative in (("warm start", start_hint), ("first-fit decreasing", _reorder(ffd, order)),
                                  ("nothing placed", Assignment.empty(len(order)))):
            with budget.fixed(f"fallback: {name}"):
                shards, requests_out = assemble(fleet, requests, _restore(alternative, order), options, candidates,
                                                problem, order)
                if not check_plan(hosts, requests, shards, requests_out, options):
                    chosen, terms, improved = alternative, evaluate(problem, alternative), False
                    fallback["plan"] = name
                    break
    objective = terms.total / COST_UNITS_PER_DOLLAR
    bound = None if bound_units is None else min(bound_units, terms.total) / COST_UNITS_PER_DOLLAR
    gap = relative_gap(objective, bound)
    status = "optimal" if search.proved_optimal and fallback is None or (gap is not None and gap < 1e-9) else "feasible"
    if fallback is not None:
        solver = f"checker fallback: {fallback['plan']} ({search.label} broke {len(violations)} invariant checks)"
    elif improved or status == "optimal":
        solver = search.label + (f"+{lp_result.solver}" if lp_result is not None and bound_units == lp_result.objective else "")
    else:
        solver = f"warm-start fallback: {start_label} ({search.label}: no better plan in time)"
    final = SolveResult(status, objective, bound, gap, budget.elapsed(), solver)
    assignment = _restore(chosen, order)
    placed = int(assignment.placed.sum())
    plan_json = {
        **final.to_dict(),
        "placed": placed,
        "unplaced": int(requests.height - placed),
        "inputs_hash": inputs_hash(hosts, requests),
        "version": package_version(),
        "options": options.to_dict(),
        "objective_terms": dataclasses.replace(terms, ruled_out=int(
            unplaced_weights(requests, options)[ruled_out(candidates)].sum())).to_dict(),
        "cp_sat": search.monolithic,
        "lns": search.lns,
        "consolidation": search.consolidation,
        "ruin_recreate": search.recreate,
        "lp_relaxation": _in_dollars(lp_result) if lp_result else None,
        "baseline_ffd": {"objective": ffd_terms.total / COST_UNITS_PER_DOLLAR, "placed": int(ffd.placed.sum()),
                         **ffd_terms.to_dict()},
        "warm_start": {"heuristic": start_label, "objective": start_terms.total / COST_UNITS_PER_DOLLAR,
                       "placed": int(start.placed.sum())},
        "candidates": {"pairs": _pairs(candidates.compute, candidates.storage),
                       "member_cap": candidates.member_cap, "symmetry_groups": len(candidates.symmetry_groups)},
        "checker_fallback": fallback,
        "budget": budget.to_dict(),
    }
    return Plan(hosts, requests, shards, requests_out, final, plan_json, options, fleet, candidates, assignment)


def plan_ffd(hosts: pl.DataFrame, requests: pl.DataFrame, options: PlanOptions, sharded: bool) -> Plan:
    """The first-fit-decreasing baseline alone, as a full plan (whole-VM, or greedy sharded)."""
    import time

    start = time.perf_counter()
    fleet = build_fleet(hosts)
    ffd, order = run_ffd(fleet, requests, options, sharded=sharded)
    candidates = find_candidates(fleet, requests, options.replace(mode="sharded" if sharded else "whole"))
    problem = build_problem(fleet, requests, candidates, options, order)
    terms = evaluate(problem, _reorder(ffd, order))
    wall = time.perf_counter() - start
    result = SolveResult("feasible", terms.total / COST_UNITS_PER_DOLLAR, None, None, wall,
                         "ffd-sharded" if sharded else "ffd-whole")
    shards, requests_out = assemble(fleet, requests, ffd, options, candidates, problem, order)
    placed = int(ffd.placed.sum())
    plan_json = {**result.to_dict(), "placed": placed, "unplaced": int(requests.height - placed),
                 "inputs_hash": inputs_hash(hosts, requests), "version": package_version(),
                 "options": options.to_dict(), "objective_terms": terms.to_dict()}
    return Plan(hosts, requests, shards, requests_out, result, plan_json, options, fleet, candidates, ffd)


def _in_dollars(result: SolveResult) -> dict[str, object]:
    """A solver result with objective and bound converted from milli-$ to $ per hour."""
    out = result.to_dict()
    for key in ("objective", "best_bound"):
        if out[key] is not None:
            out[key] = out[key] / COST_UNITS_PER_DOLLAR
    return out


def assemble(fleet: Fleet, requests: pl.DataFrame, assignment: Assignment, options: PlanOptions,
             candidates: Candidates | None, problem: PlacementProblem, order: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    """shards.parquet and requests.parquet rows from an assignment (request index space)."""
    rows: list[tuple] = []
    out: list[tuple] = []
    ids = requests["request_id"].to_list()
    demand = request_arrays(requests)["demand"]
    latency = requests["latency_class"].to_list()
    rate = options.remote_memory_gbps_per_gib
    filtered = unplaced_reasons(candidates) if not assignment.placed.all() else {}
    for r, request_id in enumerate(ids):
        if not assignment.placed[r]:
            out.append((request_id, "unplaced", 0, 0.0, 0.0, unplaced_reason(candidates, r, filtered, request_id)))
            continue
        shard = 0
        hosts_used: set[int] = set()
        cost = 0.0
        for h, v, m, n, g in sorted(assignment.parts[r]):
            net = n / NET_UNITS_PER_GBPS + (rate * m if v == 0 else 0.0)
            role = "compute" if v > 0 else ("memory" if m > 0 else ("gpu" if g > 0 else "compute"))
            rows.append((request_id, shard, fleet.host_ids[h], 0, v, m, 0, net, g, role))
            shard += 1
            hosts_used.add(h)
            cost += fleet.cost[h] * _dominant_share(fleet, h, (v, m, 0, int(round(net * NET_UNITS_PER_GBPS)), g))
        copies = list(assignment.storage_hosts[r])
        compute_hosts = {p[0] for p in assignment.parts[r]}
        copies.sort(key=lambda h: (h not in compute_hosts, h))  # copy 0 beside the compute when possible
        for replica, h in enumerate(copies):
            rows.append((request_id, shard, fleet.host_ids[h], replica, 0, 0, int(demand[r, STORAGE]), 0.0, 0,
                         "storage" if replica == 0 else "replica"))
            shard += 1
            hosts_used.add(h)
            cost += fleet.cost[h] * _dominant_share(fleet, h, (0, 0, int(demand[r, STORAGE]), 0, 0))
        compute_racks = {int(fleet.rack[h]) for h in compute_hosts}
        extra = max(len(compute_hosts) - 1, 0) + max(len(compute_racks) - 1, 0)
        out.append((request_id, "placed", len(hosts_used), round(cost, 6),
                    options.spread_weight(latency[r]) * extra, None))
    shards = pl.DataFrame(rows, schema=SHARDS_SCHEMA, orient="row")
    requests_out = pl.DataFrame(out, schema=REQUESTS_OUT_SCHEMA, orient="row")
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
