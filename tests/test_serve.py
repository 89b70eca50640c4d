"""`agentrl serve` and `agentrl.serve.Replicas` against a stand-in `vllm` package (a few lines of
http.server that answer `/health`), so process handling is tested without vLLM: start, health wait,
endpoints file, restart on the same port, clean stop, clear errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from agentrl.cli import main
from agentrl.serve import Replicas, vllm_command

FAKE_SERVER = """
import argparse, json, os, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

p = argparse.ArgumentParser()
p.add_argument("--port", type=int)
p.add_argument("--host")
p.add_argument("--served-model-name")
args, _ = p.parse_known_args()
if os.environ.get("FAKE_VLLM_FAIL"):
    print("engine failed to start: out of memory", flush=True)
    sys.exit(3)
time.sleep(float(os.environ.get("FAKE_VLLM_DELAY", "0")))

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"data": [{"id": args.served_model_name}], "argv": sys.argv,
                           "env": {k: os.environ.get(k) for k in ("VLLM_SERVER_DEV_MODE", "VLLM_CPU_KVCACHE_SPACE")}})
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *a):
        pass

ThreadingHTTPServer((args.host, args.port), H).serve_forever()
"""


@pytest.fixture
def fake_vllm(tmp_path: Path) -> dict[str, str]:
    pkg = tmp_path / "fake" / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(textwrap.dedent(FAKE_SERVER))
    return {"PYTHONPATH": str(tmp_path / "fake")}


def _model(tmp_path: Path) -> str:
    d = tmp_path / "my-model"
    d.mkdir(exist_ok=True)
    return str(d)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_command_lines_for_cpu_and_gpus() -> None:
    cpu = vllm_command(Path("py"), "/m", "tiny", 8100, device="cpu", max_model_len=2048)
    assert cpu[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]
    for flag in ("--no-enable-chunked-prefill", "--enforce-eager", "processed_logprobs", "float32"):
        assert flag in cpu
    assert cpu[cpu.index("--max-num-batched-tokens") + 1] == "2048" and "--port" in cpu
    gpu = vllm_command(Path("py"), "/m", "tiny", 8100, device="cuda", gpus=2, lora=True)
    assert "float32" not in gpu and gpu[gpu.index("--tensor-parallel-size") + 1] == "2"
    assert "--enable-lora" in gpu


def test_replicas_start_write_restart_and_stop(tmp_path: Path, fake_vllm: dict[str, str]) -> None:
    reps = Replicas(
        _model(tmp_path), 2, python=sys.executable, device="cpu", log_dir=tmp_path / "logs", env=fake_vllm
    )
    with reps:
        reps.start(ready_timeout=60, poll_s=0.2)
        assert all(r.healthy() for r in reps.replicas)
        info = httpx.get(reps.endpoints[0] + "/v1/models", timeout=5).json()
        assert info["data"][0]["id"] == "my-model"
        assert info["env"] == {"VLLM_SERVER_DEV_MODE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}
        out = json.loads(reps.write(tmp_path / "endpoints.json").read_text())
        assert out["endpoints"] == reps.endpoints and len(set(out["endpoints"])) == 2
        assert reps.override() == f"model.endpoints=[{reps.endpoints[0]},{reps.endpoints[1]}]"

        # a server that dies is started again on its port
        first = reps.replicas[0]
        old_pid = first.pid
        assert old_pid is not None
        first.signal(signal.SIGKILL)
        first.proc.wait(timeout=10)  # type: ignore[union-attr]
        assert not first.alive() and not first.healthy()
        reps.restart(0, ready_timeout=60)
        assert first.healthy() and first.pid != old_pid and first.starts == 2
        pids = [r.pid for r in reps.replicas]
    assert all(_gone(p) for p in pids if p is not None)
    assert all(r.proc is None for r in reps.replicas)


def test_a_server_that_fails_to_start_stops_the_others_and_shows_its_log(
    tmp_path: Path, fake_vllm: dict[str, str]
) -> None:
    reps = Replicas(
        _model(tmp_path),
        2,
        python=sys.executable,
        device="cpu",
        log_dir=tmp_path / "logs",
        env={**fake_vllm, "FAKE_VLLM_FAIL": "1"},
    )
    with pytest.raises(RuntimeError, match=r"exited with status 3 while starting(.|\n)*out of memory"):
        reps.start(ready_timeout=60, poll_s=0.2)
    assert all(r.proc is None for r in reps.replicas)

    slow = Replicas(
        _model(tmp_path), 1, python=sys.executable, device="cpu", env={**fake_vllm, "FAKE_VLLM_DELAY": "30"}
    )
    with pytest.raises(RuntimeError, match=r"not ready after 1 s"):
        slow.start(ready_timeout=1, poll_s=0.2)
    assert slow.replicas[0].proc is None


def test_cli_refuses_bad_input_in_one_line(tmp_path: Path, fake_vllm: dict[str, str]) -> None:
    model = _model(tmp_path)
    with pytest.raises(SystemExit, match="agentrl serve: --replicas: need at least 1 server"):
        main(["serve", "--model", model, "--replicas", "0", "--python", sys.executable, "--device", "cpu"])
    with pytest.raises(SystemExit, match=r"--python: .* is not a Python interpreter"):
        main(["serve", "--model", model, "--python", str(tmp_path / "nope")])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit, match=f"port {port} on 127.0.0.1 is in use"):
            main(["serve", "--model", model, "--port-base", str(port), "--python", sys.executable])


def test_cli_serves_until_interrupted(
    tmp_path: Path, fake_vllm: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from agentrl.cli import serve as serve_cli

    for k, v in fake_vllm.items():
        monkeypatch.setenv(k, v)
    seen: list[list[str]] = []

    def interrupt(replicas: Replicas, restart: bool, ready_timeout: float) -> None:
        seen.append(replicas.endpoints)
        assert all(r.healthy() for r in replicas.replicas)
        raise KeyboardInterrupt

    monkeypatch.setattr(serve_cli, "_watch", interrupt)
    out_file = tmp_path / "eps.json"
    args = ["serve", "--model", _model(tmp_path), "--replicas", "2", "--python", sys.executable]
    assert main([*args, "--device", "cpu", "--out", str(out_file), "--log-dir", str(tmp_path / "l")]) == 0
    printed = capsys.readouterr().out
    assert json.loads(out_file.read_text())["endpoints"] == seen[0]
    assert f"model.endpoints=[{','.join(seen[0])}]" in printed and "stopping the servers" in printed
    for url in seen[0]:  # stopped
        with pytest.raises(httpx.ConnectError):
            httpx.get(url + "/health", timeout=2)
