"""Invariant 4's cap on RAM beside few vcpu (max_ram_skew): a part with 1 of a request's 32 vcpu cannot hold
most of its RAM and call it local, in CP-SAT, the greedy placements, the checker and the re-planning rule."""
from __future__ import annotations

import polars as pl
import pytest

from shardplan.models.problem import part_ram_cap, skew_ratio
from shardplan.planner.engine import plan, plan_ffd
from shardplan.planner.replan import must_move
from shardplan.planner.report.checker import check_plan
from shardplan.planner.validate.options import OptionError, PlanOptions
from shardplan.schema import SHARDS_SCHEMA
from tests.fleets import hosts_table, requests_table

FAST = PlanOptions(time_limit_s=4, workers=1, lp_bound=False)


def fleet() -> pl.DataFrame:
    """h1: 32 vcpu and 40 GiB free; h2: 4 vcpu and 256 GiB. A 32-vcpu, 96-GiB request of latency class low
    (no remote memory) fits only with at least 56 GiB beside at most 4 vcpu on h2, more than twice those vcpu's
    share (12 GiB)."""
    return hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 32, "ram_gib": 40},
                       {"host_id": "h2", "rack": "r2", "vcpu": 4, "ram_gib": 256})


def low(**extra) -> pl.DataFrame:
    return requests_table({"request_id": "a", "vcpu": 32, "ram_gib": 96, "latency_class": "low", "max_shards": 2,
                           **extra})


def sliver() -> pl.DataFrame:
    return pl.DataFrame([("a", 0, "h1", 0, 31, 40, 0, 0.0, 0, "compute"), ("a", 1, "h2", 0, 1, 56, 0, 0.0, 0, "compute")],
                        schema=SHARDS_SCHEMA, orient="row")


def test_the_cap_is_the_vcpu_share_times_the_skew_rounded_up():
    assert part_ram_cap(64, 40, 1, skew_ratio(2.0)) == 4          # ⌈2 × 64 / 40⌉ = ⌈3.2⌉
    assert part_ram_cap(96, 32, 16, skew_ratio(2.0)) == 96        # half the vcpu, twice the share: all of it
    assert part_ram_cap(96, 32, 1, skew_ratio(1.5)) == 5          # ⌈4.5⌉
    assert part_ram_cap(96, 32, 0, skew_ratio(2.0)) is None       # a memory part: remote memory's own rules
    assert part_ram_cap(96, 32, 1, None) is None


def test_no_plan_hides_memory_on_a_sliver():
    loose = FAST.replace(max_ram_skew=100.0)
    got = plan(fleet(), low(), loose)
    assert got.requests_out["status"].to_list() == ["placed"]  # the loophole, when allowed: RAM piled beside
    assert any(row["ram_gib"] > part_ram_cap(96, 32, row["vcpu"], skew_ratio(2.0))  # a few vcpu on h2
               for row in got.shards.iter_rows(named=True))
    assert check_plan(fleet(), low(), got.shards, got.requests_out, loose) == []
    capped = plan(fleet(), low(), FAST)
    assert capped.requests_out["status"].to_list() == ["unplaced"] and capped.shards.height == 0
    assert check_plan(fleet(), low(), capped.shards, capped.requests_out, FAST) == []


def test_the_split_keeps_ram_beside_its_vcpu_where_room_allows():
    """With room for RAM beside the vcpu on both hosts, the plan splits RAM with the vcpu (each part within the
    cap) instead of piling it beside a few vcpu."""
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 20, "ram_gib": 256},
                        {"host_id": "h2", "rack": "r2", "vcpu": 20, "ram_gib": 256})
    requests = requests_table({"request_id": "a", "vcpu": 32, "ram_gib": 128, "latency_class": "low", "max_shards": 2})
    for result in (plan(hosts, requests, FAST), plan_ffd(hosts, requests, FAST, sharded=True)):
        assert check_plan(hosts, requests, result.shards, result.requests_out, FAST) == []
        for row in result.shards.iter_rows(named=True):
            assert row["ram_gib"] <= part_ram_cap(128, 32, row["vcpu"], skew_ratio(2.0))


def test_the_checker_names_the_part_and_its_cap():
    requests_out = plan(fleet(), low(), FAST.replace(max_ram_skew=100.0)).requests_out  # a placed
    found = check_plan(fleet(), low(), sliver(), requests_out, FAST)
    assert [(v.invariant, v.request_id, v.host_id) for v in found] == [(4, "a", "h2")]
    assert "ram_gib 56 beside vcpu 1 > ⌈2 × 96 GiB × 1 / 32 vcpu⌉ = 6" in found[0].message
    # a plan.json from before the option had no cap: the same shards pass
    assert check_plan(fleet(), low(), sliver(), requests_out, {"min_local_ram_gib_per_vcpu": 0.5}) == []


def test_a_running_sliver_must_move_and_is_replanned_within_the_cap():
    reasons = must_move(fleet(), low(), sliver(), max_ram_skew=2.0)
    assert reasons == {"a": "56 GiB beside 1 of its 32 vcpu on h2, more than max_ram_skew 2 × its share (6 GiB)"}
    assert must_move(fleet(), low(), sliver()) == {}   # no cap given: as before


def test_the_option_is_at_least_one():
    with pytest.raises(OptionError, match="max_ram_skew"):
        PlanOptions(max_ram_skew=0.9).validate()
