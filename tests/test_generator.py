"""The seeded fleet generator and the committed demo fleet (data/demo)."""
from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from shardplan.data import generator as fleet
from shardplan.planner.validate.inputs import check_hosts, load_hosts, load_requests, validate_table
from shardplan.planner.validate.options import PlanOptions
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS


@pytest.fixture(scope="module")
def small_fleet() -> tuple[pl.DataFrame, pl.DataFrame]:
    return fleet.generate_fleet(60, 150, seed=7)


@pytest.fixture(scope="module")
def demo() -> tuple[pl.DataFrame, pl.DataFrame]:
    return fleet.demo_fleet()


def _assert_valid(hosts: pl.DataFrame, requests: pl.DataFrame) -> None:
    """Both tables pass input validation unchanged and fill every non-nullable column."""
    validated_hosts = check_hosts(validate_table(hosts, HOST_COLUMNS, "hosts", key="host_id"), "hosts")
    validated_requests = validate_table(requests, REQUEST_COLUMNS, "requests", key="request_id")
    assert_frame_equal(validated_hosts.select(hosts.columns), hosts)
    assert_frame_equal(validated_requests.select(requests.columns), requests)
    for table, columns in ((hosts, HOST_COLUMNS), (requests, REQUEST_COLUMNS)):
        for column in columns:
            if column.name == "libvirt_uri":
                continue
            assert column.name in table.columns
            if not column.nullable:
                assert table[column.name].null_count() == 0, column.name


def test_same_seed_gives_identical_tables(small_fleet):
    hosts, requests = fleet.generate_fleet(60, 150, seed=7)
    assert_frame_equal(hosts, small_fleet[0])
    assert_frame_equal(requests, small_fleet[1])


def test_different_seed_gives_different_tables(small_fleet):
    hosts, requests = fleet.generate_fleet(60, 150, seed=8)
    assert not hosts.equals(small_fleet[0])
    assert not requests.equals(small_fleet[1])


def test_tables_validate(small_fleet, demo):
    _assert_valid(*small_fleet)
    _assert_valid(*demo)


def test_tables_round_trip_through_the_loaders(small_fleet, tmp_path):
    hosts, requests = small_fleet
    hosts.write_parquet(tmp_path / "hosts.parquet")
    requests.write_csv(tmp_path / "requests.csv")
    assert load_hosts(tmp_path / "hosts.parquet").height == hosts.height
    assert load_requests(tmp_path / "requests.csv").height == requests.height


def test_every_rack_lies_in_one_zone(demo):
    hosts, _ = demo
    zones_per_rack = hosts.group_by("rack").agg(pl.col("zone").n_unique())
    assert zones_per_rack["zone"].max() == 1
    racks_per_zone = hosts.group_by("zone").agg(pl.col("rack").n_unique())
    assert racks_per_zone.height == fleet.DEMO_ZONES
    assert racks_per_zone["rack"].min() >= fleet.MIN_RACKS_PER_ZONE
    assert hosts.group_by("rack").len()["len"].max() <= fleet.HOSTS_PER_RACK


def test_committed_demo_equals_the_generator(demo, tmp_path):
    committed = fleet.demo_dir()
    assert_frame_equal(pl.read_parquet(committed / fleet.HOST_FILE), demo[0])
    assert_frame_equal(pl.read_parquet(committed / fleet.REQUEST_FILE), demo[1])
    host_path, request_path = fleet.write_demo(tmp_path)
    assert_frame_equal(pl.read_parquet(host_path), demo[0])
    assert_frame_equal(pl.read_parquet(request_path), demo[1])
    assert sorted(p.name for p in tmp_path.iterdir()) == [fleet.HOST_FILE, fleet.REQUEST_FILE]  # no partial files left


def test_committed_demo_files_are_small():
    for name in (fleet.HOST_FILE, fleet.REQUEST_FILE):
        assert (fleet.demo_dir() / name).stat().st_size < 200_000


def _dark(hosts: pl.DataFrame) -> pl.Series:
    return ((pl.col("status") == "up") & (pl.sum_horizontal(f"used_{r}" for r in
                                                            ("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu")) == 0))


