"""What-if scenarios: edit a base plan's inputs, re-plan incrementally from its placement, compare.

A scenario file (TOML, read with `tomllib`) lists `[[scenario]]` tables; each edits the base plan
directory's inputs and is planned as an edit of the base's placement (`--previous BASE_DIR`):

    [defaults]                      # options for every scenario (PlanOptions fields), optional
    max_moves = 20

    [[scenario]]
    name = "drain rack z1-r01"      # required, unique
    drain_racks = ["z1-r01"]        # also: drain_hosts, fail_zones, fail_racks, fail_hosts, remove_hosts
    requests = "more.csv"           # a requests file added (relative to the scenario file)
    options = { disruption_cost = 5.0 }

    [[scenario.add_hosts]]          # N hosts copied from a host (`like`) or the first of a class (`class`),
    class = "gpu"                   # or one host given in full (`host = { host_id = …, … }`)
    count = 10
    rack = "z1-r09"                 # optional: where they go (default the template's rack)

    [[scenario.demand]]             # grow or shrink one app type's or user's demand by a factor:
    app_type = "web"                # > 1 adds copies of its requests (every k-th, new ids), < 1 drops
    factor = 1.3                    # the last ones by id; running requests keep their size

Drained hosts become `draining`, failed ones `down`; removed hosts are planned as `down` (nothing lands
on them and what ran there must move) and reported as removed. A nightly base's reservation blocks
are left out: a what-if re-plans the requests. A bad file (unknown key, unknown rack,
host, zone, class, app type or user, factor ≤ 0, a bad option) is refused with its line and key before
any planning (`ScenarioError`).
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from shardplan.plandir import PlanDir, read_plan_dir
from shardplan.planner.replan import check_current
from shardplan.planner.report.diff import active_cost, weighted_demand
from shardplan.planner.validate.inputs import InputError, check_hosts, load_requests, validate_table
from shardplan.planner.validate.options import OPTION_FIELDS, OptionError, PlanOptions
from shardplan.schema import HOST_COLUMNS, REQUEST_COLUMNS

SCENARIO_KEYS = ("name", "drain_racks", "drain_hosts", "fail_zones", "fail_racks", "fail_hosts", "remove_hosts",
                 "add_hosts", "demand", "requests", "options")
ADD_HOST_KEYS = ("like", "class", "count", "rack", "zone", "prefix", "host")
DEMAND_KEYS = ("app_type", "user_id", "factor")


class ScenarioError(ValueError):
    """A scenario file that cannot be planned: which file, line and key, and why."""

    def __init__(self, file: str | Path, line: int | None, key: str | None, message: str) -> None:
        self.file, self.line, self.key = str(file), line, key
        where = ", ".join(x for x in (str(file), f"line {line}" if line else "", f"key '{key}'" if key else "") if x)
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class Scenario:
    """One what-if: the base's inputs edited, and the options it is planned with."""

    name: str
    hosts: pl.DataFrame
    requests: pl.DataFrame
    options: PlanOptions
    removed_hosts: tuple[str, ...] = ()
    edits: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "scenario"


def _sets(line: str, key: str) -> bool:
    """The TOML line sets `key`: `key = …` or, in an inline table, `{ key = …` / `, key = …`."""
    return bool(re.match(rf"\s*{re.escape(key)}\s*=", line) or re.search(rf"[{{,]\s*{re.escape(key)}\s*=", line))


