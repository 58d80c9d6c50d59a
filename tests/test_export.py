"""Plan directories: round trip through real Parquet files, metadata, atomic writes, and diffs."""
from __future__ import annotations

import io
import json

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from rich.console import Console

import shardplan.files as files
import shardplan.planner.report.export as export
from shardplan.planner.report.checker import check_plan_dir
from shardplan.planner.report.diff import diff_plans, render_diff, render_summary
from shardplan.planner.report.export import (
    PLAN_METADATA_KEY,
    PlanDirError,
    PlanExportError,
    read_plan_dir,
    read_plan_metadata,
    write_plan_dir,
)
from shardplan.schema import (
    REQUESTS_OUT_OPTIONAL,
    REQUESTS_OUT_SCHEMA,
    RESERVATIONS_SCHEMA,
    SHARDS_SCHEMA,
    hosts_out_schema,
)

PLAN_FILES = ("shards.parquet", "requests.parquet", "hosts.parquet", "reservations.parquet", "plan.json",
              "inputs/hosts.parquet", "inputs/requests.parquet")


@pytest.fixture
def reservations() -> pl.DataFrame:
    return pl.DataFrame({
        "reservation_id": ["res-1"], "host_id": ["h4"], "user_id": ["bob"], "app_type": ["training"],
        "vcpu": [4], "ram_gib": [16], "storage_gib": [0], "net_gbps": [0.5], "gpu": [0],
        "window_start": ["2024-03-01T00:00:00Z"], "window_end": ["2024-03-02T00:00:00Z"],
    })


def write(path, plan, **changes) -> None:
    tables = {"hosts": plan.hosts, "requests": plan.requests, "shards": plan.shards,
              "requests_out": plan.requests_out, "plan_json": plan.plan_json} | changes
    write_plan_dir(path, **tables)


def files_under(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def test_round_trip(tmp_path, four_host_plan, reservations):
    write(tmp_path, four_host_plan, reservations=reservations)
    plan = read_plan_dir(tmp_path)
    assert files_under(tmp_path) == sorted(PLAN_FILES)
    assert_frame_equal(plan.shards, four_host_plan.shards)
    # a requests table without the columns added later (remote memory) reads back with them null
    assert_frame_equal(plan.requests_out.select(four_host_plan.requests_out.columns), four_host_plan.requests_out)
    assert "slowdown" not in four_host_plan.requests_out.columns
    assert plan.requests_out.select(list(REQUESTS_OUT_OPTIONAL)).null_count().row(0) == (plan.requests_out.height,) * 2
    assert_frame_equal(plan.hosts.select(four_host_plan.hosts.columns), four_host_plan.hosts)
    assert_frame_equal(plan.requests.select(four_host_plan.requests.columns), four_host_plan.requests)
    assert plan.plan == four_host_plan.plan_json
    assert plan.reservations.schema == pl.Schema(RESERVATIONS_SCHEMA)
    assert plan.reservations["window_start"][0].isoformat() == "2024-03-01T00:00:00+00:00"
    assert plan.shards.schema == pl.Schema(SHARDS_SCHEMA)
    assert plan.requests_out.schema == pl.Schema({**REQUESTS_OUT_SCHEMA, **REQUESTS_OUT_OPTIONAL})
    assert plan.hosts_out.schema == pl.Schema(hosts_out_schema())
    assert check_plan_dir(tmp_path) == []


def test_hosts_table_adds_existing_load_shards_and_reservations(tmp_path, four_host_plan, reservations):
    hosts = four_host_plan.hosts.with_columns(
        pl.when(pl.col("host_id") == "h2").then(1.15).otherwise(pl.col("vcpu_overcommit")).alias("vcpu_overcommit"))
    write(tmp_path, four_host_plan, hosts=hosts, reservations=reservations)
    hosts_out = read_plan_dir(tmp_path).hosts_out.sort("host_id")
    by_host = {row["host_id"]: row for row in hosts_out.iter_rows(named=True)}
    assert by_host["h2"]["vcpu_capacity"] == 18  # floor(16 × 1.15)
    assert by_host["h2"]["vcpu_used"] == 10 and by_host["h2"]["storage_gib_used"] == 100
    assert by_host["h1"]["gpu_used"] == 1 and by_host["h1"]["net_gbps_used"] == pytest.approx(2.0)
    assert by_host["h3"]["net_gbps_used"] == pytest.approx(0.8)
    assert (by_host["h4"]["vcpu_used"], by_host["h4"]["vcpu_reserved"], by_host["h4"]["ram_gib_reserved"]) == (2, 4, 16)
    assert all(row["active"] for row in by_host.values())


def test_active_means_shards_reservations_or_existing_load(tmp_path, four_host_plan):
    hosts = four_host_plan.hosts.with_columns(pl.lit(0).alias("used_vcpu"), pl.lit(0).alias("used_ram_gib"))
    write(tmp_path, four_host_plan, hosts=hosts)
    active = dict(read_plan_dir(tmp_path).hosts_out.select("host_id", "active").iter_rows())
    assert active == {"h1": True, "h2": True, "h3": True, "h4": False}


def test_every_parquet_file_carries_the_plan_json(tmp_path, four_host_plan, reservations):
    write(tmp_path, four_host_plan, reservations=reservations)
    plan_text = (tmp_path / "plan.json").read_text()
    for name in PLAN_FILES:
        if name.endswith(".parquet"):
            metadata = pq.read_schema(tmp_path / name).metadata
            assert json.loads(metadata[PLAN_METADATA_KEY.encode()]) == json.loads(plan_text), name
            assert read_plan_metadata(tmp_path / name) == four_host_plan.plan_json


def test_non_finite_numbers_become_null(tmp_path, four_host_plan):
    write(tmp_path, four_host_plan, plan_json={**four_host_plan.plan_json, "gap": float("inf")})
    assert json.loads((tmp_path / "plan.json").read_text())["gap"] is None


def test_a_failure_while_writing_leaves_no_file(tmp_path, four_host_plan, reservations, monkeypatch):
    staged = []
    real_stage = files._stage

    def fail_on_the_fourth(target, payload):
        if len(staged) == 3:
            raise OSError("disk full")
        staged.append(target)
        return real_stage(target, payload)

    monkeypatch.setattr(files, "_stage", fail_on_the_fourth)
    with pytest.raises(OSError, match="disk full"):
        write(tmp_path / "plan", four_host_plan, reservations=reservations)
    assert len(staged) == 3
    assert list(tmp_path.iterdir()) == []  # no file, and not even the folders it made


def test_a_failed_rewrite_keeps_the_previous_plan(tmp_path, four_host_plan, monkeypatch):
    write(tmp_path, four_host_plan)
    before = {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)}
    real_replace = files.os.replace
    renamed = []

    def fail_on_the_first_rename(source, target):
        if not renamed:
            renamed.append(target)
            raise OSError("rename refused")
        return real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", fail_on_the_first_rename)
    changed = four_host_plan.plan_json | {"objective": 99.0}
    with pytest.raises(OSError, match="rename refused"):
        write(tmp_path, four_host_plan, plan_json=changed)
    assert {name: (tmp_path / name).read_bytes() for name in files_under(tmp_path)} == before


