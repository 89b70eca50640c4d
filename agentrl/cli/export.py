"""`agentrl export`: a checkpoint as a standalone model directory, or a LoRA run's adapter alone.

    agentrl export --checkpoint runs/NAME --merge --out merged/   # base + adapter folded: a full model
    agentrl export --checkpoint runs/NAME --out adapter/          # the adapter files (PEFT / vLLM)

A merged directory loads with `agentrl.models.load_model(DIR)`, so `agentrl eval --model DIR` and
`agentrl train --model DIR` take it. The base model of a LoRA checkpoint is the run's `model.name`
(from `runs/NAME/config.yaml`), else the adapter's `base_model_name_or_path`. A full fine-tuning
checkpoint is already a model: its files are copied, with or without `--merge`.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint", required=True, help="a run directory (runs/NAME) or one of its checkpoints"
    )
    p.add_argument("--out", required=True, help="the directory to write (must not exist or be empty)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="fold a LoRA adapter into its base model and write a full model (default: the adapter alone)",
    )


def _checkpoint_dir(path: str) -> Path:
    from agentrl.checkpoint import latest_checkpoint

    p = Path(path)
    if (p / "checkpoints").is_dir():
        p = p / "checkpoints"
    if (p / "latest").is_file():
        found = latest_checkpoint(p)
        if found is not None:
            return found
    if not (p / "state.pt").is_file():
        raise ValueError(f"--checkpoint {path}: not a run or checkpoint directory (no state.pt)")
    return p


def export(checkpoint: str | Path, out: str | Path, *, merge: bool = False) -> Path:
    """Write `checkpoint`'s model (merged, or its adapter alone) to `out`; returns `out`."""
    from agentrl.cli.eval import base_model_of
    from agentrl.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter_dir, load_merged

    ckpt = _checkpoint_dir(str(checkpoint))
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out}: exists and is not empty (nothing was overwritten)")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if is_adapter_dir(ckpt) and merge:
            model, tokenizer = load_merged(base_model_of(ckpt), ckpt)
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        else:
            if is_adapter_dir(ckpt) and not (ckpt / ADAPTER_WEIGHTS).is_file():
                raise ValueError(f"--checkpoint {ckpt}: {ADAPTER_CONFIG} without {ADAPTER_WEIGHTS}")
            for f in ckpt.iterdir():  # the model or adapter files and the tokenizer, not the run state
                if f.is_file() and f.name != "state.pt":
                    shutil.copy2(f, tmp / f.name)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run(args: argparse.Namespace) -> int:
    from agentrl.lora import is_adapter_dir

    try:
        ckpt = _checkpoint_dir(args.checkpoint)
        out = export(ckpt, args.out, merge=args.merge)
    except (ValueError, OSError) as e:
        raise SystemExit(f"agentrl export: {str(e).splitlines()[0]}") from None
    if is_adapter_dir(ckpt):
        what = "merged model (base + adapter)" if args.merge else "LoRA adapter"
    else:
        what = "model (a full fine-tuning checkpoint; nothing to merge)"
    print(f"exported {ckpt} as a {what} to {out}")
    return 0
