"""benchmarks/vbp.py: .vbp/.vmp parsing, the tables built from them, and one real instance end to end."""
from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not an installed package

from benchmarks.common import shared_dir, write_json_atomic  # noqa: E402
from benchmarks.vbp import (  # noqa: E402
    BinType,
    PackingInstance,
    encode,
    first_fit_bins,
    host_table,
    largest_first,
    load_catalogue,
    parse_vbp,
    parse_vmp,
    read_instance,
    request_table,
    select_instances,
    solve_instance,
    solve_options,
    unusable_reason,
)
from shardplan.planner.engine import plan  # noqa: E402
from shardplan.planner.report.checker import check_plan  # noqa: E402

TINY_VBP = """3
10 10 10
3
4 0 5 2
6 6 6 1
1 2 3 1
"""

VMP_ONE_TYPE = """VMP_A900
4
500
400
3
70 20 8
4 79 3
500 400 10
"""

VMP_TWO_TYPES = """VMP_C900
9,1
16,32
32,128
2
6 26 2
3 33 10
"""


def test_parse_vbp_expands_copies(tmp_path: Path) -> None:
    path = tmp_path / "tiny.vbp"
    path.write_text(TINY_VBP)
    instance = parse_vbp(path)
    assert instance.name == "tiny"
    assert instance.bin_types == (BinType((10, 10, 10)),)
    assert instance.items.tolist() == [[4, 0, 5], [4, 0, 5], [6, 6, 6], [1, 2, 3]]
    assert instance.dims == 3 and instance.n_items == 4


def test_parse_vbp_rejects_wrong_counts(tmp_path: Path) -> None:
    path = tmp_path / "short.vbp"
    path.write_text("2\n10 10\n2\n1 1 1\n")  # declares two item types, gives one
    with pytest.raises(ValueError, match="2 item types"):
        parse_vbp(path)


def test_parse_vmp_one_host_type(tmp_path: Path) -> None:
    path = tmp_path / "a.vmp"
    path.write_text(VMP_ONE_TYPE)
    instance = read_instance(path)
    assert instance.name == "VMP_A900"
    assert instance.bin_types == (BinType((500, 400), 4),)
    assert instance.items.tolist() == [[70, 20], [4, 79], [500, 400]]  # third column ignored


def test_parse_vmp_two_host_types(tmp_path: Path) -> None:
    path = tmp_path / "c.vmp"
    path.write_text(VMP_TWO_TYPES)
    instance = parse_vmp(path)
    assert instance.bin_types == (BinType((16, 32), 9), BinType((32, 128), 1))
    assert instance.items.tolist() == [[6, 26], [3, 33]]
    assert largest_first(instance).bin_types == (BinType((32, 128), 1), BinType((16, 32), 9))


def test_parse_vmp_rejects_missing_vms(tmp_path: Path) -> None:
    path = tmp_path / "bad.vmp"
    path.write_text(VMP_ONE_TYPE.replace("\n3\n", "\n5\n", 1))
    with pytest.raises(ValueError, match="declares 5 VMs"):
        parse_vmp(path)


def test_tables_map_dimensions_in_resource_order(tmp_path: Path) -> None:
    path = tmp_path / "tiny.vbp"
    path.write_text(TINY_VBP.replace("4 0 5 2", "4 3 5 2"))  # every item has vcpu: no re-encoding
    encoding = encode(parse_vbp(path))
    assert encoding.vcpu_scale == 0
    hosts = host_table(encoding, [3])
    requests = request_table(encoding)
    assert hosts.height == 3 and requests.height == 4
    assert hosts["rack"].n_unique() == 1 and hosts["zone"].n_unique() == 1
    assert hosts["cost_per_hour"].to_list() == [1.0] * 3
    assert hosts.select("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu").row(0) == (10, 10, 10, 0.0, 0)
    assert requests.select("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu").row(2) == (6, 6, 6, 0.0, 0)
    assert requests["max_shards"].to_list() == [1] * 4 and requests["replicas"].to_list() == [1] * 4


def test_two_host_types_become_two_classes() -> None:
    instance = PackingInstance("c", (BinType((16, 32), 9), BinType((32, 128), 1)), np.array([[6, 26], [3, 33]]))
    hosts = host_table(encode(instance), [2, 1])
    assert hosts["host_class"].to_list() == ["type-a", "type-a", "type-b"]
    assert hosts.select("vcpu", "ram_gib").rows() == [(16, 32), (16, 32), (32, 128)]


