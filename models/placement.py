"""CP-SAT decomposition + placement model: one function per constraint family.

Variables per (request r, compute candidate h): integer part sizes vcpu/ram/net/gpu,
`use` (the request has any compute-side part on h) and `has_vcpu`; per (r, storage
candidate h): `copy` (h holds one whole storage copy); per request `placed` and a
zone choice; per host `active`. The objective is a sum of named terms.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from ortools.sat.python import cp_model

from shardplan.models.problem import (
    BREACH,
    GPU,
    HOT_RESOURCES,
    NET,
    RAM,
    STORAGE,
    VCPU,
    Assignment,
    ObjectiveTerms,
    PlacementProblem,
    PlanStatus,
    SolveResult,
    host_usage,
    hot_spots,
    members_a_request_may_span,
    rack_star,
    rack_units,
    relative_gap,
    remote_gib,
    symmetry_views,
)


@dataclass
class PlacementVars:
    """Handles of the CP-SAT variables, indexed like the problem's candidate lists."""

    placed: list[cp_model.IntVar] = field(default_factory=list)
    use: list[list[cp_model.IntVar]] = field(default_factory=list)
    has_vcpu: list[list[cp_model.IntVar]] = field(default_factory=list)
    vcpu: list[list[object]] = field(default_factory=list)
    ram: list[list[object]] = field(default_factory=list)
    net: list[list[object]] = field(default_factory=list)
    gpu: list[list[object]] = field(default_factory=list)
    remote: list[list[object]] = field(default_factory=list)
    copy: list[list[cp_model.IntVar]] = field(default_factory=list)
    active: dict[int, cp_model.IntVar] = field(default_factory=dict)
    zone_choice: dict[int, dict[int, cp_model.IntVar]] = field(default_factory=dict)  # request → zone → chosen
    spread_aux: list[tuple[int, object, dict[int, object], object, dict[int, object]]] = field(default_factory=list)
    # per spread-charged request: (r, extra_hosts, {rack: rack_used}, extra_racks or the rack star, {rack: centre})
    moves: list[tuple[int, object, list[tuple[tuple, object]], list[tuple[int, object]]]] = field(default_factory=list)
    # per running request: (r, kept or None when mandatory, [(current part, same or None)], [(copy host, copy or None)])
    move_cost: object = 0
    moves_over: object = None   # voluntary disruptions past the budget (charged BREACH each)
    remote_gib: dict[int, list[object]] = field(default_factory=dict)  # per request: GiB held remotely per candidate
    touched_tier: dict[int, object] = field(default_factory=dict)     # per request: its remote GiB pass the untouched
    touched: dict[int, object] = field(default_factory=dict)          # per request: touched remote GiB (priced)
    hot: dict[tuple[int, int], cp_model.IntVar] = field(default_factory=dict)  # (host, resource) pushed past headroom
    loads: tuple | None = None  # host_loads, once built (the capacity and hot-spot families both read it)


def add_part_variables(model: cp_model.CpModel, problem: PlacementProblem) -> PlacementVars:
    """Placed flags, compute-side part sizes per candidate, storage-copy flags."""
    v = PlacementVars()
    for r in range(problem.n_requests):
        d = problem.demand[r]
        v.placed.append(model.NewBoolVar(f"placed[{r}]"))
        use, hv, vc, rm, nt, gp, rem = [], [], [], [], [], [], []
        for i, h in enumerate(problem.compute_candidates[r]):
            f = problem.free[h]
            u = model.NewBoolVar(f"use[{r},{h}]")
            use.append(u)
            if problem.whole:
                # one host takes the whole VM: sizes are the demand times `use`
                hv.append(u)
                vc.append(int(d[VCPU]) * u)
                rm.append(int(d[RAM]) * u)
                nt.append(int(d[NET]) * u)
                gp.append(int(d[GPU]) * u)
                rem.append(0)
                continue
            has = model.NewBoolVar(f"has_vcpu[{r},{h}]") if d[VCPU] > 0 else None
            hv.append(has if has is not None else 0)
            vc.append(model.NewIntVar(0, int(min(d[VCPU], f[VCPU])), f"vcpu[{r},{h}]") if has is not None else 0)
            rm.append(model.NewIntVar(0, int(min(d[RAM], f[RAM])), f"ram[{r},{h}]") if d[RAM] > 0 else 0)
            nt.append(model.NewIntVar(0, int(min(d[NET], f[NET])), f"net[{r},{h}]") if d[NET] > 0 else 0)
            gmax = int(min(d[GPU], f[GPU])) if problem.gpu_ok[r][i] else 0
            gp.append(model.NewIntVar(0, gmax, f"gpu[{r},{h}]") if d[GPU] > 0 and gmax > 0 else 0)
            rem.append(0)
        v.use.append(use)
        v.has_vcpu.append(hv)
        v.vcpu.append(vc)
        v.ram.append(rm)
        v.net.append(nt)
        v.gpu.append(gp)
        v.remote.append(rem)
        v.copy.append([model.NewBoolVar(f"copy[{r},{h}]") for h in problem.storage_candidates[r]]
                      if d[STORAGE] > 0 else [])
    return v


