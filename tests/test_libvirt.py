"""The libvirt executor against libvirt's own test driver (test:///default, a real libvirt API)."""
from __future__ import annotations

import uuid

import polars as pl
import pytest

libvirt = pytest.importorskip("libvirt")

from shardplan.executors.apply import ApplyError, apply_plan, matches_target  # noqa: E402
from shardplan.executors.base import load_target  # noqa: E402
from shardplan.executors.journal import Journal  # noqa: E402
from shardplan.executors.libvirt_exec import KIB_PER_GIB, LibvirtExecutor, volume_name  # noqa: E402
from shardplan.executors.sample_plans import write_plan_dir  # noqa: E402

URI = "test:///default"


@pytest.fixture()
def keeper():
    """test:///default forgets its state when the process's last connection closes; hold one open."""
    conn = libvirt.open(URI)
    yield conn
    conn.close()


def _hosts(prefix: str, uri_of: dict[str, str] | None = None) -> pl.DataFrame:
    """Four hosts named per test: tests share one test driver, so each sees only its own hosts."""
    rows = []
    for n, host_id in enumerate(("lv1", "lv2", "lv3", "lv4")):
        rows.append({"host_id": f"{host_id}{prefix}", "zone": "z0", "rack": f"rk{n % 3}", "vcpu": 32, "ram_gib": 64,
                     "storage_gib": 50, "storage_type": "ssd", "net_gbps": 10.0, "gpu": 0, "cost_per_hour": 1.0,
                     "libvirt_uri": (uri_of or {}).get(host_id, URI)})
    return pl.DataFrame(rows)


def _shards(prefix: str, layout: list[tuple[str, int, str, int, int, int, int]]) -> pl.DataFrame:
    """(request, shard, host, replica, vcpu, ram_gib, storage_gib) rows."""
    return pl.DataFrame([{"request_id": f"{prefix}{r}", "shard": s, "host_id": f"{h}{prefix}", "replica": rep, "vcpu": v, "ram_gib": m,
                          "storage_gib": st, "net_gbps": 1.0 if v else 0.0, "gpu": 0,
                          "role": "compute" if v else ("storage" if rep == 0 else "replica")}
                         for r, s, h, rep, v, m, st in layout])


def _requests(prefix: str) -> pl.DataFrame:
    return pl.DataFrame([{"request_id": f"{prefix}{r}", "user_id": "u", "app_type": "db", "vcpu": 6, "ram_gib": 12,
                          "storage_gib": 2, "gpu": 0, "net_gbps": 2.0, "replicas": 2} for r in ("a", "b")])


BEFORE = [("a", 0, "lv1", 0, 4, 8, 0), ("a", 1, "lv2", 0, 2, 4, 0), ("a", 2, "lv1", 0, 0, 0, 2), ("a", 3, "lv2", 1, 0, 0, 2),
          ("b", 0, "lv3", 0, 6, 12, 2), ("b", 1, "lv4", 1, 0, 0, 2)]
AFTER = [("a", 0, "lv3", 0, 4, 8, 0), ("a", 1, "lv2", 0, 3, 6, 0), ("a", 2, "lv3", 0, 0, 0, 2), ("a", 3, "lv2", 1, 0, 0, 2),
         ("b", 0, "lv3", 0, 6, 12, 2), ("b", 1, "lv1", 1, 0, 0, 2)]


def _read_back(conn, prefix: str) -> dict[str, tuple[int, int]]:
    return {d.name(): (d.info()[3], d.info()[1]) for d in conn.listAllDomains() if d.name().startswith(prefix)}


def test_apply_defines_every_domain_with_its_vcpus_and_memory(tmp_path, keeper):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    plan = write_plan_dir(tmp_path / "before", _hosts(prefix), _requests(prefix), _shards(prefix, BEFORE))
    report = apply_plan(plan, "libvirt", tmp_path / "state.db")
    assert report.actions_run == 6
    domains = _read_back(keeper, prefix)
    expected = {f"{prefix}{r}-p{s}": (v, m * KIB_PER_GIB) for r, s, h, rep, v, m, st in BEFORE if v}
    assert domains == expected
    volumes = set(keeper.storagePoolLookupByName("default-pool").listVolumes())
    for part in load_target(plan).parts:
        if part.holds_storage:
            assert volume_name(part) in volumes
    with LibvirtExecutor(tmp_path / "state.db", load_target(plan).hosts) as executor:
        assert matches_target(executor.current_parts(), load_target(plan)) == []
        assert executor.domain_shapes()[(f"lv3{prefix}", f"{prefix}b-p0")] == (6, 12 * KIB_PER_GIB)


