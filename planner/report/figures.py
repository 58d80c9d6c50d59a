"""The figures of a plan's HTML report, built from a plan directory alone (`shardplan report`).

Each function takes a read plan directory (:class:`shardplan.plandir.PlanDir`) and returns a
:class:`Section`: a title, a few lines of text, Plotly figures and small tables. The page that holds them
is :mod:`shardplan.planner.report.html`; the same figures go to PNG files with `--png`.

Plotly, because one figure object gives both an interactive page (hover for the amounts behind every cell
and bar, zoom into a rack) and a static PNG through kaleido, and its heat maps, stacked bars and step lines
are the three shapes this report needs; its script (4.8 MB) is embedded compressed so the page opens offline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from shardplan.plandir import PlanDir
from shardplan.planner.report.diff import demand_weight, diff_plans
from shardplan.schema import RESOURCES

HOST_ROWS_MAX = 400
"""Above this many hosts the utilisation heat map shows one row per rack (sums over its hosts), not one per host:
a row per host stays about 4 px high up to here, and the page small (DESIGN.md fleets of 2,000 hosts: 100 racks)."""
SPLIT_SHOWN = 40
"""Split requests drawn part by part (the largest first); the rest are counted in the caption."""
UNPLACED_LISTED = 15
"""Unplaced requests listed by name (the highest priority × size first)."""
HISTORY_DAYS_SHOWN = 7
"""Days of history drawn before the forecast horizon."""

RESOURCE_LABELS = {"vcpu": "vCPU", "ram_gib": "RAM GiB", "storage_gib": "storage GiB", "net_gbps": "net Gbps",
                   "gpu": "GPU"}
STAGE_COLOURS = {"existing": "#9aa5b1", "shards": "#2b6cb0", "reserved": "#ed8936", "free": "#e2e8f0"}
TEMPLATE = "plotly_white"


@dataclass
class Figure:
    """One chart: a key (the PNG's name), its caption and the Plotly figure."""

    key: str
    caption: str
    figure: go.Figure


@dataclass
class Table:
    """A small table shown as HTML under a section's figures."""

    caption: str
    frame: pl.DataFrame


@dataclass
class Section:
    key: str
    title: str
    text: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


# --- helpers ------------------------------------------------------------------------------------------


def _parts_load(shards: pl.DataFrame | None, prefix: str) -> pl.DataFrame:
    """Per host, the sums of a shards-shaped table's resources (columns host_id, <prefix><resource>)."""
    if shards is None or shards.height == 0:
        return pl.DataFrame(schema={"host_id": pl.Utf8, **{f"{prefix}{r}": pl.Float64 for r in RESOURCES}})
    return shards.group_by("host_id").agg(*[pl.col(r).sum().cast(pl.Float64).alias(f"{prefix}{r}") for r in RESOURCES])


def _staying(current: pl.DataFrame | None, shards: pl.DataFrame) -> pl.DataFrame:
    """Per host, the parts of what ran that tonight's plan keeps exactly where and as they were (matched as a
    multiset on request, host, replica and amounts: DESIGN.md's definition of a part that did not move)."""
    from shardplan.planner.replan import PART_KEY

    key = ["request_id", *PART_KEY]
    if current is None or current.height == 0 or shards.height == 0:
        return _parts_load(None, "stay_")
    ran = current.group_by(key).agg(pl.len().alias("_n_ran"))
    now = shards.group_by(key).agg(pl.len().alias("_n_now"), pl.col("net_gbps").mean())
    both = ran.join(now, on=key).with_columns(pl.min_horizontal("_n_ran", "_n_now").alias("_n"))
    return both.group_by("host_id").agg(*[(pl.col(r) * pl.col("_n")).sum().cast(pl.Float64).alias(f"stay_{r}")
                                          for r in RESOURCES])


def host_stages(plan: PlanDir) -> pl.DataFrame:
    """Per host and resource: capacity; `before`, the load before tonight's plan (other tenants' load, plus all
    that ran when the plan is an edit of it); `existing`, the part of it still there after the plan (other
    tenants', and the running parts kept where they were); `shards`, tonight's parts that are new on the host
    (new requests, and running parts that moved in); `reserved`, the reserved blocks. existing + shards is what
    hosts.parquet counts as used. Columns host_id, zone, rack, host_class, status, <r>_capacity, <r>_before,
    <r>_existing, <r>_shards, <r>_reserved."""
    # capacity and reserved as hosts.parquet states them; the other tenants' load from the inputs
    frame = plan.hosts.select("host_id", "zone", "rack", "host_class", "status",
                              *[pl.col(f"used_{r}").cast(pl.Float64).alias(f"{r}_other") for r in RESOURCES]).join(
        plan.hosts_out.select("host_id", *[pl.col(f"{r}_{kind}").cast(pl.Float64)
                                           for r in RESOURCES for kind in ("capacity", "reserved")]),
        on="host_id", how="left")
    frame = (frame.join(_parts_load(plan.current, "ran_"), on="host_id", how="left")
             .join(_parts_load(plan.shards, "now_"), on="host_id", how="left")
             .join(_staying(plan.current, plan.shards), on="host_id", how="left").fill_null(0.0))
    columns = []
    for r in RESOURCES:
        columns += [(pl.col(f"{r}_other") + pl.col(f"ran_{r}")).alias(f"{r}_before"),
                    (pl.col(f"{r}_other") + pl.col(f"stay_{r}")).alias(f"{r}_existing"),
                    (pl.col(f"now_{r}") - pl.col(f"stay_{r}")).alias(f"{r}_shards")]
    return (frame.with_columns(columns)
            .select("host_id", "zone", "rack", "host_class", "status",
                    *[f"{r}_{kind}" for r in RESOURCES for kind in STAGE_KINDS])
            .sort("zone", "rack", "host_id"))


STAGE_KINDS = ("capacity", "before", "existing", "shards", "reserved")


def _share(used: pl.Expr, capacity: pl.Expr) -> pl.Expr:
    return pl.when(capacity > 0).then(used / capacity).otherwise(None)


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:,.{digits}f}"


