"""Dispatch of the latency study's jobs: one place that knows every job kind (simulation jobs in
`latency_study`, training jobs in `latency_training`), so neither of those imports the other back."""

from __future__ import annotations

from typing import Any

from latency_study import job_compare, job_realtime, job_reproduction
from latency_training import job_training


def run_job(job: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    kind = job["kind"]
    if kind == "compare":
        res = job_compare(job)
    elif kind == "reproduction":
        res = job_reproduction(job)
    elif kind == "realtime":
        res = job_realtime(job)
    elif kind == "training":
        res = job_training(job)
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    res["job"] = {k: v for k, v in job.items() if k not in ("arms",)}
    return job["id"], res
