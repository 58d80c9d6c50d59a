"""What-if scenarios: the file is checked (line and key named) before planning; each scenario is planned
as an edit of the base's placement in a plan directory of its own, and compared side by side."""
from __future__ import annotations

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.planner.cli import app
from shardplan.planner.report.checker import check_plan_dir
from shardplan.planner.report.export import write_plan_dir
from shardplan.planner.whatif import ScenarioError, base_options, read_base, read_scenarios
from tests.fleets import hosts_table, requests_table


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A plan of 12 requests on six hosts over two zones, written as a plan directory."""
    from shardplan.planner.engine import plan
    from shardplan.planner.validate.options import PlanOptions

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "zone": "z1", "vcpu": 32, "ram_gib": 128}
                          for i in range(4)],
                        *[{"host_id": f"g{i}", "rack": "r9", "zone": "z2", "vcpu": 32, "ram_gib": 128,
                           "host_class": "gpu", "gpu": 2, "gpu_model": "a100"} for i in range(2)])
    requests = requests_table(*[{"request_id": f"q{i:02d}", "vcpu": 8, "ram_gib": 16, "max_shards": 2,
                                 "app_type": "web" if i % 2 else "batch"} for i in range(12)])
    result = plan(hosts, requests, PlanOptions(time_limit_s=4, lp_bound=False))
    out = tmp_path_factory.mktemp("whatif") / "base"
    write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    return out


@pytest.mark.parametrize("text, line, key", [
    ('[[scenario]]\nname = "a"\ndrain_rack = ["r1"]\n', 3, "drain_rack"),
    ('[[scenario]]\nname = "a"\n\n[[scenario]]\nname = "b"\ndrain_racks = ["r7"]\n', 6, "drain_racks"),
    ('[[scenario]]\nname = "a"\n[[scenario.demand]]\napp_type = "web"\nfactor = 0\n', 5, "factor"),
    ('[[scenario]]\nname = "a"\noptions = { max_movez = 3 }\n', 3, "max_movez"),
    ('[[scenario]]\nname = "a"\n[[scenario.add_hosts]]\nclass = "tpu"\n', 4, "class"),
    ('[[scenario]]\nname = "a"\n[[scenario.add_hosts]]\nlike = "g0"\ncount = 1\n'
     '[[scenario.add_hosts]]\nlike = "g0"\ncount = -2\n', 8, "count"),
])
def test_a_bad_scenario_file_is_refused_with_its_line_and_key(base, tmp_path, text, line, key):
    path = tmp_path / "s.toml"
    path.write_text(text)
    plan_dir = read_base(base)
    with pytest.raises(ScenarioError) as caught:
        read_scenarios(path, plan_dir, base_options(plan_dir))
    assert (caught.value.line, caught.value.key) == (line, key)


def test_scenarios_are_planned_from_the_base_and_compared(base, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[scenario]]\nname = "drain r1"\ndrain_racks = ["r1"]\n\n'
                    '[[scenario]]\nname = "web x2"\n[[scenario.demand]]\napp_type = "web"\nfactor = 2.0\n\n'
                    '[[scenario]]\nname = "two more gpu"\n[[scenario.add_hosts]]\nlike = "g0"\ncount = 2\n')
    result = CliRunner().invoke(app, ["whatif", str(base), "--scenarios", str(path), "--out", str(tmp_path / "out"),
                                      "--time-limit", "20", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["scenario"]: row for row in json.loads(result.output.strip().splitlines()[-1])}
    assert list(rows) == ["base", "drain r1", "web x2", "two more gpu"]
    drained = rows["drain r1"]
    running_on_r1 = pl.read_parquet(base / "shards.parquet").join(
        pl.read_parquet(base / "inputs/hosts.parquet").filter(pl.col("rack") == "r1"), on="host_id")
    assert drained["moves_mandatory"] + drained["lost"] == running_on_r1["request_id"].n_unique()
    assert rows["web x2"]["placed"] >= rows["base"]["placed"]
    for name in ("drain-r1", "web-x2", "two-more-gpu"):
        assert check_plan_dir(tmp_path / "out" / name) == []
    assert pl.read_parquet(tmp_path / "out" / "comparison.parquet").height == 4
    from tests.test_report import unpack  # the one page comparing the scenarios
    figures = json.loads(unpack((tmp_path / "out" / "report.html").read_text(), "figures"))
    compared = figures["fig-whatif-comparison"]["data"]
    assert [list(trace["x"]) for trace in compared] == [["drain r1", "web x2", "two more gpu"]] * 6
    hosts = pl.read_parquet(tmp_path / "out" / "two-more-gpu" / "inputs/hosts.parquet")
    assert hosts.height == 8 and hosts.filter(pl.col("host_id").str.starts_with("g0-copy-"))["gpu"].to_list() == [2, 2]


def test_a_bad_scenario_exits_2_before_any_planning(base, tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[scenario]]\nname = "a"\nfail_zones = ["z7"]\n')
    result = CliRunner().invoke(app, ["whatif", str(base), "--scenarios", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "line 3" in result.output and "unknown zone 'z7'" in result.output
    assert not (tmp_path / "o").exists()
