"""shardplan: a nightly batch planner that shards VM requests across a heterogeneous fleet.

One import name for the whole distribution. Its subpackages are the repository's top-level
folders of DESIGN.md — `shardplan.planner`, `shardplan.models`, `shardplan.forecasting`,
`shardplan.executors`, `shardplan.data` — which the wheel installs inside this package
(pyproject.toml maps them). `shardplan.schema` holds the table contracts that the planner and
the executors share, so neither depends on the other.
"""
from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
if not (_HERE / "planner").is_dir() and (_HERE.parent / "planner" / "__init__.py").is_file():
    # a checkout: the subpackages are the folders beside this one, not inside it
    __path__.append(str(_HERE.parent))  # type: ignore[name-defined]  # noqa: F821