class _Lines:
    """Line numbers of keys in the scenario file's text, per [[scenario]] block."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.blocks = [i for i, line in enumerate(self.lines) if re.match(r"\s*\[\[\s*scenario\s*\]\]", line)]

    def of(self, block: int | None, key: str) -> int | None:
        start = 0 if block is None else self.blocks[block] if block < len(self.blocks) else 0
        end = self.blocks[block + 1] if block is not None and block + 1 < len(self.blocks) else len(self.lines)
        for i in range(start, end):
            if re.match(rf"\s*(\[\[?\s*scenario\.)?{re.escape(key)}\b", self.lines[i]) or _sets(self.lines[i], key):
                return i + 1
        return start + 1 if block is not None else None

    def of_sub(self, block: int, table: str, index: int, key: str) -> int | None:
        """The line of `key` in the index-th [[scenario.<table>]] of a scenario block (its header line if the
        key is not written there)."""
        start = self.blocks[block] if block < len(self.blocks) else 0
        end = self.blocks[block + 1] if block + 1 < len(self.blocks) else len(self.lines)
        headers = [i for i in range(start, end) if re.match(rf"\s*\[\[\s*scenario\.{table}\s*\]\]", self.lines[i])]
        if index >= len(headers):
            return self.of(block, key)
        stop = next((i for i in range(headers[index] + 1, end) if re.match(r"\s*\[", self.lines[i])), end)
        for i in range(headers[index], stop):
            if _sets(self.lines[i], key):
                return i + 1
        return headers[index] + 1


def read_scenarios(path: str | Path, base: PlanDir, base_options: PlanOptions) -> list[Scenario]:
    """Parse and check a scenario file against the base plan; every scenario's inputs are built here, so
    a bad scenario is refused before any planning."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(path, None, None, f"cannot read the file ({exc})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"line (\d+)", str(exc))
        raise ScenarioError(path, int(line.group(1)) if line else None, None, f"not valid TOML ({exc})") from exc
    lines = _Lines(text)
    unknown = sorted(set(data) - {"defaults", "scenario"})
    if unknown:
        raise ScenarioError(path, lines.of(None, unknown[0]), unknown[0], "unknown top-level key (expected "
                            "[defaults] and [[scenario]] tables)")
    defaults = _options(path, lines, None, base_options, data.get("defaults", {}))
    scenarios = data.get("scenario")
    if not isinstance(scenarios, list) or not scenarios:
        raise ScenarioError(path, None, "scenario", "no [[scenario]] tables")
    out, names = [], set()
    for k, raw in enumerate(scenarios):
        scenario = _scenario(path, lines, k, raw, base, defaults)
        if scenario.name in names:
            raise ScenarioError(path, lines.of(k, "name"), "name", f"scenario name {scenario.name!r} given twice")
        names.add(scenario.name)
        out.append(scenario)
    return out


def _options(path: Path, lines: _Lines, block: int | None, base: PlanOptions, raw: object) -> PlanOptions:
    if not isinstance(raw, dict):
        raise ScenarioError(path, lines.of(block, "options"), "options", "expected a table of options")
    changes = {}
    for key, value in raw.items():
        if key not in OPTION_FIELDS:
            raise ScenarioError(path, lines.of(block, key), key, "unknown option (a PlanOptions field, e.g. "
                                "max_moves, disruption_cost, time_limit_s)")
        kind = type(getattr(base, key))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ScenarioError(path, lines.of(block, key), key, f"expected {kind.__name__}, got {value!r}")
        changes[key] = value
    options = dataclasses.replace(base, **changes)
    try:
        options.validate()
    except OptionError as exc:
        raise ScenarioError(path, lines.of(block, exc.name), exc.name, str(exc)) from exc
    return options


def _names(path: Path, lines: _Lines, k: int, raw: dict, key: str, known: list[str], what: str) -> list[str]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ScenarioError(path, lines.of(k, key), key, f"expected a list of {what} names")
    missing = [v for v in value if v not in set(known)]
    if missing:
        raise ScenarioError(path, lines.of(k, key), key, f"unknown {what} {missing[0]!r}")
    return value


