"""Bad input: one test per validation rule, through the CLI: exit 2, file/row/column named, nothing written."""
from __future__ import annotations

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from shardplan.planner.cli import app
from shardplan.planner.validate.inputs import InputError, load_hosts, load_requests
from tests.fleets import hosts_table, requests_table

GOOD_HOSTS = "host_id,zone,rack,vcpu,ram_gib,storage_gib,storage_type,net_gbps,gpu,cost_per_hour\n" \
             "h1,z1,r1,16,64,1000,ssd,10,0,1.0\n" \
             "h2,z1,r2,16,64,1000,nvme,10,0,1.5\n"
GOOD_REQUESTS = "request_id,user_id,app_type,vcpu,ram_gib,storage_gib,gpu,net_gbps\n" \
                "q1,u1,web,4,8,10,0,1.0\n" \
                "q2,u1,db,2,4,50,0,0.5\n"


def run_plan(tmp_path, hosts_text: str | bytes = GOOD_HOSTS, requests_text: str | bytes = GOOD_REQUESTS):
    hosts = tmp_path / "hosts.csv"
    requests = tmp_path / "requests.csv"
    for path, text in ((hosts, hosts_text), (requests, requests_text)):
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "plan"
    result = CliRunner().invoke(app, ["plan", "--hosts", str(hosts), "--requests", str(requests), "--out", str(out),
                                      "--time-limit", "2", "--no-lp-bound"])
    return result, out


def assert_rejected(result, out, *fragments):
    assert result.exit_code == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output
    assert not out.exists()


def test_good_input_plans(tmp_path):
    result, out = run_plan(tmp_path)
    assert result.exit_code == 0, result.output
    assert (out / "shards.parquet").exists() and (out / "plan.json").exists()


def test_missing_column(tmp_path):
    text = GOOD_HOSTS.replace(",ram_gib", "").replace(",64,", ",")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "hosts.csv", "ram_gib", "missing")


def test_wrong_type(tmp_path):
    text = GOOD_HOSTS.replace("h2,z1,r2,16", "h2,z1,r2,sixteen")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "hosts.csv", "row 2", "'vcpu'", "sixteen")


def test_fractional_integer(tmp_path):
    text = GOOD_REQUESTS.replace("q2,u1,db,2,", "q2,u1,db,2.5,")
    assert_rejected(*run_plan(tmp_path, requests_text=text), "requests.csv", "row 2", "'vcpu'")


def test_negative_amount(tmp_path):
    text = GOOD_REQUESTS.replace("q1,u1,web,4,8", "q1,u1,web,4,-8")
    assert_rejected(*run_plan(tmp_path, requests_text=text), "requests.csv", "row 1", "'ram_gib'", "≥ 0")


def test_duplicate_id(tmp_path):
    text = GOOD_REQUESTS.replace("q2,", "q1,")
    assert_rejected(*run_plan(tmp_path, requests_text=text), "requests.csv", "row 2", "'request_id'", "duplicate")


def test_unknown_tier(tmp_path):
    text = GOOD_HOSTS.replace("nvme", "tape")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "hosts.csv", "row 2", "'storage_type'", "tape")


def test_rack_in_two_zones(tmp_path):
    text = GOOD_HOSTS.replace("h2,z1,r2", "h2,z2,r1")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "hosts.csv", "row 2", "'zone'", "r1")


def test_empty_file(tmp_path):
    assert_rejected(*run_plan(tmp_path, requests_text=""), "requests.csv", "empty")


def test_header_only(tmp_path):
    assert_rejected(*run_plan(tmp_path, requests_text=GOOD_REQUESTS.splitlines()[0] + "\n"), "requests.csv", "no rows")


def test_undecodable_bytes(tmp_path):
    text = GOOD_HOSTS.encode().replace(b"h2,z1", b"h\xff\xfe2,z1")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "hosts.csv", "undecodable", "line 3")


def test_unknown_status_and_overcommit_below_one(tmp_path):
    text = GOOD_HOSTS.replace("cost_per_hour\n", "cost_per_hour,status\n").replace("1.0\n", "1.0,up\n") \
        .replace("1.5\n", "1.5,broken\n")
    assert_rejected(*run_plan(tmp_path, hosts_text=text), "'status'", "broken")


def test_parquet_inputs_and_defaults(tmp_path):
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 8, "ram_gib": 32})
    hosts.write_parquet(tmp_path / "hosts.parquet")
    loaded = load_hosts(tmp_path / "hosts.parquet")
    assert loaded["status"][0] == "up" and loaded["vcpu_overcommit"][0] == 1.0
    requests_table({"request_id": "a", "vcpu": 1, "ram_gib": 1}).drop("priority").write_parquet(tmp_path / "r.parquet")
    assert load_requests(tmp_path / "r.parquet")["priority"][0] == 1


def test_gpu_request_without_vcpu(tmp_path):
    text = GOOD_REQUESTS.replace("q2,u1,db,2,4,50,0,", "q2,u1,db,0,4,50,1,")
    assert_rejected(*run_plan(tmp_path, requests_text=text), "requests.csv", "row 2", "'vcpu'")


@settings(max_examples=40, deadline=None)
@given(row=st.integers(0, 1), column=st.sampled_from(["vcpu", "ram_gib", "storage_gib", "gpu"]),
       value=st.one_of(st.integers(-1000, -1), st.sampled_from(["x", "1e", "--", "3.7"])))
def test_any_bad_cell_is_named(tmp_path_factory, row, column, value):
    """Property: corrupting any numeric cell is reported with its row and column."""
    frame = pl.read_csv(GOOD_REQUESTS.encode(), infer_schema=False)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) == row).then(pl.lit(str(value)))
                               .otherwise(pl.col(column)).alias(column))
    path = tmp_path_factory.mktemp("bad") / "requests.csv"
    frame.write_csv(path)
    with pytest.raises(InputError) as err:
        load_requests(path)
    assert err.value.row == row + 1 and err.value.column == column
