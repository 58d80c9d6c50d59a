"""Small named fleets built in code for the engine and model tests."""
from __future__ import annotations

import polars as pl

from shardplan.planner.engine import build_problem, run_ffd
from shardplan.planner.search.candidates import build_fleet, find_candidates
from shardplan.planner.validate.inputs import check_hosts, validate_table
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS

HOST_DEFAULTS = {"host_class": "general", "zone": "z1", "storage_gib": 1000, "storage_type": "ssd",
                 "net_gbps": 10.0, "gpu": 0, "gpu_model": None, "cost_per_hour": 1.0}
REQUEST_DEFAULTS = {"user_id": "u1", "app_type": "web", "storage_gib": 0, "gpu": 0, "net_gbps": 0.0,
                    "storage_type": None, "gpu_model": None, "max_shards": 1, "replicas": 1,
                    "latency_class": "medium", "priority": 1}


def hosts_table(*rows: dict) -> pl.DataFrame:
    """Hosts from partial rows (host_id, rack, vcpu, ram_gib at least), validated with defaults."""
    full = [{**HOST_DEFAULTS, **row} for row in rows]
    frame = pl.DataFrame(full, schema_overrides={"gpu_model": pl.Utf8, "net_gbps": pl.Float64,
                                                  "cost_per_hour": pl.Float64}, infer_schema_length=None)
    return check_hosts(validate_table(frame, HOST_COLUMNS, "hosts", key="host_id"), "hosts")


def requests_table(*rows: dict) -> pl.DataFrame:
    full = [{**REQUEST_DEFAULTS, **row} for row in rows]
    frame = pl.DataFrame(full, schema_overrides={"gpu_model": pl.Utf8, "storage_type": pl.Utf8,
                                                  "net_gbps": pl.Float64}, infer_schema_length=None)
    return validate_table(frame, REQUEST_COLUMNS, "requests", key="request_id")


def three_hosts(**overrides: dict) -> pl.DataFrame:
    """Three 16-vcpu / 64 GiB hosts on racks r1, r2, r3 of zone z1; per-host overrides by host id."""
    rows = [{"host_id": h, "rack": f"r{i + 1}", "vcpu": 16, "ram_gib": 64} for i, h in enumerate(("h1", "h2", "h3"))]
    return hosts_table(*[{**row, **overrides.get(row["host_id"], {})} for row in rows])


def problem_and_ffd(hosts, requests, options):
    """The engine's placement problem for the tables (hosts FFD used are always candidates, as in
    `plan`) and the first-fit-decreasing assignment in problem order (sharded FFD in sharded mode)."""
    fleet = build_fleet(hosts)
    ffd, order = run_ffd(fleet, requests, options, sharded=options.mode == "sharded")
    candidates = find_candidates(fleet, requests, options, must_include=ffd.hosts_per_request())
    return build_problem(fleet, requests, candidates, options, order), ffd.reordered(order)


def plan_checked(hosts, requests, options):
    """`plan` on the tables, asserting the checker finds nothing wrong with the result."""
    from shardplan.planner.engine import plan
    from shardplan.planner.report.checker import check_plan

    result = plan(hosts, requests, options)
    assert check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict()) == []
    return result


def assert_bound_below_plans(problem, ffd, bound: float) -> None:
    """A lower bound is never above the FFD plan, CP-SAT's plan from it, nor (when proven) CP-SAT's optimum."""
    from shardplan.models.placement import PlacementModel
    from shardplan.models.problem import PlanStatus, evaluate

    assert bound is not None and bound >= 0
    assert bound <= evaluate(problem, ffd).total + 1e-6
    solution = PlacementModel.build(problem).solve(ffd)
    assert solution.terms is not None
    assert bound <= solution.terms.total + 1e-6
    if solution.result.status == PlanStatus.OPTIMAL:
        assert bound <= solution.result.objective + 1e-6
