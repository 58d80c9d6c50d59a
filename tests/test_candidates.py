"""Candidate ranking: the vectorised best-k-per-zone selection against a plain per-row reference."""
from __future__ import annotations

import numpy as np
import pytest

from planner.candidates import _top_per_zone


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
