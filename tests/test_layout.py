"""The architecture holds: no import cycles among our modules, executors see only the table schemas,
one import name for the whole distribution."""
from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("shardplan", "planner", "models", "forecasting", "executors", "data")


def module_name(path: Path) -> str:
    """The import name of a file of ours: the folders are subpackages of shardplan."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts if parts[0] == "shardplan" else ["shardplan", *parts])


def imports_of(path: Path, name: str) -> set[str]:
    """Every module a file imports, wherever the import stands (top level, in a function, under
    TYPE_CHECKING), relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        targets = set()
        for imported in imports_of(path, name):
            while imported and imported not in files:  # `from pkg import module` and `from module import name`
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_among_our_modules():
    graph = import_graph()
    assert len(graph) > 50 and "shardplan.planner.engine" in graph
    assert cycles(graph) == []


CONTRACTS = {"shardplan.schema", "shardplan.plandir", "shardplan.files", "shardplan.topology"}
"""The table schemas, the plan directory's files, the atomic write and what the topology table's rows mean
(rack pairs, the planner's and the router's alike): what the executors and forecasting may use of ours
(DESIGN.md: executors depend on the planner's schemas only, forecasting on nothing)."""


def test_executors_and_forecasting_depend_on_the_table_contracts_only():
    graph = import_graph()
    for name, targets in graph.items():
        for wing in ("shardplan.executors", "shardplan.forecasting"):
            if name.startswith(wing):
                ours = {t for t in targets if t.startswith("shardplan.") and not t.startswith(wing)}
                assert ours <= CONTRACTS, f"{name} imports {sorted(ours - CONTRACTS)}"
    for contract in CONTRACTS:  # and the contracts depend on nothing of ours but each other
        assert graph[contract] <= CONTRACTS, f"{contract} imports {sorted(graph[contract] - CONTRACTS)}"


def test_one_import_name_and_python_dash_m():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = config["tool"]["setuptools"]["packages"]
    assert all(p == "shardplan" or p.startswith("shardplan.") for p in packages)
    shown = subprocess.run([sys.executable, "-m", "shardplan", "--version"], capture_output=True, text=True,
                           timeout=120, cwd=ROOT)
    assert shown.returncode == 0 and shown.stdout.startswith("shardplan ")


def test_one_free_capacity_rule_for_planner_export_and_executors():
    import polars as pl

    from shardplan.executors.base import hosts_from_frame
    from shardplan.planner.report.export import host_usage
    from shardplan.planner.search.candidates import build_fleet
    from tests.fleets import hosts_table

    hosts = hosts_table({"host_id": "a", "rack": "r1", "vcpu": 100, "ram_gib": 64, "vcpu_overcommit": 1.15},
                        {"host_id": "b", "rack": "r2", "vcpu": 7, "ram_gib": 64, "vcpu_overcommit": 1.5, "used_vcpu": 3})
    planner_free = build_fleet(hosts).free[:, 0].tolist()
    executor_free = [hosts_from_frame(hosts)[h].vcpu for h in ("a", "b")]
    usage = host_usage(hosts, pl.DataFrame(schema={"host_id": pl.Utf8, **{r: pl.Float64 for r in
                                                                           ("vcpu", "ram_gib", "storage_gib", "net_gbps", "gpu")}}))
    exported_free = (usage["vcpu_capacity"] - usage["vcpu_used"]).to_list()
    assert planner_free == executor_free == exported_free == [115, 7]  # floor(10.5) = 10, less 3 used