def _scenario(path: Path, lines: _Lines, k: int, raw: object, base: PlanDir, defaults: PlanOptions) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError(path, lines.of(k, "scenario"), "scenario", "expected a table")
    unknown = sorted(set(raw) - set(SCENARIO_KEYS))
    if unknown:
        raise ScenarioError(path, lines.of(k, unknown[0]), unknown[0],
                            f"unknown scenario key (known: {', '.join(SCENARIO_KEYS)})")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ScenarioError(path, lines.of(k, "name"), "name", "every scenario needs a name")
    hosts, requests = base.hosts, real_requests(base.requests)
    edits: list[str] = []
    host_ids, racks, zones = hosts["host_id"].to_list(), hosts["rack"].unique().to_list(), hosts["zone"].unique().to_list()
    status = pl.col("status")
    for key, column, status_name, known, what in (
            ("drain_racks", "rack", "draining", racks, "rack"), ("drain_hosts", "host_id", "draining", host_ids, "host"),
            ("fail_zones", "zone", "down", zones, "zone"), ("fail_racks", "rack", "down", racks, "rack"),
            ("fail_hosts", "host_id", "down", host_ids, "host"), ("remove_hosts", "host_id", "down", host_ids, "host")):
        chosen = _names(path, lines, k, raw, key, known, what)
        if chosen:
            status = pl.when(pl.col(column).is_in(chosen)).then(pl.lit(status_name)).otherwise(status)
            edits.append(f"{key.replace('_', ' ')}: {', '.join(chosen)}")
    hosts = hosts.with_columns(status.alias("status"))
    removed = tuple(_names(path, lines, k, raw, "remove_hosts", host_ids, "host"))
    hosts = _add_hosts(path, lines, k, raw.get("add_hosts", []), hosts, edits)
    requests = _demand(path, lines, k, raw.get("demand", []), requests, base, edits)
    extra = raw.get("requests")
    if extra is not None:
        if not isinstance(extra, str):
            raise ScenarioError(path, lines.of(k, "requests"), "requests", "expected the path of a requests file")
        try:
            added = load_requests(path.parent / extra)
        except InputError as exc:
            raise ScenarioError(path, lines.of(k, "requests"), "requests", str(exc)) from exc
        clash = set(added["request_id"].to_list()) & set(requests["request_id"].to_list())
        if clash:
            raise ScenarioError(path, lines.of(k, "requests"), "requests",
                                f"request id {sorted(clash)[0]!r} is in the base already")
        requests = pl.concat([requests, added.select(requests.columns)], how="vertical_relaxed")
        edits.append(f"requests: +{added.height} from {extra}")
    try:
        validate_table(requests.select([c.name for c in REQUEST_COLUMNS]), REQUEST_COLUMNS, "requests",
                       key="request_id")
    except InputError as exc:
        raise ScenarioError(path, lines.of(k, "name"), "demand", f"the scenario's requests are not valid ({exc})") from exc
    options = _options(path, lines, k, defaults, raw.get("options", {}))
    if raw.get("options"):
        edits.append("options: " + ", ".join(f"{a} = {b}" for a, b in raw["options"].items()))
    return Scenario(name.strip(), hosts, requests, options, removed, edits)


def real_requests(requests: pl.DataFrame) -> pl.DataFrame:
    """A nightly base's requests less its reservation blocks (a what-if re-plans requests, not holds)."""
    from shardplan.planner.engine import KIND_COLUMN, RESERVATION_KIND

    if KIND_COLUMN not in requests.columns:
        return requests
    return requests.filter(pl.col(KIND_COLUMN) != RESERVATION_KIND).drop(KIND_COLUMN)


def _sub_tables(path: Path, lines: _Lines, k: int, raw: object, table: str, keys: tuple[str, ...]):
    """The [[scenario.<table>]] tables of scenario `k`, each checked for unknown keys: (index, table, `at`),
    where `at(key)` is the line of `key` in that table."""
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise ScenarioError(path, lines.of(k, table), table, f"expected [[scenario.{table}]] tables")
    for n, item in enumerate(raw):
        def at(key: str, n: int = n) -> int | None:
            return lines.of_sub(k, table, n, key)

        if not isinstance(item, dict):
            raise ScenarioError(path, lines.of(k, table), table, "expected a table")
        unknown = sorted(set(item) - set(keys))
        if unknown:
            raise ScenarioError(path, at(unknown[0]), unknown[0], f"unknown {table} key (known: {', '.join(keys)})")
        yield n, item, at