def _height(rows: int, per_row: float, base: int = 160, low: int = 320, high: int = 2400) -> int:
    return int(min(max(base + per_row * rows, low), high))


# --- summary ------------------------------------------------------------------------------------------


def summary_section(plan: PlanDir) -> Section:
    """The plan's status line as a table: what every solver-facing result carries, and the counts."""
    info = plan.plan
    reserved = info.get("reserved")
    rows = [("status", str(info.get("status"))), ("objective ($/h-equivalent)", _fmt(info.get("objective"), 2)),
            ("best bound", _fmt(info.get("best_bound"), 2)),
            ("gap", "—" if info.get("gap") is None else f"{100 * info['gap']:.2f} %"),
            ("wall s", _fmt(info.get("wall_s"), 2)), ("solver", str(info.get("solver"))),
            ("placed requests", str(info.get("placed"))), ("unplaced requests", str(info.get("unplaced"))),
            ("hosts", f"{plan.hosts.height:,} ({int(plan.hosts_out['active'].sum()):,} active)"),
            ("parts", f"{plan.shards.height:,}")]
    if reserved is not None:
        rows.append(("reservation blocks held", str(reserved)))
    if plan.plan.get("migration"):
        m = plan.plan["migration"]
        rows.append(("moves (mandatory / voluntary requests)",
                     f"{m.get('mandatory_requests', 0)} / {m.get('voluntary_requests', 0)}"))
    frame = pl.DataFrame({"figure": [r[0] for r in rows], "value": [r[1] for r in rows]})
    where = str(plan.path) if plan.path else "plan"
    return Section("summary", "Plan", [f"Plan directory {where}, made by shardplan {info.get('version', '?')}."],
                   tables=[Table("What plan.json says", frame)])


# --- fleet utilisation --------------------------------------------------------------------------------


def utilisation_section(plan: PlanDir, host_rows_max: int = HOST_ROWS_MAX) -> Section:
    """Heat maps of utilisation per host (or per rack on large fleets) and resource, before tonight's plan and
    after it (with the reserved blocks), and the fleet's capacity by zone split into existing load, new shards,
    reservations and free room."""
    stages = host_stages(plan)
    by_rack = stages.height > host_rows_max
    if by_rack:
        rows = (stages.group_by("zone", "rack").agg(pl.len().alias("hosts"),
                                                   pl.format("{} hosts, {} not up", pl.len(),
                                                             (pl.col("status") != "up").sum()).alias("note"),
                                                   *[pl.col(c).sum() for c in stages.columns
                                                     if c.split("_")[-1] in STAGE_KINDS])
                .sort("zone", "rack").with_columns(pl.col("rack").alias("label")))
    else:
        rows = stages.with_columns(pl.col("host_id").alias("label"), pl.lit(1).alias("hosts"),
                                   pl.format("{}, {}", "host_class", "status").alias("note"))
    has_reserved = any(rows[f"{r}_reserved"].sum() > 0 for r in RESOURCES)
    panels = [("before tonight", ("before",)), ("after tonight's plan", ("existing", "shards"))]
    if has_reserved:
        panels.append(("after: + reserved blocks", ("existing", "shards", "reserved")))
    labels = rows["label"].to_list()
    resources = [RESOURCE_LABELS[r] for r in RESOURCES]
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.02,
                        subplot_titles=[title for title, _ in panels])
    for col, (_title, kinds) in enumerate(panels, start=1):
        z, text = [], []
        for row in rows.iter_rows(named=True):
            z_row, text_row = [], []
            for r in RESOURCES:
                used = sum(row[f"{r}_{k}"] for k in kinds)
                cap = row[f"{r}_capacity"]
                z_row.append(min(used / cap, 1.0) if cap > 0 else None)
                text_row.append(f"{_fmt(used)} of {_fmt(cap)} ({100 * used / cap:.0f} %)" if cap > 0 else "none")
            z.append(z_row)
            text.append(text_row)
        notes = rows["note"].to_list()
        fig.add_trace(go.Heatmap(z=z, x=resources, y=labels, zmin=0, zmax=1, colorscale="YlOrRd",
                                 text=text, customdata=[[n] * len(RESOURCES) for n in notes],
                                 hovertemplate="%{y} (%{customdata})<br>%{x}: %{text}<extra></extra>",
                                 showscale=col == len(panels), colorbar={"title": "used", "tickformat": ".0%"}),
                      row=1, col=col)
    # rack boundaries as the axis ticks (a label per host would be unreadable)
    if by_rack:
        ticks = labels
    else:
        first = rows.with_row_index("i").group_by("rack", maintain_order=True).agg(pl.col("i").first(),
                                                                                    pl.col("label").first())
        ticks = first["label"].to_list()
    fig.update_yaxes(autorange="reversed", tickmode="array", tickvals=ticks,
                     ticktext=ticks if by_rack else first["rack"].to_list(), tickfont={"size": 9})
    fig.update_layout(template=TEMPLATE, height=_height(len(labels), 5 if not by_rack else 14),
                      margin={"l": 90, "r": 20, "t": 50, "b": 40})
    unit = f"one row per rack ({stages.height:,} hosts > {host_rows_max})" if by_rack else "one row per host"
    heat = Figure("utilisation-heatmap", f"Used share of each resource, {unit}, zone and rack in order: before "
                  "tonight's plan (other tenants' load, and what ran when the plan is an edit of it) and after it. "
                  "Hover for the amounts and the host's status.", fig)
    return Section("utilisation", "Fleet utilisation", figures=[heat, _zone_bars(stages)])


