"""Candidate ranking: the vectorised best-k-per-zone selection against a plain per-row reference."""
from __future__ import annotations

import numpy as np
import pytest

from shardplan.planner.search.candidates import _top_per_zone


def reference_top_per_zone(score, zone, k, by_rack=None, extra=None):
    """The obvious row-by-row rule the vectorised version must reproduce."""
    out = []
    for i in range(score.shape[0]):
        chosen = []
        row = score[i]
        for z in np.unique(zone):
            idx = np.flatnonzero((zone == z) & np.isfinite(row))
            if not idx.size:
                continue
            order = idx[np.argsort(-row[idx], kind="stable")]
            if by_rack is None:
                chosen.extend(order[:k].tolist())
                continue
            _, first = np.unique(by_rack[order], return_index=True)
            distinct = order[np.sort(first)]
            need = max(k, int(extra[i]) + 2) if extra is not None else k
            picked = list(distinct[:need])
            rest = [c for c in order if c not in set(picked)]
            chosen.extend(picked + rest[: max(0, k - len(picked))])
        out.append(np.array(sorted(chosen), dtype=np.int64))
    return out


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("racks", [False, True])
def test_vectorised_selection_matches_the_reference(seed, racks):
    rng = np.random.default_rng(seed)
    rows, classes = int(rng.integers(1, 40)), int(rng.integers(1, 30))
    # few distinct values so ties are common, and some classes ruled out (-inf)
    score = rng.integers(0, 5, size=(rows, classes)).astype(float)
    score[rng.random((rows, classes)) < 0.3] = -np.inf
    zone = rng.integers(0, 3, size=classes)
    rack = rng.integers(0, 6, size=classes) if racks else None
    extra = rng.integers(0, 4, size=rows) if racks else None
    k = int(rng.integers(1, 6))
    got = _top_per_zone(score, zone, k, by_rack=rack, extra=extra)
    want = reference_top_per_zone(score, zone, k, by_rack=rack, extra=extra)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.tolist() == b.tolist()


def test_a_kept_host_of_a_symmetry_group_brings_the_group_so_the_model_still_breaks_its_symmetry():
    # six identical empty hosts on one rack form a symmetry group; top_k 1 ranks them below the active
    # host, so a request whose earlier plan used one of them (must_include) sees that group whole
    from shardplan.models.problem import symmetry_views
    from shardplan.planner.engine import build_problem
    from shardplan.planner.search.candidates import build_fleet, find_candidates
    from shardplan.planner.validate.options import PlanOptions
    from tests.fleets import hosts_table, requests_table

    hosts = hosts_table({"host_id": "busy", "rack": "r0", "vcpu": 64, "ram_gib": 256, "used_vcpu": 1, "used_ram_gib": 1},
                        *[{"host_id": f"e{i}", "rack": "r1", "vcpu": 16, "ram_gib": 64} for i in range(6)])
    requests = requests_table({"request_id": "q0", "vcpu": 8, "ram_gib": 8}, {"request_id": "q1", "vcpu": 4, "ram_gib": 4})
    fleet = build_fleet(hosts)
    options = PlanOptions(mode="whole", top_k=1, workers=1)
    group = sorted(fleet.host_ids.index(f"e{i}") for i in range(6))
    plain = find_candidates(fleet, requests, options)
    assert [c.tolist() for c in plain.compute] == [[0], [0]]
    kept = find_candidates(fleet, requests, options, must_include=[{group[4]}, set()])
    assert kept.compute[0].tolist() == [0] + group and kept.compute[1].tolist() == [0]
    problem = build_problem(fleet, requests, kept, options, np.arange(2))
    assert len(problem.symmetry_groups) == 1
    assert symmetry_views(problem, problem.symmetry_groups[0]) is not None  # each request sees it whole or not at all
