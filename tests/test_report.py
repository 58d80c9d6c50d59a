"""`shardplan report`: the figures agree with the plan directory they are drawn from, the page is one
self-contained file, and in a real headless Chromium the demo's page loads with no console error and every
figure draws (CI installs Debian's chromium; there the browser tests must run, not skip)."""
from __future__ import annotations

import base64
import gzip
import json
import os
import re
import shutil

import polars as pl
import pytest
from typer.testing import CliRunner

from shardplan.plandir import read_plan_dir
from shardplan.planner.cli import app
from shardplan.planner.report.export import write_plan_dir
from shardplan.planner.report.figures import host_stages, plan_sections, split_section, utilisation_section
from shardplan.planner.report.html import CHROMIUM_ARGS, find_chromium
from shardplan.planner.report.page import write_plan_report
from shardplan.schema import RESOURCES
from tests.fleets import hosts_table, requests_table

DEMO_PAGE_MAX_BYTES = 5_000_000


def chromium() -> str:
    """The machine's Chromium or Chrome; in CI its absence fails the test instead of skipping it."""
    found = find_chromium()
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("CI must run the browser tests: no chromium on PATH (.ci/run installs Debian's chromium)")
    pytest.skip("no chromium on this machine (apt-get install chromium)")


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    """Six hosts in three racks, requests big enough that some are split and some stay unplaced."""
    from shardplan.planner.engine import plan
    from shardplan.planner.validate.options import PlanOptions

    hosts = hosts_table(*[{"host_id": f"h{i}", "rack": f"r{i % 3}", "zone": "z1", "vcpu": 16, "ram_gib": 64,
                           "used_vcpu": 4 * (i % 2), "used_ram_gib": 8} for i in range(6)])
    requests = requests_table(*[{"request_id": f"q{i:02d}", "vcpu": 12 if i < 4 else 4, "ram_gib": 24,
                                 "max_shards": 3, "app_type": "web" if i % 2 else "batch"} for i in range(12)],
                              {"request_id": "q99", "vcpu": 40, "ram_gib": 8, "max_shards": 1})  # no host has 40
    result = plan(hosts, requests, PlanOptions(time_limit_s=4, lp_bound=False))
    out = tmp_path_factory.mktemp("report") / "plan"
    write_plan_dir(out, hosts=hosts, requests=requests, shards=result.shards, requests_out=result.requests_out,
                   plan_json=result.plan_json, filters=result.filter_counts)
    return out


def unpack(page: str, element: str) -> str:
    packed = re.search(f"id='{element}'>([^<]*)</script>", page).group(1)
    return gzip.decompress(base64.b64decode(packed)).decode("utf-8")


def test_utilisation_stages_add_up_to_what_hosts_parquet_says(small_plan):
    plan = read_plan_dir(small_plan)
    stages = host_stages(plan).join(plan.hosts_out, on="host_id")
    for r in RESOURCES:
        assert (stages[f"{r}_existing"] + stages[f"{r}_shards"] - stages[f"{r}_used"]).abs().max() < 1e-9
        assert (stages[f"{r}_reserved_right"] if f"{r}_reserved_right" in stages.columns
                else stages[f"{r}_reserved"]).sum() == plan.hosts_out[f"{r}_reserved"].sum()
    # the heat map's "after" cell of a host is its used share
    heat = utilisation_section(plan).figures[0].figure
    after = heat.data[1]
    row = list(after.y).index("h0")
    h0 = plan.hosts_out.filter(pl.col("host_id") == "h0").row(0, named=True)
    assert after.z[row][0] == pytest.approx(min(h0["vcpu_used"] / h0["vcpu_capacity"], 1.0))


def test_large_fleets_are_drawn_one_row_per_rack(small_plan):
    plan = read_plan_dir(small_plan)
    heat = utilisation_section(plan, host_rows_max=3).figures[0].figure
    assert sorted(heat.data[0].y) == ["r0", "r1", "r2"]
    r0 = plan.hosts_out.join(plan.hosts.select("host_id", "rack"), on="host_id").filter(pl.col("rack") == "r0")
    assert heat.data[1].z[list(heat.data[1].y).index("r0")][1] == pytest.approx(
        min(r0["ram_gib_used"].sum() / r0["ram_gib_capacity"].sum(), 1.0))