def test_an_invalid_table_writes_nothing(tmp_path, four_host_plan):
    with pytest.raises(PlanExportError, match="shards.parquet: missing column"):
        write(tmp_path, four_host_plan, shards=four_host_plan.shards.drop("role"))
    with pytest.raises(PlanExportError, match="whole number"):
        write(tmp_path, four_host_plan, shards=four_host_plan.shards.with_columns(pl.col("gpu") * 0.5))
    with pytest.raises(PlanExportError, match="unknown role 'cpu'"):
        write(tmp_path, four_host_plan, shards=four_host_plan.shards.with_columns(pl.lit("cpu").alias("role")))
    with pytest.raises(PlanExportError, match="host 'h9'"):
        write(tmp_path, four_host_plan, shards=four_host_plan.shards.with_columns(pl.lit("h9").alias("host_id")))
    assert files_under(tmp_path) == []


def test_rewriting_without_reservations_drops_the_old_blocks(tmp_path, four_host_plan, reservations):
    write(tmp_path, four_host_plan, reservations=reservations)
    write(tmp_path, four_host_plan)
    assert read_plan_dir(tmp_path).reservations is None
    assert "reservations.parquet" not in files_under(tmp_path)


def test_reading_names_the_missing_file(tmp_path, four_host_plan):
    write(tmp_path, four_host_plan)
    (tmp_path / "hosts.parquet").unlink()
    with pytest.raises(PlanDirError, match="missing hosts.parquet"):
        read_plan_dir(tmp_path)
    with pytest.raises(PlanDirError, match="no such folder"):
        read_plan_dir(tmp_path / "nowhere")


def test_reading_names_a_bad_file(tmp_path, four_host_plan):
    write(tmp_path, four_host_plan)
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(PlanDirError, match="plan.json: not valid JSON"):
        read_plan_dir(tmp_path)
    write(tmp_path, four_host_plan)
    pl.DataFrame({"request_id": ["web"]}).write_parquet(tmp_path / "shards.parquet")
    with pytest.raises(PlanDirError, match=r"shards.parquet: missing column\(s\) shard, host_id"):
        read_plan_dir(tmp_path)


# --- diff ------------------------------------------------------------------------------


