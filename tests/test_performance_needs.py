"""Invariant 10: requests that state min_cpu_score or min_storage_iops get compute parts only on hosts that fast
and storage copies only on storage that fast — from every heuristic, search and solver of the engine, in both
modes, on random fleets; the checker flags a part that breaks it; what runs on a host below the need must move."""
from __future__ import annotations

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardplan.planner.engine import plan, plan_ffd
from shardplan.planner.replan import must_move
from shardplan.planner.report.checker import check_plan
from shardplan.planner.validate.inputs import InputError, validate_table
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import REQUEST_COLUMNS
from tests.fleets import hosts_table, requests_table

FAST = PlanOptions(time_limit_s=2, lp_bound=False)


def fleet(scores=(0.8, 1.0, 1.5, 2.0), iops=(1000, 5000, 20000, 80000)) -> pl.DataFrame:
    return hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "zone": "z1", "vcpu": 16, "ram_gib": 64,
                          "storage_gib": 2000, "cpu_score": s, "storage_iops": io}
                         for i, (s, io) in enumerate(zip(scores, iops))])


def hosts_of(result, request_id: str, storage: bool) -> set[str]:
    rows = result.shards.filter((pl.col("request_id") == request_id)
                                & ((pl.col("storage_gib") > 0) if storage else (pl.col("vcpu") > 0)))
    return set(rows["host_id"].to_list())


@pytest.mark.parametrize("mode", ["sharded", "whole"])
def test_needs_are_met_and_an_unmet_need_is_the_reason(mode):
    hosts = fleet()
    requests = requests_table(
        {"request_id": "fast", "vcpu": 12, "ram_gib": 24, "min_cpu_score": 1.5, "max_shards": 2},
        {"request_id": "db", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "replicas": 2, "min_storage_iops": 10000},
        {"request_id": "plain", "vcpu": 4, "ram_gib": 8},
        {"request_id": "impossible", "vcpu": 2, "ram_gib": 4, "min_cpu_score": 3.0})
    options = FAST.replace(mode=mode)
    for result in (plan(hosts, requests, options), plan_ffd(hosts, requests, options, sharded=mode == "sharded")):
        assert check_plan(hosts, requests, result.shards, result.requests_out, options) == []
        status = dict(zip(result.requests_out["request_id"], result.requests_out["status"]))
        assert status["fast"] == status["db"] == status["plain"] == "placed" and status["impossible"] == "unplaced"
        assert hosts_of(result, "fast", storage=False) <= {"h2", "h3"}
        assert hosts_of(result, "db", storage=True) <= {"h2", "h3"} and len(hosts_of(result, "db", True)) == 2
    reason = result.requests_out.filter(pl.col("request_id") == "impossible")["reason"][0]
    assert "cpu_score" in reason


def test_checker_flags_a_part_below_the_need():
    hosts = fleet()
    requests = requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8, "storage_gib": 10,
                               "min_cpu_score": 1.5, "min_storage_iops": 50000})
    shards = pl.DataFrame({"request_id": ["a", "a"], "shard": [0, 1], "host_id": ["h0", "h1"], "replica": [0, 0],
                           "vcpu": [4, 0], "ram_gib": [8, 0], "storage_gib": [0, 10], "net_gbps": [0.0, 0.0],
                           "gpu": [0, 0], "role": ["compute", "storage"]})
    out = pl.DataFrame({"request_id": ["a"], "status": ["placed"], "n_hosts": [2], "cost_per_hour": [1.0],
                        "spread_penalty": [0.0], "reason": [None]}, schema_overrides={"reason": pl.Utf8})
    found = [v for v in check_plan(hosts, requests, shards, out) if v.invariant == 10]
    assert {(v.host_id, "cpu_score" in v.message) for v in found} == {("h0", True), ("h1", False)}
    assert "storage_iops 5000 < min_storage_iops 50000" in str(found[1])


def test_what_runs_below_the_need_must_move():
    hosts = fleet()
    requests = requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8, "min_cpu_score": 1.2},
                              {"request_id": "b", "vcpu": 4, "ram_gib": 8, "min_cpu_score": 0.5})
    current = pl.DataFrame({"request_id": ["a", "b"], "shard": [0, 0], "host_id": ["h1", "h1"], "replica": [0, 0],
                            "vcpu": [4, 4], "ram_gib": [8, 8], "storage_gib": [0, 0], "net_gbps": [0.0, 0.0],
                            "gpu": [0, 0], "role": ["compute", "compute"]})
    reasons = must_move(hosts, requests, current)
    assert list(reasons) == ["a"] and "cpu_score 1, below its min_cpu_score 1.2" in reasons["a"]


def test_a_negative_need_is_refused_with_row_and_column():
    frame = requests_table({"request_id": "a", "vcpu": 1, "ram_gib": 2}).with_columns(
        pl.lit(-1.0).alias("min_cpu_score"))
    with pytest.raises(InputError, match="min_cpu_score"):
        validate_table(frame, REQUEST_COLUMNS, "requests", key="request_id")


@st.composite
def needy_fleet(draw):
    n = draw(st.integers(3, 6))
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "zone": "z1", "vcpu": draw(st.integers(8, 32)),
                           "ram_gib": draw(st.integers(32, 128)), "storage_gib": 1000,
                           "cpu_score": draw(st.sampled_from([0.6, 0.9, 1.0, 1.3, 1.8])),
                           "storage_iops": draw(st.sampled_from([500, 3000, 12000, 60000]))} for i in range(n)])
    rows = []
    for k in range(draw(st.integers(2, 7))):
        vcpu = draw(st.integers(1, 20))
        rows.append({"request_id": f"q{k}", "vcpu": vcpu, "ram_gib": vcpu * draw(st.integers(1, 3)),
                     "storage_gib": draw(st.sampled_from([0, 0, 50, 200])), "replicas": draw(st.integers(1, 2)),
                     "max_shards": draw(st.integers(1, 3)), "latency_class": draw(st.sampled_from(["low", "tolerant"])),
                     "min_cpu_score": draw(st.sampled_from([0.0, 0.0, 1.0, 1.3, 2.5])),
                     "min_storage_iops": draw(st.sampled_from([0.0, 2000.0, 50000.0]))})
    return hosts, requests_table(*rows), draw(st.sampled_from(["sharded", "whole"]))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(needy_fleet())
def test_random_fleets_never_break_invariant_10(case):
    hosts, requests, mode = case
    options = PlanOptions(time_limit_s=1.5, lp_bound=False, mode=mode)
    result = plan(hosts, requests, options)
    assert check_plan(hosts, requests, result.shards, result.requests_out, options) == []
    speed = dict(zip(hosts["host_id"], hosts["cpu_score"]))
    iops = dict(zip(hosts["host_id"], hosts["storage_iops"]))
    need = {r["request_id"]: r for r in requests.iter_rows(named=True)}
    for row in result.shards.iter_rows(named=True):
        wants = need[row["request_id"]]
        if row["vcpu"] > 0:
            assert speed[row["host_id"]] >= wants["min_cpu_score"]
        if row["storage_gib"] > 0:
            assert iops[row["host_id"]] >= wants["min_storage_iops"]
    # a request no host is fast enough for is unplaced, with a reason (the first filter each host fails names
    # it: a host too small for the request may be counted as lacking vcpu before it is counted as too slow)
    best = max(speed.values())
    for request_id, wants in need.items():
        if wants["vcpu"] > 0 and wants["min_cpu_score"] > best:
            row = result.requests_out.filter(pl.col("request_id") == request_id).row(0, named=True)
            assert row["status"] == "unplaced" and row["reason"]
