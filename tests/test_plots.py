from __future__ import annotations

from agentrl.plots import plot_run
from agentrl.runlog import RunLog


def test_plots_are_written_from_metrics(tmp_path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        for s in range(4):
            row = {
                "reward_mean": s / 4,
                "tracker/rho_mean": 0.9,
                "tracker/n_eff_mean": 8 + s,
                "adv/frac_samples_in_degenerate_groups": 0.6,
            }
            if s % 2 == 0:
                row["eval/success"] = 0.2 + s / 10
            log.log(s, row)
    paths = plot_run(tmp_path, tracker_values=[0.1, 0.5, 0.9])
    names = sorted(p.name for p in paths)
    assert names == ["degenerate_groups.png", "reward.png", "tracker_rho_neff.png", "tracker_values.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