def test_moves_resizes_and_storage_copies_reach_the_new_plan(tmp_path, keeper):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    before = write_plan_dir(tmp_path / "before", _hosts(prefix), _requests(prefix), _shards(prefix, BEFORE))
    after = write_plan_dir(tmp_path / "after", _hosts(prefix), _requests(prefix), _shards(prefix, AFTER))
    apply_plan(before, "libvirt", tmp_path / "state.db")
    report = apply_plan(after, "libvirt", tmp_path / "state.db")
    assert report.actions_run > 0
    domains = _read_back(keeper, prefix)
    assert domains == {f"{prefix}{r}-p{s}": (v, m * KIB_PER_GIB) for r, s, h, rep, v, m, st in AFTER if v}
    volumes = set(keeper.storagePoolLookupByName("default-pool").listVolumes())
    mine = {v for v in volumes if v.startswith(prefix)}
    assert mine == {f"{prefix}a-p2-lv3{prefix}.img", f"{prefix}a-p3-lv2{prefix}.img", f"{prefix}b-p0-lv3{prefix}.img",
                    f"{prefix}b-p1-lv1{prefix}.img"}
    journal = Journal(tmp_path / "state.db")
    kinds = [e.action.kind.value for e in journal.entries(2)]
    journal.close()
    assert "copy_replica" in kinds and kinds.index("copy_replica") < len(kinds) - 1
    # clean the shared test driver for the other tests
    empty = write_plan_dir(tmp_path / "empty", _hosts(prefix), _requests(prefix), _shards(prefix, [("a", 0, "lv1", 0, 1, 1, 0)]))
    apply_plan(empty, "libvirt", tmp_path / "state.db")
    assert set(_read_back(keeper, prefix)) == {f"{prefix}a-p0"}


def test_connection_failures_are_retried_with_back_off(tmp_path, keeper, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    plan = write_plan_dir(tmp_path / "p", _hosts(prefix), _requests(prefix), _shards(prefix, BEFORE[:1]))
    failures = {"left": 2}

    def flaky(uri):
        if failures["left"]:
            failures["left"] -= 1
            raise libvirt.libvirtError("connection refused (injected)")
        return libvirt.open(uri)

    monkeypatch.setattr(LibvirtExecutor, "opener", staticmethod(flaky))
    monkeypatch.setattr(LibvirtExecutor, "backoff_s", 0.001)
    apply_plan(plan, "libvirt", tmp_path / "state.db")
    assert failures["left"] == 0
    assert f"{prefix}a-p0" in _read_back(keeper, prefix)


def test_an_unreachable_host_fails_clearly_and_nothing_is_applied(tmp_path, keeper, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    monkeypatch.setattr(LibvirtExecutor, "backoff_s", 0.001)
    bad = f"test://{tmp_path}/no-such-node.xml"
    plan = write_plan_dir(tmp_path / "p", _hosts(prefix, {"lv2": bad}), _requests(prefix), _shards(prefix, BEFORE[:2]))
    with pytest.raises(ApplyError) as failure:
        apply_plan(plan, "libvirt", tmp_path / "state.db")
    assert "lv2" in str(failure.value) and "after 4 attempts" in str(failure.value)
    journal = Journal(tmp_path / "state.db")
    run = journal.runs()[-1]
    journal.close()
    assert run["status"] == "failed" and "cannot connect" in run["error"]
    assert _read_back(keeper, prefix) == {}


def test_a_failure_mid_apply_is_journaled_and_the_rerun_resumes(tmp_path, keeper, monkeypatch):
    prefix = f"t{uuid.uuid4().hex[:6]}"
    plan = write_plan_dir(tmp_path / "p", _hosts(prefix), _requests(prefix), _shards(prefix, BEFORE))
    real_define = LibvirtExecutor._define

    def refuse_on_lv2(self, conn, part):
        if part.host_id.startswith("lv2"):
            raise libvirt.libvirtError("hypervisor refused the definition (injected)")
        return real_define(self, conn, part)

    monkeypatch.setattr(LibvirtExecutor, "_define", refuse_on_lv2)
    with pytest.raises(ApplyError) as failure:
        apply_plan(plan, "libvirt", tmp_path / "state.db")
    assert "lv2" in str(failure.value) and "injected" in str(failure.value)
    journal = Journal(tmp_path / "state.db")
    entries = journal.entries(journal.runs()[-1]["apply_id"])
    failed = [e for e in entries if e.state == "failed"]
    assert len(failed) == 1 and failed[0].action.part.host_id.startswith("lv2")
    done = [e.action.part for e in entries if e.state == "done"]
    present = _read_back(keeper, prefix)
    assert done and all(part.domain_name in present for part in done if part.vcpu)
    assert failed[0].action.part.domain_name not in present
    journal.close()
    monkeypatch.setattr(LibvirtExecutor, "_define", real_define)
    report = apply_plan(plan, "libvirt", tmp_path / "state.db")
    assert report.resumed and report.actions_run == len(entries) - len(done)
    assert _read_back(keeper, prefix) == {f"{prefix}{r}-p{s}": (v, m * KIB_PER_GIB) for r, s, h, rep, v, m, st in BEFORE if v}