def test_every_split_request_is_drawn_with_all_its_parts(small_plan):
    plan = read_plan_dir(small_plan)
    split = plan.requests_out.filter((pl.col("status") == "placed") & (pl.col("n_hosts") > 1))
    assert split.height > 0, "the fixture must split a request"
    figure = split_section(plan).figures[0].figure
    vcpu_bars = [trace for trace in figure.data if trace.xaxis in ("x", None)]
    drawn = {}
    for trace in vcpu_bars:
        for label, amount in zip(trace.y, trace.x):
            drawn[label.split(" ")[0]] = drawn.get(label.split(" ")[0], 0) + amount
    want = plan.shards.join(split.select("request_id"), on="request_id").group_by("request_id").agg(pl.col("vcpu").sum())
    assert drawn == dict(zip(want["request_id"], want["vcpu"]))


def test_page_is_one_self_contained_file_with_every_figure(small_plan, tmp_path):
    out = tmp_path / "r.html"
    written = write_plan_report(small_plan, out)
    page = out.read_text()
    assert written.bytes == len(page.encode())
    assert "http://" not in page.replace("http://www.w3.org", "") and "https://cdn" not in page
    assert "Plotly" in unpack(page, "plotly-js")[:5000] or "plotly" in unpack(page, "plotly-js")[:5000]
    figures = json.loads(unpack(page, "figures"))
    sections = plan_sections(read_plan_dir(small_plan))
    keys = [f"fig-{f.key}" for s in sections for f in s.figures]
    assert list(figures) == keys and written.figures == len(keys)
    for key in keys:
        assert f"id='{key}'" in page and figures[key]["data"], key
    assert {"fig-utilisation-heatmap", "fig-split-requests", "fig-unplaced-reasons", "fig-solver-progress"} <= set(keys)


def test_solver_progress_is_in_plan_json_and_ends_at_the_plan(small_plan):
    info = read_plan_dir(small_plan).plan
    points = info["progress"]
    assert [p["t_s"] for p in points] == sorted(p["t_s"] for p in points)
    assert points[-1]["phase"] == "final" and points[-1]["objective"] == pytest.approx(info["objective"])
    assert points[0]["phase"] == "warm_start"
    assert points[-1]["t_s"] <= info["budget"]["elapsed_s"] + 1e-6


def test_against_a_base_draws_what_moved(small_plan, tmp_path):
    from shardplan.planner.engine import plan
    from shardplan.planner.replan import load_current
    from shardplan.planner.validate.options import PlanOptions

    base = read_plan_dir(small_plan)
    hosts = base.hosts.with_columns(pl.when(pl.col("host_id") == "h1").then(pl.lit("draining"))
                                    .otherwise(pl.col("status")).alias("status"))
    # an empty host joins tonight, so what leaves h1 has somewhere to go on this full little fleet
    spare = hosts.filter(pl.col("host_id") == "h0").with_columns(pl.lit("h6").alias("host_id"),
                                                                 pl.lit(0).alias("used_vcpu"), pl.lit(0).alias("used_ram_gib"))
    hosts = pl.concat([hosts, spare.cast(hosts.schema)])
    current = load_current(small_plan / "shards.parquet", hosts, base.requests)
    result = plan(hosts, base.requests, PlanOptions(time_limit_s=4, lp_bound=False), current=current)
    edited = tmp_path / "edit"
    write_plan_dir(edited, hosts=hosts, requests=base.requests, shards=result.shards,
                   requests_out=result.requests_out, plan_json=result.plan_json, current=result.current,
                   moves=result.moves)
    # re-planned: "before" is everything that ran, "after" is hosts.parquet's used, split into kept and new parts
    stages = host_stages(read_plan_dir(edited)).join(read_plan_dir(edited).hosts_out, on="host_id")
    ran = current.shards.group_by("host_id").agg(pl.col("vcpu").sum().alias("ran"))
    stages = stages.join(ran, on="host_id", how="left").join(hosts.select("host_id", "used_vcpu"), on="host_id")
    assert (stages["vcpu_before"] - stages["used_vcpu"] - stages["ran"].fill_null(0)).abs().max() < 1e-9
    assert (stages["vcpu_existing"] + stages["vcpu_shards"] - stages["vcpu_used"]).abs().max() < 1e-9
    drained = stages.filter(pl.col("host_id") == "h1").row(0, named=True)
    assert drained["vcpu_before"] > drained["used_vcpu"] and drained["vcpu_shards"] == 0
    kept = result.shards.join(current.shards, on=["request_id", "host_id", "replica", "vcpu", "ram_gib",
                                                 "storage_gib", "gpu"], how="semi")["vcpu"].sum()
    assert stages["vcpu_existing"].sum() - stages["used_vcpu"].sum() == pytest.approx(kept)
    out = tmp_path / "r.html"
    written = CliRunner().invoke(app, ["report", str(edited), "--against", str(small_plan), "--out", str(out)])
    assert written.exit_code == 0, written.output
    figures = json.loads(unpack(out.read_text(), "figures"))
    moved = figures["fig-moves"]["data"][0]
    moved_parts = result.moves.filter(pl.col("kind") != "lost").height if result.moves is not None else 0
    assert dict(zip(moved["x"], moved["y"]))["moved"] >= 1 and moved_parts >= 1
    assert "h1" in set(base.shards["host_id"]) and "h1" not in set(result.shards["host_id"])