def _plan_b(plan):
    """ml's remote memory and batch's h3 part leave h3 (which switches off); web is unplaced."""
    moved_to = {("ml", 1): "h2", ("batch", 1): "h1"}
    shards = plan.shards.with_columns(
        pl.struct("request_id", "shard").map_elements(
            lambda key: moved_to.get((key["request_id"], key["shard"])), return_dtype=pl.Utf8)
        .fill_null(pl.col("host_id")).alias("host_id"))
    shards = shards.filter(pl.col("request_id") != "web")
    requests_out = plan.requests_out.with_columns(
        pl.when(pl.col("request_id") == "web").then(pl.lit("unplaced")).otherwise(pl.col("status")).alias("status"),
        pl.when(pl.col("request_id") == "web").then(pl.lit("storage: no two racks with 100 GiB free"))
        .otherwise(pl.col("reason")).alias("reason"),
        pl.when(pl.col("request_id") == "web").then(0.0).otherwise(pl.col("cost_per_hour")).alias("cost_per_hour"))
    return shards, requests_out


def test_diff_reports_moves_and_newly_unplaced(tmp_path, four_host_plan):
    write(tmp_path / "a", four_host_plan)
    shards_b, requests_out_b = _plan_b(four_host_plan)
    write(tmp_path / "b", four_host_plan, shards=shards_b, requests_out=requests_out_b)
    assert check_plan_dir(tmp_path / "b") == []

    diff = diff_plans(tmp_path / "a", tmp_path / "b")
    moved = {(row["request_id"], row["role"], row["from_host"], row["to_host"]): row
             for row in diff.moved.iter_rows(named=True)}
    assert set(moved) == {("ml", "memory", "h3", "h2"), ("batch", "compute", "h3", "h1")}
    memory = moved[("ml", "memory", "h3", "h2")]
    assert (memory["ram_gib"], memory["net_gbps"]) == (16, pytest.approx(0.8))
    assert memory["hosts_cost_delta"] == pytest.approx(-0.5)  # h3 switches off, h2 was active already
    assert memory["reason"] == "consolidation: host h3 switched off"
    assert diff.newly_unplaced.to_dicts() == [{"request_id": "web", "reason": "storage: no two racks with 100 GiB free"}]
    assert diff.newly_placed.height == 0
    assert {(row["role"], row["from_host"]) for row in diff.removed.iter_rows(named=True)} == {
        ("compute", "h2"), ("storage", "h2"), ("replica", "h1")}
    assert diff.added.height == 0
    assert diff.active_hosts_cost_delta == pytest.approx(-0.5)
    assert diff.requests_cost_delta == pytest.approx(-1.0)
    assert (diff.active_hosts_a, diff.active_hosts_b) == (4, 3)
    storage = diff.utilisation.filter(pl.col("resource") == "storage_gib")
    assert storage["utilisation_delta"][0] == pytest.approx(-200 / 5000)

    frame = diff.to_frame()
    assert frame.filter(pl.col("kind") == "newly_unplaced")["request_id"].to_list() == ["web"]
    assert frame.height == 2 + 3 + 1
    summary = json.loads(diff.to_json())["summary"]
    assert (summary["moved"], summary["removed"], summary["newly_unplaced"]) == (2, 3, 1)

    console = Console(file=io.StringIO(), width=220)
    console.print(render_diff(diff))
    console.print(render_summary(diff))
    text = console.file.getvalue()
    assert "consolidation: host h3 switched off" in text and "newly_unplaced" in text and "-0.50" in text


def test_diff_of_a_plan_with_itself_is_empty(tmp_path, four_host_plan):
    write(tmp_path / "a", four_host_plan)
    diff = diff_plans(tmp_path / "a", read_plan_dir(tmp_path / "a"))
    assert diff.is_empty
    assert diff.active_hosts_cost_delta == 0.0
    assert diff.utilisation["utilisation_delta"].abs().max() == 0.0


def test_diff_reports_newly_placed_requests_and_added_parts(tmp_path, four_host_plan):
    shards_b, requests_out_b = _plan_b(four_host_plan)
    write(tmp_path / "a", four_host_plan, shards=shards_b, requests_out=requests_out_b)
    write(tmp_path / "b", four_host_plan)
    diff = diff_plans(tmp_path / "a", tmp_path / "b")
    assert diff.newly_placed["request_id"].to_list() == ["web"]
    assert set(diff.added["reason"]) == {"request newly placed"}
    assert {(row["from_host"], row["to_host"]) for row in diff.moved.iter_rows(named=True)} == {("h2", "h3"), ("h1", "h3")}
    assert set(diff.moved["reason"]) == {"spread onto newly active host h3"}


def test_a_single_parquet_file_is_written_atomically(tmp_path, four_host_plan):
    export.write_parquet_atomic(four_host_plan.shards, tmp_path / "changes" / "parts.parquet",
                                plan_json=four_host_plan.plan_json)
    assert files_under(tmp_path) == ["changes/parts.parquet"]
    assert_frame_equal(pl.read_parquet(tmp_path / "changes" / "parts.parquet"), four_host_plan.shards)
    assert read_plan_metadata(tmp_path / "changes" / "parts.parquet") == four_host_plan.plan_json
