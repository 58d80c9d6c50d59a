"""A current placement in solver units: what the warm start keeps, what the model prices.

`build_running` turns the validated current placement (shardplan.planner.replan) into per-request parts
in the solver's units (request index space), the room the parts that may stay take on each host, the
mandatory moves and the move prices; `Running.in_order` hands the model its `Current`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from shardplan.models.problem import (
    COST_UNITS_PER_DOLLAR,
    NET_UNITS_PER_GBPS,
    Assignment,
    Current,
    Part,
    assignment_usage,
)
from shardplan.planner.replan import CurrentPlacement, must_move
from shardplan.planner.search.candidates import remote_memory
from shardplan.planner.validate.options import PlanOptions


@dataclass(frozen=True)
class Running:
    """What runs now, per request index (None: not running), and what it takes of each host."""

    parts: list[tuple[Part, ...] | None]
    copies: list[tuple[int, ...] | None]
    mandatory: np.ndarray        # (R,) bool
    must_place: np.ndarray       # (R,) bool
    disrupt_weight: np.ndarray   # (R,) int64
    gib_weight: int
    max_moves: int
    held: np.ndarray             # (H, 5): room running parts take on up hosts (a forced move's too, until it moves)
    reasons: dict[str, str]      # request id → why it must move
    placement: CurrentPlacement
    held_kept: np.ndarray | None = None  # (H, 5): room the running parts that may stay take

    @property
    def running(self) -> np.ndarray:
        return np.array([p is not None for p in self.parts], dtype=bool)

    @property
    def keepable(self) -> np.ndarray:
        return self.running & ~self.mandatory

    def in_order(self, order: np.ndarray) -> Current:
        """The model's view, in problem order."""
        return Current([self.parts[r] for r in order], [self.copies[r] for r in order], self.mandatory[order],
                       self.must_place[order], self.disrupt_weight[order], self.gib_weight, self.max_moves)

    def kept(self) -> Assignment:
        """Every running request that may stay, exactly where it is; nothing else placed."""
        out = Assignment.empty(len(self.parts))
        for r in np.flatnonzero(self.keepable):
            out.placed[r] = True
            out.parts[r] = list(self.parts[r])
            out.storage_hosts[r] = list(self.copies[r])
        return out

    def hosts(self) -> list[set[int]]:
        """Per request, the hosts its current parts sit on (they join its candidates, so it may stay)."""
        return [set() if p is None else {x[0] for x in p} | set(c) for p, c in zip(self.parts, self.copies)]


def build_running(hosts: pl.DataFrame, requests: pl.DataFrame, placement: CurrentPlacement,
                  options: PlanOptions, up: np.ndarray) -> Running:
    """Solver-unit parts of the running requests; a request with a part on a host that is not `up` (or
    another reason of `must_move`) is mandatory and holds no room."""
    host_index = {h: i for i, h in enumerate(hosts["host_id"].to_list())}
    request_index = {r: i for i, r in enumerate(requests["request_id"].to_list())}
    n = requests.height
    parts: list[list[Part] | None] = [None] * n
    copies: list[list[tuple[int, int]] | None] = [None] * n
    memory = remote_memory(requests, options)
    remote = (placement.shards.filter(pl.col("vcpu") == 0).group_by("request_id").agg(pl.col("ram_gib").sum()))
    remote_of = dict(zip(remote["request_id"].to_list(), remote["ram_gib"].to_list()))
    for row in placement.shards.sort("request_id", "shard").iter_rows(named=True):
        r = request_index[row["request_id"]]
        if parts[r] is None:
            parts[r], copies[r] = [], []
        h = host_index[row["host_id"]]
        if row["storage_gib"] > 0:
            copies[r].append((int(row["replica"]), h))
        if row["vcpu"] or row["ram_gib"] or row["gpu"] or (row["storage_gib"] == 0 and row["net_gbps"]):
            rate = memory.rate(r, int(remote_of.get(row["request_id"], 0))) / NET_UNITS_PER_GBPS
            net = row["net_gbps"] - (rate * row["ram_gib"] if row["vcpu"] == 0 else 0.0)
            parts[r].append((h, int(row["vcpu"]), int(row["ram_gib"]), max(int(round(net * NET_UNITS_PER_GBPS)), 0),
                             int(row["gpu"])))
    demand_net = np.ceil(requests["net_gbps"].to_numpy() * NET_UNITS_PER_GBPS - 1e-9).astype(np.int64)
    reasons = must_move(hosts, requests, placement.shards, whole=options.mode == "whole",
                        min_local_ram_gib_per_vcpu=options.min_local_ram_gib_per_vcpu, max_ram_skew=options.max_ram_skew,
                        remote_cap=pl.DataFrame({"request_id": requests["request_id"], "remote_cap": memory.cap}))
    ids = requests["request_id"].to_list()
    mandatory = np.array([i in reasons for i in ids], dtype=bool) & np.array([p is not None for p in parts])
    final_parts: list[tuple[Part, ...] | None] = []
    for r, p in enumerate(parts):
        if p is None:
            final_parts.append(None)
            continue
        if p:  # own net of the parts adds up to the request's (rounding, or another remote-memory rate)
            gap = int(demand_net[r]) - sum(x[3] for x in p)
            k = max(range(len(p)), key=lambda i: (p[i][3], p[i][1]))
            h, v, m, net, g = p[k]
            p[k] = (h, v, m, max(net + gap, 0), g)
        final_parts.append(tuple(sorted(p)))
    final_copies = [None if c is None else tuple(h for _, h in sorted(c)) for c in copies]
    evictable = requests["evictable"].to_numpy().astype(bool)
    running = np.array([p is not None for p in final_parts], dtype=bool)
    # the parts of a request that must move still hold their room until it has moved: a warm start that
    # filled it would make two forced moves wait on each other (a swap no executor can order)
    storage = requests["storage_gib"].to_numpy()
    everything = Assignment(running.copy(), [list(p or ()) for p in final_parts], [list(c or ()) for c in final_copies])
    held = assignment_usage(everything, storage, memory, hosts.height)
    held_kept = assignment_usage(Assignment(running & ~mandatory, everything.parts, everything.storage_hosts),
                                 storage, memory, hosts.height)
    held[~up] = 0
    held_kept[~up] = 0
    per_dollar = COST_UNITS_PER_DOLLAR / options.move_horizon_h
    disrupt = np.where(running, int(round(options.disruption_cost * per_dollar)), 0).astype(np.int64)
    return Running(final_parts, final_copies, mandatory, running & ~evictable & ~mandatory, disrupt,
                   int(round(options.move_cost_per_gib * per_dollar)), options.max_moves, held,
                   {i: reasons[i] for i in ids if i in reasons}, placement, held_kept)
