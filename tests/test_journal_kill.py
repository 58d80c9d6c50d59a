"""kill -9 of a real `apply` subprocess at random moments; every resumed run must end in the plan."""
from __future__ import annotations

from shardplan.executors.kill_drill import kill_drill
from shardplan.executors.sample_plans import demo_plans, write_plan_dir


def test_kill_9_at_random_moments_then_resume_ends_in_the_plan(tmp_path):
    fleet = demo_plans(5, n_requests=8)
    before = write_plan_dir(tmp_path / "before", fleet.hosts, fleet.requests, fleet.before)
    after = write_plan_dir(tmp_path / "after", fleet.hosts, fleet.requests, fleet.after)
    result = kill_drill(before, after, tmp_path / "trials", total_kills=10, kills_per_trial=10, seed=11, action_delay_ms=20)
    assert result.kills == 10
    assert result.kills_mid_apply >= 5
    assert result.failures == []
    assert result.resumed_runs_ok == result.trials
    assert result.lost_parts == 0 and result.duplicated_parts == 0
    assert result.floor_violations == 0 and result.min_copy_margin is not None and result.min_copy_margin >= 0
    assert result.journal_steps_checked > 0


def test_kill_9_from_an_empty_cluster_ends_in_the_shards_file(tmp_path):
    from shardplan.executors.kill_drill import differs_from_shards_file
    from shardplan.executors.sim import SimExecutor

    fleet = demo_plans(2, n_requests=8)
    after = write_plan_dir(tmp_path / "after", fleet.hosts, fleet.requests, fleet.after)
    result = kill_drill(None, after, tmp_path / "trials", total_kills=3, kills_per_trial=3, seed=4, action_delay_ms=20)
    assert result.kills == 3 and result.trials == 1 and result.failures == []
    assert result.resumed_runs_ok == 1 and result.lost_parts == 0 and result.duplicated_parts == 0
    assert result.actions_per_apply == fleet.after.height
    with SimExecutor(tmp_path / "trials" / "trial-0.db") as sim:
        parts = sim.current_parts()
    assert differs_from_shards_file(parts, after) == []
    moved = [parts[0].with_changes(host_id="elsewhere", vcpu=parts[0].vcpu + 1)] + parts[1:]
    assert any("not in the cluster" in p for p in differs_from_shards_file(moved, after))
