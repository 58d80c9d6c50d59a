"""Each constraint family on a three-host fleet: one case where it binds, one where it must not."""
from __future__ import annotations

import ast
import pathlib

import polars as pl
import pytest

from shardplan.planner.engine import plan
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, plan_checked, requests_table, three_hosts

FAST = PlanOptions(time_limit_s=5, workers=1, lp_bound=False)


def solve(hosts, requests, **changes):
    return plan_checked(hosts, requests, FAST.replace(**changes))


def hosts_of(result, request_id, compute_only=True):
    shards = result.shards.filter(pl.col("request_id") == request_id)
    if compute_only:
        shards = shards.filter(pl.col("role").is_in(["compute", "memory", "gpu"]))
    return set(shards["host_id"].to_list())


def status(result, request_id):
    return result.requests_out.filter(pl.col("request_id") == request_id)["status"][0]


def test_sharding_places_a_vm_bigger_than_any_host():
    hosts = three_hosts()
    big = requests_table({"request_id": "big", "vcpu": 24, "ram_gib": 48, "max_shards": 2})
    assert status(solve(hosts, big), "big") == "placed"
    assert len(hosts_of(solve(hosts, big), "big")) == 2
    assert status(solve(hosts, big, mode="whole"), "big") == "unplaced"


def test_span_limit_binds_and_relaxes():
    hosts = three_hosts()
    wide = requests_table({"request_id": "wide", "vcpu": 40, "ram_gib": 60, "max_shards": 2})
    assert status(solve(hosts, wide), "wide") == "unplaced"  # 40 vcpu needs three 16-vcpu hosts
    wide3 = requests_table({"request_id": "wide", "vcpu": 40, "ram_gib": 60, "max_shards": 3})
    assert len(hosts_of(solve(hosts, wide3), "wide")) == 3


def test_capacity_binds_with_existing_load():
    hosts = three_hosts(h1={"used_vcpu": 14}, h2={"used_vcpu": 14}, h3={"used_vcpu": 14})
    req = requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8})
    assert status(solve(hosts, req), "a") == "unplaced"
    free = three_hosts(h1={"used_vcpu": 12})
    assert status(solve(free, req), "a") == "placed"


def test_local_ram_per_vcpu():
    # 8 vcpu need 4 GiB local RAM; h1 has only 2 GiB free, h2 has plenty
    hosts = three_hosts(h1={"used_ram_gib": 62}, h2={"used_vcpu": 16}, h3={"used_vcpu": 16})
    req = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 16, "max_shards": 3, "latency_class": "tolerant"})
    assert status(solve(hosts, req), "a") == "unplaced"
    # 14 GiB remote: flat pricing allows it (use pricing with nothing known untouched caps it, test_remote_memory)
    assert status(solve(hosts, req, min_local_ram_gib_per_vcpu=0.0, remote_memory_pricing="flat"), "a") == "placed"


def test_remote_memory_only_for_tolerant_latency_and_costs_bandwidth():
    """The flat rule (use pricing: test_remote_memory)."""
    # h1 has the vcpu but little RAM; h2 has RAM but no vcpu
    hosts = three_hosts(h1={"used_ram_gib": 56}, h2={"used_vcpu": 16}, h3={"used_vcpu": 16, "used_ram_gib": 64})
    tolerant = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 40, "max_shards": 2,
                               "latency_class": "tolerant"})
    result = solve(hosts, tolerant, remote_memory_pricing="flat")
    assert status(result, "a") == "placed"
    memory = result.shards.filter(pl.col("role") == "memory")
    assert memory.height == 1 and memory["net_gbps"][0] == pytest.approx(0.05 * memory["ram_gib"][0])
    low = requests_table({"request_id": "a", "vcpu": 8, "ram_gib": 40, "max_shards": 2, "latency_class": "low"})
    assert status(solve(hosts, low, remote_memory_pricing="flat"), "a") == "unplaced"


def test_gpu_model_and_gpu_beside_vcpu():
    hosts = three_hosts(h1={"gpu": 2, "gpu_model": "a100"}, h2={"gpu": 4, "gpu_model": "t4"})
    want = requests_table({"request_id": "ml", "vcpu": 4, "ram_gib": 16, "gpu": 2, "gpu_model": "a100",
                           "max_shards": 2})
    result = solve(hosts, want)
    gpu_hosts = result.shards.filter(pl.col("gpu") > 0)["host_id"].unique().to_list()
    assert gpu_hosts == ["h1"]
    too_many = requests_table({"request_id": "ml", "vcpu": 4, "ram_gib": 16, "gpu": 3, "gpu_model": "a100",
                               "max_shards": 2})
    assert status(solve(hosts, too_many), "ml") == "unplaced"


def test_replica_racks_bind():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h2", "rack": "r1", "vcpu": 16, "ram_gib": 64},
                        {"host_id": "h3", "rack": "r2", "vcpu": 16, "ram_gib": 64})
    db2 = requests_table({"request_id": "db", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "replicas": 2})
    result = solve(hosts, db2)
    copies = result.shards.filter(pl.col("storage_gib") > 0)
    assert copies.height == 2 and copies["host_id"].to_list() != ["h1", "h2"]
    db3 = requests_table({"request_id": "db", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "replicas": 3})
    assert status(solve(hosts, db3), "db") == "unplaced"  # only two racks