def _zone_bars(stages: pl.DataFrame) -> Figure:
    zones = stages.group_by("zone").agg(*[pl.col(c).sum() for c in stages.columns
                                          if c.split("_")[-1] in STAGE_KINDS]).sort("zone")
    fig = make_subplots(rows=1, cols=len(RESOURCES), subplot_titles=[RESOURCE_LABELS[r] for r in RESOURCES],
                        horizontal_spacing=0.04)
    for col, r in enumerate(RESOURCES, start=1):
        capacity = zones[f"{r}_capacity"]
        parts = {"existing": zones[f"{r}_existing"], "shards": zones[f"{r}_shards"], "reserved": zones[f"{r}_reserved"]}
        parts["free"] = (capacity - parts["existing"] - parts["shards"] - parts["reserved"]).clip(lower_bound=0)
        for kind, values in parts.items():
            share = [v / c if c > 0 else 0.0 for v, c in zip(values.to_list(), capacity.to_list())]
            fig.add_trace(go.Bar(x=zones["zone"].to_list(), y=share, name=kind, legendgroup=kind, showlegend=col == 1,
                                 marker_color=STAGE_COLOURS[kind], customdata=values.to_list(),
                                 hovertemplate=f"%{{x}} {kind}: %{{customdata:,.1f}} {RESOURCE_LABELS[r]}"
                                               " (%{y:.0%})<extra></extra>"),
                          row=1, col=col)
    fig.update_layout(template=TEMPLATE, barmode="stack", height=340, yaxis_tickformat=".0%",
                      margin={"l": 50, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    return Figure("utilisation-zones", "Capacity by zone after tonight's plan: existing load (other tenants', and "
                  "running parts kept where they were), tonight's new parts (new requests, and running parts that "
                  "moved in), reserved blocks and what is left free.", fig)


# --- the sharded requests -----------------------------------------------------------------------------


def split_section(plan: PlanDir, shown: int = SPLIT_SHOWN) -> Section:
    """Each request placed on more than one host, its parts by host and resource, coloured by the host's class."""
    real = plan.requests.filter(pl.col("kind") == "request") if "kind" in plan.requests.columns else plan.requests
    split = plan.requests_out.filter((pl.col("status") == "placed") & (pl.col("n_hosts") > 1)).join(
        real.select("request_id", "app_type", "vcpu", "ram_gib", "storage_gib", "gpu"), on="request_id")
    section = Section("split", "Sharded requests")
    if split.height == 0:
        section.text.append("No request was split: every placed request is on one host.")
        return section
    split = split.with_columns((pl.col("vcpu") + pl.col("ram_gib") / 4 + pl.col("storage_gib") / 100 +
                                8 * pl.col("gpu")).alias("_size")).sort(["_size", "request_id"],
                                                                        descending=[True, False])
    chosen = split.head(shown)
    parts = (plan.shards.join(chosen.select("request_id", "n_hosts"), on="request_id")
             .group_by("request_id", "host_id").agg(*[pl.col(r).sum() for r in ("vcpu", "ram_gib", "storage_gib",
                                                                                 "gpu")],
                                                     pl.col("role").unique().sort().str.join(", ").alias("roles"))
             .join(plan.hosts.select("host_id", "host_class"), on="host_id", how="left")
             .join(chosen.select("request_id", "n_hosts", "_size"), on="request_id")
             .sort(["_size", "request_id", "host_id"], descending=[True, False, False]))
    order = [f"{rid} ({n})" for rid, n in zip(chosen["request_id"], chosen["n_hosts"])]
    parts = parts.with_columns(pl.format("{} ({})", "request_id", "n_hosts").alias("label"))
    shown_resources = ("vcpu", "ram_gib", "storage_gib", "gpu")
    fig = make_subplots(rows=1, cols=len(shown_resources), shared_yaxes=True, horizontal_spacing=0.03,
                        subplot_titles=[RESOURCE_LABELS[r] for r in shown_resources])
    classes = sorted(parts["host_class"].fill_null("?").unique().to_list())
    palette = ["#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#319795", "#b7791f", "#718096"]
    for col, r in enumerate(shown_resources, start=1):
        for i, cls in enumerate(classes):
            these = parts.filter(pl.col("host_class").fill_null("?") == cls)
            fig.add_trace(go.Bar(y=these["label"].to_list(), x=these[r].to_list(), orientation="h", name=f"{cls} node",
                                 legendgroup=cls, showlegend=col == 1, marker_color=palette[i % len(palette)],
                                 marker_line={"color": "white", "width": 1},
                                 customdata=list(zip(these["host_id"].to_list(), these["roles"].to_list())),
                                 hovertemplate="%{y} on %{customdata[0]} (" + cls + "): %{x:,} "
                                               + RESOURCE_LABELS[r] + "<br>%{customdata[1]}<extra></extra>"),
                          row=1, col=col)
    fig.update_yaxes(categoryorder="array", categoryarray=list(reversed(order)), tickfont={"size": 9})
    fig.update_layout(template=TEMPLATE, barmode="stack", height=_height(len(order), 20),
                      margin={"l": 120, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.08})
    more = f"; {split.height - shown} smaller ones are in shards.parquet" if split.height > shown else ""
    section.text.append(f"{split.height} of {int((plan.requests_out['status'] == 'placed').sum())} placed requests "
                        f"are split across hosts (in brackets: how many){more}.")
    section.figures.append(Figure("split-requests", "Each split request's parts: one segment per host, coloured by "
                                  "the host's class (a storage node holds the disk, a GPU node the GPUs, ...); "
                                  "storage includes the replicas.", fig))
    return section


# --- unplaced -----------------------------------------------------------------------------------------


def read_filters(plan: PlanDir) -> pl.DataFrame | None:
    """filters.parquet when the plan directory has one."""
    from shardplan.plandir import FILTERS_FILE

    if plan.path is None or not (plan.path / FILTERS_FILE).is_file():
        return None
    return pl.read_parquet(plan.path / FILTERS_FILE)


def unplaced_section(plan: PlanDir) -> Section:
    """Unplaced requests grouped by reason, and what each candidate filter ruled out."""
    section = Section("unplaced", "Unplaced requests")
    requests = plan.requests
    out = plan.requests_out.join(requests.select("request_id", "app_type", "priority", "vcpu", "ram_gib", "gpu",
                                                 *(["kind"] if "kind" in requests.columns else [])),
                                 on="request_id", how="left")
    if "kind" not in out.columns:
        out = out.with_columns(pl.lit("request").alias("kind"))
    unplaced = out.filter(pl.col("status") == "unplaced").with_columns(
        pl.col("reason").fill_null("unknown").str.split(":").list.first().str.strip_chars().alias("why"),
        pl.when(pl.col("kind") == "reservation").then(pl.lit("reservation blocks")).otherwise(pl.lit("requests"))
        .alias("what"))
    if unplaced.height == 0:
        section.text.append("Every request was placed.")
    else:
        grouped = unplaced.group_by("why", "what").agg(pl.len().alias("n"),
                                                        pl.col("request_id").sort().head(5).str.join(", ").alias("ex"))
        totals = grouped.group_by("why").agg(pl.col("n").sum()).sort("n")
        fig = go.Figure()
        for what, colour in (("requests", "#c53030"), ("reservation blocks", "#ed8936")):
            these = grouped.filter(pl.col("what") == what)
            if these.height:
                fig.add_trace(go.Bar(y=these["why"].to_list(), x=these["n"].to_list(), orientation="h", name=what,
                                     marker_color=colour, customdata=these["ex"].to_list(),
                                     hovertemplate="%{y}: %{x} " + what + "<br>e.g. %{customdata}<extra></extra>"))
        fig.update_yaxes(categoryorder="array", categoryarray=totals["why"].to_list())
        fig.update_layout(template=TEMPLATE, barmode="stack", height=_height(totals.height, 40, 120, 260, 900),
                          margin={"l": 220, "r": 20, "t": 30, "b": 40}, xaxis_title="count")
        section.figures.append(Figure("unplaced-reasons", "Unplaced requests and reservation blocks by reason.", fig))
        listed = (unplaced.filter(pl.col("kind") == "request")
                  .with_columns(demand_weight().alias("weight"))
                  .sort(["weight", "request_id"], descending=[True, False]).head(UNPLACED_LISTED)
                  .select("request_id", "app_type", "priority", "vcpu", "ram_gib", "gpu", "reason"))
        if listed.height:
            section.tables.append(Table(f"The {listed.height} unplaced requests that weigh most in the objective "
                                        "(priority × size)", listed))
    filters = read_filters(plan)
    if filters is not None and filters.height:
        unplaced_ids = unplaced.select("request_id") if unplaced.height else pl.DataFrame(schema={"request_id": pl.Utf8})
        per = (filters.with_columns(pl.col("request_id").is_in(unplaced_ids["request_id"].implode()).alias("unplaced"))
               .group_by("filter", "reason").agg(pl.col("request_id").n_unique().alias("requests"),
                                                 pl.col("request_id").filter(pl.col("unplaced")).n_unique()
                                                 .alias("unplaced_requests"),
                                                 pl.col("hosts").median().alias("median_hosts_dropped"),
                                                 pl.col("hosts").sum().alias("host_drops"))
               .sort("requests"))
        labels = [f"{f}: {r}" for f, r in zip(per["filter"], per["reason"])]
        fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03,
                            subplot_titles=["requests it ruled hosts out for", "median hosts ruled out per request"])
        fig.add_trace(go.Bar(y=labels, x=per["requests"].to_list(), orientation="h", name="all requests",
                             marker_color="#4a5568"), row=1, col=1)
        fig.add_trace(go.Bar(y=labels, x=per["unplaced_requests"].to_list(), orientation="h",
                             name="of them unplaced", marker_color="#c53030"), row=1, col=1)
        fig.add_trace(go.Bar(y=labels, x=per["median_hosts_dropped"].to_list(), orientation="h", showlegend=False,
                             marker_color="#718096", customdata=per["host_drops"].to_list(),
                             hovertemplate="%{y}: median %{x} hosts, %{customdata:,} in all<extra></extra>"),
                      row=1, col=2)
        fig.update_layout(template=TEMPLATE, barmode="group", height=_height(per.height, 50, 120, 280, 900),
                          margin={"l": 280, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.2})
        section.figures.append(Figure("filters", "What each candidate filter ruled out (filters.parquet): for how "
                                      "many requests, how many of them stayed unplaced, and how many hosts.", fig))
    return section


# --- objective and solver -----------------------------------------------------------------------------


TERM_LABELS = {"unplaced_penalty": "unplaced penalty", "active_host_cost_per_hour": "active hosts' cost",
               "spread_penalty": "spread penalty", "move_cost": "move cost"}


def solver_section(plan: PlanDir) -> Section:
    """The objective's terms and the search's progress: the best plan's objective and the bounds over time."""
    info = plan.plan
    section = Section("solver", "Objective and search")
    terms = info.get("objective_terms") or {}
    names = [k for k in TERM_LABELS if k in terms]
    if names:
        values = [float(terms[k] or 0.0) for k in names]
        fig = go.Figure(go.Bar(y=[TERM_LABELS[k] for k in names], x=[max(v, 1e-3) for v in values], orientation="h",
                               text=[_fmt(v, 2) for v in values], textposition="outside",
                               marker_color=["#c53030", "#2b6cb0", "#805ad5", "#dd6b20"][:len(names)],
                               customdata=values, hovertemplate="%{y}: %{customdata:,.2f} $/h<extra></extra>"))
        fig.update_xaxes(type="log", title="$/h-equivalent (log scale)")
        fig.update_layout(template=TEMPLATE, height=260, margin={"l": 140, "r": 60, "t": 30, "b": 50})
        section.figures.append(Figure("objective-terms", f"The objective's terms (total {_fmt(terms.get('total'), 2)} "
                                      "$/h-equivalent).", fig))
    points = info.get("progress") or []
    if points:
        fig = go.Figure()
        incumbent, best = [], math.inf
        for p in points:  # the best plan so far: a CP-SAT solution worse than the hint it started from is not kept
            if p.get("objective") is not None:
                best = p["objective"] if p["phase"] == "final" else min(best, p["objective"])
                incumbent.append({**p, "objective": best})
        fig.add_trace(go.Scatter(x=[p["t_s"] for p in incumbent], y=[p["objective"] for p in incumbent],
                                 mode="lines+markers", line_shape="hv", name="best plan's objective",
                                 text=[p["phase"] for p in incumbent],
                                 hovertemplate="%{text} at %{x:.2f} s: %{y:,.1f}<extra></extra>"))
        for phase, name, colour in (("cp_sat", "CP-SAT bound (over its candidates)", "#38a169"),
                                    ("lp_bound", "LP relaxation bound", "#805ad5")):
            these = [p for p in points if p["phase"] == phase and p.get("bound") is not None]
            if these:
                fig.add_trace(go.Scatter(x=[p["t_s"] for p in these], y=[p["bound"] for p in these],
                                         mode="markers+lines" if phase == "cp_sat" else "markers", name=name,
                                         marker={"color": colour, "size": 9},
                                         hovertemplate=name + " at %{x:.2f} s: %{y:,.1f}<extra></extra>"))
        if info.get("best_bound") is not None:
            fig.add_hline(y=info["best_bound"], line_dash="dash", line_color="#718096",
                          annotation_text=f"reported bound {_fmt(info['best_bound'])} "
                                          f"(gap {100 * (info.get('gap') or 0):.1f} %)")
        fig.update_layout(template=TEMPLATE, height=360, xaxis_title="seconds since the plan's budget started",
                          yaxis_title="$/h-equivalent", margin={"l": 80, "r": 20, "t": 30, "b": 50},
                          legend={"orientation": "h", "y": -0.25})
        section.figures.append(Figure("solver-progress", "The best plan's objective after each phase (warm start, "
                                      "ruin and recreate, each CP-SAT solution, LNS, the final plan) and the bounds "
                                      "known at those moments (plan.json progress).", fig))
    phases = (info.get("budget") or {}).get("phases") or []
    if phases:
        frame = pl.DataFrame([{k: p.get(k) for k in ("phase", "wall_s", "granted_s", "stopped_by")} for p in phases],
                             schema={"phase": pl.Utf8, "wall_s": pl.Float64, "granted_s": pl.Float64,
                                     "stopped_by": pl.Utf8})
        section.tables.append(Table("The search budget's phases (seconds)", frame))
    return section


# --- what moved, against a base plan ------------------------------------------------------------------


def moves_section(base: PlanDir, plan: PlanDir) -> Section:
    """What changed from BASE to this plan: parts by kind and reason, and the cost, demand and utilisation deltas."""
    diff = diff_plans(base, plan)
    section = Section("moves", "Against the base plan")
    summary = diff.summary()
    section.text.append(f"Base {diff.plan_a}. " + ("This plan is an edit of what ran (its moves.parquet gives the "
                                                   "reasons); only the running requests' changes are counted."
                                                   if diff.incremental else "Every part that changed is counted."))
    kinds = ("moved", "added", "removed", "resized")
    by_reason = diff.by_reason if diff.by_reason is not None else pl.DataFrame(schema={"reason": pl.Utf8})
    fig = make_subplots(rows=1, cols=2, column_widths=[0.3, 0.7], horizontal_spacing=0.25,
                        subplot_titles=["parts by kind", "parts by reason"])
    fig.add_trace(go.Bar(x=list(kinds), y=[summary[k] for k in kinds], marker_color="#2b6cb0", showlegend=False,
                         hovertemplate="%{x}: %{y} parts<extra></extra>"), row=1, col=1)
    if by_reason.height:
        shown = by_reason.head(15).sort("parts")
        fig.add_trace(go.Bar(y=[str(r) for r in shown["reason"].to_list()], x=shown["parts"].to_list(),
                             orientation="h", marker_color="#dd6b20", showlegend=False,
                             customdata=list(zip(shown["requests"].to_list(), shown["gib"].to_list())),
                             hovertemplate="%{y}: %{x} parts, %{customdata[0]} requests, %{customdata[1]:,} GiB"
                                           "<extra></extra>"), row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=_height(min(by_reason.height, 15), 28, 120, 320, 700),
                      margin={"l": 60, "r": 20, "t": 50, "b": 40})
    section.figures.append(Figure("moves", "Parts that changed host, appeared, disappeared or changed size, and why.",
                                  fig))
    util = diff.utilisation
    fig = go.Figure()
    for suffix, name, colour in (("a", "base", "#9aa5b1"), ("b", "this plan", "#2b6cb0")):
        fig.add_trace(go.Bar(x=[RESOURCE_LABELS[r] for r in util["resource"]], y=util[f"utilisation_{suffix}"].to_list(),
                             name=name, marker_color=colour, hovertemplate=name + " %{x}: %{y:.1%}<extra></extra>"))
    fig.update_layout(template=TEMPLATE, barmode="group", height=300, yaxis_tickformat=".0%",
                      margin={"l": 60, "r": 20, "t": 30, "b": 40})
    section.figures.append(Figure("moves-utilisation", "Fleet utilisation per resource, base against this plan.", fig))
    deltas = pl.DataFrame({
        "figure": ["active hosts", "active hosts' cost $/h", "requests' cost $/h", "priority-weighted placed demand",
                   "requests newly placed", "requests newly unplaced"],
        "base": [_fmt(diff.active_hosts_a, 0), _fmt(diff.active_hosts_cost_a, 2), _fmt(diff.requests_cost_a, 2),
                 _fmt(diff.placed_demand_a, 1), "", ""],
        "this plan": [_fmt(diff.active_hosts_b, 0), _fmt(diff.active_hosts_cost_b, 2), _fmt(diff.requests_cost_b, 2),
                      _fmt(diff.placed_demand_b, 1), "", ""],
        "Δ": [f"{diff.active_hosts_b - diff.active_hosts_a:+d}", f"{diff.active_hosts_cost_delta:+,.2f}",
              f"{diff.requests_cost_delta:+,.2f}", f"{diff.placed_demand_b - diff.placed_demand_a:+,.1f}",
              str(diff.newly_placed.height), str(diff.newly_unplaced.height)]})
    section.tables.append(Table("Deltas (this plan − base)", deltas))
    if plan.moves is not None and plan.moves.height:
        kinds_frame = (plan.moves.group_by("kind", "reason").agg(pl.len().alias("parts"),
                                                                pl.col("request_id").n_unique().alias("requests"))
                       .sort(["parts", "kind"], descending=[True, False]).head(20))
        section.tables.append(Table("moves.parquet: running parts moved or removed, by kind and reason", kinds_frame))
    return section


# --- forecast and reservations (nightly) --------------------------------------------------------------


def forecast_section(plan: PlanDir) -> Section | None:
    """Per app type, the demand history and tonight's forecast with its band, and the blocks reserved for each
    window; None when the plan directory holds no forecast.parquet (it was not made by `nightly`)."""
    from shardplan.plandir import INPUT_HISTORY_FILE

    if plan.path is None or not (plan.path / "forecast.parquet").is_file():
        return None
    forecast = pl.read_parquet(plan.path / "forecast.parquet")
    history_file = plan.path / INPUT_HISTORY_FILE
    history = pl.read_parquet(history_file) if history_file.is_file() else None
    section = Section("forecast", "Forecast and reservations")
    model = forecast["model"][0] if forecast.height else "?"
    section.text.append(f"Forecaster: {model}. The band is the sum of each (user, app type) series' 10th–90th "
                        "percentile band, which is wider than the band of the sum. Reserved: the blocks held on "
                        "hosts for each app type's window (reservations.parquet).")
    if history is None:
        section.text.append("The plan directory holds no inputs/history.parquet: only the forecast is drawn.")
    if forecast.height == 0:
        section.text.append("forecast.parquet has no rows: nothing to draw.")
        return section
    apps = sorted(forecast["app_type"].unique().to_list())
    pooled = forecast.group_by("app_type", "ts").agg(pl.col("vcpu", "vcpu_lo", "vcpu_hi", "ram_gib", "ram_gib_lo",
                                                            "ram_gib_hi").sum()).sort("app_type", "ts")
    if history is not None and forecast.height:
        first = forecast["ts"].min()
        history = (history.filter(pl.col("ts") >= first - pl.duration(days=HISTORY_DAYS_SHOWN))
                   .group_by("app_type", "ts").agg(pl.col("vcpu", "ram_gib").sum()).sort("app_type", "ts"))
    reservations = plan.reservations
    fig = make_subplots(rows=len(apps), cols=2, shared_xaxes=True, vertical_spacing=0.35 / max(len(apps), 1),
                        horizontal_spacing=0.08,
                        subplot_titles=[f"{app}: {label}" for app in apps for label in ("vCPU used", "RAM GiB")])
    for i, app in enumerate(apps, start=1):
        f = pooled.filter(pl.col("app_type") == app)
        for col, r in enumerate(("vcpu", "ram_gib"), start=1):
            legend = i == 1 and col == 1
            ts = f["ts"].to_list()
            fig.add_trace(go.Scatter(x=ts + ts[::-1], y=f[f"{r}_hi"].to_list() + f[f"{r}_lo"].to_list()[::-1],
                                     fill="toself", fillcolor="rgba(43,108,176,0.18)", line={"width": 0},
                                     name="forecast 10–90 %", legendgroup="band", showlegend=legend,
                                     hoverinfo="skip"), row=i, col=col)
            fig.add_trace(go.Scatter(x=ts, y=f[r].to_list(), mode="lines", line={"color": "#2b6cb0"},
                                     name="forecast", legendgroup="forecast", showlegend=legend,
                                     hovertemplate="%{x}: %{y:,.1f}<extra>forecast</extra>"), row=i, col=col)
            if history is not None:
                h = history.filter(pl.col("app_type") == app)
                fig.add_trace(go.Scatter(x=h["ts"].to_list(), y=h[r].to_list(), mode="lines",
                                         line={"color": "#4a5568", "width": 1}, name="history", legendgroup="history",
                                         showlegend=legend, hovertemplate="%{x}: %{y:,.1f}<extra>history</extra>"),
                              row=i, col=col)
            if reservations is not None and reservations.height:
                mine = reservations.filter(pl.col("app_type") == app)
                if mine.height:
                    windows = (mine.group_by("window_start", "window_end").agg(pl.col(r).sum())
                               .sort("window_start"))
                    xs, ys = [], []
                    for row in windows.iter_rows(named=True):
                        xs += [row["window_start"], row["window_end"], None]
                        ys += [row[r], row[r], None]
                    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line={"color": "#ed8936", "width": 3},
                                             name="reserved blocks", legendgroup="reserved", showlegend=legend,
                                             hovertemplate="reserved %{y:,}<extra></extra>"), row=i, col=col)
    fig.update_layout(template=TEMPLATE, height=_height(len(apps), 230, 80, 320, 2600),
                      margin={"l": 60, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": 1.04,
                                                                          "yanchor": "bottom"})
    fig.update_annotations(font_size=11)
    section.figures.append(Figure("forecast", "Demand per app type (sum over users): history, tonight's forecast "
                                  "with its band, and what is reserved in each window.", fig))
    if reservations is not None:
        blocks = _blocks_by_app(plan)
        if blocks is not None and blocks.height:
            fig = go.Figure()
            fig.add_trace(go.Bar(x=blocks["app_type"].to_list(), y=blocks["held"].to_list(), name="held",
                                 marker_color="#ed8936"))
            fig.add_trace(go.Bar(x=blocks["app_type"].to_list(), y=blocks["not_held"].to_list(), name="not held",
                                 marker_color="#cbd5e0"))
            fig.update_layout(template=TEMPLATE, barmode="stack", height=300, yaxis_title="blocks",
                              margin={"l": 60, "r": 20, "t": 30, "b": 40})
            section.figures.append(Figure("reservation-blocks", "Reservation blocks the sizing model asked for, per "
                                          "app type: held on a host by the plan, or not (no room).", fig))
    return section


