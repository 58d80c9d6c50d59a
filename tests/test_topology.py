"""The topology input (issue "A cost function that reads the catalogue", item 2): distances between racks, read
and validated like the other tables, and a spread penalty that charges racks by distance, not by count."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.models.problem import span_count
from shardplan.planner.cli import app
from shardplan.planner.engine import plan
from shardplan.planner.nightly import load_inputs
from shardplan.planner.report.checker import check_plan
from shardplan.planner.search.candidates import build_fleet, rack_distances
from shardplan.planner.validate.inputs import InputError, load_topology
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, requests_table

HOSTS = "host_id,zone,rack,vcpu,ram_gib,storage_gib,storage_type,net_gbps,gpu,cost_per_hour\n" + "".join(
    f"h{i},z{1 + i // 4},r{i},16,64,1000,ssd,10,0,1.0\n" for i in range(6))
REQUESTS = "request_id,user_id,app_type,vcpu,ram_gib,storage_gib,gpu,net_gbps,max_shards,latency_class\n" \
           "q1,u1,web,24,48,0,0,1.0,4,low\nq2,u1,web,24,48,0,0,1.0,4,low\n"
# in zone z1 (racks r0–r3) the default is close; r0–r1 and r2–r3 are far apart
TOPOLOGY = "from,to,latency_us,bandwidth_gbps\nz1,z1,5,25\nr0,r1,200,1\nr3,r2,200,1\n"


def four_racks() -> pl.DataFrame:
    return hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "zone": "z1", "vcpu": 16, "ram_gib": 64}
                         for i in range(4)])


def two_wide_requests() -> pl.DataFrame:
    return requests_table(*[{"request_id": f"q{j}", "vcpu": 24, "ram_gib": 48, "max_shards": 4,
                             "latency_class": "low", "priority": 5} for j in range(2)])


def test_distances_from_the_table(tmp_path):
    path = tmp_path / "topology.csv"
    path.write_text(TOPOLOGY)
    hosts = four_racks()
    rows = load_topology(path, hosts)
    assert rows == (("z1", "z1", 5.0, 25.0), ("r0", "r1", 200.0, 1.0), ("r3", "r2", 200.0, 1.0))
    distance = rack_distances(build_fleet(hosts), rows, 20.0, 10.0)
    close = 0.5 * (5 / 20 + 10 / 25)
    far = 0.5 * (200 / 20 + 10 / 1)
    assert distance[0, 2] == pytest.approx(close) and distance[2, 0] == pytest.approx(close)
    assert distance[0, 1] == pytest.approx(far) and distance[2, 3] == pytest.approx(far)  # either order
    assert np.all(np.diag(distance) == 0)
    # no table, or the defaults in it: every other rack costs 1, as the count did
    assert rack_distances(build_fleet(hosts), (), 20.0, 10.0) is None
    plain = rack_distances(build_fleet(hosts), (("z1", "z1", 20.0, 10.0),), 20.0, 10.0)
    assert np.allclose(plain, 1 - np.eye(4))


def test_span_count_is_the_star_around_the_best_rack():
    rack = np.array([0, 1, 2])
    distance = np.array([[0, 1, 3], [1, 0, 1], [3, 1, 0]], dtype=float)
    parts = [(0, 4, 8, 0, 0), (1, 4, 8, 0, 0), (2, 4, 8, 0, 0)]
    assert span_count(parts, rack) == 2 + 2
    assert span_count(parts, rack, distance) == 2 + 2  # centre rack 1: 1 + 1 (centre 0 would be 4)
    assert span_count(parts[::2], rack, distance) == 1 + 3


@pytest.mark.parametrize("text, row, column, fragment", [
    ("from,to,latency_us,bandwidth_gbps\nr0,r9,5,25\n", 1, "to", "neither a rack nor a zone"),
    ("from,to,latency_us,bandwidth_gbps\nr0,r1,5,25\nr0,r4,5,25\n", 2, "to", "different zones"),
    ("from,to,latency_us,bandwidth_gbps\nr2,r2,5,25\n", 1, "to", "paired with itself"),
    ("from,to,latency_us,bandwidth_gbps\nz1,z2,5,25\n", 1, "to", "only paired with itself"),
    ("from,to,latency_us,bandwidth_gbps\nz1,r1,5,25\n", 1, "to", "two racks or names one zone twice"),
    ("from,to,latency_us,bandwidth_gbps\nr0,r1,5,25\nr1,r0,6,25\n", 2, "from", "given twice (first at row 1)"),
    ("from,to,latency_us,bandwidth_gbps\nr0,r1,0,25\n", 1, "latency_us", "expected a number"),
    ("from,to,latency_us,bandwidth_gbps\nr0,r1,5,fast\n", 1, "bandwidth_gbps", "expected a number"),
])
def test_bad_topology_is_refused_by_row_and_column(tmp_path, text, row, column, fragment):
    hosts_file = tmp_path / "hosts.csv"
    hosts_file.write_text(HOSTS)
    from shardplan.planner.validate.inputs import load_hosts

    path = tmp_path / "topology.csv"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_topology(path, load_hosts(hosts_file))
    assert (caught.value.row, caught.value.column) == (row, column)
    assert fragment in caught.value.message


def test_the_plan_pairs_close_racks_and_prices_the_spread_by_distance():
    hosts, requests = four_racks(), two_wide_requests()
    topology = (("z1", "z1", 5.0, 25.0), ("r0", "r1", 200.0, 1.0), ("r2", "r3", 200.0, 1.0))
    options = PlanOptions(time_limit_s=5, lp_bound=False, topology=topology)
    result = plan(hosts, requests, options)
    assert check_plan(hosts, requests, result.shards, result.requests_out, result.plan_json["options"]) == []
    pairs = result.shards.group_by("request_id").agg(pl.col("host_id").sort()).get_column("host_id").to_list()
    assert len(pairs) == 2
    for pair in pairs:  # each 24-vcpu request spans two racks of 16 vcpu; never a far pair
        assert sorted(pair) not in (["h0", "h1"], ["h2", "h3"])
    close = 0.5 * (5 / 20 + 10 / 25)
    weight = options.spread_weight("low")
    assert result.requests_out["spread_penalty"].to_list() == pytest.approx([weight * (1 + close)] * 2)
    assert result.plan_json["objective_terms"]["spread_penalty"] == pytest.approx(2 * weight * (1 + close), abs=0.01)
    assert [tuple(row) for row in result.plan_json["options"]["topology"]] == list(topology)
    assert PlanOptions.recorded(json.loads(json.dumps(result.plan_json["options"]))).topology == topology


def test_a_far_pair_costs_more_than_the_count():
    hosts, requests = four_racks(), two_wide_requests()
    far = (("z1", "z1", 200.0, 1.0),)  # every pair of racks far apart: mean(200 / 20, 10 / 1) = 10 per extra rack
    result = plan(hosts, requests, PlanOptions(time_limit_s=4, lp_bound=False, topology=far))
    counted = plan(hosts, requests, PlanOptions(time_limit_s=4, lp_bound=False))
    weight = PlanOptions().spread_weight("low")
    assert counted.requests_out["spread_penalty"].to_list() == pytest.approx([weight * (1 + 1)] * 2)
    assert result.requests_out["spread_penalty"].to_list() == pytest.approx([weight * (1 + 10)] * 2)


def test_cli_reads_the_topology_and_refuses_a_bad_one(tmp_path):
    (tmp_path / "hosts.csv").write_text(HOSTS)
    (tmp_path / "requests.csv").write_text(REQUESTS)
    (tmp_path / "topology.csv").write_text(TOPOLOGY)
    (tmp_path / "bad.csv").write_text("from,to,latency_us,bandwidth_gbps\nr0,nowhere,5,25\n")
    base = ["plan", "--hosts", str(tmp_path / "hosts.csv"), "--requests", str(tmp_path / "requests.csv"),
            "--time-limit", "4", "--no-lp-bound"]
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "bad"), "--topology", str(tmp_path / "bad.csv")])
    assert bad.exit_code == 2, bad.output
    assert "bad.csv" in bad.output and "row 1" in bad.output and "'to'" in bad.output
    assert not (tmp_path / "bad").exists()
    good = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "out"), "--topology", str(tmp_path / "topology.csv")])
    assert good.exit_code == 0, good.output
    recorded = json.loads((tmp_path / "out" / "plan.json").read_text())["options"]["topology"]
    assert [tuple(row) for row in recorded] == [("z1", "z1", 5.0, 25.0), ("r0", "r1", 200.0, 1.0),
                                                ("r3", "r2", 200.0, 1.0)]
    shards = pl.read_parquet(tmp_path / "out" / "shards.parquet")
    for _, group in shards.group_by("request_id"):
        assert sorted(group["host_id"].to_list()) not in (["h0", "h1"], ["h2", "h3"])


def test_nightly_reads_the_folder_topology(tmp_path):
    (tmp_path / "hosts.csv").write_text(HOSTS)
    (tmp_path / "requests.csv").write_text(REQUESTS)
    assert load_inputs(tmp_path).topology == ()
    (tmp_path / "topology.csv").write_text(TOPOLOGY)
    assert load_inputs(tmp_path).topology[1] == ("r0", "r1", 200.0, 1.0)
    (tmp_path / "topology.csv").write_text("from,to,latency_us,bandwidth_gbps\nr0,r5,5,25\n")
    with pytest.raises(InputError, match="different zones"):
        load_inputs(tmp_path)
