"""One self-contained HTML page from report sections, and the same figures as PNG files.

The page needs no server and no network: Plotly's script and every figure's data are embedded, gzip-compressed
and base64-encoded (Plotly's script is 4.8 MB as text, 2.0 MB so), and a few lines of script inflate them with
the browser's own `DecompressionStream` (Chromium 80+, Firefox 113+, Safari 16.4+) and draw each figure. When
every figure is drawn the page sets `data-rendered` on its body to their number (what the browser test waits
for); a failure is shown at the top of the page and thrown to the console.

PNG files are drawn by kaleido, which drives a headless Chromium of its own choosing (the machine's Chrome or
Chromium; Debian's `chromium` package will do); no window opens.
"""
from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from pathlib import Path

import polars as pl

from shardplan.files import write_all_atomically, write_atomically
from shardplan.planner.report.figures import Figure, Section

PNG_WIDTH = 1200
"""Pixels across of each PNG (its height is the figure's own)."""
TABLE_ROWS_MAX = 60


CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run")
"""How a headless Chromium opens a report for a check or a screenshot (the browser test, benchmarks/report.py): as
root, with nothing of its own reaching the network."""


def find_chromium() -> str | None:
    """The machine's Chromium or Chrome on PATH, if any."""
    import shutil

    return next((found for found in map(shutil.which, CHROMIUM_NAMES) if found), None)


class ReportError(RuntimeError):
    """The report cannot be written (e.g. PNGs asked for on a machine with no Chrome or Chromium)."""


@functools.lru_cache(maxsize=1)
def _plotly_js_packed() -> str:
    from plotly.offline import get_plotlyjs

    return _pack(get_plotlyjs())


def _pack(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")


def figures_json(sections: list[Section]) -> str:
    """Every figure's Plotly JSON by the id of the element it is drawn in, as one JSON object (each figure
    serialised once, by Plotly)."""
    return "{" + ",".join(f"{json.dumps('fig-' + figure.key)}:{figure.figure.to_json()}"
                          for section in sections for figure in section.figures) + "}"


def _table_html(frame: pl.DataFrame) -> str:
    shown = frame.head(TABLE_ROWS_MAX)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in shown.columns)
    rows = []
    for row in shown.iter_rows():
        cells = []
        for value in row:
            if isinstance(value, float):
                text = f"{value:,.2f}"
            else:
                text = "—" if value is None else str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    more = (f"<p class='more'>{frame.height - TABLE_ROWS_MAX} more rows not shown.</p>"
            if frame.height > TABLE_ROWS_MAX else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;background:#f7fafc}
header{background:#1a365d;color:#fff;padding:16px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.85;font-size:13px}nav{padding:8px 28px;background:#edf2f7;font-size:13px}
nav a{margin-right:14px;color:#2c5282}main{padding:0 28px 40px}section{background:#fff;margin:18px 0;padding:14px 18px;
border-radius:6px;box-shadow:0 1px 2px rgba(0,0,0,.08)}h2{font-size:18px;margin:4px 0 10px}
.caption{font-size:13px;color:#4a5568;margin:2px 0 4px}.figure{width:100%;min-height:120px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}td,th{border-bottom:1px solid #e2e8f0;padding:3px 10px;
text-align:left}th{background:#f7fafc}.more{font-size:12px;color:#718096}#load-error{color:#c53030;font-weight:bold;
padding:0 28px}
"""

_LOADER = """
(function () {
  function bytes(b64) {
    var bin = atob(b64), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function inflate(id) {
    var packed = document.getElementById(id).textContent.trim();
    var stream = new Blob([bytes(packed)]).stream().pipeThrough(new DecompressionStream("gzip"));
    return await new Response(stream).text();
  }
  async function draw() {
    var script = document.createElement("script");
    script.textContent = await inflate("plotly-js");
    document.head.appendChild(script);
    var figures = JSON.parse(await inflate("figures"));
    var ids = Object.keys(figures);
    for (var i = 0; i < ids.length; i++) {
      var fig = figures[ids[i]];
      await Plotly.newPlot(ids[i], fig.data, fig.layout, {responsive: true, displaylogo: false});
    }
    document.body.setAttribute("data-rendered", String(ids.length));
  }
  draw().catch(function (error) {
    document.getElementById("load-error").textContent = "The figures could not be drawn: " + error;
    throw error;
  });
})();
"""


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The whole page as text."""
    nav = "".join(f"<a href='#{html.escape(s.key)}'>{html.escape(s.title)}</a>" for s in sections)
    body = []
    for section in sections:
        parts = [f"<section id='{html.escape(section.key)}'><h2>{html.escape(section.title)}</h2>"]
        parts += [f"<p class='caption'>{html.escape(line)}</p>" for line in section.text]
        for figure in section.figures:
            parts.append(f"<p class='caption'>{html.escape(figure.caption)}</p>"
                         f"<div class='figure' id='fig-{html.escape(figure.key)}'></div>")
        for table in section.tables:
            parts.append(f"<p class='caption'>{html.escape(table.caption)}</p>{_table_html(table.frame)}")
        parts.append("</section>")
        body.append("".join(parts))
    figures = _pack(figures_json(sections))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_STYLE}</style></head>"
            f"<body data-figures='{sum(len(s.figures) for s in sections)}'>"
            f"<header><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p></header><nav>{nav}</nav>"
            f"<p id='load-error'></p><main>{''.join(body)}</main>"
            f"<script type='application/octet-stream' id='plotly-js'>{_plotly_js_packed()}</script>"
            f"<script type='application/octet-stream' id='figures'>{figures}</script>"
            f"<script>{_LOADER}</script></body></html>")


def write_page(path: str | Path, title: str, subtitle: str, sections: list[Section]) -> int:
    """Write the page atomically; returns its size in bytes."""
    text = render_page(title, subtitle, sections).encode("utf-8")
    write_atomically(Path(path), text)
    return len(text)


def write_pngs(out_dir: str | Path, sections: list[Section], width: int = PNG_WIDTH) -> list[Path]:
    """Every figure as `NN-key.png` in `out_dir`: all drawn first (one browser session), then each lands
    atomically, so an interrupted run leaves no half-drawn set."""
    import tempfile

    import plotly.io as pio

    figures: list[Figure] = [f for s in sections for f in s.figures]
    out = Path(out_dir)
    names = [f"{i + 1:02d}-{figure.key}.png" for i, figure in enumerate(figures)]
    with tempfile.TemporaryDirectory(prefix="shardplan-png-") as scratch:
        drawn = [Path(scratch) / name for name in names]
        try:
            pio.write_images([f.figure for f in figures], drawn, format="png", width=width,
                             height=[int(f.figure.layout.height or 500) for f in figures])
        except Exception as exc:  # kaleido raises its own errors when no browser is found
            raise ReportError(f"--png {out}: the figures could not be drawn as PNG ({type(exc).__name__}: {exc}); "
                              "kaleido needs Chrome or Chromium on the machine (e.g. Debian's chromium package)"
                              ) from exc
        write_all_atomically(out, {name: path.read_bytes() for name, path in zip(names, drawn)})
    return [out / name for name in names]