def test_zero_vcpu_items_are_re_encoded_exactly() -> None:
    instance = PackingInstance("z", (BinType((10, 10, 10, 10, 10)),),
                               np.array([[0, 1, 1, 1, 2], [10, 0, 0, 0, 0], [3, 3, 3, 3, 3]]))
    encoding = encode(instance)
    assert encoding.vcpu_scale == 4
    assert encoding.items[:, 0].tolist() == [1, 41, 13]
    assert encoding.capacities[0][0] == 4 * 11 - 1
    assert (encoding.items[:, 0] > 0).all()


def _fits(sizes: np.ndarray, capacity: np.ndarray) -> bool:
    return bool((sizes.sum(axis=0) <= capacity).all())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), min_size=1, max_size=6), st.integers(1, 8))
def test_re_encoding_keeps_every_bin_feasible_or_not(items: list[tuple[int, int]], capacity: int) -> None:
    """A subset of items fits a bin before the vcpu re-encoding iff it fits after it."""
    sizes = np.array(items, dtype=np.int64)
    sizes[0, 0] = 0  # force the re-encoding
    instance = PackingInstance("h", (BinType((capacity, capacity)),), sizes)
    encoding = encode(instance)
    assert encoding.vcpu_scale == len(items) + 1
    original_capacity = np.array([capacity, capacity])
    for k in range(1, len(items) + 1):
        for subset in itertools.combinations(range(len(items)), k):
            rows = list(subset)
            assert _fits(sizes[rows], original_capacity) == _fits(encoding.items[rows, :2],
                                                                  encoding.capacities[0][:2])


def test_negative_sizes_are_reported_not_clamped() -> None:
    instance = PackingInstance("n", (BinType((100, 100)),), np.array([[51, -2], [49, 102]]))
    assert "negative" in unusable_reason(instance)
    with pytest.raises(ValueError, match="negative"):
        encode(instance)


def test_first_fit_sizes_the_fleet(tmp_path: Path) -> None:
    path = tmp_path / "tiny.vbp"
    path.write_text(TINY_VBP)
    instance = parse_vbp(path)
    # FFD: 6 6 6 opens bin 1; 4 0 5 → bin 1? 10 6 11 no → bin 2; 4 0 5 → bin 2 (8 0 10); 1 2 3 → bin 1 (7 8 9)
    assert first_fit_bins(encode(instance), [instance.n_items], solve_options(1.0)) == 2


def test_write_json_atomic_leaves_no_temporary(tmp_path: Path) -> None:
    target = write_json_atomic(tmp_path / "out" / "x.json", {"gap": float("nan"), "n": np.int64(3)})
    assert target.read_text().strip().startswith("{")
    assert '"gap": null' in target.read_text() and '"n": 3' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


SHARED = shared_dir()
needs_shared = pytest.mark.skipif(SHARED is None, reason="../shared (or $SHARDPLAN_SHARED) is absent")


@needs_shared
def test_catalogue_and_stratified_sample() -> None:
    catalogue = load_catalogue(SHARED)
    assert catalogue["optimum_bins"].null_count() == 0
    assert set(catalogue.filter(pl.col("family") != "VMP")["dims"].unique().to_list()) == {3, 5}
    sample, excluded = select_instances(catalogue, 1, ["New"], max_items=20, shared=SHARED)
    assert sample.height == 12  # 6 classes × 2 dims at n = 20
    assert sample.group_by("class", "dims").len()["len"].to_list() == [1] * 12
    assert excluded == []
    row = catalogue.filter(pl.col("instance") == "New/class1_20_3_0").row(0, named=True)
    assert (row["set"], row["class_label"], row["n"], row["index"], row["optimum_bins"]) == \
        ("New", "New class1 d3", 20, 0, 11)


@needs_shared
def test_real_instance_solves_and_passes_the_checker() -> None:
    """New class1_20_3_0 (optimum 11): a checked full packing, never below the optimum."""
    catalogue = load_catalogue(SHARED)
    entry = catalogue.filter(pl.col("instance") == "New/class1_20_3_0").row(0, named=True)
    instance = read_instance(SHARED / entry["file"])
    assert instance.n_items == 20 and instance.dims == 3
    options = solve_options(5.0)
    encoding = encode(instance)
    hosts, requests = host_table(encoding, [14]), request_table(encoding)
    result = plan(hosts, requests, options)
    assert check_plan(hosts, requests, result.shards, result.requests_out, options.to_dict()) == []
    assert result.plan_json["unplaced"] == 0
    bins = result.shards["host_id"].n_unique()
    assert 11 <= bins <= result.plan_json["baseline_ffd"]["active_host_cost_per_hour"]
    assert (result.shards.group_by("request_id").agg(pl.col("host_id").n_unique())["host_id"] == 1).all()

    row = solve_instance(entry, instance, options)
    assert not row["failed"], row["failure"]
    assert row["violations"] == 0 and row["bins"] >= 11 and row["gap"] >= 0
