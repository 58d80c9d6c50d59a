"""The topology table's rows resolved to rack pairs, for the planner's spread penalty and the in-VM router alike.

A row (from, to, latency_us, bandwidth_gbps) names two racks of one zone, or one zone twice: the default for that
zone's rack pairs. Zone rows apply first, rack pairs over them (DESIGN.md's topology input; the rows are checked
by planner.validate.inputs.check_topology before they get here).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping


def rack_pairs(rows: Iterable, zone_of: Mapping[str, str]) -> dict[tuple[str, str], tuple[float, float]]:
    """{(rack a, rack b): (latency µs, bandwidth Gbps)} for every pair of distinct racks of one zone that the
    rows set, both orders; `zone_of`: rack → zone of the racks in view (names it lacks are skipped: a
    partition's hosts, a VM's parts)."""
    zones = set(zone_of.values())
    out: dict[tuple[str, str], tuple[float, float]] = {}
    rows = list(rows)
    for a, b, lat, bw in rows:
        if a == b and a in zones and a not in zone_of:
            inside = [rack for rack, zone in zone_of.items() if zone == a]
            for x in inside:
                for y in inside:
                    if x != y:
                        out[(x, y)] = (float(lat), float(bw))
    for a, b, lat, bw in rows:
        if a in zone_of and b in zone_of and a != b:
            out[(a, b)] = out[(b, a)] = (float(lat), float(bw))
    return out


def distance(latency_us, bandwidth_gbps, default_us: float, default_gbps: float):
    """A rack pair's distance relative to one at the defaults: mean(latency / default, default bandwidth / its);
    numbers or numpy arrays alike (the planner's (K, K) matrix, the router's one pair)."""
    return 0.5 * (latency_us / float(default_us) + float(default_gbps) / bandwidth_gbps)
