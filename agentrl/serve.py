"""Several local vLLM OpenAI-compatible servers for the `openai` backend (what `agentrl serve` runs).

`Replicas(model, n)` starts `n` `vllm.entrypoints.openai.api_server` processes, each in its own process
group, on consecutive ports, waits until every one answers `/health` (within a deadline), and stops
them all on `stop()` or when its `with` block ends. Each server runs as the `openai` backend expects:
`VLLM_SERVER_DEV_MODE=1` (in-place weight reloads) and `--logprobs-mode processed_logprobs`. On CPU
each also gets `--dtype float32 --enforce-eager --no-enable-chunked-prefill` (vLLM's CPU build cannot
split a seeded prefill) and `VLLM_CPU_KVCACHE_SPACE` (GiB of KV cache, 1 unless set); on GPUs, replica
`i` gets its own `gpus_per_replica` devices through `CUDA_VISIBLE_DEVICES` (tensor parallel when more
than one).

vLLM is looked for in `python=`, then `$AGENTRL_VLLM_PYTHON`, then `.vllm-venv/bin/python` in the
working directory or the agentrl checkout (what `scripts/setup_vllm_cpu.sh` makes), then this Python.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

__all__ = ["Replica", "Replicas", "find_vllm_python", "vllm_command"]

ROOT = Path(__file__).resolve().parent.parent


def find_vllm_python(python: str | Path | None = None) -> Path:
    """The interpreter that has vLLM (see the module docstring for the search order)."""
    if python is not None:
        path = Path(python)
        if not path.is_file():
            raise ValueError(f"--python: {path} is not a Python interpreter")
        return path
    if os.environ.get("AGENTRL_VLLM_PYTHON"):
        return find_vllm_python(os.environ["AGENTRL_VLLM_PYTHON"])
    for base in (Path.cwd(), ROOT):
        candidate = base / ".vllm-venv" / "bin" / "python"
        if candidate.is_file():
            return candidate
    return Path(sys.executable)


def _model_source(model: str) -> tuple[str, str]:
    """(what vLLM loads, the served model name): embedded names resolve to their local directory."""
    from agentrl.models import EMBEDDED_MODELS, model_path

    if model in EMBEDDED_MODELS:
        return str(model_path(model)), model
    path = Path(model)
    return model, (path.name if path.exists() else model)


def _cuda_devices() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def vllm_command(
    python: Path,
    model: str,
    served_name: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    device: str = "cpu",
    max_model_len: int = 4096,
    gpus: int = 1,
    lora: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of one server (what the README's manual launch lines spell out)."""
    cmd = [
        str(python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        model,
        "--served-model-name",
        served_name,
        "--host",
        host,
        "--port",
        str(port),
        "--max-model-len",
        str(max_model_len),
        "--logprobs-mode",
        "processed_logprobs",
        "--disable-log-stats",
    ]
    if device == "cpu":
        cmd += [
            "--dtype",
            "float32",
            "--enforce-eager",
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            str(max_model_len),
        ]
    elif gpus > 1:
        cmd += ["--tensor-parallel-size", str(gpus)]
    if lora:
        cmd += ["--enable-lora"]
    return cmd + list(extra)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Replica:
    """One server process group; its output goes to `log_path`."""

    def __init__(self, cmd: list[str], env: dict[str, str], url: str, log_path: Path) -> None:
        self.cmd, self.env, self.url, self.log_path = cmd, env, url, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.starts += 1

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def healthy(self, timeout: float = 2.0) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return httpx.get(self.url + "/health", timeout=timeout).status_code == 200
        return False

    def tail(self, n: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Signal the whole process group (the API server and its engine process)."""
        if self.alive():
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # the engine child may outlive the API server's exit: end what is left of the group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


class Replicas:
    """`n` local vLLM servers of one model; a context manager that stops them all on exit."""

    def __init__(
        self,
        model: str,
        n: int = 1,
        *,
        port_base: int | None = None,
        host: str = "127.0.0.1",
        python: str | Path | None = None,
        device: str = "auto",
        max_model_len: int = 4096,
        gpus_per_replica: int = 1,
        lora: bool = False,
        log_dir: str | Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        if n < 1:
            raise ValueError(f"--replicas: need at least 1 server, got {n}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"--device: must be auto, cpu or cuda, got {device!r}")
        if port_base is not None and not 0 < port_base <= 65535 - n:
            raise ValueError(f"--port-base: {port_base} leaves no room for {n} ports")
        self.python = find_vllm_python(python)
        source, self.model_name = _model_source(model)
        visible = _cuda_devices() if device in ("auto", "cuda") else 0
        self.device = "cuda" if device == "cuda" or (device == "auto" and visible) else "cpu"
        if self.device == "cuda" and visible and n * gpus_per_replica > visible:
            raise ValueError(
                f"--replicas: {n} servers x {gpus_per_replica} GPU(s) need {n * gpus_per_replica} GPUs; "
                f"this machine has {visible}"
            )
        log_root = Path(log_dir) if log_dir is not None else Path("runs") / "serve"
        self.replicas: list[Replica] = []
        for i in range(n):
            port = port_base + i if port_base is not None else _free_port(host)
            if port_base is not None and not _port_free(host, port):
                raise ValueError(f"--port-base: port {port} on {host} is in use")
            child_env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1", **(env or {})}
            if self.device == "cpu":
                child_env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
            else:
                devices = range(i * gpus_per_replica, (i + 1) * gpus_per_replica)
                child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(d) for d in devices)
            if lora:
                child_env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
            cmd = vllm_command(
                self.python,
                source,
                self.model_name,
                port,
                host=host,
                device=self.device,
                max_model_len=max_model_len,
                gpus=gpus_per_replica,
                lora=lora,
                extra=extra_args,
            )
            url_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            self.replicas.append(
                Replica(cmd, child_env, f"http://{url_host}:{port}", log_root / f"replica-{i}-{port}.log")
            )

    @property
    def endpoints(self) -> list[str]:
        return [r.url for r in self.replicas]

    def start(self, ready_timeout: float = 300.0, poll_s: float = 1.0) -> None:
        """Start every server and wait until all answer `/health`; on failure stop all and raise."""
        for r in self.replicas:
            r.start()
        try:
            self.wait_ready(ready_timeout, poll_s)
        except RuntimeError:
            self.stop()
            raise

    def wait_ready(
        self, ready_timeout: float = 300.0, poll_s: float = 1.0, which: Sequence[int] | None = None
    ) -> None:
        """Wait until the servers (`which`, default all) answer `/health`; RuntimeError if one exits
        or the deadline passes (the error carries the end of its log)."""
        pending = list(which if which is not None else range(len(self.replicas)))
        deadline = time.monotonic() + ready_timeout
        while pending:
            for i in list(pending):
                r = self.replicas[i]
                if not r.alive():
                    code = None if r.proc is None else r.proc.returncode
                    raise RuntimeError(
                        f"vLLM server {i} ({r.url}) exited with status {code} while starting; "
                        f"its log ({r.log_path}) ends:\n{r.tail()}"
                    )
                if r.healthy():
                    pending.remove(i)
            if pending and time.monotonic() > deadline:
                late = [self.replicas[i] for i in pending]
                raise RuntimeError(
                    f"vLLM server(s) {[r.url for r in late]} not ready after {ready_timeout:g} s; "
                    f"see {late[0].log_path}, which ends:\n{late[0].tail()}"
                )
            if pending:
                time.sleep(poll_s)

    def restart(self, i: int, ready_timeout: float = 300.0) -> None:
        """Stop replica `i` if it runs, start it again on its port, wait for its health."""
        self.replicas[i].stop()
        self.replicas[i].start()
        try:
            self.wait_ready(ready_timeout, which=[i])
        except RuntimeError:
            self.replicas[i].stop()
            raise

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "endpoints": self.endpoints,
            "replicas": [
                {"url": r.url, "pid": r.pid, "log": str(r.log_path), "command": r.cmd} for r in self.replicas
            ],
        }

    def write(self, path: str | Path) -> Path:
        """The endpoints as JSON (`{"model", "endpoints", "replicas"}`), written atomically."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        tmp.replace(out)
        return out

    def override(self) -> str:
        """The `agentrl train` override that points the `openai` backend at these servers."""
        return f"model.endpoints=[{','.join(self.endpoints)}]"

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()

    def __enter__(self) -> Replicas:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
