"""The plan checker: each invariant binds once and passes once on the four-host fleet,
and random valid plans (built by a greedy here) pass until one invariant is broken on purpose."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardplan.planner.report.checker import Violation, check_plan, check_plan_dir
from shardplan.planner.report.export import write_plan_dir
from shardplan.schema import REQUESTS_OUT_SCHEMA, RESERVATIONS_SCHEMA, SHARDS_SCHEMA, STORAGE_TIERS, tier_rank

OPTIONS = {"min_local_ram_gib_per_vcpu": 0.5, "remote_memory_gbps_per_gib": 0.05}


def set_where(frame: pl.DataFrame, where: pl.Expr, **values: object) -> pl.DataFrame:
    """The frame with the given columns set to constants on the rows matching `where`."""
    return frame.with_columns(**{
        name: pl.when(where).then(pl.lit(value, dtype=frame.schema[name])).otherwise(pl.col(name))
        for name, value in values.items()})


def is_shard(request_id: str, shard: int) -> pl.Expr:
    return (pl.col("request_id") == request_id) & (pl.col("shard") == shard)


def host(host_id: str) -> pl.Expr:
    return pl.col("host_id") == host_id


def request(request_id: str) -> pl.Expr:
    return pl.col("request_id") == request_id


def check(plan, *, hosts=None, requests=None, shards=None, requests_out=None, options=OPTIONS,
          reservations=None) -> list[Violation]:
    """check_plan on the four-host plan with some tables replaced."""
    return check_plan(plan.hosts if hosts is None else hosts, plan.requests if requests is None else requests,
                      plan.shards if shards is None else shards,
                      plan.requests_out if requests_out is None else requests_out, options, reservations)


def where(violations: list[Violation]) -> set[tuple[int, str | None, str | None]]:
    return {(v.invariant, v.request_id, v.host_id) for v in violations}


# --- the hand-made plan ----------------------------------------------------------------


def test_valid_plan_has_no_violations(four_host_plan):
    assert check(four_host_plan) == []


def test_defaults_apply_without_options(four_host_plan):
    assert check(four_host_plan, options=None) == []
    assert check(four_host_plan, options={}) == []


def test_every_violation_is_reported_not_just_the_first(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h3"), status="down")
    hosts = set_where(hosts, host("h2"), used_vcpu=7)
    requests_out = four_host_plan.requests_out.filter(~request("big"))
    found = where(check(four_host_plan, hosts=hosts, requests_out=requests_out))
    assert found == {(8, "ml", "h3"), (8, "batch", "h3"), (2, None, "h2"), (9, "big", None)}


def test_violation_reads_as_a_sentence():
    violation = Violation(2, None, "h2", "vcpu 17 > capacity 16")
    assert str(violation) == "invariant 2 (hosts within capacity): host h2: vcpu 17 > capacity 16"


# 1. parts add up to the demand


def test_demand_binds_on_a_short_storage_copy(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("web", 2), storage_gib=90)
    violations = check(four_host_plan, shards=shards)
    assert where(violations) == {(1, "web", None)}
    assert "storage_gib 90 of replica 1 ≠ demand 100" in violations[0].message


def test_demand_binds_on_vcpu_and_own_net(four_host_plan):
    requests = set_where(four_host_plan.requests, request("batch"), vcpu=11)
    shards = set_where(four_host_plan.shards, is_shard("ml", 1), net_gbps=1.3)  # 0.5 above the remote traffic
    violations = check(four_host_plan, requests=requests, shards=shards)
    assert where(violations) == {(1, "batch", None), (1, "ml", None)}
    messages = " | ".join(v.message for v in violations)
    assert "vcpu 10 over its shards ≠ demand 11" in messages
    assert "net_gbps 2.5 of its own" in messages and "remote-memory traffic 0.8" in messages


def test_demand_binds_on_a_replica_index_out_of_range(four_host_plan):
    shards = pl.concat([four_host_plan.shards, pl.DataFrame(
        [("web", 3, "h3", 2, 0, 0, 0, 0.0, 0, "replica")], schema=SHARDS_SCHEMA, orient="row")])
    assert where(check(four_host_plan, shards=shards)) == {(1, "web", "h3")}


def test_demand_passes_with_a_copy_split_over_hosts_of_one_rack(four_host_plan):
    split = pl.DataFrame([("web", 2, "h1", 1, 0, 0, 60, 0.0, 0, "replica"),
                          ("web", 3, "h3", 1, 0, 0, 40, 0.0, 0, "replica")], schema=SHARDS_SCHEMA, orient="row")
    shards = pl.concat([four_host_plan.shards.filter(~is_shard("web", 2)), split])
    assert check(four_host_plan, shards=shards) == []


def test_demand_ignores_unplaced_and_reserved_requests(four_host_plan):
    requests_out = set_where(four_host_plan.requests_out, request("big"), status="reserved", reason=None)
    assert check(four_host_plan, requests_out=requests_out) == []


# 2. capacity


def test_capacity_binds_on_existing_load(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h2"), used_vcpu=7)
    violations = check(four_host_plan, hosts=hosts)
    assert where(violations) == {(2, None, "h2")}
    assert violations[0].message == "vcpu 17 > capacity 16 (existing 7 + shards 10 + reserved 0)"


def test_capacity_binds_on_net_and_reservations(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h3"), net_gbps=0.5)
    reservations = pl.DataFrame({
        "reservation_id": ["res-1"], "host_id": ["h1"], "user_id": ["bob"], "app_type": ["training"],
        "vcpu": [9], "ram_gib": [0], "storage_gib": [0], "net_gbps": [0.0], "gpu": [0],
        "window_start": ["2024-01-01T00:00:00Z"], "window_end": ["2024-01-02T00:00:00Z"],
    }).with_columns(pl.col("window_start", "window_end").str.to_datetime(time_zone="UTC", time_unit="us"))
    violations = check(four_host_plan, hosts=hosts, reservations=reservations.cast(RESERVATIONS_SCHEMA))
    assert where(violations) == {(2, None, "h1"), (2, None, "h3")}
    assert {v.message.split(" (")[0] for v in violations} == {"vcpu 17 > capacity 16", "net_gbps 0.8 > capacity 0.5"}


def test_capacity_passes_with_overcommit(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h2"), used_vcpu=7, vcpu_overcommit=1.5)
    assert check(four_host_plan, hosts=hosts) == []


# 3. span


def test_span_binds_when_compute_spans_too_many_hosts(four_host_plan):
    requests = set_where(four_host_plan.requests, request("batch"), max_shards=1)
    violations = check(four_host_plan, requests=requests)
    assert where(violations) == {(3, "batch", None)}
    assert "2 hosts > max_shards 1 (h2, h3)" in violations[0].message


def test_span_passes_when_only_storage_lies_elsewhere(four_host_plan):
    web_hosts = four_host_plan.shards.filter(request("web")).get_column("host_id").unique()
    assert web_hosts.len() == 2  # compute on h2, storage copy on h1, max_shards 1
    assert check(four_host_plan) == []


# 4. local RAM per vcpu and remote memory


def test_local_memory_binds_when_a_part_has_too_little_ram(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("batch", 1), ram_gib=1)
    shards = set_where(shards, is_shard("batch", 0), ram_gib=19)
    violations = check(four_host_plan, shards=shards)
    assert where(violations) == {(4, "batch", "h3")}
    assert violations[0].message == "ram_gib 1 < 0.5 × vcpu 4 = 2 local RAM"


def test_local_memory_passes_at_exactly_the_minimum(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("batch", 1), ram_gib=2)
    shards = set_where(shards, is_shard("batch", 0), ram_gib=18)
    assert check(four_host_plan, shards=shards) == []


def test_local_memory_follows_the_option(four_host_plan):
    found = where(check(four_host_plan, options={"min_local_ram_gib_per_vcpu": 3.0}))
    assert found == {(4, "web", "h2"), (4, "batch", "h2"), (4, "batch", "h3")}


def test_remote_memory_binds_for_latency_class_low(four_host_plan):
    requests = set_where(four_host_plan.requests, request("ml"), latency_class="low")
    assert where(check(four_host_plan, requests=requests)) == {(4, "ml", "h3")}


def test_remote_memory_binds_when_its_traffic_is_missing(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("ml", 1), net_gbps=0.3)
    shards = set_where(shards, is_shard("ml", 0), net_gbps=2.5)  # own net still adds up to 2.0
    violations = check(four_host_plan, shards=shards)
    assert where(violations) == {(4, "ml", "h3")}
    assert violations[0].message == "net_gbps 0.3 < remote-memory traffic 0.05 × 16 GiB = 0.8"


def test_remote_memory_traffic_follows_the_option(four_host_plan):
    # at 0.1 Gbps/GiB ml's 16 remote GiB need 1.6 Gbps on h3: both invariant 4 and ml's own net break
    found = where(check(four_host_plan, options={"remote_memory_gbps_per_gib": 0.1}))
    assert found == {(4, "ml", "h3"), (1, "ml", None)}


# 5. GPUs


def test_gpu_binds_on_the_wrong_model(four_host_plan):
    requests = set_where(four_host_plan.requests, request("ml"), gpu_model="h100")
    violations = check(four_host_plan, requests=requests)
    assert where(violations) == {(5, "ml", "h1")}
    assert "'a100' ≠ requested model 'h100'" in violations[0].message


def test_gpu_binds_on_a_host_without_vcpu(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h3"), gpu=1, gpu_model="a100")
    shards = set_where(four_host_plan.shards, is_shard("ml", 0), gpu=0)
    shards = set_where(shards, is_shard("ml", 1), gpu=1)
    violations = check(four_host_plan, hosts=hosts, shards=shards)
    assert where(violations) == {(5, "ml", "h3")}
    assert "no vcpu" in violations[0].message


def test_gpu_binds_on_fractional_devices(four_host_plan):
    shards = four_host_plan.shards.with_columns(pl.col("gpu").cast(pl.Float64))
    shards = set_where(shards, is_shard("ml", 0), gpu=0.5)
    assert (5, "ml", "h1") in where(check(four_host_plan, shards=shards))


def test_gpu_passes_on_any_model_when_none_is_named(four_host_plan):
    requests = set_where(four_host_plan.requests, request("ml"), gpu_model=None)
    hosts = set_where(four_host_plan.hosts, host("h1"), gpu_model="t4")
    assert check(four_host_plan, hosts=hosts, requests=requests) == []


# 6. storage copies


def test_storage_binds_when_two_copies_share_a_rack(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("web", 1), host_id="h3")  # rack r1, like the copy on h1
    violations = check(four_host_plan, shards=shards)
    assert where(violations) == {(6, "web", "h1")}
    assert violations[0].message == "storage copies 0, 1 share rack r1 (hosts h1, h3)"


def test_storage_binds_on_a_lower_tier(four_host_plan):
    requests = set_where(four_host_plan.requests, request("web"), storage_type="nvme")
    violations = check(four_host_plan, requests=requests)
    assert where(violations) == {(6, "web", "h2")}
    assert violations[0].message == "storage_gib 100 on tier ssd < requested nvme"


def test_storage_passes_on_a_higher_tier(four_host_plan):
    requests = set_where(four_host_plan.requests, request("web"), storage_type="ssd")
    assert check(four_host_plan, requests=requests) == []


# 7. zone


def test_zone_binds_when_a_part_lies_in_another_zone(four_host_plan):
    shards = set_where(four_host_plan.shards, is_shard("ml", 1), host_id="h4")
    violations = check(four_host_plan, shards=shards)
    assert where(violations) == {(7, "ml", None)}
    assert violations[0].message == "parts in 2 zones: z1 (h1); z2 (h4)"


# 8. host status


def test_host_status_binds_on_a_draining_host(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h3"), status="draining")
    assert where(check(four_host_plan, hosts=hosts)) == {(8, "ml", "h3"), (8, "batch", "h3")}


def test_host_status_passes_for_a_down_host_without_shards(four_host_plan):
    hosts = set_where(four_host_plan.hosts, host("h4"), status="down")
    assert check(four_host_plan, hosts=hosts) == []


# 9. statuses and references


@pytest.mark.parametrize("breakage, expected", [
    ("unplaced_with_shards", {(9, "web", None)}),
    ("unplaced_without_reason", {(9, "big", None)}),
    ("missing_from_requests_out", {(9, "batch", None)}),
    ("listed_twice", {(9, "ml", None)}),
    ("unknown_request_listed", {(9, "ghost", None)}),
    ("placed_without_shards", {(9, "big", None)}),
    ("shard_on_unknown_host", {(9, "batch", "h9")}),
    ("repeated_shard_number", {(9, "web", None)}),
])
def test_statuses_bind(four_host_plan, breakage, expected):
    plan = four_host_plan
    requests_out, shards = plan.requests_out, plan.shards
    if breakage == "unplaced_with_shards":
        requests_out = set_where(requests_out, request("web"), status="unplaced", reason="test")
    elif breakage == "unplaced_without_reason":
        requests_out = set_where(requests_out, request("big"), reason=" ")
    elif breakage == "missing_from_requests_out":
        requests_out = requests_out.filter(~request("batch"))
    elif breakage == "listed_twice":
        requests_out = pl.concat([requests_out, requests_out.filter(request("ml"))])
    elif breakage == "unknown_request_listed":
        requests_out = pl.concat([requests_out, set_where(requests_out.filter(request("big")), request("big"),
                                                           request_id="ghost")])
    elif breakage == "placed_without_shards":
        # zero demand keeps invariant 1 quiet, so only "placed but has no shards" remains
        requests = set_where(plan.requests, request("big"), vcpu=0, ram_gib=0, net_gbps=0.0)
        requests_out = set_where(requests_out, request("big"), status="placed", reason=None)
        assert where(check(plan, requests=requests, requests_out=requests_out)) == expected
        return
    elif breakage == "shard_on_unknown_host":
        shards = set_where(shards, is_shard("batch", 1), host_id="h9")
    elif breakage == "repeated_shard_number":
        shards = set_where(shards, is_shard("web", 2), shard=1)
    assert where(check(plan, shards=shards, requests_out=requests_out)) == expected


def test_statuses_pass_for_an_unplaced_request_with_a_reason(four_host_plan):
    assert not [v for v in check(four_host_plan) if v.request_id == "big"]


def test_check_plan_dir_reads_the_options_of_the_plan(tmp_path, four_host_plan):
    strict = {**four_host_plan.plan_json, "options": {"min_local_ram_gib_per_vcpu": 3.0}}
    write_plan_dir(tmp_path / "strict", hosts=four_host_plan.hosts, requests=four_host_plan.requests,
                   shards=four_host_plan.shards, requests_out=four_host_plan.requests_out, plan_json=strict)
    assert {v.invariant for v in check_plan_dir(tmp_path / "strict")} == {4}
    without = {key: value for key, value in four_host_plan.plan_json.items() if key != "options"}
    write_plan_dir(tmp_path / "defaults", hosts=four_host_plan.hosts, requests=four_host_plan.requests,
                   shards=four_host_plan.shards, requests_out=four_host_plan.requests_out, plan_json=without)
    assert check_plan_dir(tmp_path / "defaults") == []


# --- random fleets and plans (hypothesis) -------------------------------------------------

ZONES = ("z1", "z2")
MIN_LOCAL_RAM_GIB_PER_VCPU = 0.5
REMOTE_MEMORY_GBPS_PER_GIB = 0.05
GPU_MODELS = ("a100", "t4")


@dataclass(frozen=True)
class RandomPlan:
    """A random fleet, its requests and a valid plan made by the greedy below; `anchor` is always placed."""

    hosts: pl.DataFrame
    requests: pl.DataFrame
    shards: pl.DataFrame
    requests_out: pl.DataFrame


@st.composite
def random_hosts(draw) -> list[dict]:
    """2 zones × 2-3 racks × 1-2 hosts; the first host of every rack is up."""
    hosts = []
    for zone in ZONES:
        for rack_index in range(draw(st.integers(2, 3))):
            rack = f"{zone}-r{rack_index}"
            for index in range(draw(st.integers(1, 2))):
                gpu = draw(st.integers(0, 2))
                hosts.append({
                    "host_id": f"{rack}-h{index}", "zone": zone, "rack": rack,
                    "vcpu": draw(st.integers(8, 48)), "ram_gib": draw(st.integers(16, 192)),
                    "storage_gib": draw(st.integers(100, 2000)), "storage_type": draw(st.sampled_from(STORAGE_TIERS)),
                    "net_gbps": draw(st.integers(50, 400)) / 10, "gpu": gpu,
                    "gpu_model": draw(st.sampled_from(GPU_MODELS)) if gpu else None,
                    "cost_per_hour": draw(st.integers(1, 50)) / 10,
                    "vcpu_overcommit": draw(st.sampled_from([1.0, 1.15, 1.5, 2.0])),
                    "status": "up" if index == 0 else draw(st.sampled_from(["up", "up", "draining", "down"])),
                    "used_vcpu": draw(st.integers(0, 4)), "used_ram_gib": draw(st.integers(0, 4)),
                    "used_storage_gib": draw(st.integers(0, 50)), "used_net_gbps": draw(st.integers(0, 10)) / 10,
                    "used_gpu": 0,
                })
    return hosts


@st.composite
def random_requests(draw) -> list[dict]:
    """An `anchor` that always fits (split over 2 hosts, 2 storage copies) and up to five others."""
    vcpu = draw(st.integers(2, 6))
    requests = [{
        "request_id": "anchor", "vcpu": vcpu, "ram_gib": vcpu * draw(st.integers(1, 3)),
        "storage_gib": draw(st.integers(1, 50)), "gpu": 0, "net_gbps": draw(st.integers(1, 20)) / 10,
        "storage_type": None, "gpu_model": None, "max_shards": 3, "replicas": 2,
        "latency_class": "medium", "remote": draw(st.booleans()),
    }]
    for index in range(draw(st.integers(0, 5))):
        vcpu = draw(st.integers(1, 12))
        gpu = draw(st.integers(0, 1))
        requests.append({
            "request_id": f"r{index}", "vcpu": vcpu, "ram_gib": vcpu * draw(st.integers(1, 4)) + draw(st.integers(0, 3)),
            "storage_gib": draw(st.integers(0, 200)), "gpu": gpu, "net_gbps": draw(st.integers(0, 30)) / 10,
            "storage_type": draw(st.sampled_from([None, *STORAGE_TIERS])),
            "gpu_model": draw(st.sampled_from([None, *GPU_MODELS])) if gpu else None,
            "max_shards": draw(st.integers(1, 3)), "replicas": draw(st.integers(1, 3)),
            "latency_class": draw(st.sampled_from(["low", "medium", "tolerant"])), "remote": draw(st.booleans()),
        })
    return requests


def _place(request: dict, hosts: list[dict], free: dict[str, dict]) -> list[dict] | None:
    """Shards of one request on the given (up, one-zone) hosts, or None; updates `free` only on success."""
    trial = {host_id: dict(left) for host_id, left in free.items()}
    vcpu, ram = request["vcpu"], request["ram_gib"]
    parts = min(request["max_shards"], 2, vcpu)
    vcpus = [vcpu] if parts == 1 else [vcpu - vcpu // 2, vcpu // 2]
    rams = [ram] if parts == 1 else [ram * vcpus[0] // vcpu, ram - ram * vcpus[0] // vcpu]
    shards: list[dict] = []

    def fits(host: dict, need: dict) -> bool:
        left = trial[host["host_id"]]
        if need.get("gpu") and request["gpu_model"] and host["gpu_model"] != request["gpu_model"]:
            return False
        return all(left[resource] >= amount - 1e-9 for resource, amount in need.items())

    def take(host: dict, need: dict, **shard: object) -> None:
        for resource, amount in need.items():
            trial[host["host_id"]][resource] -= amount
        row = {"vcpu": 0, "ram_gib": 0, "storage_gib": 0, "net_gbps": 0.0, "gpu": 0, "replica": 0, **need, **shard}
        shards.append({"request_id": request["request_id"], "shard": len(shards), "host_id": host["host_id"], **row})

    used_hosts: list[str] = []
    for index, (part_vcpu, part_ram) in enumerate(zip(vcpus, rams)):
        need = {"vcpu": part_vcpu, "ram_gib": part_ram}
        if index == 0:
            need |= {"net_gbps": request["net_gbps"], "gpu": request["gpu"]}
        chosen = next((h for h in hosts if h["host_id"] not in used_hosts and fits(h, need)), None)
        if chosen is None:
            return None
        take(chosen, need, role="compute")
        used_hosts.append(chosen["host_id"])

    spare = shards[-1]["ram_gib"] - math.ceil(MIN_LOCAL_RAM_GIB_PER_VCPU * shards[-1]["vcpu"])
    remote = spare // 2
    if request["remote"] and request["latency_class"] != "low" and request["max_shards"] > parts and remote >= 1:
        need = {"ram_gib": remote, "net_gbps": remote * REMOTE_MEMORY_GBPS_PER_GIB}
        chosen = next((h for h in hosts if h["host_id"] not in used_hosts and fits(h, need)), None)
        if chosen is not None:
            shards[-1]["ram_gib"] -= remote
            trial[shards[-1]["host_id"]]["ram_gib"] += remote
            take(chosen, need, role="memory")

    if request["storage_gib"] > 0:
        racks: set[str] = set()
        for replica in range(request["replicas"]):
            need = {"storage_gib": request["storage_gib"]}
            chosen = next((h for h in hosts if h["rack"] not in racks and fits(h, need)
                           and tier_rank(h["storage_type"]) >= tier_rank(request["storage_type"])), None)
            if chosen is None:
                return None
            take(chosen, need, role="storage" if replica == 0 else "replica", replica=replica)
            racks.add(chosen["rack"])
    free.update(trial)
    return shards


def greedy_plan(hosts: list[dict], requests: list[dict], host_order: list[int]) -> RandomPlan:
    """Each request in turn, first zone that takes it whole or split over two hosts; else unplaced."""
    ordered = [hosts[index] for index in host_order]
    free = {h["host_id"]: {"vcpu": math.floor(h["vcpu"] * h["vcpu_overcommit"] + 1e-9) - h["used_vcpu"],
                           "ram_gib": h["ram_gib"] - h["used_ram_gib"],
                           "storage_gib": h["storage_gib"] - h["used_storage_gib"],
                           "net_gbps": h["net_gbps"] - h["used_net_gbps"], "gpu": h["gpu"] - h["used_gpu"]}
            for h in hosts}
    shards: list[dict] = []
    outcomes: list[dict] = []
    for request in requests:
        placed = None
        for zone in ZONES:
            placed = _place(request, [h for h in ordered if h["zone"] == zone and h["status"] == "up"], free)
            if placed is not None:
                break
        shards += placed or []
        outcomes.append({
            "request_id": request["request_id"], "status": "placed" if placed else "unplaced",
            "n_hosts": len({s["host_id"] for s in placed or []}), "cost_per_hour": 0.0, "spread_penalty": 0.0,
            "reason": None if placed else "greedy: no zone had room"})
    request_rows = [{key: value for key, value in r.items() if key != "remote"}
                    | {"user_id": "u", "app_type": "app", "priority": 1} for r in requests]
    return RandomPlan(
        hosts=pl.DataFrame(hosts, schema_overrides={"gpu_model": pl.Utf8}),
        requests=pl.DataFrame(request_rows, schema_overrides={"storage_type": pl.Utf8, "gpu_model": pl.Utf8}),
        shards=pl.DataFrame(shards, schema=SHARDS_SCHEMA) if shards else pl.DataFrame(schema=SHARDS_SCHEMA),
        requests_out=pl.DataFrame(outcomes, schema=REQUESTS_OUT_SCHEMA),
    )


@st.composite
def random_plans(draw) -> RandomPlan:
    hosts = draw(random_hosts())
    requests = draw(random_requests())
    host_order = draw(st.permutations(range(len(hosts))))
    return greedy_plan(hosts, requests, list(host_order))


def check_random(plan: RandomPlan) -> list[Violation]:
    return check_plan(plan.hosts, plan.requests, plan.shards, plan.requests_out, OPTIONS)


def _anchor_rows(plan: RandomPlan) -> pl.DataFrame:
    return plan.shards.filter(request("anchor")).sort("shard")


def _compute_host(plan: RandomPlan) -> str:
    return _anchor_rows(plan).filter(pl.col("vcpu") > 0)["host_id"][0]


def _copy_host(plan: RandomPlan, replica: int) -> str:
    return _anchor_rows(plan).filter((pl.col("replica") == replica) & (pl.col("storage_gib") > 0))["host_id"][0]


def _rack_of(plan: RandomPlan, host_id: str) -> str:
    return plan.hosts.filter(host(host_id))["rack"][0]


def break_demand(plan):
    anchor = plan.requests.filter(request("anchor"))
    return replace(plan, requests=set_where(plan.requests, request("anchor"), ram_gib=anchor["ram_gib"][0] + 1)), None


def break_capacity(plan):
    target = plan.hosts.filter(host(_compute_host(plan)))
    full = math.ceil(target["vcpu"][0] * target["vcpu_overcommit"][0])
    return replace(plan, hosts=set_where(plan.hosts, host(target["host_id"][0]), used_vcpu=full)), target["host_id"][0]


def break_span(plan):
    spanned = _anchor_rows(plan).filter((pl.col("vcpu") > 0) | (pl.col("ram_gib") > 0))["host_id"].n_unique()
    return replace(plan, requests=set_where(plan.requests, request("anchor"), max_shards=spanned - 1)), None


def break_local_memory(plan):
    rows = _anchor_rows(plan).filter(pl.col("vcpu") > 0)
    short = math.ceil(MIN_LOCAL_RAM_GIB_PER_VCPU * rows["vcpu"][0]) - 1
    shards = set_where(plan.shards, is_shard("anchor", rows["shard"][0]), ram_gib=short)
    return replace(plan, shards=shards), rows["host_id"][0]


def break_gpu(plan):
    rows = _anchor_rows(plan).filter(pl.col("vcpu") > 0)
    requests = set_where(plan.requests, request("anchor"), gpu=1, gpu_model="h100")
    shards = set_where(plan.shards, is_shard("anchor", rows["shard"][0]), gpu=1)
    return replace(plan, requests=requests, shards=shards), rows["host_id"][0]


def break_tier(plan):
    copy_host = _copy_host(plan, 0)
    requests = set_where(plan.requests, request("anchor"), storage_type="nvme")
    return replace(plan, requests=requests, hosts=set_where(plan.hosts, host(copy_host), storage_type="hdd")), copy_host


def break_racks(plan):
    first, second = _copy_host(plan, 0), _copy_host(plan, 1)
    hosts = set_where(plan.hosts, host(second), rack=_rack_of(plan, first))
    return replace(plan, hosts=hosts), min(first, second)


def break_zone(plan):
    rack = _rack_of(plan, _copy_host(plan, 1))
    return replace(plan, hosts=set_where(plan.hosts, pl.col("rack") == rack, zone="z9")), None


def break_host_status(plan):
    target = _compute_host(plan)
    return replace(plan, hosts=set_where(plan.hosts, host(target), status="draining")), target


def break_unplaced_with_shards(plan):
    return replace(plan, requests_out=set_where(plan.requests_out, request("anchor"), status="unplaced",
                                                reason="test")), None


def break_missing_status(plan):
    return replace(plan, requests_out=plan.requests_out.filter(~request("anchor"))), None


def break_unknown_host(plan):
    shards = set_where(plan.shards, is_shard("anchor", 0), host_id="ghost")
    return replace(plan, shards=shards), "ghost"


BREAKERS: list[tuple[int, Callable]] = [
    (1, break_demand), (2, break_capacity), (3, break_span), (4, break_local_memory), (5, break_gpu),
    (6, break_tier), (6, break_racks), (7, break_zone), (8, break_host_status),
    (9, break_unplaced_with_shards), (9, break_missing_status), (9, break_unknown_host),
]


def assert_caught(invariant: int, breaker: Callable, plan: RandomPlan) -> None:
    """The broken plan reports the invariant, naming the anchor request (or the host for capacity)."""
    broken, host_id = breaker(plan)
    violations = check_random(broken)
    caught = [v for v in violations if v.invariant == invariant]
    assert caught, f"{breaker.__name__}: invariant {invariant} not reported; got {violations}"
    if invariant == 2:
        assert host_id in {v.host_id for v in caught}, f"{breaker.__name__}: host {host_id} not named in {caught}"
        return
    anchor = [v for v in caught if v.request_id == "anchor"]
    assert anchor, f"{breaker.__name__}: request anchor not named in {caught}"
    if host_id is not None:
        assert host_id in {v.host_id for v in anchor}, f"{breaker.__name__}: host {host_id} not named in {anchor}"


# One generated plan serves every breakage: drawing the fleet costs more than checking it.
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=random_plans())
def test_random_valid_plans_pass_and_each_breakage_is_caught(plan):
    assert plan.requests_out.filter(request("anchor"))["status"][0] == "placed"
    assert check_random(plan) == []
    for invariant, breaker in BREAKERS:
        assert_caught(invariant, breaker, plan)


def test_every_invariant_has_a_breakage():
    assert {invariant for invariant, _ in BREAKERS} == set(range(1, 10))
