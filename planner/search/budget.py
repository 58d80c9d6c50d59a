"""One search budget: `--time-limit` for the whole command, handed out to its phases.

The budget starts when the command starts (before the inputs are read) and ends at its deadline,
`started + time_limit_s`. Every phase runs under it:

- *fixed* phases (reading inputs, fleet, warm start, candidates, assignment, check, export) cannot
  be cut short; they are timed and recorded, and their expected cost is set aside up front
  (`set_aside`, from the problem's size, so the shares the searches get do not depend on the
  machine's speed);
- *search* phases (ruin and recreate, consolidation, CP-SAT, LNS, the LP bound) ask for a `Grant`:
  a share of what is left, in nominal seconds (turned into moves or CP-SAT deterministic units by
  the phase), and a hard wall-clock cap that never passes the deadline minus what is set aside for
  the phases after it.

In deterministic mode the nominal seconds decide the plan (same seed, same plan) and the wall clock
is only a cap, `safety_factor` × the grant at most; when the cap fires the phase stops early, the plan
stays valid, and `cap_fired` says a rerun may differ. In wall-clock mode a grant is plain seconds.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Callable, Iterator


class Stop(str, Enum):
    """Why a phase ended."""

    BUDGET = "budget"                  # it used its grant
    WALL_CAP = "wall_clock_cap"        # the command's deadline stopped it first (deterministic: a rerun may differ)
    DONE = "done"                      # nothing left to do: nothing waits, proved optimal, converged
    SKIPPED = "skipped"                # not run (disabled, or nothing to gain)
    FIXED = "fixed"                    # a phase that always runs to its end


@dataclass(frozen=True)
class Grant:
    """What one search phase may spend."""

    phase: str
    seconds: float        # nominal seconds of the time limit
    wall_cap_s: float     # hard wall-clock limit for the phase
    deterministic: bool
    units_per_s: float    # CP-SAT deterministic-time units per nominal second

    @property
    def units(self) -> float:
        """CP-SAT deterministic time for the grant."""
        return self.seconds * self.units_per_s

    @property
    def solver_limit(self) -> float:
        """What a solver counting in its own time gets: deterministic units, or seconds."""
        return self.units if self.deterministic else self.seconds

    def moves(self, per_s: float) -> int:
        """A local search's budget in moves (at least one)."""
        return max(int(self.seconds * per_s), 1)


@dataclass
class PhaseCharge:
    """What one phase was granted, what it used and why it stopped (seconds)."""

    phase: str
    wall_s: float
    granted_s: float | None
    charged_s: float | None
    wall_cap_s: float | None
    stopped_by: Stop
    end_s: float | None = None   # seconds since the budget started when the phase ended

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out["stopped_by"] = self.stopped_by.value
        for key in ("wall_s", "granted_s", "charged_s", "wall_cap_s", "end_s"):
            if out[key] is not None:
                out[key] = round(out[key], 3)
        return out


