"""Tokens/s of `agentrl sft` on `tiny` against the fitting loop the `tiny` build used before the SFT
stage existed (`agentrl/models.py` at commit cf6b09e, loaded from git), on the same demonstrations
and the same batches.

    .venv/bin/python benchmarks/sft_throughput.py [--demos 600] [--steps 30] [--rounds 3] [--threads 1]

Both sides start from a fresh copy of the cached `tiny` model and fit `--steps` steps of
`--batch-size` Calculator-v0 expert demonstrations (warmup split), pre-encoded, drawn by the same
seeded generator. The new side is `agentrl.sft.warm_start` itself (progress bar and all, no
evaluation), the old one `_fit` with its `_masked_loss`. Rounds alternate old and new so that load
from other processes hits both alike; the figures are medians over rounds, and the ratio is
the median of each round's new/old ratio. Tokens are all tokens of the
rows drawn (prompt, tool results and assistant turns), as the loss's forward processes them.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from agentrl.chat import ChatFormat
from agentrl.models import load_model
from agentrl.sft import SFTConfig, collect_demonstrations, encode_demonstration, warm_start

OLD_COMMIT = "cf6b09e"
ROOT = Path(__file__).resolve().parents[1]


def old_models() -> Any:
    """`agentrl/models.py` as it was at OLD_COMMIT, imported as a module of its own."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:agentrl/models.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "old_models.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_models", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_models"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demos", type=int, default=600)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    old = old_models()
    base, tokenizer = load_model("tiny")
    demos = collect_demonstrations((("calculator", "warmup", args.demos),))["calculator"]
    chat = ChatFormat(tokenizer)
    encoded = [encode_demonstration(chat, d) for d in demos]
    cfg = SFTConfig(env="calculator", steps=args.steps, batch_size=args.batch_size, lr=1e-3, eval_tasks=0)
    info = {"source": "expert:warmup", "count": len(demos), "skipped_failed": 0, "mean_reward": 1.0}

    def run_new() -> float:
        record = warm_start(copy.deepcopy(base), tokenizer, cfg, demos=(demos, info), progress=False)
        return float(record["tokens_per_s"])

    def run_old() -> float:
        rng = random.Random(f"{cfg.seed}/sft")  # the draws warm_start makes
        tokens = [0]

        def batch(step: int) -> list[tuple[list[int], list[int]]]:
            drawn = rng.choices(encoded, k=cfg.batch_size)
            tokens[0] += sum(len(s) for s, _ in drawn)
            return drawn

        model = copy.deepcopy(base)
        torch.manual_seed(cfg.seed)
        t0 = time.monotonic()
        old._fit(model, tokenizer.pad_token_id, batch, cfg.steps, cfg.lr, cfg.warmup, "old SFT")
        return tokens[0] / (time.monotonic() - t0)

    figures: dict[str, list[float]] = {"old": [], "new": []}
    ratios = []
    for r in range(args.rounds):
        order = (("old", run_old), ("new", run_new)) if r % 2 == 0 else (("new", run_new), ("old", run_old))
        for name, fn in order:
            figures[name].append(fn())
        ratios.append(figures["new"][-1] / figures["old"][-1])
        print(
            f"round {r + 1}: old {figures['old'][-1]:,.0f}, new {figures['new'][-1]:,.0f} tokens/s, "
            f"ratio {ratios[-1]:.2f}",
            file=sys.stderr,
        )
    old_tps, new_tps = statistics.median(figures["old"]), statistics.median(figures["new"])
    tokens = sum(len(s) for s, _ in encoded) / len(encoded)
    print(
        f"tiny, {len(demos)} Calculator demos ({tokens:.0f} tokens each), {args.steps} steps × "
        f"{args.batch_size}, {args.rounds} rounds, threads {torch.get_num_threads()}"
    )
    print(f"old fitting loop ({OLD_COMMIT}): {old_tps:,.0f} tokens/s")
    print(f"agentrl sft:               {new_tps:,.0f} tokens/s")
    print(f"ratio: {statistics.median(ratios):.2f} (median of the rounds' ratios; each round ran both)")


if __name__ == "__main__":
    main()
