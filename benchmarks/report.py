"""The report page's size and drawing time: the demo's nightly plan and a seeded 2,000-host × 5,000-request plan
(re-planned once against itself with 2 % of hosts drained, so the page has moves to draw), side by side.

Each plan is made through the CLI (`shardplan nightly`, `shardplan plan`), then `shardplan report` runs in its own
process and is timed from outside (start to exit, imports included); its peak memory is the child's max RSS. The
page's size is compared with the issue's limit (5 MB for the demo). The demo's figures are also written as PNG
files into benchmarks/results/report/ (the README shows one), and, where Chromium is installed, a full-page
screenshot of the demo's report taken by the browser test's code path.

    python benchmarks/report.py [--time-limit 30] [--big-time-limit 90] [--skip-big]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import print_table, results_path, write_json_atomic  # noqa: E402

DEMO_LIMIT_BYTES = 5_000_000
PICTURES = ROOT / "benchmarks" / "results" / "report"


_WRAPPER = ("import atexit, resource, runpy, sys\n"
            "atexit.register(lambda: sys.stderr.write('\\nPEAK_RSS_KB=%d\\n' % "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))\n"
            "sys.argv = ['shardplan'] + sys.argv[1:]\n"
            "runpy.run_module('shardplan', run_name='__main__')\n")


def _cli(*args: str) -> tuple[float, int, str]:
    """Run `shardplan ARGS` in a child process: (wall s, the child's own peak RSS in MiB, stdout)."""
    began = time.perf_counter()
    child = subprocess.run([sys.executable, "-c", _WRAPPER, *args], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - began
    if child.returncode != 0:
        raise RuntimeError(f"shardplan {' '.join(args[:2])} exited {child.returncode}: {child.stderr[-3000:]}")
    peak = int(child.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0]) // 1024
    return wall, peak, child.stdout


def measure(name: str, plan_dir: Path, page: Path, against: Path | None = None, png: Path | None = None) -> dict:
    """The page alone, timed; then, with `png`, the same command with --png (timed apart: it starts Chromium)."""
    args = ["report", str(plan_dir), "--out", str(page)] + (["--against", str(against)] if against else [])
    wall, peak, _ = _cli(*args)
    png_wall = _cli(*args, "--png", str(png))[0] if png else None
    from shardplan.plandir import read_plan_dir

    plan = read_plan_dir(plan_dir)
    html = page.read_text()
    figures = int(html.split("data-figures='")[1].split("'")[0])
    return {"plan": name, "hosts": plan.hosts.height, "requests": plan.requests.height, "parts": plan.shards.height,
            "figures": figures, "bytes": page.stat().st_size, "mb": round(page.stat().st_size / 1e6, 2),
            "report_wall_s": round(wall, 2), "peak_rss_mib": peak, "pngs": len(list(png.iterdir())) if png else 0,
            "with_png_wall_s": None if png_wall is None else round(png_wall, 2),
            "heat_map_rows": "racks" if plan.hosts.height > _host_rows_max() else "hosts"}


def _host_rows_max() -> int:
    from shardplan.planner.report.figures import HOST_ROWS_MAX

    return HOST_ROWS_MAX


def screenshot(page: Path, target: Path) -> bool:
    """A full-page screenshot in headless Chromium (the browser test's launch), when Chromium is installed."""
    from shardplan.planner.report.html import CHROMIUM_ARGS, find_chromium

    executable = find_chromium()
    if executable is None:
        return False
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=list(CHROMIUM_ARGS))
        try:
            tab = browser.new_page(viewport={"width": 1400, "height": 900})
            tab.goto(page.as_uri())
            tab.wait_for_selector("body[data-rendered]", timeout=60_000)
            tab.screenshot(path=str(target), full_page=False)
        finally:
            browser.close()
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=30.0, help="the demo nightly's --time-limit")
    parser.add_argument("--big-time-limit", type=float, default=90.0, help="each 2,000-host plan's --time-limit")
    parser.add_argument("--skip-big", action="store_true", help="only the demo")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="shardplan-report-bench-") as scratch:
        work = Path(scratch)
        _cli("nightly", "--out", str(work / "demo"), "--time-limit", f"{args.time_limit:g}")
        png = work / "png"
        rows.append(measure("demo nightly", work / "demo", work / "demo.html", png=png))
        nightly_page = work / "demo" / "report.html"
        rows[-1]["nightly_wrote_report"] = nightly_page.is_file()
        PICTURES.mkdir(parents=True, exist_ok=True)
        for old in PICTURES.glob("*.png"):
            old.unlink()
        for file in sorted(png.iterdir()):
            shutil.copy(file, PICTURES / file.name)
        rows[-1]["screenshot"] = screenshot(work / "demo.html", PICTURES / "screenshot.png")
        if not args.skip_big:
            import polars as pl

            from shardplan.data.generator import generate_fleet

            hosts, requests = generate_fleet(2000, 5000, seed=0)
            hosts.write_parquet(work / "hosts.parquet")
            requests.write_parquet(work / "requests.parquet")
            common = ["--requests", str(work / "requests.parquet"), "--time-limit", f"{args.big_time_limit:g}"]
            _cli("plan", "--hosts", str(work / "hosts.parquet"), "--out", str(work / "big"), *common)
            rows.append(measure("2,000 x 5,000 plan", work / "big", work / "big.html"))
            drained = hosts.with_columns(pl.when(pl.int_range(pl.len()) % 50 == 0).then(pl.lit("draining"))
                                         .otherwise(pl.col("status")).alias("status"))
            drained.write_parquet(work / "hosts2.parquet")
            _cli("plan", "--hosts", str(work / "hosts2.parquet"), "--out", str(work / "big2"),
                 "--previous", str(work / "big"), *common)
            rows.append(measure("2,000 x 5,000 re-plan --against", work / "big2", work / "big2.html",
                                against=work / "big"))
    for row in rows:
        row["within_5mb"] = row["bytes"] <= DEMO_LIMIT_BYTES
    columns = ("plan", "hosts", "requests", "parts", "figures", "mb", "within_5mb", "report_wall_s", "peak_rss_mib",
               "with_png_wall_s", "heat_map_rows")
    print_table("shardplan report: page size and drawing time (one process per report, imports included)", columns,
                [[row[c] for c in columns] for row in rows])
    write_json_atomic(results_path("report"), {"rows": rows, "time_limit_s": args.time_limit,
                                               "big_time_limit_s": args.big_time_limit,
                                               "pictures": str(PICTURES.relative_to(ROOT))})
    print(json.dumps({"written": str(results_path("report"))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
