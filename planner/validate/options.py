"""One options object for a planning run, with documented defaults.

Every field can be overridden by an environment variable ``SHARDPLAN_<FIELD>``
(upper case) and by the CLI flags; the resolved values are recorded under
``options`` in every ``plan.json`` they shaped.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from shardplan.schema import LATENCY_CLASSES


@dataclass(frozen=True)
class PlanOptions:
    """Knobs of the placement; units are in the names."""

    mode: str = "sharded"
    """sharded: a request may span up to max_shards hosts; whole: one host per VM (classic scheduler)."""
    time_limit_s: float = 30.0
    """The whole command's wall time (s): reading, search, bound, check and export (shardplan.planner.search.budget)."""
    workers: int = 2
    """CP-SAT search workers (the plan is deterministic for a fixed seed and worker count)."""
    seed: int = 0
    """CP-SAT random seed."""
    deterministic: bool = True
    """Same seed and worker count → same plan: local searches are granted moves and CP-SAT deterministic
    time (its share of time_limit_s × deterministic_units_per_s), with interleaved search; the wall clock only
    caps each phase at the command's deadline (planner.search.budget). False: every grant is wall seconds."""
    deterministic_units_per_s: float = 0.25
    """CP-SAT deterministic-time units granted per second of time_limit_s (measured ≈ 0.1–0.4 per wall
    second on a 2-core machine, depending on load)."""
    wall_safety_factor: float = 3.0
    """Deterministic mode: a search phase may run at most this many times its grant in wall seconds, and
    never past the command's deadline (shardplan.planner.search.budget); when that cap fires, plan.json says so."""
    fixed_s_per_mpair: float = 2.2
    """Seconds set aside, per million request × host pairs, for the phases that cannot be cut short (warm
    start, the wide and the model's candidate passes, assignment, check, export): measured 22 s at 2,000
    hosts × 5,000 requests on an idle 2-core machine (10 M pairs; warm start 6.8 s, each candidate pass
    7.4 s, 0.3 s after the search). A deterministic estimate, so the searches' shares do not depend on the
    machine's speed; the part after the search is the model's candidate pass (wide_s_per_mpair) and 5%."""
    wide_s_per_mpair: float = 0.75
    """Of fixed_s_per_mpair, what the wide candidate pass of ruin and recreate takes (measured 0.75 s per M
    pairs at 2,000 hosts × 5,000 requests; the model's own candidate pass takes about as much). That pass
    runs only when the fixed phases' estimate with it fits in 60% of time_limit_s; otherwise ruin and
    recreate searches the model's candidates (a rule on the problem's size and the limit, never on the
    clock, so plans stay reproducible)."""
    partitions: int = 0
    """Cells the fleet is split into (shardplan.planner.partition), each planned as a Dask task, then one
    global pass from their merged plan; 1: one monolithic plan; 0: chosen from the size,
    ⌈(hosts × requests / cell_pairs)^¼⌉ above 500,000 pairs (1 below: the demo; 2 at 500 × 1,250, 4 at 2,000 × 5,000,
    8 at 10,000 × 25,000; at most 16)."""
    cell_pairs: float = 1e5
    """Partitioned planning: the scale of the automatic number of partitions (see partitions)."""
    cells_share: float = 0.5
    """Partitioned planning: share of the search time the cells get (they run in waves of as many cells as
    there are Dask workers); the global pass gets the rest."""
    lagrangian_share: float = 0.7
    """Above lp_pair_limit pairs the pool LP (models/pool_bound.py) runs first, the Lagrangian bound
    (models/lagrangian.py) in what it leaves; where the pool LP is not solved, the Lagrangian bound gets
    this share of what is left and the zone-aggregate LP the rest. The best of them is the bound."""
    bound_share: float = 0.05
    """Share of time_limit_s set aside for the LP bound after the search (at least 1 s and at least
    bound_s_per_krequest, at most lp_time_limit_s)."""
    bound_s_per_krequest: float = 0.6
    """Seconds set aside for the bound per 1,000 requests, at least: the pool LP (models/pool_bound.py)
    took 2.4 s at 5,000 requests and 5.9 s at 25,000 on 2 cores, build and HiGHS together."""
    warm_start_work: float = 2.5e7
    """Construction heuristics tried before CP-SAT: as many of the twenty-four as fit in this many
    request × host pairs in all (all of them on the demo; two on 2,000 hosts × 5,000 requests; one, the
    FFD baseline, on 10,000 × 25,000)."""
    monolithic_pair_limit: int = 30_000
    """Up to this many (request, candidate host) pairs the whole fleet is one CP-SAT model first."""
    lns_share: float = 0.5
    """Share of the time spent in large-neighbourhood search after the monolithic solve (all of it above
    monolithic_pair_limit); 0 disables LNS."""
    lns_neighbourhood_s: float = 0.5
    """Time limit of one LNS neighbourhood solve."""
    consolidation_share: float = 0.3
    """Share of the time spent, before CP-SAT, emptying paid-for hosts by consistent neighbourhood search
    (shardplan.planner.search.consolidate) when the warm start places every request that has a candidate; 0 disables it."""
    consolidation_moves_per_s: int = 3000
    """Moves of that search granted per second of its share (its budget is counted in moves, so the plan
    does not depend on the machine's speed; about 1,000–5,000 moves run per wall second)."""
    recreate_share: float = 0.85
    """Share of the time spent, before CP-SAT, placing more of the waiting demand by ruin and recreate
    (shardplan.planner.search.recreate) when the warm start leaves a request with candidates unplaced; 0 disables it.
    Most of it: over wide candidates the search still gains at 10,000 moves on the demo, while CP-SAT
    and LNS after it gain about 0.1%."""
    recreate_moves_per_s: int = 150
    """Moves of that search granted per second of its share (counted in moves, so the plan does not
    depend on the machine's speed). Set below what the 2-core reference machine runs, so the moves end
    before the phase's wall-clock cap and the plan stays reproducible: 166 moves per wall second on the
    demo nightly, 160–185 on 240-host generated fleets (measured 2026-12-03; it was 120–140 before the
    greedy split's inner loop was tightened, and the old 200 let the cap, not the count, end the search)."""
    lp_pair_limit: int = 40_000
    """Up to this many candidate pairs the bound is the full LP relaxation; above, the zone-aggregate LP."""
    score_coverage: float = 2.0
    """Candidate score, points per unit of coverage (share of the request's demand the host's free capacity
    could take, 0–1; planner.search.candidates)."""
    score_active: float = 1.0
    """... points for a host that already runs load (no activation cost)."""
    score_tightness: float = 0.5
    """... points per unit of tightness (1 − mean leftover share after a whole placement: best fit)."""
    score_price: float = 0.5
    """... points taken off per unit of price (cost_per_hour per free vcpu / the fleet's median)."""
    score_price_cap: float = 4.0
    """... relative price above which a host scores no worse (a ratio, dimensionless)."""
    top_k: int = 12
    """Candidate host classes kept per request, best first by the candidate score."""
    pair_budget: int = 250_000
    """Upper bound on (request, candidate host) pairs; large equivalence classes are trimmed to fit."""
    search_pair_budget: int = 1_500_000
    """(request, host) pairs ruin and recreate may use. top_k keeps the models small; a local search need
    not be, so it sees every host that passes the filters when requests × hosts fit this budget, else as
    many of the best classes per zone as fit (never fewer than top_k). Its hosts join the model's candidates."""
    remote_memory_gbps_per_gib: float = 0.05
    """NIC traffic caused by each GiB of memory held on a host where the request has no vcpu (flat pricing:
    every such GiB; use pricing: every such GiB once the request's remote GiB pass its untouched GiB)."""
    remote_memory_pricing: str = "use"
    """How remote memory is priced. "use" (after Azure's Pond, ASPLOS 2023): the GiB a request is expected
    never to touch (`untouched_ram_gib`) may live remotely at untouched_remote_gbps_per_gib and slow nothing,
    for every latency class; past them every remote GiB costs remote_memory_gbps_per_gib, the touched ones
    slow the request by remote_slowdown_per_share × their share of its RAM and cost touched_remote_price_*,
    and the slowdown may not pass max_slowdown_* of its class. "flat": every remote GiB at
    remote_memory_gbps_per_gib, none for latency class low, no cap (the rule before use pricing)."""
    untouched_remote_gbps_per_gib: float = 0.001
    """NIC traffic per GiB of untouched memory held remotely: near zero (page-table scans and rare promotions;
    Google's far memory promotes about 0.2% of the cold set per minute, 0.3 Mbit/s per GiB; assumption ×3)."""
    remote_slowdown_per_share: float = 0.35
    """Modelled slowdown of a request per unit share of its RAM that is touched and remote (assumption: a
    memory-bound request whose every access went one hop away, at about twice local latency, runs ~35%
    slower; Pond reports 1–5% when only predicted-untouched memory is pooled)."""
    max_slowdown_low: float = 0.0
    """Use pricing: most modelled slowdown from touched remote memory for latency class low (so no touched GiB
    remote)."""
    max_slowdown_medium: float = 0.02
    """... for latency class medium."""
    max_slowdown_tolerant: float = 0.10
    """... for latency class tolerant."""
    touched_remote_price_medium: float = 0.05
    """Use pricing: $/h-equivalent per touched remote GiB of a medium request (ten times what a GiB of local
    DRAM costs on a memory-optimised host, r6id.metal at 9.68 $/h for 1,024 GiB; the slowdown is the price)."""
    touched_remote_price_tolerant: float = 0.01
    """... of a tolerant request."""
    hot_spot_threshold: float = 0.9
    """Share of a host's vcpu (after overcommit) or RAM above which it is a hot spot: full in one resource, it
    strands what it has left of the others and leaves no headroom for a burst."""
    hot_spot_price: float = 0.5
    """$/h-equivalent per host and resource (vcpu, RAM) the plan pushes past hot_spot_threshold (existing load
    that is past it already is not charged). Below a host's price (4–33 $/h on the demo), so a plan still
    fills a host rather than switch another on, but prefers the host where the request fits without."""
    speed_price_low: float = 0.05
    """$/h-equivalent per vcpu per unit of cpu_score below the fastest up host, for a latency-class-low request
    that states no min_cpu_score: what a faster host is worth to it (about a vcpu's hourly price on the demo's
    cpu-optimised hosts, 0.05 $/h, for the whole 0.4 spread of its scores)."""
    speed_price_medium: float = 0.02
    """... for latency class medium (tolerant requests: none)."""
    min_local_ram_gib_per_vcpu: float = 0.5
    """RAM a part must hold locally per vcpu it runs (invariant 4)."""
    max_ram_skew: float = 2.0
    """Most RAM a part with vcpu may hold, as a multiple of its vcpu share of the request's RAM (GiB, rounded
    up; invariant 4): a part with 1 of a request's 40 vcpu and 64 GiB holds at most ⌈2 × 64 / 40⌉ = 4 GiB.
    RAM a part holds beyond its vcpu's share is reached by the request's other vcpu across the network, so
    it is remote memory in all but name; past this skew it must be a memory part (no vcpu), priced and capped
    as remote memory. Up to it, the in-VM router gives the memory-rich part the memory-hungry tasks."""
    unplaced_weight: float = 1000.0
    """$/h-equivalent charged per unplaced priority-weighted demand unit (dominates cost)."""
    demand_ram_gib_per_unit: float = 4.0
    """Demand units of a request = vcpu + ram_gib / this + gpu_units_per_gpu × gpu."""
    gpu_units_per_gpu: float = 8.0
    """Demand units one GPU counts for."""
    spread_weight_low: float = 2.0
    """$/h-equivalent per extra host or rack for latency class low."""
    spread_weight_medium: float = 0.5
    """... for latency class medium."""
    spread_weight_tolerant: float = 0.1
    """... for latency class tolerant."""
    topology: tuple = ()
    """Distances between racks (the `--topology` table, rows (from, to, latency_us, bandwidth_gbps) with `from`,
    `to` two racks of one zone or one zone twice, the default for its rack pairs): with it, the extra racks a
    request spans cost by distance, not by count. A request's racks cost its spread weight × the least, over
    its racks k, of Σ over its other racks l of distance(k, l): the star around its best-placed rack, where
    distance = mean(latency_us / other_rack_latency_us, other_rack_bandwidth_gbps / bandwidth_gbps), 1.0 for
    a pair at the defaults (so with no table, or the defaults in it, a request pays per extra rack as before).
    Empty: no table."""
    other_rack_latency_us: float = 20.0
    """Latency between two racks of a zone that the topology does not name (µs; the router's default too)."""
    other_rack_bandwidth_gbps: float = 10.0
    """Bandwidth between two racks of a zone that the topology does not name (Gbps)."""
    lp_bound: bool = True
    """Solve the LP relaxation with PuLP/HiGHS to report a bound when tighter than CP-SAT's."""
    model_build_s_per_kpair: float = 0.05
    """Seconds building the CP-SAT model takes per 1,000 candidate pairs (measured 1.0–1.3 s at 27,000 pairs
    on 2 cores); CP-SAT is not started when its wall-clock cap could not cover twice that."""
    lp_build_s_per_kpair: float = 0.15
    """Seconds building the LP relaxation in PuLP takes per 1,000 pairs (measured 3–5 s at 28,000 pairs); the
    full LP is not started when what the budget leaves could not cover 1.5 times that (the zone-aggregate LP,
    which is small, is tried instead)."""
    lp_time_limit_s: float = 60.0
    """Time limit for the LP relaxation."""
    symmetry_breaking: bool = True
    """Order interchangeable empty hosts of one equivalence class."""
    reservation_weight: float = 0.05
    """Multiplies the unplaced weight of reservation blocks (requests rows of kind `reservation`) so real
    requests win: a 16-vcpu / 128-GiB block (48 demand units) is worth less than 3 units of a real request,
    yet each reserved unit (50 $/h-equivalent) still outweighs the hourly cost of any host it activates."""
    disruption_cost: float = 20.0
    """Re-planning: $ (one-time) per running request disrupted (any part moved, or dropped). What an
    operator pays for interrupting a live VM (migration stun, risk, attention). With move_cost_per_gib and
    move_horizon_h it makes the rule by which a voluntary move is made: only when what it saves over the
    horizon outweighs what it costs once. At the defaults a disruption costs 20 / 24 = 0.83 $/h: freeing
    a demo host (median 7.6 $/h) pays for moving up to about 8 of its requests; placing one more demand
    unit of a waiting request (1,000 $/h-equivalent) always pays."""
    move_cost_per_gib: float = 0.05
    """... and $ (one-time) per GiB of RAM or storage copy moved to another host."""
    move_horizon_h: float = 24.0
    """Hours a nightly plan stands: one-time move costs are spread over it to weigh them in $/h beside the
    hourly terms of the objective (Karpenter's consolidation weighs a disruption against the savings in
    the same way)."""
    max_moves: int = -1
    """Hard budget on voluntary disruptions per run (running requests moved or evicted when not forced to);
    −1: no budget. Mandatory moves (a host no longer up or no longer able to hold the parts) never count."""

    def per_class(self, name: str, latency_class: str) -> float:
        """The option `name`_`latency_class` (spread_weight_low, max_slowdown_medium, …); 0 where a class has
        none of its own (speed_price_tolerant, touched_remote_price_low)."""
        if latency_class not in LATENCY_CLASSES:
            raise KeyError(latency_class)
        return float(getattr(self, f"{name}_{latency_class}", 0.0))

    def max_slowdown(self, latency_class: str) -> float:
        return self.per_class("max_slowdown", latency_class)

    def speed_price(self, latency_class: str) -> float:
        return self.per_class("speed_price", latency_class)

    def touched_remote_price(self, latency_class: str) -> float:
        return self.per_class("touched_remote_price", latency_class)

    def spread_weight(self, latency_class: str) -> float:
        return self.per_class("spread_weight", latency_class)

    def replace(self, **changes: object) -> "PlanOptions":
        """A copy with the given fields changed; None values are ignored (unset CLI flags)."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)

    @classmethod
    def recorded(cls, options: dict | None) -> "PlanOptions":
        """The options a plan.json recorded (its `options`): the fields this version knows, defaults for the
        rest (a plan written by another version may hold more or fewer)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (options or {}).items() if k in known}
        if "topology" in values:  # JSON gives lists
            values["topology"] = tuple(tuple(row) for row in values["topology"] or ())
        return cls(**values)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, validate: bool = True) -> "PlanOptions":
        """Defaults overridden by SHARDPLAN_<FIELD> environment variables (`validate`: checked, a bad value
        named by its variable; else the caller checks once its own overrides are in)."""
        environ = os.environ if environ is None else environ
        changes: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(f"SHARDPLAN_{f.name.upper()}")
            if raw is None:
                continue
            kind = type(f.default)
            if kind is tuple:  # a table (topology): given by its flag, not by the environment
                raise ValueError(f"environment variable SHARDPLAN_{f.name.upper()}: {f.name} is a table, "
                                 f"given by its file flag")
            if kind is bool:
                changes[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                try:
                    changes[f.name] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"environment variable SHARDPLAN_{f.name.upper()}={raw!r}: expected {kind.__name__}") from exc
        options = cls(**changes)
        if not validate:
            return options
        try:
            options.validate()
        except OptionError as exc:
            raise (exc.named(f"SHARDPLAN_{exc.name.upper()}") if exc.name in changes else exc) from None
        return options

    def validate(self) -> None:
        """Raise OptionError naming the first field out of its range, with its value."""
        for name, ok, rule in (
            ("mode", self.mode in ("sharded", "whole"), "'sharded' or 'whole'"),
            ("time_limit_s", self.time_limit_s > 0, "> 0"),
            ("workers", self.workers >= 1, "≥ 1"),
            ("top_k", self.top_k >= 1, "≥ 1"),
            ("search_pair_budget", self.search_pair_budget >= 1, "≥ 1"),
            ("min_local_ram_gib_per_vcpu", self.min_local_ram_gib_per_vcpu >= 0, "≥ 0"),
            ("max_ram_skew", self.max_ram_skew >= 1, "≥ 1"),
            ("remote_memory_gbps_per_gib", self.remote_memory_gbps_per_gib >= 0, "≥ 0"),
            ("remote_memory_pricing", self.remote_memory_pricing in ("use", "flat"), "'use' or 'flat'"),
            ("untouched_remote_gbps_per_gib", 0 <= self.untouched_remote_gbps_per_gib
             <= self.remote_memory_gbps_per_gib, "in [0, remote_memory_gbps_per_gib]"),
            ("remote_slowdown_per_share", self.remote_slowdown_per_share > 0, "> 0"),
            ("max_slowdown_low", self.max_slowdown_low >= 0, "≥ 0"),
            ("max_slowdown_medium", self.max_slowdown_medium >= 0, "≥ 0"),
            ("max_slowdown_tolerant", self.max_slowdown_tolerant >= 0, "≥ 0"),
            ("touched_remote_price_medium", self.touched_remote_price_medium >= 0, "≥ 0"),
            ("touched_remote_price_tolerant", self.touched_remote_price_tolerant >= 0, "≥ 0"),
            ("hot_spot_threshold", 0 < self.hot_spot_threshold <= 1, "in (0, 1]"),
            ("hot_spot_price", self.hot_spot_price >= 0, "≥ 0"),
            ("speed_price_low", self.speed_price_low >= 0, "≥ 0"),
            ("speed_price_medium", self.speed_price_medium >= 0, "≥ 0"),
            ("consolidation_share", 0 <= self.consolidation_share < 1, "in [0, 1)"),
            ("recreate_share", 0 <= self.recreate_share < 1, "in [0, 1)"),
            ("lns_share", 0 <= self.lns_share <= 1, "in [0, 1]"),
            ("wall_safety_factor", self.wall_safety_factor >= 1, "≥ 1"),
            ("fixed_s_per_mpair", self.fixed_s_per_mpair >= 0, "≥ 0"),
            ("wide_s_per_mpair", 0 <= self.wide_s_per_mpair <= self.fixed_s_per_mpair, "in [0, fixed_s_per_mpair]"),
            ("partitions", self.partitions >= 0, "≥ 0 (0: chosen from the size)"),
            ("cell_pairs", self.cell_pairs > 0, "> 0"),
            ("cells_share", 0 < self.cells_share < 1, "in (0, 1)"),
            ("bound_share", 0 <= self.bound_share < 1, "in [0, 1)"),
            ("bound_s_per_krequest", self.bound_s_per_krequest >= 0, "≥ 0"),
            ("lagrangian_share", 0 < self.lagrangian_share <= 1, "in (0, 1]"),
            ("unplaced_weight", self.unplaced_weight > 0, "> 0 (placing demand is the objective's first aim)"),
            ("recreate_moves_per_s", self.recreate_moves_per_s >= 1, "≥ 1 (a share of 0 disables a search)"),
            ("consolidation_moves_per_s", self.consolidation_moves_per_s >= 1, "≥ 1 (a share of 0 disables a search)"),
            ("reservation_weight", 0 <= self.reservation_weight <= 1, "in [0, 1]"),
            ("lp_time_limit_s", self.lp_time_limit_s > 0, "> 0"),
            ("model_build_s_per_kpair", self.model_build_s_per_kpair >= 0, "≥ 0"),
            ("lp_build_s_per_kpair", self.lp_build_s_per_kpair >= 0, "≥ 0"),
            ("disruption_cost", self.disruption_cost >= 0, "≥ 0"),
            ("move_cost_per_gib", self.move_cost_per_gib >= 0, "≥ 0"),
            ("move_horizon_h", self.move_horizon_h > 0, "> 0"),
            ("max_moves", self.max_moves >= -1, "≥ 0 (or −1: no budget)"),
            ("other_rack_latency_us", self.other_rack_latency_us > 0, "> 0"),
            ("other_rack_bandwidth_gbps", self.other_rack_bandwidth_gbps > 0, "> 0"),
            ("topology", all(len(row) == 4 and row[2] > 0 and row[3] > 0 for row in self.topology),
             "rows (from, to, latency_us > 0, bandwidth_gbps > 0)"),
        ):
            if not ok:
                raise OptionError(name, getattr(self, name), rule)


class OptionError(ValueError):
    """An option out of its range: which one, its value, and the rule (the CLI names the flag)."""

    def __init__(self, name: str, value: object, rule: str, source: str | None = None) -> None:
        self.name, self.value, self.rule, self.source = name, value, rule, source
        super().__init__(f"{source or name} = {value!r}: must be {rule}")

    def named(self, source: str) -> "OptionError":
        """The same error, naming where the value came from (a flag or an environment variable)."""
        return OptionError(self.name, self.value, self.rule, source)


OPTION_FIELDS = tuple(f.name for f in dataclasses.fields(PlanOptions))
