"""The in-VM task scheduler: tasks tables are checked (row and column named), every policy's schedule obeys
DESIGN.md's rules under live load, the checker catches each broken rule, the lower bound bounds every policy,
and shardplan's router uses a split VM's parts by their speed where round-robin does not."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.executors.routing.load import LoadSeries, alibaba_2018_load
from shardplan.executors.routing.policies import POLICIES
from shardplan.executors.routing.schedule import check_schedule
from shardplan.executors.routing.simulate import lower_bound, route
from shardplan.executors.routing.tasks import (
    TaskError,
    alibaba_batch_tasks,
    validate_tasks,
    wfcommons_runs,
    wfcommons_tasks,
)
from shardplan.executors.routing.vm import Part, VirtualMachine, vm_from_plan
from shardplan.planner.cli import app
from shardplan.planner.report.export import write_plan_dir
from tests.fleets import hosts_table, requests_table

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets is beside the checkout in CI")


def two_part_vm(slow: float = 0.5) -> VirtualMachine:
    """A VM split over a fast 16-vcpu part and a slow 8-vcpu part in another rack."""
    return VirtualMachine("vm", (Part(0, 0, "fast", "r1", "z1", 16, 32.0, 0, 1.0, 100.0),
                                 Part(1, 1, "slow", "r2", "z1", 8, 16.0, 0, slow, 50.0)))


def tasks_frame(n: int = 40, chain: bool = False, **columns) -> pl.DataFrame:
    frame = pl.DataFrame({"task_id": [f"t{i}" for i in range(n)], "work_core_s": [10.0 + i % 7 for i in range(n)],
                          "cores": [1 + i % 2 for i in range(n)], "memory_gib": [1.0] * n,
                          "parents": [f"t{i - 1}" if chain and i else "" for i in range(n)],
                          "input_gib": [0.5] * n})
    return frame.with_columns(**{k: pl.Series(v) for k, v in columns.items()})


@pytest.mark.parametrize("edit, column, row, words", [
    (lambda f: f.with_columns(pl.when(pl.col("task_id") == "t0").then(pl.lit("t3")).otherwise(pl.col("parents"))
                              .alias("parents")), "parents", 1, "cycle"),
    (lambda f: f.with_columns(pl.when(pl.col("task_id") == "t2").then(pl.lit("nope")).otherwise(pl.col("parents"))
                              .alias("parents")), "parents", 3, "unknown parent 'nope'"),
    (lambda f: f.with_columns(pl.when(pl.col("task_id") == "t4").then(99).otherwise(pl.col("cores")).alias("cores")),
     "cores", 5, "largest part has 16"),
    (lambda f: f.with_columns(pl.lit(0).alias("gpu")).with_columns(
        pl.when(pl.col("task_id") == "t1").then(1).otherwise(pl.col("gpu")).alias("gpu")), "gpu", 2, "GPUs"),
    (lambda f: f.with_columns(pl.when(pl.col("task_id") == "t5").then(pl.lit("t4")).otherwise(pl.col("task_id"))
                              .alias("task_id")), "task_id", 5, "appears twice"),
    (lambda f: f.with_columns(pl.when(pl.col("task_id") == "t0").then(-1.0).otherwise(pl.col("work_core_s"))
                              .alias("work_core_s")), "work_core_s", 1, "> 0"),
])
def test_bad_tasks_name_row_and_column(edit, column, row, words):
    frame = edit(tasks_frame(6, chain=True))
    with pytest.raises(TaskError) as caught:
        validate_tasks(frame, "tasks.csv", max_cores=16, max_gpu=0)
    assert caught.value.row == row and caught.value.column == column and words in str(caught.value)


@pytest.mark.parametrize("header, column, words", [
    ("task_id,work_core_s,Cores", "Cores", "did you mean 'cores'"),
    ("task_id,work_core_s,gpus", "gpus", "did you mean 'gpu'"),
    ("task_id,work_core_s,parent", "parent", "did you mean 'parents'"),
    ("task_id,work_core_s,cores,cores ", "cores ", "appears twice"),
])
def test_misspelt_headers_are_refused_not_defaulted(tmp_path, header, column, words):
    """A misspelt column used to be kept as an extra one while the real column silently took its default
    (every task 1 core, no GPU, no parents)."""
    from shardplan.executors.routing.tasks import load_tasks

    path = tmp_path / "t.csv"
    path.write_text(header + "\n" + "\n".join(",".join(["a", "1.5", "2", "2"][:len(header.split(","))]) for _ in range(1)) + "\n")
    with pytest.raises(TaskError) as caught:
        load_tasks(path)
    assert caught.value.column == column and words in str(caught.value)


def test_padded_headers_are_read_and_ids_with_spaces_refused(tmp_path):
    from shardplan.executors.routing.tasks import load_tasks

    path = tmp_path / "t.csv"
    path.write_text("task_id, work_core_s , cores,parents\na,1.5,2,\nb,1.0,1,a\n")
    tasks = load_tasks(path)
    assert tasks.cores.tolist() == [2, 1] and tasks.parents == [[], [0]]
    path.write_text("task_id,work_core_s,parents\na,1.5,\nmy task,1.0,a\n")
    with pytest.raises(TaskError, match=r"row 2, column 'task_id': task id 'my task' holds a space"):
        load_tasks(path)


def test_text_cells_that_are_not_numbers_are_named(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("task_id,work_core_s,cores\na,1.5,1\nb,lots,1\n")
    from shardplan.executors.routing.tasks import load_tasks

    with pytest.raises(TaskError, match=r"row 2, column 'work_core_s': 'lots' is not a number"):
        load_tasks(path)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_every_policy_gives_a_valid_schedule_under_live_load(policy):
    vm = two_part_vm()
    tasks = validate_tasks(tasks_frame(60), "t", 16, 0)
    half = LoadSeries("test", np.array([0.0, 20.0, 60.0]), np.array([0.5, 0.0, 0.75]))
    replay = route(vm, tasks, policy, [half, half], seed=3)
    assert replay.unfinished == 0
    assert check_schedule(vm, tasks, replay.schedule) == []
    assert replay.makespan_s >= lower_bound(vm, tasks)["lower_bound_s"] - 1e-9
    # the load is honoured: a part never runs more cores than the load leaves, unless it runs a single task
    for part in vm.parts:
        runs = replay.schedule.filter(pl.col("host_id") == part.host_id)
        for moment in np.linspace(0, replay.makespan_s, 400):
            running = runs.filter((pl.col("start_s") <= moment) & (pl.col("end_s") > moment))
            room = part.vcpu - int(half.cores_taken(part.vcpu)[np.searchsorted(half.times, moment, "right") - 1])
            if running.height > 1:
                started = running["start_s"].max()
                room_then = part.vcpu - int(half.cores_taken(part.vcpu)[np.searchsorted(half.times, started, "right")
                                                                        - 1])
                assert running["cores"].sum() <= max(room, room_then)


def test_the_checker_catches_every_broken_rule():
    vm = two_part_vm()
    tasks = validate_tasks(tasks_frame(8, chain=True), "t", 16, 0)
    good = route(vm, tasks, "shardplan").schedule
    assert check_schedule(vm, tasks, good) == []
    early = good.with_columns(pl.when(pl.col("task_id") == "t3").then(pl.col("start_s") - 5).otherwise(pl.col("start_s"))
                              .alias("start_s"))
    assert any("before its parent 't2' ends" in p for p in check_schedule(vm, tasks, early))
    fast = good.with_columns(pl.when(pl.col("task_id") == "t1").then(pl.col("start_s") + 0.1).otherwise(pl.col("end_s"))
                             .alias("end_s"))
    assert any("its work needs" in p for p in check_schedule(vm, tasks, fast))
    crowded = pl.DataFrame({"task_id": [f"t{i}" for i in range(8)], "host_id": ["slow"] * 8, "shard": [1] * 8,
                            "start_s": [0.0] * 8, "end_s": [1000.0] * 8, "cores": [1, 2] * 4, "remote_gib": [0.0] * 8})
    problems = check_schedule(vm, tasks, crowded)
    assert any("cores in use" in p and "8 vcpu" in p for p in problems)
    assert any("before its parent" in p for p in problems)
    assert any("not scheduled" in p for p in check_schedule(vm, tasks, good.head(5)))
    gpu_tasks = validate_tasks(tasks_frame(2).with_columns(pl.Series("gpu", [1, 0])), "t")
    placed = pl.DataFrame({"task_id": ["t0", "t1"], "host_id": ["fast", "fast"], "shard": [0, 0],
                           "start_s": [0.0, 0.0], "end_s": [100.0, 100.0], "cores": [1, 2], "remote_gib": [0.0, 0.0]})
    assert any("needs 1 GPU" in p for p in check_schedule(vm, gpu_tasks, placed))


def test_shardplan_routes_by_speed_where_round_robin_does_not():
    vm = two_part_vm(slow=0.25)
    tasks = validate_tasks(tasks_frame(80), "t", 16, 0)
    rr, ours = route(vm, tasks, "round_robin"), route(vm, tasks, "shardplan")
    assert ours.makespan_s < 0.8 * rr.makespan_s
    on_slow = ours.schedule.filter(pl.col("host_id") == "slow").height
    assert on_slow < 0.5 * ours.schedule.height


def test_remote_memory_is_counted_and_slows_the_task():
    vm = VirtualMachine("vm", (Part(0, 0, "a", "r1", "z1", 8, 4.0, 0, 1.0, 50.0),))
    tasks = validate_tasks(pl.DataFrame({"task_id": ["big"], "work_core_s": [10.0], "memory_gib": [8.0]}), "t", 8, 0)
    replay = route(vm, tasks, "shardplan")
    row = replay.schedule.row(0, named=True)
    assert row["remote_gib"] == pytest.approx(4.0)  # 8 GiB asked, 4 local
    assert row["end_s"] - row["start_s"] == pytest.approx(10.0 * (1 + 0.5 * vm.distances.slowdown(2)))


@pytest.fixture(scope="module")
def split_plan(tmp_path_factory):
    from shardplan.planner.engine import plan
    from shardplan.planner.validate.options import PlanOptions

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 2}", "zone": "z1", "vcpu": 16, "ram_gib": 64,
                           "cpu_score": 1.0 + 0.25 * i} for i in range(3)])
    requests = requests_table({"request_id": "big", "vcpu": 40, "ram_gib": 96, "max_shards": 3})
    result = plan(hosts, requests, PlanOptions(time_limit_s=3, lp_bound=False))
    out = tmp_path_factory.mktemp("route") / "plan"
    write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    return out


def test_a_vm_is_read_from_its_plan(split_plan):
    vm = vm_from_plan(split_plan, "big")
    shards = pl.read_parquet(split_plan / "shards.parquet").filter(pl.col("vcpu") > 0)
    assert [p.host_id for p in vm.parts] == shards.sort("shard")["host_id"].to_list()
    assert vm.total_vcpu == 40 and len(vm.parts) >= 3
    assert {p.cpu_score for p in vm.parts} <= {1.0, 1.25, 1.5}
    whole = vm.one_host()
    assert len(whole.parts) == 1 and whole.total_vcpu == 40
    assert whole.fastest == pytest.approx(sum(p.vcpu * p.cpu_score for p in vm.parts) / 40)


def test_cli_route_compare_and_check_schedule(split_plan, tmp_path):
    tasks = tmp_path / "tasks.csv"
    tasks_frame(50, chain=False).write_csv(tasks)
    schedule = tmp_path / "s.parquet"
    result = CliRunner().invoke(app, ["route", str(split_plan), "big", "--tasks", str(tasks), "--compare",
                                      "--schedule", str(schedule), "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "r.json").read_text())
    assert [row["policy"] for row in figures["policies"]] == list(POLICIES)
    assert all(row["share_of_lower_bound"] >= 1 - 1e-9 for row in figures["policies"])
    result = CliRunner().invoke(app, ["check-schedule", str(split_plan), "big", "--tasks", str(tasks),
                                      "--schedule", str(schedule)])
    assert result.exit_code == 0 and "schedule ok: 50 tasks" in result.output
    broken = pl.read_parquet(schedule).with_columns(pl.col("end_s") * 0.0)
    broken.write_parquet(tmp_path / "bad.parquet")
    result = CliRunner().invoke(app, ["check-schedule", str(split_plan), "big", "--tasks", str(tasks),
                                      "--schedule", str(tmp_path / "bad.parquet")])
    assert result.exit_code == 1 and result.output.count("violation:") >= 50


def test_cli_bad_tasks_exit_2_and_write_nothing(split_plan, tmp_path):
    tasks = tmp_path / "tasks.csv"
    tasks_frame(5, chain=True).with_columns(pl.when(pl.col("task_id") == "t0").then(pl.lit("t4"))
                                            .otherwise(pl.col("parents")).alias("parents")).write_csv(tasks)
    out = tmp_path / "s.parquet"
    result = CliRunner().invoke(app, ["route", str(split_plan), "big", "--tasks", str(tasks), "--schedule", str(out)])
    assert result.exit_code == 2 and "row 1, column 'parents': cycle in parents" in result.output
    assert not out.exists()
    result = CliRunner().invoke(app, ["route", str(split_plan), "nobody", "--tasks", str(tasks)])
    assert result.exit_code == 2 and "'nobody' is not in requests.parquet" in result.output


@needs_shared
def test_real_traces_load_and_route():
    runs = wfcommons_runs(DATASETS)
    assert runs.height == 45 and runs["tasks"].sum() == 14661
    blast = runs.filter(pl.col("workflow_name").str.contains("blast"))["instance"][0]
    frame = wfcommons_tasks(DATASETS, blast)
    vm = two_part_vm()
    tasks = validate_tasks(frame, blast, 16, 0)
    loads = alibaba_2018_load(DATASETS, 2)
    assert all(0 <= s.util.min() and s.util.max() <= 1 and s.times[0] == 0 for s in loads)
    replay = route(vm, tasks, "shardplan", loads)
    assert replay.unfinished == 0 and check_schedule(vm, tasks, replay.schedule) == []
    assert alibaba_batch_tasks(DATASETS, every_row=True).height == 80553


def test_the_exact_window_schedule_is_valid_and_no_policy_beats_it():
    from shardplan.planner.routing import exact_schedule

    vm = VirtualMachine("vm", (Part(0, 0, "fast", "r1", "z1", 3, 32.0, 0, 1.0, 100.0),
                               Part(1, 1, "slow", "r2", "z1", 2, 16.0, 0, 0.6, 50.0)))
    frame = tasks_frame(10).with_columns(pl.Series("parents", ["", "t0", "t0", "t1", "t1 t2", "", "t5", "t6", "t3",
                                                               "t8 t4"]), pl.lit(0.0).alias("memory_gib"),
                                         pl.lit(2.0).alias("input_gib"))
    tasks = validate_tasks(frame, "w", 3, 0)
    solved, table = exact_schedule(vm, tasks, time_limit_s=20)
    assert solved.result.status.value == "optimal" and solved.result.gap == 0
    assert check_schedule(vm, tasks, table) == []
    slack = len(tasks) * 0.01  # the model rounds every time up to its 0.01 s grid
    for policy in POLICIES:
        assert route(vm, tasks, policy).makespan_s >= solved.result.objective - slack, policy
    assert solved.result.objective >= lower_bound(vm, tasks)["lower_bound_s"] - 1e-9


def test_pooled_load_is_the_vcpu_weighted_share():
    from shardplan.executors.routing.load import pooled

    a = LoadSeries("a", np.array([0.0, 10.0]), np.array([0.5, 1.0]))
    b = LoadSeries("b", np.array([0.0, 5.0]), np.array([0.0, 0.2]))
    one = pooled([a, b], [10, 30])
    assert list(one.times) == [0.0, 5.0, 10.0]
    assert one.util == pytest.approx([0.125, 0.125 + 0.15, 0.25 + 0.15])


@needs_shared
def test_cli_tasks_writes_a_trace_as_a_tasks_table(tmp_path):
    out = tmp_path / "t.csv"
    instance = "makeflow/blast/blast-chameleon-small-001.json"
    result = CliRunner().invoke(app, ["tasks", "wfcommons", "--instance", instance, "--datasets", str(DATASETS),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    from shardplan.executors.routing.tasks import load_tasks

    assert len(load_tasks(out)) == wfcommons_runs(DATASETS).filter(pl.col("instance") == instance)["tasks"][0]
    result = CliRunner().invoke(app, ["tasks", "nope", "--out", str(tmp_path / "x.csv")])
    assert result.exit_code == 2 and not (tmp_path / "x.csv").exists()


@needs_shared
def test_gpu_pods_route_only_to_parts_with_gpus():
    from shardplan.executors.routing.tasks import openb_gpu_tasks, scaled_to

    vm = VirtualMachine("vm", (Part(0, 0, "cpu", "r1", "z1", 32, 128.0, 0, 1.0, 100.0),
                               Part(1, 1, "gpu", "r2", "z1", 32, 128.0, 4, 1.0, 100.0)))
    frame = scaled_to(openb_gpu_tasks(DATASETS, limit=60), vm.max_part_vcpu, vm.max_part_gpu)
    assert frame.height == 60 and (frame["gpu"] > 0).all()
    tasks = validate_tasks(frame, "openb", vm.max_part_vcpu, vm.max_part_gpu)
    for policy in POLICIES:
        replay = route(vm, tasks, policy)
        assert set(replay.schedule["host_id"]) == {"gpu"} and check_schedule(vm, tasks, replay.schedule) == []


def test_cli_split_cost_lists_every_split_request(split_plan, tmp_path):
    tasks = tmp_path / "tasks.csv"
    tasks_frame(30).write_csv(tasks)
    out = tmp_path / "cost.parquet"
    result = CliRunner().invoke(app, ["split-cost", str(split_plan), "--tasks", str(tasks), "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out)
    assert table["request_id"].to_list() == ["big"] and table["parts"][0] == len(vm_from_plan(split_plan, "big").parts)
    row = table.row(0, named=True)
    assert row["split_cost"] == pytest.approx(row["split_makespan_s"] / row["one_host_makespan_s"])


def test_parts_too_small_are_never_offered_and_simultaneous_ends_free_the_right_cores():
    """A 4-core task never lands on a 2-vcpu part (an idle part is not room enough), and of two tasks that end
    half a microsecond apart with the same cores, each frees its own (the running heap is keyed by task)."""
    vm = VirtualMachine("vm", (Part(0, 0, "big", "r1", "z1", 8, 32.0, 2, 1.0, 100.0),
                               Part(1, 1, "small", "r2", "z1", 2, 8.0, 0, 1.0, 100.0)))
    frame = pl.DataFrame({"task_id": [f"t{i}" for i in range(12)], "cores": [4] * 6 + [1] * 6,
                          "work_core_s": [40.0, 40.0 + 2e-6, 80.0, 40.0, 40.0, 40.0] + [5.0] * 6,
                          "gpu": [1, 0, 1, 0, 0, 2] + [0] * 6})
    tasks = validate_tasks(frame, "t", 8, 2)
    for policy in POLICIES:
        replay = route(vm, tasks, policy)
        assert check_schedule(vm, tasks, replay.schedule) == [], policy
        big_tasks = replay.schedule.filter(pl.col("cores") == 4)
        assert set(big_tasks["host_id"]) == {"big"}, policy


def test_a_schedule_with_missing_or_nan_times_is_invalid():
    vm = two_part_vm()
    tasks = validate_tasks(tasks_frame(2), "t", 16, 0)
    good = route(vm, tasks, "shardplan").schedule
    bad = good.with_columns(pl.when(pl.col("task_id") == "t0").then(float("nan")).otherwise(pl.col("end_s"))
                            .alias("end_s"))
    assert any("finite" in p for p in check_schedule(vm, tasks, bad))


def test_the_topology_sets_the_distance_between_two_parts_and_to_remote_memory():
    from shardplan.executors.routing.vm import Distances, MemoryPart

    racks = {"r1": "z1", "r2": "z1", "r3": "z1"}
    rows = [("z1", "z1", 10.0, 25.0), ("r1", "r3", 200.0, 1.0)]
    far = Distances.from_options({"topology": rows, "other_rack_latency_us": 20.0,
                                  "other_rack_bandwidth_gbps": 10.0}, racks)
    plain = Distances()
    a, b, c = (Part(i, i, f"h{i}", rack, "z1", 8, 8.0, 0, 1.0, 50.0) for i, rack in enumerate(("r1", "r2", "r3")))
    assert plain.level(a, b) == plain.level(a, c) == 2          # no table: one other-rack class
    near, slow = far.level(a, b), far.level(a, c)
    assert far.latency_s(near) == pytest.approx(10e-6) and far.gbps(near) == 25.0   # the zone's row
    assert far.latency_s(slow) == pytest.approx(200e-6) and far.gbps(slow) == 1.0   # the pair's row
    assert far.transfer_s(1.0, slow) > 5 * plain.transfer_s(1.0, 2) > 10 * far.transfer_s(1.0, near)
    # slowdown by distance from the other-rack defaults: (10/20 + 10/25)/2 = 0.45 and (200/20 + 10/1)/2 = 10
    assert far.slowdown(near) == pytest.approx(0.45) and far.slowdown(slow) == pytest.approx(10.0)
    # remote memory: the part reaches the memory whose slowdown is least, not the lowest level number
    vm = VirtualMachine("vm", (a,), (MemoryPart("m3", "r3", 4.0), MemoryPart("m2", "r2", 4.0)), (), far)
    assert vm.remote_level(a) == near


def test_a_vm_read_from_a_plan_carries_its_topology(tmp_path):
    from shardplan.planner.engine import plan
    from shardplan.planner.validate.options import PlanOptions

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i}", "zone": "z1", "vcpu": 16, "ram_gib": 64}
                          for i in range(3)])
    requests = requests_table({"request_id": "big", "vcpu": 40, "ram_gib": 96, "max_shards": 3})
    topology = (("r0", "r1", 100.0, 2.0), ("r1", "r2", 100.0, 2.0), ("r0", "r2", 100.0, 2.0))
    result = plan(hosts, requests, PlanOptions(time_limit_s=3, lp_bound=False, topology=topology))
    out = tmp_path / "plan"
    write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json)
    vm = vm_from_plan(out, "big")
    assert len(vm.parts) == 3
    levels = vm.levels()
    assert all(vm.distances.gbps(levels[i][j]) == 2.0 for i in range(3) for j in range(3) if i != j)
    tasks = validate_tasks(tasks_frame(60, chain=True), "t", 16, 0)
    slow = route(vm, tasks, "shardplan").makespan_s
    plain = route(VirtualMachine(vm.request_id, vm.parts, vm.memory, vm.storage_hosts), tasks, "shardplan").makespan_s
    assert slow >= plain


def fan_out(n_small: int = 200, n_long: int = 8) -> pl.DataFrame:
    """A root, then many tiny tasks and a few long ones that all become ready when it ends (a BWA-like split)."""
    ids = ["root", *[f"s{i}" for i in range(n_small)], *[f"l{i}" for i in range(n_long)]]
    work = [1.0, *[0.5 + (i % 5) * 0.1 for i in range(n_small)], *[60.0 + 10 * i for i in range(n_long)]]
    return pl.DataFrame({"task_id": ids, "work_core_s": work, "cores": [1] * len(ids), "memory_gib": [0.0] * len(ids),
                         "parents": ["", *["root"] * (n_small + n_long)], "input_gib": [0.0] * len(ids)})


def test_task_orders_put_short_waiting_tasks_first_and_long_ones_longest_first():
    from shardplan.executors.routing.policies import get_policy
    from shardplan.executors.routing.simulate import Simulation

    vm = VirtualMachine("vm", (Part(0, 0, "a", "r1", "z1", 4, 64.0, 0, 1.0, 100.0),))
    order = get_policy("shardplan", vm, task_order="short_then_long", short_slowdown=2.0)
    keys = sorted([(order.order_key(0.0, run, 10.0), run) for run in (30.0, 1.0, 50.0, 3.0, 20.0)])
    assert [run for _, run in keys] == [1.0, 3.0, 50.0, 30.0, 20.0]  # shorter than the wait: SPT; the rest: LPT
    with pytest.raises(ValueError, match="task_order"):
        get_policy("shardplan", vm, task_order="nope")
    tasks = validate_tasks(fan_out(), "fan", 4, 0)

    def replay(name: str, **options):
        return Simulation(vm, tasks, get_policy("shardplan", vm, task_order=name, **options)).run()

    first_come, shortest = replay("deadline", deadline_factor=0.0), replay("deadline", deadline_factor=1e6)
    longest, split = replay("longest_first"), replay("short_then_long")
    # the tiny tasks do not wait behind the long ones (shortest first's p99, well below first come first served's) ...
    assert split.p99_slowdown < 0.7 * first_come.p99_slowdown
    assert split.p99_slowdown <= 1.01 * shortest.p99_slowdown
    # ... and the long ones go longest first (longest first's makespan, well below shortest first's)
    assert split.makespan_s < 0.95 * shortest.makespan_s
    assert split.makespan_s <= 1.01 * longest.makespan_s
    for r in (first_come, shortest, longest, split):
        assert not check_schedule(vm, tasks, r.schedule)