def _add_hosts(path: Path, lines: _Lines, k: int, raw: object, hosts: pl.DataFrame, edits: list[str]) -> pl.DataFrame:
    for n, item, at in _sub_tables(path, lines, k, raw, "add_hosts", ADD_HOST_KEYS):
        count = item.get("count", 1)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ScenarioError(path, at("count"), "count", f"expected a whole number ≥ 1, got {count!r}")
        if "host" in item:
            row = {**_template(hosts, hosts["host_id"][0]), **item["host"]}
            unknown_columns = sorted(set(item["host"]) - set(hosts.columns))
            if unknown_columns:
                raise ScenarioError(path, at(unknown_columns[0]), unknown_columns[0], "unknown hosts column")
            if "host_id" not in item["host"]:
                raise ScenarioError(path, at("host"), "host", "a host given in full needs its host_id")
            template, prefix = row, str(item["host"]["host_id"])
        elif "like" in item:
            if item["like"] not in set(hosts["host_id"].to_list()):
                raise ScenarioError(path, at("like"), "like", f"unknown host {item['like']!r}")
            template, prefix = _template(hosts, item["like"]), f"{item['like']}-copy-"
        elif "class" in item:
            of_class = hosts.filter(pl.col("host_class") == item["class"])
            if of_class.height == 0:
                raise ScenarioError(path, at("class"), "class", f"no host of class {item['class']!r}")
            template, prefix = _template(hosts, of_class["host_id"][0]), f"whatif-{item['class']}-"
        else:
            raise ScenarioError(path, at("add_hosts"), "add_hosts", "give `like`, `class` or `host`")
        if "rack" in item:
            if item["rack"] in set(hosts["rack"].to_list()):
                zone = hosts.filter(pl.col("rack") == item["rack"])["zone"][0]
                if "zone" in item and item["zone"] != zone:
                    raise ScenarioError(path, at("zone"), "zone", f"rack {item['rack']!r} lies in {zone!r}")
            else:
                zone = item.get("zone", template["zone"])
            template = {**template, "rack": item["rack"], "zone": zone}
        prefix = item.get("prefix", prefix)
        taken = set(hosts["host_id"].to_list())
        rows, i = [], 1
        while len(rows) < count:
            host_id = prefix if ("host" in item and count == 1) else f"{prefix}{i:02d}"
            i += 1
            if host_id in taken:
                if "host" in item and count == 1:
                    raise ScenarioError(path, at("host_id"), "host_id", f"host {host_id!r} exists already")
                continue
            rows.append({**template, "host_id": host_id, "status": "up", "used_vcpu": 0, "used_ram_gib": 0,
                         "used_storage_gib": 0, "used_net_gbps": 0.0, "used_gpu": 0})
        try:
            added = pl.DataFrame(rows, schema=hosts.schema)
            validate_table(added, HOST_COLUMNS, "add_hosts", key="host_id")
            hosts = check_hosts(pl.concat([hosts, added]), "hosts with the scenario's hosts")
        except (TypeError, pl.exceptions.PolarsError, InputError) as exc:
            raise ScenarioError(path, at("host" if "host" in item else "add_hosts"), "add_hosts",
                                f"bad host values ({exc})") from exc
        edits.append(f"add {count} host(s) like {template.get('host_class')} on {template['rack']}")
    return hosts


def _template(hosts: pl.DataFrame, host_id: str) -> dict:
    return hosts.filter(pl.col("host_id") == host_id).row(0, named=True)