def test_storage_tier():
    hosts = three_hosts(h1={"storage_type": "hdd"}, h2={"storage_type": "nvme"}, h3={"storage_type": "hdd"})
    fast = requests_table({"request_id": "db", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "storage_type": "ssd"})
    result = solve(hosts, fast)
    assert result.shards.filter(pl.col("storage_gib") > 0)["host_id"].to_list() == ["h2"]
    two = requests_table({"request_id": "db", "vcpu": 2, "ram_gib": 4, "storage_gib": 100, "storage_type": "ssd",
                          "replicas": 2})
    assert status(solve(hosts, two), "db") == "unplaced"


def test_zone_binds():
    hosts = hosts_table({"host_id": "a1", "zone": "za", "rack": "ra", "vcpu": 8, "ram_gib": 32},
                        {"host_id": "b1", "zone": "zb", "rack": "rb", "vcpu": 8, "ram_gib": 32})
    split = requests_table({"request_id": "x", "vcpu": 12, "ram_gib": 16, "max_shards": 2})
    assert status(solve(hosts, split), "x") == "unplaced"  # 12 vcpu fit only across the two zones
    fits = requests_table({"request_id": "x", "vcpu": 8, "ram_gib": 16, "max_shards": 2})
    assert status(solve(hosts, fits), "x") == "placed"


def test_hosts_not_up_take_nothing():
    hosts = three_hosts(h1={"status": "down"}, h2={"status": "draining"})
    two = requests_table({"request_id": "a", "vcpu": 12, "ram_gib": 8}, {"request_id": "b", "vcpu": 12, "ram_gib": 8})
    result = solve(hosts, two)
    assert set(result.shards["host_id"].to_list()) == {"h3"}
    assert result.plan_json["placed"] == 1


def test_cost_prefers_active_and_cheap_hosts():
    hosts = three_hosts(h1={"cost_per_hour": 5.0}, h2={"cost_per_hour": 1.0}, h3={"cost_per_hour": 3.0, "used_vcpu": 2})
    req = requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8})
    assert hosts_of(solve(hosts, req), "a") == {"h3"}  # already active: no activation cost
    big = requests_table({"request_id": "a", "vcpu": 15, "ram_gib": 8})
    assert hosts_of(solve(hosts, big), "a") == {"h2"}  # h3 lacks room; h2 is cheaper than h1


def test_priority_decides_who_is_placed():
    hosts = three_hosts(h2={"status": "down"}, h3={"status": "down"})
    reqs = requests_table({"request_id": "low", "vcpu": 10, "ram_gib": 8, "priority": 1},
                          {"request_id": "high", "vcpu": 10, "ram_gib": 8, "priority": 5})
    result = solve(hosts, reqs)
    assert status(result, "high") == "placed" and status(result, "low") == "unplaced"


def test_objective_terms_and_solver_fields_are_reported():
    result = solve(three_hosts(), requests_table({"request_id": "a", "vcpu": 4, "ram_gib": 8}))
    for key in ("status", "objective", "best_bound", "gap", "wall_s", "solver"):
        assert key in result.plan_json
    terms = result.plan_json["objective_terms"]
    assert terms["active_host_cost_per_hour"] == pytest.approx(1.0) and terms["unplaced_penalty"] == 0
    assert result.plan_json["status"] == "optimal"


def test_deterministic_for_seed_and_workers():
    from shardplan.data.generator import generate_fleet

    hosts, requests = generate_fleet(40, 80, seed=3)
    # small deterministic budgets, so the wall-clock safety net stays far away even on a loaded machine
    options = PlanOptions(time_limit_s=3, workers=1, seed=7, lp_bound=False, deterministic_units_per_s=0.05)
    a, b = plan(hosts, requests, options), plan(hosts, requests, options)
    assert a.shards.equals(b.shards) and a.plan_json["objective"] == b.plan_json["objective"]


def test_only_models_imports_solvers():
    root = pathlib.Path(__file__).resolve().parents[1]
    offenders = []
    for path in root.glob("*/**/*.py"):
        top = path.relative_to(root).parts[0]
        if top in ("models", ".venv", "build") or "site-packages" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] in ("ortools", "pulp", "pyomo", "highspy") for n in names):
                offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_symmetry_rule_lets_a_split_request_span_interchangeable_hosts():
    # three identical empty hosts on one rack form a symmetry group; the first request that sees it is
    # split over two of them, so the rule "request k uses members 0..k" would wrongly leave it out
    from shardplan.models.placement import solve_placement
    from tests.fleets import problem_and_ffd

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": "r1", "vcpu": 10, "ram_gib": 40} for i in range(3)])
    requests = requests_table({"request_id": "big", "vcpu": 15, "ram_gib": 30, "max_shards": 2, "priority": 3},
                              {"request_id": "small", "vcpu": 4, "ram_gib": 8})
    problem, _ = problem_and_ffd(hosts, requests, FAST.replace(mode="sharded"))
    assert len(problem.symmetry_groups) == 1 and len(problem.symmetry_groups[0]) == 3
    solution = solve_placement(problem)
    assert solution.result.status == "optimal"
    assert solution.assignment.placed.all()
    assert solution.terms.unplaced == 0