def test_bad_plan_dir_exits_2_and_writes_nothing(tmp_path):
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope"), "--out", str(out)])
    assert result.exit_code == 2 and "no such folder" in result.output and not out.exists()
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "plan.json").write_text("{}")
    result = CliRunner().invoke(app, ["report", str(tmp_path / "half"), "--out", str(out)])
    assert result.exit_code == 2 and "shards.parquet" in result.output and not out.exists()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "half"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is a directory" in result.output


@pytest.fixture(scope="module")
def demo_nightly(tmp_path_factory):
    """The README's first command: nightly on the embedded demo writes report.html. (Without the LP bound, whose
    solve time varies most, so that the page is never skipped for time on a loaded machine.)"""
    out = tmp_path_factory.mktemp("nightly") / "plan"
    result = CliRunner().invoke(app, ["nightly", "--out", str(out), "--time-limit", "30"],
                                env={"SHARDPLAN_LP_BOUND": "0"})
    assert result.exit_code == 0, result.output
    assert (out / "report.html").is_file(), result.output
    return out


def test_nightly_writes_its_report_with_forecast_and_history(demo_nightly):
    page = (demo_nightly / "report.html").read_text()
    assert len(page.encode()) <= DEMO_PAGE_MAX_BYTES
    figures = json.loads(unpack(page, "figures"))
    assert "fig-forecast" in figures and "fig-reservation-blocks" in figures
    names = {trace.get("name") for trace in figures["fig-forecast"]["data"]}
    assert {"history", "forecast", "forecast 10–90 %", "reserved blocks"} <= names
    history = pl.read_parquet(demo_nightly / "inputs" / "history.parquet")
    forecast = pl.read_parquet(demo_nightly / "forecast.parquet")
    assert history["ts"].max() < forecast["ts"].min()


def test_demo_report_renders_in_headless_chromium(demo_nightly, tmp_path):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    page_file = demo_nightly / "report.html"
    problems: list[str] = []
    shot = tmp_path / "report.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("request", lambda request: problems.append(f"network: {request.url}")
                    if not request.url.startswith(("file:", "data:", "blob:")) else None)
            page.goto(page_file.as_uri())
            page.wait_for_selector("body[data-rendered]", timeout=60_000)
            expected = int(page.get_attribute("body", "data-figures"))
            drawn = page.evaluate("""() => Array.from(document.querySelectorAll('div.figure')).map(d => ({
                id: d.id, svg: d.querySelectorAll('svg.main-svg').length,
                marks: d.querySelectorAll('g.trace path, g.trace rect, g.hm image, g.point path').length,
                height: d.getBoundingClientRect().height}))""")
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert problems == []
    assert int(page_file.read_text().split("data-figures='")[1].split("'")[0]) == expected == len(drawn) >= 8
    for figure in drawn:
        assert figure["svg"] >= 1 and figure["marks"] > 0 and figure["height"] > 100, figure
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 100_000
    if os.environ.get("SHARDPLAN_REPORT_SCREENSHOT"):
        shutil.copy(shot, os.environ["SHARDPLAN_REPORT_SCREENSHOT"])


def test_png_files_are_written_without_a_browser_window(small_plan, tmp_path):
    chromium()
    result = CliRunner().invoke(app, ["report", str(small_plan), "--out", str(tmp_path / "r.html"),
                                      "--png", str(tmp_path / "png")])
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "png").iterdir())
    sections = plan_sections(read_plan_dir(small_plan))
    assert [f.name for f in files] == [f"{i + 1:02d}-{f.key}.png" for i, f in
                                       enumerate(f for s in sections for f in s.figures)]
    for file in files:
        assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and file.stat().st_size > 5_000
