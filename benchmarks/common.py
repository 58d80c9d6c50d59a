"""Small helpers every benchmark script shares: where the shared data lives, a rich table, atomic JSON."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

from rich.console import Console
from rich.table import Table

from shardplan.files import write_atomically  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SHARED_ENV = "SHARDPLAN_SHARED"


def shared_dir() -> Path | None:
    """The team's shared folder: $SHARDPLAN_SHARED, else `shared/` beside the repository; None if absent."""
    configured = os.environ.get(SHARED_ENV)
    candidate = Path(configured) if configured else REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def require_shared_dir() -> Path:
    """Like :func:`shared_dir`, but a clear error when the folder is missing."""
    found = shared_dir()
    if found is None:
        raise FileNotFoundError(f"shared data folder not found: set {SHARED_ENV} or place it at "
                                f"{REPO_ROOT.parent / 'shared'}")
    return found


def results_path(name: str) -> Path:
    """benchmarks/results/<name>.json"""
    return RESULTS_DIR / f"{name}.json"


def _plain(value: Any) -> Any:
    """JSON-safe value: NaN and infinities become null, numpy scalars plain numbers."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> Path:
    """JSON, atomically (shardplan.files)."""
    return write_atomically(path, json.dumps(_plain(payload), indent=2, sort_keys=False) + "\n")


def format_cell(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]],
                console: Console | None = None, digits: int = 2) -> None:
    """A rich table; numbers right-aligned, missing values as an en dash."""
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right", no_wrap=i == 0)
    for row in rows:
        table.add_row(*(format_cell(v, digits) for v in row))
    # piped into a log, a file or CI: wide enough that no column is cut
    (console or Console(width=None if sys.stdout.isatty() else 200)).print(table)
