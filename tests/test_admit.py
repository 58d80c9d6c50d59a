"""Admission during the day (shardplan admit): hits from reservation blocks, misses into free capacity, the
least window a request lives in, release and expiry, the checker on every edited plan, the CLI's errors, and
`shardplan predict`."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.models.problem import SolveResult
from shardplan.planner.admit import AdmitError, Ledger, admit, check_ledger, write_ledger
from shardplan.planner.cli import app
from shardplan.planner.report.checker import check_plan_dir
from shardplan.planner.report.export import read_plan_dir
from shardplan.planner.reservations import (
    ReservationOptions,
    ReservationSizing,
    plan_with_reservations,
    reservation_blocks,
)
from shardplan.planner.validate.options import PlanOptions
from tests.fleets import hosts_table, requests_table

T0 = datetime(2024, 6, 3, tzinfo=timezone.utc)
FAST = PlanOptions(time_limit_s=5.0, lp_bound=False)


def windowed_sizing(groups: dict[tuple[str, str], list[float]], hours: int = 4) -> ReservationSizing:
    """Reserved vcpu per window for each (user, app type); RAM 2 GiB per vcpu."""
    rows = []
    for (user, app_type), amounts in groups.items():
        for w, vcpu in enumerate(amounts):
            rows.append({"user_id": user, "app_type": app_type, "uses_gpu": False, "window": w,
                         "window_start": T0 + timedelta(hours=hours * w),
                         "window_end": T0 + timedelta(hours=hours * (w + 1)),
                         "reserved_vcpu": float(vcpu), "reserved_ram_gib": 2.0 * vcpu})
    frame = pl.DataFrame(rows).with_columns(pl.col("window_start", "window_end").dt.cast_time_unit("us"))
    span = max(len(a) for a in groups.values()) * hours
    return ReservationSizing(SolveResult("optimal", 0.0, 0.0, 0.0, 0.0, "test"), frame, T0, T0 + timedelta(hours=span))


def ledger_for(hosts: pl.DataFrame, requests: pl.DataFrame, groups: dict) -> Ledger:
    sizing = windowed_sizing(groups)
    blocks = reservation_blocks(sizing, hosts, None, FAST, ReservationOptions())
    planned = plan_with_reservations(hosts, requests, blocks, FAST, sizing)
    assert planned.plan_json["reservations"]["blocks_unplaced"] == 0
    return Ledger(hosts, planned.requests, planned.shards, planned.requests_out, planned.reservations,
                  planned.plan_json)


def two_hosts() -> pl.DataFrame:
    return hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64},
                       {"host_id": "h2", "rack": "r2", "vcpu": 16, "ram_gib": 64})


def arriving(*rows: dict) -> pl.DataFrame:
    return requests_table(*rows)


def test_a_request_of_a_group_with_a_block_is_a_hit_and_others_miss():
    ledger = ledger_for(two_hosts(), requests_table({"request_id": "r0", "user_id": "u0", "vcpu": 4, "ram_gib": 8}),
                        {("u1", "web"): [8, 8, 8]})
    edited, summary = admit(ledger, arriving({"request_id": "a1", "user_id": "u1", "vcpu": 6, "ram_gib": 12},
                                             {"request_id": "a2", "user_id": "u2", "vcpu": 6, "ram_gib": 12}),
                            T0 + timedelta(hours=1))
    outcome = dict(zip(edited.admissions["request_id"], edited.admissions["outcome"]))
    assert outcome == {"a1": "hit", "a2": "miss"}
    assert summary.from_reservations["vcpu"] == 6 and summary.asked["vcpu"] == 12
    block_host = edited.reservations["host_id"][0]
    assert set(edited.shards.filter(pl.col("request_id") == "a1")["host_id"]) == {block_host}
    # an open-ended request lives in every window left: each of them holds 6 vcpu less
    assert edited.reservations.sort("window_start")["vcpu"].to_list() == [2, 2, 2]
    assert edited.claims.height == 3 and set(edited.claims["vcpu"]) == {6}
    assert check_ledger(edited) == []


def test_what_a_block_gives_is_the_least_it_holds_over_the_windows_the_request_lives_in():
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    ledger = ledger_for(hosts, requests_table({"request_id": "r0", "vcpu": 2, "ram_gib": 4}),
                        {("u1", "web"): [10, 4, 10]})
    short = arriving({"request_id": "a1", "user_id": "u1", "vcpu": 8, "ram_gib": 16})
    one_window = short.with_columns(pl.lit(T0 + timedelta(hours=3)).alias("ends_at"))
    edited, _ = admit(ledger, one_window, T0 + timedelta(hours=1))
    assert edited.admissions["outcome"].to_list() == ["hit"]             # lives in window 0 only: 10 there
    assert edited.reservations.sort("window_start")["vcpu"].to_list() == [2, 4, 10]
    assert check_ledger(edited) == []
    stays, _ = admit(ledger, short, T0 + timedelta(hours=1))               # lives in all three: 4 at most
    row = stays.admissions.row(0, named=True)
    assert row["outcome"] == "partial" and row["reserved_vcpu"] == 4
    assert stays.reservations.sort("window_start")["vcpu"].to_list() == [6, 0, 6]
    assert check_ledger(stays) == []


def test_release_gives_claims_back_and_ended_windows_expire(tmp_path):
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    ledger = ledger_for(hosts, requests_table({"request_id": "r0", "vcpu": 2, "ram_gib": 4}),
                        {("u1", "web"): [10, 10, 10]})
    first = arriving({"request_id": "a1", "user_id": "u1", "vcpu": 8, "ram_gib": 16}).with_columns(
        pl.lit(T0 + timedelta(hours=6)).alias("ends_at"))
    edited, _ = admit(ledger, first, T0 + timedelta(hours=1))
    assert edited.reservations.sort("window_start")["vcpu"].to_list() == [2, 2, 10]
    later, summary = admit(edited, arriving({"request_id": "a2", "user_id": "u1", "vcpu": 9, "ram_gib": 18}),
                           T0 + timedelta(hours=6))
    assert summary.released == 1 and summary.expired_rows == 1          # window 0 ended at 4 h
    assert "a1" not in later.shards["request_id"].to_list() and "a1" not in later.requests["request_id"].to_list()
    assert later.admissions.filter(pl.col("request_id") == "a1")["released_at"][0] == T0 + timedelta(hours=6)
    # a2 found window 1 whole again (a1's 8 came back), and lives in windows 1 and 2
    assert later.admissions.filter(pl.col("request_id") == "a2")["outcome"][0] == "hit"
    assert later.reservations.sort("window_start")["vcpu"].to_list() == [1, 1]
    assert check_ledger(later) == []
    write_ledger(later, tmp_path / "plan")
    assert check_plan_dir(tmp_path / "plan") == []
    assert (tmp_path / "plan" / "admissions.parquet").exists() and (tmp_path / "plan" / "claims.parquet").exists()
    assert read_plan_dir(tmp_path / "plan").plan["admissions"]["calls"] == 2


def test_room_held_for_later_windows_is_not_given_to_a_miss():
    # h1 holds a block of 12 vcpu in window 1 only; a request from another group that stays all day may not
    # take that room, one that leaves before window 1 may
    hosts = hosts_table({"host_id": "h1", "rack": "r1", "vcpu": 16, "ram_gib": 64})
    ledger = ledger_for(hosts, requests_table({"request_id": "r0", "vcpu": 2, "ram_gib": 4}),
                        {("u1", "web"): [0, 12]})
    big = arriving({"request_id": "a1", "user_id": "u2", "vcpu": 10, "ram_gib": 20})
    stays, _ = admit(ledger, big, T0 + timedelta(hours=1))
    assert stays.admissions["outcome"].to_list() == ["unplaced"]
    assert stays.requests_out.filter(pl.col("request_id") == "a1")["reason"][0].startswith("capacity")
    leaves, _ = admit(ledger, big.with_columns(pl.lit(T0 + timedelta(hours=4)).alias("ends_at")),
                      T0 + timedelta(hours=1))
    assert leaves.admissions["outcome"].to_list() == ["miss"]
    assert check_ledger(stays) == [] and check_ledger(leaves) == []


def test_random_arrivals_never_break_an_invariant():
    rng = np.random.default_rng(7)
    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "vcpu": 32, "ram_gib": 128} for i in range(4)])
    ledger = ledger_for(hosts, requests_table({"request_id": "r0", "vcpu": 4, "ram_gib": 8}),
                        {("u1", "web"): [16, 24, 8, 20, 12, 6], ("u2", "db"): [8, 8, 30, 8, 4, 4]})
    n = 0
    for hour in range(0, 24, 2):
        rows = []
        for _ in range(int(rng.integers(1, 5))):
            n += 1
            user, app_type = [("u1", "web"), ("u2", "db"), ("u3", "batch")][int(rng.integers(3))]
            vcpu = int(rng.integers(1, 12))
            rows.append({"request_id": f"a{n}", "user_id": user, "app_type": app_type, "vcpu": vcpu,
                         "ram_gib": int(vcpu * rng.integers(1, 4)), "max_shards": int(rng.integers(1, 3)),
                         "ends_at": (T0 + timedelta(hours=hour + int(rng.integers(1, 10))))
                         if rng.random() < 0.7 else None})
        batch = requests_table(*[{k: v for k, v in r.items() if k != "ends_at"} for r in rows]).with_columns(
            pl.Series("ends_at", [r["ends_at"] for r in rows], dtype=pl.Datetime("us", "UTC")))
        ledger, _ = admit(ledger, batch, T0 + timedelta(hours=hour))
        assert check_ledger(ledger) == [], hour
        assert (ledger.reservations.select("vcpu", "ram_gib", "gpu").to_numpy() >= 0).all()
    counts = ledger.admissions["outcome"].value_counts()
    assert counts.filter(pl.col("outcome") == "hit")["count"].sum() > 0


def test_bad_arrivals_are_refused():
    ledger = ledger_for(two_hosts(), requests_table({"request_id": "r0", "vcpu": 4, "ram_gib": 8}),
                        {("u1", "web"): [8]})
    with pytest.raises(AdmitError, match="already in the plan"):
        admit(ledger, arriving({"request_id": "r0", "vcpu": 1, "ram_gib": 1}), T0)
    early = arriving({"request_id": "a1", "vcpu": 1, "ram_gib": 1}).with_columns(pl.lit("2024-06-02T00:00:00Z")
                                                                                  .alias("ends_at"))
    with pytest.raises(AdmitError, match="row 1, column 'ends_at'"):
        admit(ledger, early, T0)


def nightly_dir(tmp_path):
    from tests.test_reservations import tiny_data_dir

    data = tiny_data_dir(tmp_path / "data")
    out = tmp_path / "plan"
    result = CliRunner().invoke(app, ["nightly", "--data", str(data), "--out", str(out), "--time-limit", "3",
                                      "--no-report"])
    assert result.exit_code == 0, result.output
    return out


def test_admit_command_edits_a_nightly_plan_and_refuses_bad_input(tmp_path):
    plan = nightly_dir(tmp_path)
    start = read_plan_dir(plan).reservations["window_start"].min()
    arrivals = tmp_path / "arrivals.csv"
    arrivals.write_text("request_id,user_id,app_type,vcpu,ram_gib,storage_gib,net_gbps,gpu,ends_at\n"
                        f"n1,u1,web,2,4,0,0,0,{(start + timedelta(hours=2)).isoformat()}\n"
                        "n2,u7,batch,2,4,0,0,0,\n")
    at = (start + timedelta(hours=1)).isoformat()
    runner = CliRunner()
    result = runner.invoke(app, ["admit", str(plan), "--requests", str(arrivals), "--at", at, "--out",
                                 str(tmp_path / "day"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"hit": 1' in result.output and '"miss": 1' in result.output
    assert runner.invoke(app, ["check", str(tmp_path / "day")]).exit_code == 0
    admissions = pl.read_parquet(tmp_path / "day" / "admissions.parquet")
    assert admissions.sort("request_id")["outcome"].to_list() == ["hit", "miss"]
    # in place: a second call on the edited directory
    again = tmp_path / "more.csv"
    again.write_text("request_id,user_id,app_type,vcpu,ram_gib,storage_gib,net_gbps,gpu\nn3,u1,web,1,2,0,0,0\n")
    later = (start + timedelta(hours=3)).isoformat()
    result = runner.invoke(app, ["admit", str(tmp_path / "day"), "--requests", str(again), "--at", later, "--out",
                                 str(tmp_path / "day"), "--json"])
    assert result.exit_code == 0, result.output
    assert '"released": 1' in result.output
    assert check_plan_dir(tmp_path / "day") == []
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "day").iterdir() if p.is_file()}
    bad = tmp_path / "bad.csv"
    bad.write_text("request_id,user_id,app_type,vcpu,ram_gib,storage_gib,net_gbps,gpu,ends_at\n"
                   "n4,u1,web,1,2,0,0,0,yesterday\n")
    result = runner.invoke(app, ["admit", str(tmp_path / "day"), "--requests", str(bad), "--at", later, "--out",
                                 str(tmp_path / "day")])
    assert result.exit_code == 2 and "row 1, column 'ends_at'" in result.output
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "day").iterdir() if p.is_file()} == before
    result = runner.invoke(app, ["admit", str(plan), "--requests", str(again), "--at", "not-a-time", "--out",
                                 str(tmp_path / "x")])
    assert result.exit_code == 2 and "--at" in result.output


def test_predict_command_forecasts_known_groups_and_defaults_unknown_ones(tmp_path):
    from tests.test_reservations import tiny_data_dir

    data = tiny_data_dir(tmp_path / "data")
    runner = CliRunner()
    known = runner.invoke(app, ["predict", "--user", "u1", "--app", "web", "--at", "12:00", "--history",
                                str(data / "history.parquet"), "--json"])
    assert known.exit_code == 0, known.output
    figures = json.loads(known.output)
    # cores used at noon: 4 vcpu × 0.3 × (1 + 0.5 sin(π)) = 1.2; RAM 8 × (0.6 + 0.1) = 5.6 (the history's cycle)
    assert figures["source"] == "forecast" and figures["ts"].startswith("2024-06-13T12:00")
    assert figures["vcpu"] == pytest.approx(1.2, abs=0.01) and figures["ram_gib"] == pytest.approx(5.6, abs=0.05)
    unknown = runner.invoke(app, ["predict", "--user", "nobody", "--app", "db", "--at", "2024-06-20T08:00",
                                  "--history", str(data / "history.parquet"), "--json"])
    assert unknown.exit_code == 0 and json.loads(unknown.output)["source"] == "default"
    assert json.loads(unknown.output)["ram_gib"] == 56  # the documented default of db
    bad = runner.invoke(app, ["predict", "--user", "u1", "--app", "web", "--at", "25:99"])
    assert bad.exit_code == 2