@dataclass
class SearchBudget:
    """Owns `--time-limit`: hands each phase its share and charges everything that runs."""

    time_limit_s: float
    deterministic: bool = True
    units_per_s: float = 0.25
    safety_factor: float = 3.0
    clock: Callable[[], float] = time.perf_counter
    started: float | None = None
    before_s: float = 0.0        # set aside for the fixed phases before the search
    after_s: float = 0.0         # set aside for the phases after the search (bound, assign, check, export)
    charged_s: float = 0.0       # nominal seconds the search phases used
    extra_after_s: float = 0.0   # set aside for what the command does after the plan (nightly's report page)
    finish_s: float = 1.0        # of after_s, kept after the bound for assignment, check and export
    phases: list[PhaseCharge] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.time_limit_s <= 0:
            raise ValueError(f"time limit must be > 0 s, got {self.time_limit_s}")
        if self.started is None:
            self.started = self.clock()

    @property
    def deadline(self) -> float:
        return self.started + self.time_limit_s

    def elapsed(self) -> float:
        return self.clock() - self.started

    def wall_left(self) -> float:
        """Wall seconds to the deadline, less what the phases after the search need."""
        return max(self.deadline - self.clock() - self.after_s, 0.0)

    def set_aside(self, before_s: float, after_s: float) -> None:
        """Estimated seconds of the fixed phases before and after the search (from the problem's size,
        never from the clock), together at most 60% of the limit."""
        after_s += self.extra_after_s
        total = before_s + after_s
        scale = min(1.0, 0.6 * self.time_limit_s / total) if total > 0 else 1.0
        self.before_s, self.after_s = before_s * scale, after_s * scale

    def nominal_left(self) -> float:
        """Nominal seconds the search phases may still be granted."""
        if self.deterministic:
            return max(self.time_limit_s - self.before_s - self.after_s - self.charged_s, 0.0)
        return self.wall_left()

    def grant(self, phase: str, share: float = 1.0) -> Grant:
        """`share` of what is left for the search, and its wall-clock cap."""
        seconds = max(share, 0.0) * self.nominal_left()
        wall = self.wall_left()
        cap = min(self.safety_factor * seconds, wall) if self.deterministic else min(seconds, wall)
        return Grant(phase, seconds, cap, self.deterministic, self.units_per_s)

    def tail_grant(self, phase: str, limit_s: float) -> Grant:
        """For a phase after the search (the bound): up to `limit_s`, within the time set aside after the
        search less finish_s for assignment, check and export, and what the command does after the plan."""
        extra = min(self.extra_after_s, self.after_s)
        room = max(self.deadline - self.clock() - min(self.finish_s, (self.after_s - extra) / 2) - extra, 0.0)
        seconds = max(min(limit_s, room), 0.0)
        return Grant(phase, seconds, seconds, False, self.units_per_s)

    def charge(self, grant: Grant, used_s: float, wall_s: float, stopped_by: Stop) -> PhaseCharge:
        """Record a search phase: `used_s` nominal seconds (deterministic mode: what decided its end)."""
        if self.deterministic and grant.deterministic:
            self.charged_s += min(max(used_s, 0.0), grant.seconds)
        if stopped_by == Stop.BUDGET and grant.deterministic and wall_s >= 0.98 * grant.wall_cap_s \
                and used_s < 0.95 * grant.seconds:
            stopped_by = Stop.WALL_CAP
        record = PhaseCharge(grant.phase, wall_s, grant.seconds, used_s, grant.wall_cap_s, stopped_by, self.elapsed())
        self.phases.append(record)
        return record

    def note_cap(self, phase: str) -> None:
        """A fixed phase cut its optional work short at the deadline (e.g. warm-start variants)."""
        self.phases.append(PhaseCharge(phase, 0.0, None, None, None, Stop.WALL_CAP, self.elapsed()))

    def skip(self, phase: str) -> None:
        self.phases.append(PhaseCharge(phase, 0.0, None, None, None, Stop.SKIPPED, self.elapsed()))

    @contextmanager
    def fixed(self, phase: str) -> Iterator[None]:
        """Time a phase that always runs to its end."""
        began = self.clock()
        try:
            yield
        finally:
            self.phases.append(PhaseCharge(phase, self.clock() - began, None, None, None, Stop.FIXED, self.elapsed()))

    @property
    def cap_fired(self) -> bool:
        return any(p.stopped_by == Stop.WALL_CAP for p in self.phases)

    def to_dict(self) -> dict[str, object]:
        return {"time_limit_s": self.time_limit_s, "deterministic": self.deterministic,
                "units_per_s": self.units_per_s, "safety_factor": self.safety_factor,
                "set_aside_before_s": round(self.before_s, 3), "set_aside_after_s": round(self.after_s, 3),
                "elapsed_s": round(self.elapsed(), 3), "wall_clock_cap_fired": self.cap_fired,
                "phases": [p.to_dict() for p in self.phases]}


@dataclass
class SearchStats:
    """What one local search did (ruin and recreate, consolidation, LNS): moves tried, kept and
    improving, objective (solver units) and placed requests before and after, time, why it stopped."""

    moves: int = 0
    kept: int = 0
    improved: int = 0
    start_objective: int = 0
    final_objective: int = 0
    start_placed: int = 0
    final_placed: int = 0
    deterministic_s: float = 0.0   # CP-SAT deterministic time (LNS)
    wall_s: float = 0.0
    stopped_by: Stop = Stop.BUDGET
    detail: dict[str, int] = field(default_factory=dict)  # figures of one search (hosts emptied, ...)

    @property
    def gained(self) -> bool:
        return self.final_objective < self.start_objective

    def to_dict(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k != "detail"}
        out["stopped_by"] = self.stopped_by.value
        out["wall_s"] = round(self.wall_s, 3)
        out["deterministic_s"] = round(self.deterministic_s, 3)
        return {**out, **self.detail}