def test_demand_exceeds_free_capacity_of_loaded_hosts_in_every_zone(demo):
    hosts, requests = demo
    ratios = fleet.demand_over_free(hosts.filter(~_dark(hosts)), requests)
    for zone in hosts["zone"].unique():
        assert ratios.filter((pl.col("zone") == zone) & ~pl.col("resource").str.starts_with("gpu:"))["ratio"].max() > 1
    fleet_wide = dict(ratios.filter(pl.col("zone") == "all").select("resource", "ratio").iter_rows())
    for resource in ("vcpu", "ram_gib", "gpu"):
        assert 1.1 <= fleet_wide[resource] <= 1.4, resource
    # the powered-down hosts are room to buy: with them the fleet holds more of the demand
    with_dark = dict(fleet.demand_over_free(hosts, requests).filter(pl.col("zone") == "all")
                     .select("resource", "ratio").iter_rows())
    assert with_dark["vcpu"] < fleet_wide["vcpu"] and with_dark["ram_gib"] < fleet_wide["ram_gib"]


def test_powered_down_hosts_are_a_share_of_every_class_and_carry_no_load(demo):
    hosts, _ = demo
    up = hosts.filter(pl.col("status") == "up")
    counts = up.group_by("host_class").agg(pl.len().alias("up"), _dark(up).sum().alias("dark"))
    for row in counts.iter_rows(named=True):
        assert row["dark"] == round(fleet.POWERED_DOWN_SHARE * row["up"]), row
    assert up.filter(_dark(up))["cost_per_hour"].n_unique() >= 5  # several prices to choose between
    none, _ = fleet.generate_fleet(60, 150, seed=7, powered_down=0.0)
    assert none.filter(_dark(none)).height == 0
    with pytest.raises(ValueError, match="powered_down"):
        fleet.generate_fleet(60, 150, seed=7, powered_down=1.0)


def test_some_requests_need_sharding_and_every_request_fits_alone(demo):
    hosts, requests = demo
    assert fleet.placeable_alone(hosts, requests).all()
    too_big_for_one_host = requests.filter(~fleet.fits_one_host(hosts, requests))
    assert too_big_for_one_host.height >= 3  # even a powered-down host, empty, cannot take these whole
    assert too_big_for_one_host["max_shards"].min() >= 2
    # without switching a host on, more need sharding
    assert (~fleet.fits_one_host(hosts.filter(~_dark(hosts)), requests)).sum() >= 10
    free = fleet.free_capacity(hosts.filter(~_dark(hosts)))
    assert requests.filter((pl.col("vcpu") > free["vcpu"].max()) | (pl.col("ram_gib") > free["ram_gib"].max())).height


def test_some_hosts_are_down_or_draining(demo):
    hosts, _ = demo
    counts = dict(hosts.group_by("status").len().iter_rows())
    assert counts.get("down", 0) >= 1 and counts.get("draining", 0) >= 1
    down = hosts.filter(pl.col("status") == "down")
    assert down.select(pl.sum_horizontal(pl.col("^used_.*$")).sum()).item() == 0


def test_existing_load_fits_capacity_and_is_fragmented(demo):
    hosts, _ = demo
    assert hosts.filter((pl.col("used_vcpu") > pl.col("vcpu") * pl.col("vcpu_overcommit"))
                        | (pl.col("used_ram_gib") > pl.col("ram_gib"))
                        | (pl.col("used_storage_gib") > pl.col("storage_gib"))
                        | (pl.col("used_net_gbps") > pl.col("net_gbps"))
                        | (pl.col("used_gpu") > pl.col("gpu"))).height == 0
    shares = hosts.filter(pl.col("status") == "up").select(
        free_vcpu=1 - pl.col("used_vcpu") / (pl.col("vcpu") * pl.col("vcpu_overcommit")),
        free_ram=1 - pl.col("used_ram_gib") / pl.col("ram_gib"))
    assert shares.filter((pl.col("free_vcpu") < 0.1) & (pl.col("free_ram") > 0.3)).height >= 10
    assert shares.filter((pl.col("free_ram") < 0.1) & (pl.col("free_vcpu") > 0.3)).height >= 10
    assert set(hosts["vcpu_overcommit"].unique()) >= {1.0, 1.5, 2.0}


