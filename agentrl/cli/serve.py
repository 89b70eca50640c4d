"""`agentrl serve`: start N local vLLM servers for the `openai` backend and keep them up until Ctrl-C.

    agentrl serve --model tiny --replicas 2 --port-base 8100 --out endpoints.json

Waits until every server answers `/health`, writes their endpoints as JSON to `--out`, prints the
`model.endpoints=[...]` override for `agentrl train`, and stops them all on Ctrl-C, SIGTERM or exit.
With `--restart`, a server that exits is started again on its port (the `openai` backend puts it
back in rotation, with the current weights, once it answers).
"""

from __future__ import annotations

import argparse
import signal
import time
from pathlib import Path
from typing import Any


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="tiny | smollm2-135m | a model directory | an HF id")
    p.add_argument("--replicas", type=int, default=1, help="how many servers (default 1)")
    p.add_argument(
        "--port-base", type=int, help="first port; server i listens on PORT_BASE+i (default: free)"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all interfaces)")
    p.add_argument("--python", help="the Python with vLLM (default: $AGENTRL_VLLM_PYTHON or ./.vllm-venv)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--gpus-per-replica", type=int, default=1, help="GPUs per server (tensor parallel)")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--lora", action="store_true", help="allow LoRA adapters to be hot-loaded")
    p.add_argument("--out", default="endpoints.json", help="where to write the endpoints (JSON)")
    p.add_argument("--log-dir", default="runs/serve", help="one log file per server here")
    p.add_argument("--ready-timeout", type=float, default=600.0, help="seconds to wait for health")
    p.add_argument("--restart", action="store_true", help="start a server that exits again")
    p.add_argument(
        "--vllm-arg", action="append", default=[], metavar="ARG", help="extra vLLM argument (repeatable)"
    )


def run(args: argparse.Namespace) -> int:
    from agentrl.serve import Replicas

    try:
        replicas = Replicas(
            args.model,
            args.replicas,
            port_base=args.port_base,
            host=args.host,
            python=args.python,
            device=args.device,
            max_model_len=args.max_model_len,
            gpus_per_replica=args.gpus_per_replica,
            lora=args.lora,
            log_dir=args.log_dir,
            extra_args=args.vllm_arg,
        )
    except ValueError as e:
        raise SystemExit(f"agentrl serve: {e}") from None

    def on_term(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        print(
            f"[agentrl] starting {len(replicas.replicas)} vLLM server(s) of {replicas.model_name} on "
            f"{replicas.device} ({replicas.python}); logs in {args.log_dir}",
            flush=True,
        )
        t0 = time.monotonic()
        try:
            replicas.start(args.ready_timeout)
        except RuntimeError as e:
            raise SystemExit(f"agentrl serve: {e}") from None
        out = replicas.write(Path(args.out))
        print(f"[agentrl] {len(replicas.endpoints)} server(s) ready in {time.monotonic() - t0:.0f} s:")
        for url in replicas.endpoints:
            print(f"  {url}")
        print(f"[agentrl] endpoints written to {out}; train against them with:")
        print(f"  agentrl train --backend openai {replicas.override()}", flush=True)
        _watch(replicas, args.restart, args.ready_timeout)
    except KeyboardInterrupt:
        print("\n[agentrl] stopping the servers", flush=True)
    finally:
        replicas.stop()
        signal.signal(signal.SIGTERM, previous)
    return 0


def _watch(replicas: Any, restart: bool, ready_timeout: float) -> None:
    """Until interrupted: report servers that exit, and start them again with `restart`."""
    reported: set[int] = set()
    while True:
        time.sleep(2.0)
        for i, r in enumerate(replicas.replicas):
            if r.alive():
                reported.discard(i)
                continue
            if restart:
                print(f"[agentrl] server {i} ({r.url}) exited; starting it again", flush=True)
                try:
                    replicas.restart(i, ready_timeout)
                    print(f"[agentrl] server {i} ({r.url}) is back", flush=True)
                except RuntimeError as e:
                    print(f"[agentrl] server {i} did not come back: {str(e).splitlines()[0]}", flush=True)
            elif i not in reported:
                reported.add(i)
                print(f"[agentrl] server {i} ({r.url}) exited; see {r.log_path}", flush=True)
        if not restart and len(reported) == len(replicas.replicas):
            raise SystemExit("agentrl serve: every server exited")