def _blocks_by_app(plan: PlanDir) -> pl.DataFrame | None:
    if "kind" not in plan.requests.columns:
        return None
    blocks = plan.requests.filter(pl.col("kind") == "reservation").select("request_id", "app_type").join(
        plan.requests_out.select("request_id", "status"), on="request_id", how="left")
    if blocks.height == 0:
        return None
    return (blocks.group_by("app_type").agg((pl.col("status") == "reserved").sum().alias("held"),
                                             (pl.col("status") != "reserved").sum().alias("not_held"))
            .sort("app_type"))


# --- the page -----------------------------------------------------------------------------------------


def plan_sections(plan: PlanDir, base: PlanDir | None = None, host_rows_max: int = HOST_ROWS_MAX) -> list[Section]:
    """Every section of a plan's report, in the page's order."""
    sections = [summary_section(plan), utilisation_section(plan, host_rows_max), split_section(plan),
                unplaced_section(plan), solver_section(plan)]
    if base is not None:
        sections.append(moves_section(base, plan))
    forecast = forecast_section(plan)
    if forecast is not None:
        sections.append(forecast)
    return sections


def _scenario_dir(out_dir: Path, plan_dir: str, is_base: bool) -> Path | None:
    """A plan directory named in comparison.parquet (as the what-if command was given it, maybe relative to where
    it ran): as written, else a scenario's folder inside the run's folder, else relative to the run's parent."""
    from shardplan.plandir import PLAN_FILE

    given = Path(plan_dir)
    tries = [given] if given.is_absolute() else [given, out_dir.parent / given]
    if not is_base:
        tries.insert(1, out_dir / given.name)
    return next((p for p in tries if (p / PLAN_FILE).is_file()), None)