def test_gpu_requests_ask_for_a_model_a_host_can_hold(demo):
    hosts, requests = demo
    gpu_requests = requests.filter(pl.col("gpu") > 0)
    assert gpu_requests.height and gpu_requests["gpu_model"].null_count() == 0
    assert requests.filter((pl.col("gpu") == 0) & pl.col("gpu_model").is_not_null()).height == 0
    largest = hosts.filter(pl.col("status") == "up").group_by("gpu_model").agg(pl.col("gpu").max().alias("largest"))
    joined = gpu_requests.join(largest, on="gpu_model", how="left")
    assert joined["largest"].null_count() == 0
    assert (joined["gpu"] <= joined["largest"]).all()
    assert set(hosts["gpu_model"].drop_nulls()) >= {"A100", "V100", "T4"}


def test_requests_follow_the_app_profiles(demo):
    _, requests = demo
    assert set(requests["app_type"]) == {a.name for a in fleet.APP_PROFILES}
    ratio = PlanOptions().min_local_ram_gib_per_vcpu
    assert requests.filter(pl.col("ram_gib") < pl.col("vcpu") * ratio).height == 0
    assert requests["vcpu"].min() >= 1
    limits = {"low": 2, "medium": 3, "tolerant": 4}
    per_class = requests.group_by("latency_class").agg(pl.col("max_shards").max())
    for latency, most in per_class.iter_rows():
        assert most == limits[latency]
    db = requests.filter(pl.col("app_type") == "db")
    assert (db["replicas"] == 3).all() and set(db["storage_type"]) <= {"ssd", "nvme"}
    assert set(requests.filter(pl.col("app_type") == "cache")["latency_class"]) == {"low"}
    assert set(requests.filter(pl.col("app_type") == "batch")["latency_class"]) == {"tolerant"}
    assert requests["priority"].min() >= 1 and requests["priority"].max() <= 5
    assert 12 <= requests["user_id"].n_unique() <= fleet.N_USERS


def test_main_writes_a_seeded_fleet(tmp_path, capsys):
    fleet.main(["--out", str(tmp_path), "--hosts", "20", "--requests", "30", "--seed", "3"])
    hosts, requests = fleet.generate_fleet(20, 30, 3)
    assert_frame_equal(pl.read_parquet(tmp_path / fleet.HOST_FILE), hosts)
    assert_frame_equal(pl.read_parquet(tmp_path / fleet.REQUEST_FILE), requests)
    assert "ratio" in capsys.readouterr().out


def test_bad_sizes_are_rejected():
    with pytest.raises(ValueError):
        fleet.generate_fleet(1, 10, seed=0, zones=2)
    with pytest.raises(ValueError):
        fleet.generate_fleet(10, 0, seed=0)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n_hosts=st.integers(1, 40), n_requests=st.integers(1, 60), seed=st.integers(0, 2**32 - 1),
       zones=st.integers(1, 3))
def test_any_small_fleet_is_valid_and_placeable(n_hosts, n_requests, seed, zones):
    if n_hosts < zones:
        n_hosts = zones
    hosts, requests = fleet.generate_fleet(n_hosts, n_requests, seed, zones)
    _assert_valid(hosts, requests)
    assert hosts.height == n_hosts and requests.height == n_requests
    assert fleet.placeable_alone(hosts, requests).all()


def test_generator_does_not_read_the_shared_datasets():
    source = Path(fleet.__file__).read_text()
    assert "/work/shared" not in source and "read_csv" not in source


def test_seeded_requests_carry_untouched_memory_drawn_from_bitbrains_and_the_demo_leaves_it_to_the_nightly(demo):
    hosts, requests = fleet.generate_fleet(60, 400, seed=3)
    share = requests["untouched_ram_gib"] / requests["ram_gib"]
    assert (requests["untouched_ram_gib"] <= requests["ram_gib"]).all() and (requests["untouched_ram_gib"] >= 0).all()
    assert 0.15 <= float(share.median()) <= 0.35  # Bitbrains: median 0.268 of RAM never touched
    assert demo[1]["untouched_ram_gib"].is_null().all()