def _demand(path: Path, lines: _Lines, k: int, raw: object, requests: pl.DataFrame, base: PlanDir,
            edits: list[str]) -> pl.DataFrame:
    running = set(base.shards["request_id"].to_list())
    for n, item, at in _sub_tables(path, lines, k, raw, "demand", DEMAND_KEYS):
        factor = item.get("factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 0:
            raise ScenarioError(path, at("factor"), "factor", f"expected a number > 0, got {factor!r}")
        keys = [key for key in ("app_type", "user_id") if key in item]
        if len(keys) != 1:
            raise ScenarioError(path, at("demand"), "demand", "give exactly one of app_type or user_id")
        key = keys[0]
        if item[key] not in set(requests[key].to_list()):
            raise ScenarioError(path, at(key), key, f"no request has {key} {item[key]!r}")
        group = requests.filter(pl.col(key) == item[key]).sort("request_id")
        change = int(round(group.height * (factor - 1)))
        if change > 0:  # copies of every k-th request of the group, new ids
            step = max(group.height / change, 1.0)
            picks = group[[int(math.floor(i * step)) % group.height for i in range(change)]]
            copies = picks.with_columns(pl.format("{}-whatif{}-{}", "request_id", pl.lit(n), pl.int_range(pl.len()))
                                        .alias("request_id"))
            requests = pl.concat([requests, copies])
        elif change < 0:  # the last ones by id leave (running ones among them: their room is free)
            leaving = group.tail(-change)["request_id"].to_list()
            requests = requests.filter(~pl.col("request_id").is_in(leaving))
            gone_running = len(set(leaving) & running)
            edits.append(f"{gone_running} of the leaving ones were running")
        edits.append(f"demand of {key} {item[key]} × {factor:g} ({change:+d} requests)")
    return requests


def scenario_current(base: PlanDir, scenario: Scenario):
    """The base placement as what runs for the scenario (requests that left dropped)."""
    return check_current(base.shards, scenario.hosts, scenario.requests, f"{base.path}/shards.parquet")


def base_options(base: PlanDir) -> PlanOptions:
    """The options the base was planned with (known fields; defaults for the rest)."""
    return PlanOptions.recorded(base.plan.get("options"))


def read_base(path: str | Path) -> PlanDir:
    return read_plan_dir(path)


# --- planning and comparing -----------------------------------------------------------------------------

COMPARISON_SCHEMA: dict[str, pl.DataType] = {
    "scenario": pl.Utf8, "plan_dir": pl.Utf8, "status": pl.Utf8, "placed": pl.Int64, "unplaced": pl.Int64,
    "placed_demand": pl.Float64, "placed_demand_delta": pl.Float64, "newly_unplaced_running": pl.Int64,
    "moves_mandatory": pl.Int64, "moves_voluntary": pl.Int64, "evicted": pl.Int64, "lost": pl.Int64,
    "moved_gib": pl.Int64, "hosts_freed": pl.Int64, "active_cost": pl.Float64, "active_cost_delta": pl.Float64,
    "wall_s": pl.Float64,
}
"""One row per plan (the base first): what comparing scenarios side by side reads."""


def compare_row(name: str, plan_dir: str, hosts: pl.DataFrame, requests: pl.DataFrame, shards: pl.DataFrame,
                requests_out: pl.DataFrame, plan_json: dict, base: PlanDir | None) -> dict:
    """A row of the comparison: the scenario's figures against the base's (None: the base itself)."""
    migration = plan_json.get("migration") or {}
    requests_out = requests_out.join(requests.select("request_id"), on="request_id", how="semi")
    demand = weighted_demand(requests, requests_out)
    cost = active_cost(hosts, shards)
    row = {"scenario": name, "plan_dir": plan_dir, "status": plan_json.get("status"),
           "placed": int((requests_out["status"] == "placed").sum()),
           "unplaced": int((requests_out["status"] == "unplaced").sum()), "placed_demand": demand,
           "placed_demand_delta": 0.0, "newly_unplaced_running": 0,
           "moves_mandatory": migration.get("mandatory_requests", 0), "moves_voluntary": migration.get("voluntary_requests", 0),
           "evicted": migration.get("evicted_requests", 0), "lost": migration.get("lost_requests", 0),
           "moved_gib": migration.get("moved_gib", 0), "hosts_freed": 0, "active_cost": cost,
           "active_cost_delta": 0.0, "wall_s": float(plan_json.get("wall_s") or 0.0)}
    if base is not None:
        base_demand = weighted_demand(real_requests(base.requests), base.requests_out)
        running = set(base.shards["request_id"].to_list()) & set(requests["request_id"].to_list())
        placed = set(requests_out.filter(pl.col("status") == "placed")["request_id"].to_list())
        row.update(placed_demand_delta=demand - base_demand, newly_unplaced_running=len(running - placed),
                   hosts_freed=len(set(base.shards["host_id"].to_list()) - set(shards["host_id"].to_list())),
                   active_cost_delta=cost - active_cost(base.hosts, base.shards))
    return row


def comparison_frame(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=COMPARISON_SCHEMA)


def run_whatif(base_dir: str | Path, scenarios: list[Scenario], out_dir: str | Path, time_limit_s: float,
               started: float, force: bool = False, note=None) -> pl.DataFrame:
    """Plan every scenario as an edit of the base's placement, each in a plan directory of its own (checked),
    within `time_limit_s` in all (counted from `started`: the command's start); returns the comparison."""
    import time

    from shardplan.planner.engine import new_budget, plan
    from shardplan.planner.report.export import prepare_out_dir, write_plan_dir

    base = read_plan_dir(base_dir)
    out_dir = Path(out_dir)
    rows = [compare_row("base", str(base_dir), base.hosts, real_requests(base.requests), base.shards,
                        base.requests_out, base.plan, None)]
    from shardplan.planner.report.page import REPORT_S_FIXED, REPORT_S_PER_SCENARIO

    # reading, comparing, the table and the report page
    reserve = 1.0 + 0.2 * len(scenarios) + REPORT_S_FIXED + REPORT_S_PER_SCENARIO * (len(scenarios) + 1)
    for i, scenario in enumerate(scenarios):
        left = time_limit_s - (time.perf_counter() - started) - reserve
        share = max(left / (len(scenarios) - i), 1.0)
        target = out_dir / scenario.slug
        prepare_out_dir(target, force)
        options = scenario.options.replace(time_limit_s=share)
        if note is not None:
            note(scenario, i)
        budget = new_budget(options)
        current = scenario_current(base, scenario)
        result = plan(scenario.hosts, scenario.requests, options, budget=budget, current=current)
        write_plan_dir(target, hosts=scenario.hosts, requests=scenario.requests, shards=result.shards,
                       requests_out=result.requests_out, plan_json={**result.plan_json, "whatif": {
                           "scenario": scenario.name, "base": str(base_dir), "edits": scenario.edits,
                           "removed_hosts": list(scenario.removed_hosts)}},
                       filters=result.filter_counts, current=result.current, moves=result.moves)
        rows.append(compare_row(scenario.name, str(target), scenario.hosts, scenario.requests, result.shards,
                                result.requests_out, result.plan_json, base))
    return comparison_frame(rows)