def whatif_sections(out_dir: Path, comparison: pl.DataFrame) -> list[Section]:
    """The what-if page: the scenarios' figures side by side, then each scenario's utilisation against the base."""
    from shardplan.plandir import read_plan_dir

    section = Section("scenarios", "Scenarios side by side")
    section.text.append(f"What-if run in {out_dir}: the base plan and {comparison.height - 1} scenarios, each an edit "
                        "of the base's placement (comparison.parquet).")
    names = comparison["scenario"].to_list()
    panels = (("placed_demand_delta", "Δ priority-weighted placed demand"), ("moves_mandatory", "mandatory moves"),
              ("moves_voluntary", "voluntary moves"), ("lost", "running requests lost"),
              ("hosts_freed", "hosts freed"), ("active_cost_delta", "Δ active hosts' $/h"))
    fig = make_subplots(rows=2, cols=3, subplot_titles=[title for _, title in panels], vertical_spacing=0.22)
    scenarios = comparison.filter(pl.col("scenario") != "base") if "base" in names else comparison
    for i, (key, title) in enumerate(panels):
        fig.add_trace(go.Bar(x=scenarios["scenario"].to_list(), y=scenarios[key].to_list(), showlegend=False,
                             marker_color="#c53030" if key in ("lost", "moves_mandatory") else "#2b6cb0",
                             hovertemplate="%{x}: %{y:,.1f}<extra>" + title + "</extra>"),
                      row=i // 3 + 1, col=i % 3 + 1)
    fig.update_layout(template=TEMPLATE, height=620, margin={"l": 60, "r": 20, "t": 50, "b": 80})
    section.figures.append(Figure("whatif-comparison", "Each scenario against the base plan.", fig))
    utilisation, moves, unplaced, missing = [], [], [], []
    for row in comparison.iter_rows(named=True):
        found = _scenario_dir(out_dir, row["plan_dir"], row["scenario"] == "base")
        if found is None:
            missing.append(f"{row['scenario']} ({row['plan_dir']})")
            continue
        planned = read_plan_dir(found)
        used = planned.hosts_out.select(*[pl.col(f"{r}_used").sum().alias(r) for r in RESOURCES])
        cap = planned.hosts_out.select(*[pl.col(f"{r}_capacity").sum().alias(r) for r in RESOURCES])
        utilisation.append((row["scenario"], [used[r][0] / cap[r][0] if cap[r][0] else 0.0 for r in RESOURCES]))
        if planned.moves is not None and planned.moves.height:
            moves.append(planned.moves.group_by("kind").agg(pl.col("request_id").n_unique().alias("requests"))
                         .with_columns(pl.lit(row["scenario"]).alias("scenario")))
        why = (planned.requests_out.filter(pl.col("status") == "unplaced")
               .join(planned.requests.select("request_id", *(["kind"] if "kind" in planned.requests.columns else [])),
                     on="request_id", how="left"))
        if "kind" in why.columns:
            why = why.filter(pl.col("kind") != "reservation")
        if why.height:
            unplaced.append(why.group_by(pl.col("reason").fill_null("unknown").str.split(":").list.first()
                                         .str.strip_chars().alias("why")).len()
                            .with_columns(pl.lit(row["scenario"]).alias("scenario")))
    for frames, key, column, caption in (
            (moves, "whatif-moves", "kind", "Running requests each scenario moved, evicted or lost (its moves.parquet), "
                                            "by kind."),
            (unplaced, "whatif-unplaced", "why", "Requests each plan left unplaced, by reason.")):
        if not frames:
            continue
        frame = pl.concat(frames, how="diagonal_relaxed")
        value = "requests" if column == "kind" else "len"
        fig = go.Figure()
        for name in sorted(frame[column].unique().to_list()):
            these = frame.filter(pl.col(column) == name)
            fig.add_trace(go.Bar(x=these["scenario"].to_list(), y=these[value].to_list(), name=name,
                                 hovertemplate="%{x}: %{y} " + name + "<extra></extra>"))
        fig.update_xaxes(categoryorder="array", categoryarray=names)
        # a lost request was a mandatory move too: kinds side by side, not stacked
        fig.update_layout(template=TEMPLATE, barmode="group" if column == "kind" else "stack", height=320,
                          yaxis_title="requests", margin={"l": 60, "r": 20, "t": 30, "b": 40})
        section.figures.append(Figure(key, caption, fig))
    if utilisation:
        fig = go.Figure()
        for name, values in utilisation:
            fig.add_trace(go.Bar(x=[RESOURCE_LABELS[r] for r in RESOURCES], y=values, name=name,
                                 hovertemplate=name + " %{x}: %{y:.1%}<extra></extra>"))
        fig.update_layout(template=TEMPLATE, barmode="group", height=340, yaxis_tickformat=".0%",
                          margin={"l": 60, "r": 20, "t": 30, "b": 40})
        section.figures.append(Figure("whatif-utilisation", "Fleet utilisation per resource in each plan "
                                      "(used over capacity, all hosts).", fig))
    if missing:
        section.text.append("Not drawn, their plan directories are not where comparison.parquet says (relative to "
                            f"this folder or the current one): {', '.join(missing)}.")
    table = comparison.select("scenario", "status", "placed", "unplaced", "placed_demand_delta", "moves_mandatory",
                              "moves_voluntary", "lost", "moved_gib", "hosts_freed", "active_cost_delta", "wall_s")
    section.tables.append(Table("comparison.parquet", table))
    return [section]
