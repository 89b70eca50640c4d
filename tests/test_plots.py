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
    from agentrl.algorithms import get_algorithm

    panels = (*get_algorithm("spo").panels, *get_algorithm("grpo").panels)
    paths = plot_run(tmp_path, panels=panels, tracker_values=[0.1, 0.5, 0.9])
    names = sorted(p.name for p in paths)
    # panels whose metrics the run never logged (KL, entropy, D(x), ...) are skipped
    assert names == ["degenerate.png", "reward.png", "tracker.png", "tracker_values.png"]
    assert plot_run(tmp_path) == [tmp_path / "plots" / "reward.png"]  # no algorithm panels: none drawn
    assert all(p.stat().st_size > 1000 for p in paths)


def test_truncate_on_resume_drops_later_steps_and_the_repeated_final_evaluation(tmp_path) -> None:
    from agentrl.runlog import read_metrics

    with RunLog(tmp_path, tensorboard=False) as log:
        log.log(0, {"eval/success": 0.1})
        log.log(1, {"reward_mean": 0.2})
        log.log(2, {"reward_mean": 0.3, "eval/success": 0.3})  # a periodic eval inside a training row
        log.log(2, {"eval/final": 1.0, "eval/success": 0.4})  # the final evaluation a resume at 2 repeats
        log.log(3, {"reward_mean": 0.5})
    (tmp_path / "rollouts.jsonl").write_text('{"step": 2}\n{"step": 3}\n{"step": 3, "torn')
    log = RunLog(tmp_path, tensorboard=False)
    log.truncate_after(2, final_key="eval/final")
    log.close()
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [(r["step"], "reward_mean" in r) for r in rows] == [(0, False), (1, True), (2, True)]
    assert (tmp_path / "rollouts.jsonl").read_text() == '{"step": 2}\n'
