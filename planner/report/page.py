"""The report of a plan directory or a what-if run: sections → one HTML page (and PNG files), what
`shardplan report`, `shardplan nightly` (DIR/report.html) and `shardplan whatif` (OUT/report.html) call."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from shardplan.plandir import PlanDir, read_plan_dir

REPORT_S_FIXED = 1.5
REPORT_S_PER_KHOST = 0.5
REPORT_S_PER_SCENARIO = 0.3
"""What writing a plan's report is expected to take (seconds: reading the directory back, building the figures,
compressing the page), set aside in nightly's budget (and per scenario in whatif's); measured on 2 cores: 0.7 s
for the 240-host demo, 0.5 s for 2,000 hosts (drawn per rack) without the imports. Plotly is imported only when a
page is drawn."""


def report_seconds(n_hosts: int) -> float:
    return REPORT_S_FIXED + REPORT_S_PER_KHOST * n_hosts / 1000


@dataclass(frozen=True)
class Written:
    """What a report run wrote: the page, its size, and the PNG files (empty unless asked for)."""

    page: Path
    bytes: int
    figures: int
    pngs: list[Path]


def write_plan_report(plan_dir: str | Path | PlanDir, out: str | Path, against: str | Path | PlanDir | None = None,
                      png_dir: str | Path | None = None, host_rows_max: int | None = None) -> Written:
    """The report of one plan directory (with `against`, what changed from that base plan)."""
    from shardplan.planner.report.figures import HOST_ROWS_MAX, plan_sections
    from shardplan.planner.report.html import write_page, write_pngs

    plan = plan_dir if isinstance(plan_dir, PlanDir) else read_plan_dir(plan_dir)
    base = None if against is None else against if isinstance(against, PlanDir) else read_plan_dir(against)
    sections = plan_sections(plan, base, HOST_ROWS_MAX if host_rows_max is None else host_rows_max)
    info = plan.plan
    subtitle = (f"{plan.path} · status {info.get('status')} · {info.get('placed')} placed, {info.get('unplaced')} "
                f"unplaced · {plan.hosts.height:,} hosts" + (f" · against {base.path}" if base is not None else ""))
    size = write_page(out, "shardplan plan report", subtitle, sections)
    pngs = [] if png_dir is None else write_pngs(png_dir, sections)
    return Written(Path(out), size, sum(len(s.figures) for s in sections), pngs)


def write_whatif_report(out_dir: str | Path, comparison: pl.DataFrame, page: str | Path | None = None,
                        png_dir: str | Path | None = None) -> Written:
    """One page comparing a what-if run's scenarios side by side (OUT/report.html by default)."""
    from shardplan.planner.report.figures import whatif_sections
    from shardplan.planner.report.html import write_page, write_pngs

    out_dir = Path(out_dir)
    sections = whatif_sections(out_dir, comparison)
    target = Path(page) if page is not None else out_dir / "report.html"
    size = write_page(target, "shardplan what-if report", f"{out_dir} · {comparison.height - 1} scenarios", sections)
    pngs = [] if png_dir is None else write_pngs(png_dir, sections)
    return Written(target, size, sum(len(s.figures) for s in sections), pngs)