def add_demand(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Invariant 1: a placed request's parts add up exactly to its demand; storage once per copy."""
    for r in range(problem.n_requests):
        d = problem.demand[r]
        if problem.whole:
            model.Add(sum(v.use[r]) == v.placed[r])
        else:
            for terms, resource in ((v.vcpu[r], VCPU), (v.ram[r], RAM), (v.net[r], NET), (v.gpu[r], GPU)):
                if d[resource] > 0:
                    model.Add(sum(terms) == int(d[resource]) * v.placed[r])
            if d[[VCPU, RAM, NET, GPU]].sum() == 0:
                for u in v.use[r]:
                    model.Add(u == 0)
        if d[STORAGE] > 0:
            model.Add(sum(v.copy[r]) == int(problem.replicas[r]) * v.placed[r])


def add_part_links(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """A part exists (use) iff it holds something; vcpu presence; invariants 4 and 5 per part (whole mode:
    sizes are the demand, so invariant 4 is the request's RAM per vcpu)."""
    num, den = problem.local_ram_per_vcpu
    if problem.whole:
        for r in range(problem.n_requests):  # invariant 4 on the one part: the VM's RAM per vcpu
            if den * int(problem.demand[r][RAM]) < num * int(problem.demand[r][VCPU]):
                model.Add(v.placed[r] == 0)
        return
    for r in range(problem.n_requests):
        d = problem.demand[r]
        for i, h in enumerate(problem.compute_candidates[r]):
            u, has = v.use[r][i], v.has_vcpu[r][i]
            vc, rm, nt, gp = v.vcpu[r][i], v.ram[r][i], v.net[r][i], v.gpu[r][i]
            parts = [x for x in (vc, rm, nt, gp) if not isinstance(x, int)]
            if parts:
                model.Add(sum(parts) >= u)
            else:
                model.Add(u == 0)
            if not isinstance(vc, int):
                model.Add(vc >= has)
                model.Add(vc <= int(d[VCPU]) * has)
                model.Add(has <= u)
                if num > 0 and not isinstance(rm, int):
                    model.Add(den * rm >= num * vc)  # invariant 4: local RAM per vcpu
                elif num > 0:
                    model.Add(vc == 0)
                if problem.ram_skew is not None and not isinstance(rm, int):
                    # invariant 4: at most skew × its vcpu share of the RAM, rounded up (part_ram_cap)
                    s_num, s_den = problem.ram_skew
                    big = s_den * int(d[VCPU])
                    model.Add(big * rm <= s_num * int(d[RAM]) * vc + big - 1).OnlyEnforceIf(has)
            if not isinstance(rm, int):
                if problem.allow_remote[r] and not isinstance(has, int):
                    model.Add(rm <= int(d[RAM]) * u)
                elif not isinstance(has, int):
                    model.Add(rm <= int(d[RAM]) * has)  # latency class low: no remote memory
                else:
                    model.Add(rm <= int(d[RAM]) * u)
            if not isinstance(nt, int):
                model.Add(nt <= int(d[NET]) * u)
            if not isinstance(gp, int):
                model.Add(gp <= int(d[GPU]) * has)  # invariant 5: GPUs beside the request's vcpu


def add_remote_memory(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Remote memory by its rule (problem.memory, models.problem.RemoteMemory): per candidate the GiB held
    there while the request runs no vcpu there, at most `cap` in all; NIC traffic on that host at the
    untouched rate while the request's remote GiB stay within its untouched GiB, else at the touched rate
    (a `touched_tier` flag per request with both tiers); the touched GiB (past the untouched) priced in the
    objective. Flat pricing is one tier with no cap: traffic ≥ rate·ram − rate·maxram·has_vcpu, as before."""
    if problem.whole:
        return
    memory = problem.memory
    for r in range(problem.n_requests):
        d = problem.demand[r]
        tiers = memory.tiers(r)
        if not tiers or d[RAM] == 0 or not problem.allow_remote[r]:
            continue
        untouched, cap = int(memory.untouched[r]), int(memory.cap[r])
        priced = int(memory.touched_price[r]) > 0 and cap > untouched
        counted = cap < d[RAM] or len(tiers) > 1 or priced  # the remote GiB themselves are needed
        flag = model.NewBoolVar(f"touched_tier[{r}]") if len(tiers) > 1 else None
        held = []
        for i, h in enumerate(problem.compute_candidates[r]):
            rm, has = v.ram[r][i], v.has_vcpu[r][i]
            if isinstance(rm, int):
                held.append(0)
                continue
            most = int(min(d[RAM], problem.free[h][RAM]))
            if counted:
                g = model.NewIntVar(0, most, f"remote_gib[{r},{h}]")
                model.Add(g >= rm if isinstance(has, int) else g >= rm - most * has)
                held.append(g)
            for k, (_, rate) in enumerate(tiers):
                if rate <= 0:
                    continue
                if isinstance(v.remote[r][i], int):
                    v.remote[r][i] = model.NewIntVar(0, tiers[-1][1] * most, f"remote[{r},{h}]")
                t, top = v.remote[r][i], rate * most
                off = top * (1 - flag) if flag is not None and k == 1 else 0  # the touched rate binds only past U
                model.Add(t >= rate * rm - (0 if isinstance(has, int) else top * has) - off)
        if not counted:
            continue
        v.remote_gib[r] = held
        total = sum(held)
        if flag is not None:
            model.Add(total <= untouched + (cap - untouched) * flag)
            v.touched_tier[r] = flag
        elif cap < d[RAM]:
            model.Add(total <= cap)
        if priced:
            touched = model.NewIntVar(0, cap - untouched, f"touched_remote[{r}]")
            model.Add(touched >= total - untouched)
            v.touched[r] = touched


def add_span_limit(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Invariant 3: compute, memory and GPU parts span at most max_shards hosts."""
    for r in range(problem.n_requests):
        if len(v.use[r]) > problem.max_shards[r]:
            model.Add(sum(v.use[r]) <= int(problem.max_shards[r]))


def add_zone(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Invariant 7: all parts of a request in one zone (a zone choice per request)."""
    for r in range(problem.n_requests):
        hosts = np.concatenate([problem.compute_candidates[r], problem.storage_candidates[r]])
        zones = sorted({int(problem.zone[h]) for h in hosts})
        if len(zones) <= 1:
            continue
        choice = {z: model.NewBoolVar(f"zone[{r},{z}]") for z in zones}
        v.zone_choice[r] = choice
        model.Add(sum(choice.values()) == v.placed[r])
        for i, h in enumerate(problem.compute_candidates[r]):
            model.AddImplication(v.use[r][i], choice[int(problem.zone[h])])
        for i, h in enumerate(problem.storage_candidates[r] if v.copy[r] else []):
            model.AddImplication(v.copy[r][i], choice[int(problem.zone[h])])


def add_replica_racks(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Invariant 6: storage copies on pairwise distinct racks; whole mode keeps copy 0 with the VM."""
    for r in range(problem.n_requests):
        if not v.copy[r]:
            continue
        by_rack: dict[int, list[cp_model.IntVar]] = {}
        for i, h in enumerate(problem.storage_candidates[r]):
            by_rack.setdefault(int(problem.rack[h]), []).append(v.copy[r][i])
        for copies in by_rack.values():
            if len(copies) > 1:
                model.AddAtMostOne(copies)
        if problem.whole:
            position = {int(h): i for i, h in enumerate(problem.storage_candidates[r])}
            for i, h in enumerate(problem.compute_candidates[r]):
                j = position.get(int(h))
                if j is None:
                    model.Add(v.use[r][i] == 0)
                else:
                    model.AddImplication(v.use[r][i], v.copy[r][j])


def host_loads(problem: PlacementProblem, v: PlacementVars) -> tuple[dict[int, list[list[object]]],
                                                                      dict[int, list[cp_model.IntVar]]]:
    """Per host: the expressions of what the plan puts on it, per resource (remote traffic with the NIC), and
    the flags of the parts and copies that use it; built once per model (the part and remote-memory
    variables exist by then)."""
    if v.loads is not None:
        return v.loads
    loads: dict[int, list[list[object]]] = {}
    users: dict[int, list[cp_model.IntVar]] = {}
    for r in range(problem.n_requests):
        for i, h in enumerate(problem.compute_candidates[r]):
            per = loads.setdefault(int(h), [[], [], [], [], []])
            per[VCPU].append(v.vcpu[r][i])
            per[RAM].append(v.ram[r][i])
            per[NET].append(v.net[r][i])
            per[NET].append(v.remote[r][i])
            per[GPU].append(v.gpu[r][i])
            users.setdefault(int(h), []).append(v.use[r][i])
        for i, h in enumerate(problem.storage_candidates[r] if v.copy[r] else []):
            per = loads.setdefault(int(h), [[], [], [], [], []])
            per[STORAGE].append(int(problem.demand[r][STORAGE]) * v.copy[r][i])
            users.setdefault(int(h), []).append(v.copy[r][i])
    v.loads = (loads, users)
    return v.loads


def add_capacity(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Invariant 2: parts within free capacity; a host not yet active must become active to take any."""
    loads, users = host_loads(problem, v)
    for h, per in loads.items():
        if problem.active[h]:
            act = 1
        else:
            act = model.NewBoolVar(f"active[{h}]")
            v.active[h] = act
            for u in users[h]:
                model.AddImplication(u, act)
        for resource in range(5):
            terms = [t for t in per[resource] if not isinstance(t, int) or t]
            if not terms:
                continue
            model.Add(sum(terms) <= int(problem.free[h][resource]) * act)


def add_hot_spots(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """The hot-spot term's flags: a host and resource of HOT_RESOURCES is hot when the plan's load passes
    the room it has below the headroom threshold (load ≤ room + (free − room) · hot); hosts hot already, or
    that the plan cannot make hot, get no flag."""
    if problem.hot_room is None or not problem.hot_price:
        return
    loads, _ = host_loads(problem, v)
    for h, per in loads.items():
        for resource in HOT_RESOURCES:
            room, free = int(problem.hot_room[h][resource]), int(problem.free[h][resource])
            terms = [t for t in per[resource] if not isinstance(t, int) or t]
            if room < 0 or not terms or room >= free:
                continue
            hot = model.NewBoolVar(f"hot[{h},{resource}]")
            model.Add(sum(terms) <= room + (free - room) * hot)
            v.hot[(h, resource)] = hot


def add_capacity_cover(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Redundant cut: the hosts left active must cover all placed demand in each resource (volume bound)."""
    for resource in range(5):
        if resource == NET and not problem.whole:
            continue  # remote-memory traffic makes sharded net demand variable
        demand = [int(problem.demand[r][resource]) * v.placed[r] for r in range(problem.n_requests)
                  if problem.demand[r][resource] > 0]
        if not demand:
            continue
        if resource == STORAGE:
            demand = [int(problem.demand[r][STORAGE] * problem.replicas[r]) * v.placed[r]
                      for r in range(problem.n_requests) if problem.demand[r][STORAGE] > 0]
        hosts = sorted(set(v.active) | {int(h) for c in problem.compute_candidates for h in c}
                       | {int(h) for c in problem.storage_candidates for h in c})
        supply = [int(problem.free[h][resource]) * v.active[h] if h in v.active else int(problem.free[h][resource])
                  for h in hosts if problem.free[h][resource] > 0]
        model.Add(sum(supply) >= sum(demand))


def add_move_cost(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Re-planning against what runs (DESIGN.md "What runs now"; invariant 11). Per running request a
    `kept` flag (all its current parts and copies exactly where they are) and per current part a `same`
    flag; the cost is disrupt_weight × (1 − kept) + gib_weight × the GiB whose part or copy is not where
    it was (while placed). A running request that is not evictable and not forced to move stays placed,
    and at most max_moves non-mandatory running requests are disrupted: both charged BREACH per breach
    as `evaluate` does, not hard constraints, so the model stays feasible whatever the hint (CP-SAT aborts
    on an infeasible model whose hint covers every variable) and agrees with the local searches. No-op
    without a current placement."""
    current = problem.current
    if current is None:
        return
    cost: list[object] = []
    voluntary: list[object] = []
    gib = int(current.gib_weight)
    for r in np.flatnonzero(current.running).tolist():
        placed = v.placed[r]
        position = {int(h): i for i, h in enumerate(problem.compute_candidates[r])}
        stored = {int(h): j for j, h in enumerate(problem.storage_candidates[r])} if v.copy[r] else {}
        forced = bool(current.mandatory[r])
        sames = []
        for part in current.parts[r]:
            i = position.get(int(part[0]))
            same = None
            if i is not None:  # a forced request's parts on hosts still up may stay too
                same = model.NewBoolVar(f"same[{r},{part[0]}]")
                model.AddImplication(same, placed)
                model.AddImplication(same, v.use[r][i])
                for var, value in ((v.vcpu[r][i], part[1]), (v.ram[r][i], part[2]), (v.net[r][i], part[3]),
                                   (v.gpu[r][i], part[4])):
                    if isinstance(var, int):
                        if var != value:
                            model.Add(same == 0)
                    else:
                        model.Add(var == int(value)).OnlyEnforceIf(same)
            sames.append((part, same))
            if part[2]:
                cost.append(gib * int(part[2]) * (placed - same if same is not None else placed))
        copies = []
        size = int(problem.demand[r, STORAGE])
        for h in current.copies[r]:
            j = stored.get(int(h))
            copy = v.copy[r][j] if j is not None else None
            copies.append((int(h), copy))
            if size:
                cost.append(gib * size * (placed - copy if copy is not None else placed))
        kept = None
        if not forced:
            kept = model.NewBoolVar(f"kept[{r}]")
            for flag in [same for _, same in sames] + [copy for _, copy in copies]:
                if flag is None:
                    model.Add(kept == 0)
                else:
                    model.AddImplication(kept, flag)
            voluntary.append(1 - kept)
            cost.append(int(current.disrupt_weight[r]) * (1 - kept))
        else:
            cost.append(int(current.disrupt_weight[r]))
        if current.must_place[r]:
            cost.append(BREACH * (1 - placed))
        v.moves.append((r, kept, sames, copies))
    if current.max_moves >= 0 and voluntary:
        allowed = max(current.max_moves - current.outside, 0)
        over = model.NewIntVar(0, len(voluntary), "moves_over_budget")
        model.Add(sum(voluntary) - allowed <= over)
        cost.append(BREACH * over)
        v.moves_over = over
    v.move_cost = sum(cost)


def add_symmetry_breaking(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> None:
    """Interchangeable empty hosts of one class are opened in order, and a request may only use the
    members the requests before it and itself can reach: relabelling the members by first use over the
    requests puts request k on members below the sum, over requests 0..k, of the members each can span
    (valid for split requests too). Only for classes every request sees wholly or not at all."""
    for group in problem.symmetry_groups:
        member = {int(h): j for j, h in enumerate(group)}
        views = symmetry_views(problem, group)
        if views is None or len(group) < 2 or not all(int(h) in v.active for h in group):
            continue
        acts = [v.active[int(h)] for h in group]
        for a, b in zip(acts, acts[1:]):
            model.Add(a >= b)
        reach = 0
        for r, compute, storage in views:
            reach += members_a_request_may_span(problem, r, bool(storage), len(group))
            if reach >= len(group):
                break
            for i in compute:
                if member[int(problem.compute_candidates[r][i])] >= reach:
                    model.Add(v.use[r][i] == 0)
            for i in storage:
                if member[int(problem.storage_candidates[r][i])] >= reach:
                    model.Add(v.copy[r][i] == 0)


@dataclass
class ObjectiveExprs:
    """The objective's named terms as CP-SAT expressions (solver units); `extra` holds terms a caller adds."""

    unplaced: object
    active_cost: object
    spread: object
    extra: dict[str, object] = field(default_factory=dict)
    moves: object = 0
    remote: object = 0
    hot_spots: object = 0
    speed: object = 0

    def total(self) -> object:
        return (self.unplaced + self.active_cost + self.spread + self.moves + self.remote + self.hot_spots + self.speed
                + sum(self.extra.values()))


def objective_terms(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars) -> ObjectiveExprs:
    """Unplaced priority-weighted demand, hourly cost of hosts that become active, spread penalty."""
    unplaced = sum(int(problem.unplaced_weight[r]) * (1 - v.placed[r]) for r in range(problem.n_requests))
    cost = sum(int(problem.cost[h]) * a for h, a in v.active.items())
    spread = []
    for r in range(problem.n_requests):
        weight = int(problem.spread_weight[r])
        if weight == 0 or len(v.use[r]) <= 1 or problem.max_shards[r] <= 1:
            continue
        extra_hosts = model.NewIntVar(0, int(problem.max_shards[r]) - 1, f"extra_hosts[{r}]")
        model.Add(extra_hosts >= sum(v.use[r]) - 1)
        racks: dict[int, list[cp_model.IntVar]] = {}
        for i, h in enumerate(problem.compute_candidates[r]):
            racks.setdefault(int(problem.rack[h]), []).append(v.use[r][i])
        rack_terms = {}
        for rack, uses in racks.items():
            y = model.NewBoolVar(f"rack_used[{r},{rack}]")
            for u in uses:
                model.AddImplication(u, y)
            rack_terms[rack] = y
        if problem.rack_distance is None or len(rack_terms) <= 1:
            extra_racks = model.NewIntVar(0, len(rack_terms), f"extra_racks[{r}]")
            model.Add(extra_racks >= sum(rack_terms.values()) - 1)
            v.spread_aux.append((r, extra_hosts, rack_terms, extra_racks, {}))
            spread.append(weight * (extra_hosts + extra_racks))
            continue
        # by distance: the star around a centre rack the request uses (models.problem.rack_star)
        units = {k: {l: rack_units(weight, problem.rack_distance[k, l]) for l in rack_terms} for k in rack_terms}
        most = max(sum(row.values()) for row in units.values())
        star = model.NewIntVar(0, most, f"rack_star[{r}]")
        centres = {}
        for k, row in units.items():
            centre = model.NewBoolVar(f"rack_centre[{r},{k}]")
            model.AddImplication(centre, rack_terms[k])
            model.Add(star >= sum(c * rack_terms[l] for l, c in row.items() if c)).OnlyEnforceIf(centre)
            centres[k] = centre
        model.AddExactlyOne(centres.values())
        v.spread_aux.append((r, extra_hosts, rack_terms, star, centres))
        spread.append(weight * extra_hosts + star)
    remote = sum(int(problem.memory.touched_price[r]) * t for r, t in v.touched.items())
    hot = int(problem.hot_price) * sum(v.hot.values()) if v.hot else 0
    speed = []
    if problem.speed_price is not None:
        for r in np.flatnonzero(problem.speed_price):
            for i, h in enumerate(problem.compute_candidates[r]):
                coef = problem.speed_cost(int(r), int(h))
                if coef and not isinstance(v.vcpu[r][i], int):
                    speed.append(coef * v.vcpu[r][i])
    return ObjectiveExprs(unplaced, cost, sum(spread), moves=v.move_cost, remote=remote, hot_spots=hot,
                          speed=sum(speed))


def add_hint(model: cp_model.CpModel, problem: PlacementProblem, v: PlacementVars, hint: Assignment) -> None:
    """Warm start from an assignment (the pairs it uses must be candidates): a value for every variable of
    the model, decision and auxiliary alike, so CP-SAT starts from a complete solution (a valid plan is
    then a feasible hint, and the solve reports at least `feasible`)."""
    memory = problem.memory
    held = [remote_gib(hint.parts[r]) if hint.placed[r] else 0 for r in range(problem.n_requests)]
    rate = [memory.rate(r, held[r]) for r in range(problem.n_requests)]
    for r, flag in v.touched_tier.items():
        model.AddHint(flag, held[r] > int(memory.untouched[r]))
    for r, touched in v.touched.items():
        model.AddHint(touched, memory.touched(r, held[r]))
    for r in range(problem.n_requests):
        model.AddHint(v.placed[r], bool(hint.placed[r]))
        parts = {p[0]: p for p in hint.parts[r]} if hint.placed[r] else {}
        for i, h in enumerate(problem.compute_candidates[r]):
            p = parts.get(int(h))
            model.AddHint(v.use[r][i], p is not None)
            if problem.whole:
                continue
            for var, value in ((v.has_vcpu[r][i], p is not None and p[1] > 0), (v.vcpu[r][i], p[1] if p else 0),
                               (v.ram[r][i], p[2] if p else 0), (v.net[r][i], p[3] if p else 0),
                               (v.gpu[r][i], p[4] if p else 0)):
                if not isinstance(var, int):
                    model.AddHint(var, int(value))
            if not isinstance(v.remote[r][i], int):
                model.AddHint(v.remote[r][i], rate[r] * p[2] if p is not None and p[1] == 0 else 0)
            if r in v.remote_gib and not isinstance(v.remote_gib[r][i], int):
                model.AddHint(v.remote_gib[r][i], p[2] if p is not None and p[1] == 0 else 0)
        copies = set(hint.storage_hosts[r]) if hint.placed[r] else set()
        for i, h in enumerate(problem.storage_candidates[r] if v.copy[r] else []):
            model.AddHint(v.copy[r][i], int(h) in copies)
        hosts = hint.hosts_of(r)
        for zone, chosen in v.zone_choice.get(r, {}).items():
            model.AddHint(chosen, any(int(problem.zone[h]) == zone for h in hosts))
    for r, extra_hosts, rack_used, extra_racks, centres in v.spread_aux:
        compute_hosts = {p[0] for p in hint.parts[r]} if hint.placed[r] else set()
        racks = {int(problem.rack[h]) for h in compute_hosts}
        model.AddHint(extra_hosts, max(len(compute_hosts) - 1, 0))
        if centres and not racks:  # unplaced: exactly one centre still holds, on a rack marked used at no cost
            racks = {next(iter(centres))}
        for rack, y in rack_used.items():
            model.AddHint(y, rack in racks)
        if not centres:
            model.AddHint(extra_racks, max(len(racks) - 1, 0))
            continue
        cost, best = rack_star(int(problem.spread_weight[r]), racks, problem.rack_distance)
        for k, centre in centres.items():
            model.AddHint(centre, k == best)
        model.AddHint(extra_racks, cost)
    used = np.zeros(problem.n_hosts, dtype=bool)
    for r in np.flatnonzero(hint.placed):
        used[list(hint.hosts_of(r))] = True
    for h, a in v.active.items():
        model.AddHint(a, bool(used[h]))
    if v.hot:
        flags = hot_spots(problem, host_usage(problem, hint))
        for (h, resource), hot in v.hot.items():
            model.AddHint(hot, bool(flags[h, HOT_RESOURCES.index(resource)]))
    for r, kept, sames, copies in v.moves:
        placed = bool(hint.placed[r])
        parts = list(hint.parts[r]) if placed else []
        held = set(hint.storage_hosts[r]) if placed else set()
        for part, same in sames:
            if same is not None:
                model.AddHint(same, tuple(part) in parts)
        if kept is not None:
            model.AddHint(kept, problem.current.kept(r, placed, parts, held))
    if v.moves_over is not None:
        current = problem.current
        voluntary = sum(current.voluntary(r, bool(hint.placed[r]), hint.parts[r], hint.storage_hosts[r])
                        for r in np.flatnonzero(current.running))
        model.AddHint(v.moves_over, max(0, voluntary - max(current.max_moves - current.outside, 0)))


@dataclass
class PlacementSolution:
    """The solver's answer: typed result, assignment and objective terms."""

    result: SolveResult
    assignment: Assignment
    terms: ObjectiveTerms | None
    n_variables: int = 0
    n_constraints: int = 0
    deterministic_s: float = 0.0  # CP-SAT deterministic time spent, hint completion included
    extra_terms: dict[str, int] = field(default_factory=dict)  # values of the terms a caller added
    trajectory: list[tuple[float, float, float]] = field(default_factory=list)
    """(seconds since the solve started, objective, best bound) at each solution CP-SAT found (solver units)."""


class _Trajectory(cp_model.CpSolverSolutionCallback):
    """Records each improving solution's objective and the bound at that moment (it does not steer the search)."""

    def __init__(self, started: float) -> None:
        super().__init__()
        self.started = started
        self.points: list[tuple[float, float, float]] = []

    def on_solution_callback(self) -> None:
        self.points.append((time.perf_counter() - self.started, float(self.ObjectiveValue()),
                            float(self.BestObjectiveBound())))


ConstraintFamily = Callable[[cp_model.CpModel, PlacementProblem, PlacementVars], None]

FAMILIES: tuple[tuple[str, ConstraintFamily], ...] = (
    ("demand", add_demand), ("part_links", add_part_links), ("remote_memory", add_remote_memory),
    ("span_limit", add_span_limit), ("zone", add_zone),
    ("replica_racks", add_replica_racks), ("capacity", add_capacity), ("hot_spots", add_hot_spots),
    ("capacity_cover", add_capacity_cover),
    ("symmetry_breaking", add_symmetry_breaking), ("move_cost", add_move_cost),
)
"""The constraint families of the placement model, in the order they are added (capacity creates the
hosts' `active` flags that the cover, the symmetry rules and the cost term read)."""


@dataclass
class PlacementModel:
    """A placement model you can build, edit, solve and read, like PyPSA's create_model / solve_model
    (extra_functionality) / assign_solution: `build` adds the variables, the constraint families and the
    objective's terms; `add_family` and `add_term` edit it; `solve` warm-starts and solves it; the
    solution reads back the assignment and every term."""

    problem: PlacementProblem
    model: cp_model.CpModel
    vars: PlacementVars
    terms: ObjectiveExprs
    families: list[str]

    @classmethod
    def build(cls, problem: PlacementProblem, families: tuple[tuple[str, ConstraintFamily], ...] = FAMILIES,
              without: tuple[str, ...] = ()) -> "PlacementModel":
        """Variables, the given constraint families (less `without`) and the objective's terms."""
        unknown = set(without) - {name for name, _ in families}
        if unknown:
            raise ValueError(f"unknown constraint families {sorted(unknown)}; known: {[n for n, _ in families]}")
        model = cp_model.CpModel()
        v = add_part_variables(model, problem)
        added = []
        for name, family in families:
            if name not in without:
                family(model, problem, v)
                added.append(name)
        return cls(problem, model, v, objective_terms(model, problem, v), added)

    def add_family(self, name: str, family: ConstraintFamily) -> None:
        """Add a constraint family (a what-if's rule) to the built model."""
        family(self.model, self.problem, self.vars)
        self.families.append(name)

    def add_term(self, name: str, expression: object) -> None:
        """Add a named objective term (solver units); its value is read back in `extra_terms`."""
        if name in self.terms.extra or name in ("unplaced", "active_cost", "spread", "moves", "remote", "hot_spots",
                                                "speed"):
            raise ValueError(f"objective term {name!r} exists already")
        self.terms.extra[name] = expression

    def solve(self, hint: Assignment | None = None, log_callback=None, complete: bool = True) -> PlacementSolution:
        """Warm-start (completing the hint to a full solution first), solve within the problem's limits, and
        read back the assignment and the terms."""
        problem, model, v = self.problem, self.model, self.vars
        start = time.perf_counter()
        model.Minimize(self.terms.total())
        used = 0.0
        whole_hint = False
        if hint is not None:
            model.ClearHints()
            add_hint(model, problem, v, hint)
            proto = model.Proto()
            whole_hint = len(proto.solution_hint.vars) == len(proto.variables)
            if complete and not whole_hint:  # a family added by add_family brought variables add_hint knows not
                used = complete_hint(model, problem)
        solver = cp_model.CpSolver()
        spent = used / problem.deterministic_units_per_s if problem.deterministic else time.perf_counter() - start
        wall = None if problem.wall_limit_s is None else problem.wall_limit_s - (time.perf_counter() - start)
        set_limits(solver, problem, max(float(problem.time_limit_s) - spent, min(0.5, float(problem.time_limit_s))),
                   wall)
        solver.parameters.num_workers = int(problem.workers)
        solver.parameters.random_seed = int(problem.seed)
        # presolve probing can eat the whole budget of a large model; keep it cheap and spend the time searching
        solver.parameters.cp_model_probing_level = 0
        solver.parameters.max_presolve_iterations = 1
        # with a value for every variable CP-SAT takes the hint as its first solution before any search, but
        # only once presolve is done, which alone took a short budget on the demo (status unknown although
        # the hint was a valid plan); without presolve the hint is the incumbent at once (demo: 0.36 s)
        solver.parameters.cp_model_presolve = not whole_hint
        if log_callback is not None:
            solver.parameters.log_search_progress = True
            solver.log_callback = log_callback
        trajectory = _Trajectory(start)
        code = solver.Solve(model, trajectory)
        elapsed = time.perf_counter() - start
        status = _STATUS.get(code, PlanStatus.TIMEOUT_NO_SOLUTION)
        proto = model.Proto()
        n_vars, n_cons = len(proto.variables), len(proto.constraints)
        dtime = solver.deterministic_time + (used if problem.deterministic else 0.0)
        if not status.has_solution:
            bound = float(solver.BestObjectiveBound()) if code == cp_model.UNKNOWN else None
            result = SolveResult(status, None, bound, None, elapsed, "cp-sat")
            return PlacementSolution(result, Assignment.empty(problem.n_requests), None, n_vars, n_cons, dtime)
        objective = float(solver.ObjectiveValue())
        bound = float(solver.BestObjectiveBound())
        value = lambda x: int(x) if isinstance(x, int) else int(solver.Value(x))  # noqa: E731
        terms = ObjectiveTerms(value(self.terms.unplaced), value(self.terms.active_cost), value(self.terms.spread),
                               moves=value(self.terms.moves), remote=value(self.terms.remote),
                               hot_spots=value(self.terms.hot_spots), speed=value(self.terms.speed))
        result = SolveResult(status, objective, bound, relative_gap(objective, bound), elapsed, "cp-sat")
        return PlacementSolution(result, read_assignment(problem, solver, v), terms, n_vars, n_cons, dtime,
                                 {name: value(x) for name, x in self.terms.extra.items()}, trajectory.points)


_STATUS = {cp_model.OPTIMAL: PlanStatus.OPTIMAL, cp_model.FEASIBLE: PlanStatus.FEASIBLE,
           cp_model.INFEASIBLE: PlanStatus.INFEASIBLE, cp_model.UNKNOWN: PlanStatus.TIMEOUT_NO_SOLUTION,
           cp_model.MODEL_INVALID: PlanStatus.INFEASIBLE}


def set_limits(solver: cp_model.CpSolver, problem: PlacementProblem, budget_s: float,
               wall_s: float | None = None) -> None:
    """Deterministic limit (reproducible) under the caller's wall-clock cap, or a plain wall-clock limit;
    `wall_s` (default the problem's `wall_limit_s`) is never exceeded."""
    wall = problem.wall_limit_s if wall_s is None else wall_s
    if problem.deterministic:
        solver.parameters.max_deterministic_time = budget_s * problem.deterministic_units_per_s
        if wall is not None:
            solver.parameters.max_time_in_seconds = max(wall, 0.01)
        solver.parameters.interleave_search = problem.workers > 1
    else:
        solver.parameters.max_time_in_seconds = max(budget_s if wall is None else min(budget_s, wall), 0.01)


def complete_hint(model: cp_model.CpModel, problem: PlacementProblem) -> float:
    """Extend a partial hint (the decision variables) to every variable, so the main solve starts from a
    full feasible solution; CP-SAT may otherwise drop a partial hint on a large model. Keeps the partial
    hint if the completion fails. Returns the time it used (deterministic units or seconds)."""
    solver = cp_model.CpSolver()
    solver.parameters.fix_variables_to_their_hinted_value = True
    solver.parameters.num_workers = 1
    solver.parameters.random_seed = int(problem.seed)
    share = 0.2
    set_limits(solver, problem, share * problem.time_limit_s,
               None if problem.wall_limit_s is None else share * problem.wall_limit_s)
    code = solver.Solve(model)
    used = solver.deterministic_time if problem.deterministic else solver.wall_time
    if code not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return used
    values = [solver.Value(model.GetIntVarFromProtoIndex(i)) for i in range(len(model.Proto().variables))]
    model.ClearHints()
    for i, value in enumerate(values):
        model.AddHint(model.GetIntVarFromProtoIndex(i), value)
    return used


def solve_placement(problem: PlacementProblem, hint: Assignment | None = None,
                    log_callback=None, complete: bool = True) -> PlacementSolution:
    """Build, warm-start and solve; read back the assignment and the objective terms."""
    return PlacementModel.build(problem).solve(hint, log_callback, complete)


def read_assignment(problem: PlacementProblem, solver: cp_model.CpSolver, v: PlacementVars) -> Assignment:
    assignment = Assignment.empty(problem.n_requests)
    value = lambda x: int(x) if isinstance(x, int) else int(solver.Value(x))  # noqa: E731
    for r in range(problem.n_requests):
        if not solver.BooleanValue(v.placed[r]):
            continue
        assignment.placed[r] = True
        for i, h in enumerate(problem.compute_candidates[r]):
            if not solver.BooleanValue(v.use[r][i]):
                continue
            assignment.parts[r].append((int(h), value(v.vcpu[r][i]), value(v.ram[r][i]), value(v.net[r][i]),
                                        value(v.gpu[r][i])))
        assignment.storage_hosts[r] = [int(h) for i, h in enumerate(problem.storage_candidates[r])
                                       if v.copy[r] and solver.BooleanValue(v.copy[r][i])]
    return assignment
