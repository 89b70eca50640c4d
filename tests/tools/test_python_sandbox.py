"""The python tool's sandbox: normal code works, and every escape or resource attack fails.

The sandbox tests need bubblewrap (the README's test command installs it); they are skipped
with a reason where it is missing or cannot create namespaces.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentrl.tools import ToolBox, ToolCall, seccomp
from agentrl.tools import python_sandbox as sb
from agentrl.tools.python_sandbox import PythonTool, SandboxLimits

_BWRAP = shutil.which("bwrap")
_PROBLEM = "bwrap not found" if _BWRAP is None else sb._probe_bwrap(_BWRAP)
needs_bwrap = pytest.mark.skipif(_PROBLEM is not None, reason=f"no usable bubblewrap: {_PROBLEM}")

TIGHT = SandboxLimits(
    wall_s=4.0,
    cpu_s=1,
    memory_bytes=512 << 20,
    max_processes=16,
    max_file_bytes=1 << 20,
    tmpfs_bytes=4 << 20,
    max_output_bytes=16 << 10,
)


@pytest.fixture(scope="module")
def tool() -> PythonTool:
    return PythonTool(TIGHT)


async def run(tool: PythonTool, code: str) -> tuple[bool, str]:
    result = await tool({"code": code})
    return result.ok, result.content


_BEFORE: set[int] = set()


@pytest.fixture(autouse=True)
def _children_before_the_test() -> None:
    """Children this process already had (another test's servers, Ray's workers) are not this test's."""
    _BEFORE.clear()
    _BEFORE.update(_all_children())


def _children_alive() -> list[int]:
    """Live (non-zombie) child processes of this test process that the test started."""
    return [pid for pid in _all_children() if pid not in _BEFORE]


def _all_children() -> list[int]:
    me, alive = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


# --- normal code -----------------------------------------------------------------------------------


@needs_bwrap
async def test_prints_output(tool: PythonTool) -> None:
    assert await run(tool, "print(2 + 2)") == (True, "4\n")


@needs_bwrap
async def test_trailing_expression_is_echoed(tool: PythonTool) -> None:
    assert await run(tool, "x = 6\nx * 7") == (True, "42\n")
    assert await run(tool, "x = 1") == (True, "(no output; use print() to show results)")


@needs_bwrap
async def test_sympy_and_numpy_import() -> None:
    tool = PythonTool(SandboxLimits(wall_s=30))  # default memory: room for the imports
    code = (
        "import sympy, numpy as np\n"
        "x = sympy.symbols('x')\n"
        "print(sympy.solve(x**2 - 5*x + 6, x), int(np.arange(5).sum()))"
    )
    assert await run(tool, code) == (True, "[2, 3] 10\n")


@needs_bwrap
async def test_runs_in_parallel_and_through_toolbox(tool: PythonTool) -> None:
    box = ToolBox([tool])
    results = await asyncio.gather(
        *(box.call(ToolCall("python", {"code": f"print({i} * {i})"})) for i in range(4))
    )
    assert [r.content for r in results] == [f"{i * i}\n" for i in range(4)]


@needs_bwrap
async def test_output_below_the_cap_arrives_complete(tool: PythonTool) -> None:
    code = "import sys\nfor i in range(1000):\n    print(f'{i:05d}')\n_ = sys.stderr.write('E' * 5000)"
    res = await tool.execute(code)
    assert res.returncode == 0 and not res.output_overflow and not res.timed_out
    assert res.stdout == "".join(f"{i:05d}\n" for i in range(1000))
    assert res.stderr == "E" * 5000
    shown = (await tool({"code": code})).content  # what the model sees is clipped in the middle
    assert shown.startswith("00000\n") and shown.rstrip().endswith("00999") and "characters omitted" in shown


@needs_bwrap
async def test_working_directory_is_private_and_writable(tool: PythonTool) -> None:
    code = "open('notes.txt', 'w').write('hi')\nimport os\nprint(os.getcwd(), open('notes.txt').read())"
    assert await run(tool, code) == (True, "/tmp hi\n")
    # each call starts from an empty directory
    ok, out = await run(tool, "import os; print(os.listdir('.'))")
    assert (ok, out) == (True, "[]\n")


# --- errors the model can fix ----------------------------------------------------------------------


@needs_bwrap
async def test_exception_shows_traceback_with_source_line(tool: PythonTool) -> None:
    ok, out = await run(tool, "a = 1\nb = a / 0")
    assert not ok
    assert "exit status 1" in out and 'File "main.py", line 2' in out
    assert "b = a / 0" in out and "ZeroDivisionError: division by zero" in out


@needs_bwrap
async def test_syntax_error_and_exit_status(tool: PythonTool) -> None:
    ok, out = await run(tool, "def f(:\n    pass")
    assert not ok and "SyntaxError" in out
    ok, out = await run(tool, "print('partial')\nimport sys; sys.exit(3)")
    assert not ok and "exit status 3" in out and "partial" in out


@needs_bwrap
async def test_bad_arguments(tool: PythonTool) -> None:
    empty = await tool({"code": "   "})
    assert not empty.ok and "code is empty" in empty.content
    missing = await tool({})
    assert missing.error_kind == "bad_arguments" and "code" in missing.content
    too_long = await tool({"code": "#" * 20_001})
    assert too_long.error_kind == "bad_arguments"


# --- escapes and attacks: each must fail -----------------------------------------------------------


@pytest.fixture
def secret_dir() -> Iterator[Path]:
    """A directory with a secret file in the invoking user's home (outside the sandbox)."""
    d = Path(tempfile.mkdtemp(prefix="agentrl-secret-", dir=Path.home()))
    (d / "secret.txt").write_text("TOP-SECRET-4711")
    yield d
    shutil.rmtree(d)


@needs_bwrap
async def test_cannot_read_secret_files(tool: PythonTool, secret_dir: Path, tmp_path: Path) -> None:
    host_tmp_secret = tmp_path / "secret.txt"
    host_tmp_secret.write_text("TOP-SECRET-4711")
    for path in [secret_dir / "secret.txt", host_tmp_secret, Path(__file__), Path("/etc/hostname")]:
        ok, out = await run(tool, f"print(open({str(path)!r}).read())")
        assert not ok and "TOP-SECRET" not in out
        assert "FileNotFoundError" in out or "PermissionError" in out, out
    # the home directory and the repository are not mounted at all
    ok, out = await run(tool, f"import os; print(os.path.exists({str(secret_dir)!r}))")
    assert (ok, out) == (True, "False\n")


@needs_bwrap
async def test_cannot_see_host_processes(tool: PythonTool) -> None:
    ok, out = await run(tool, "import os; print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    assert ok
    pids = {int(p) for p in out.strip("[]\n").split(",")}
    assert pids <= {1, 2, 3}  # its own init and itself, in its own PID namespace


def _write_targets(tmp_path: Path) -> list[str]:
    """Host paths the sandbox can see read-only, or not at all."""
    targets = [str(tmp_path / "escaped.txt"), "/escaped.txt", "/usr/escaped.txt", "/etc/escaped.txt"]
    targets += ["/dev/escaped.txt", "/proc/escaped.txt"]
    targets += [os.path.join(p, "escaped.txt") for p in sb._site_packages()]
    targets.append(os.path.join(os.path.realpath(sys.base_prefix), "escaped.txt"))
    return targets


def _exists(path: str) -> bool:
    return os.path.exists(path)


@needs_bwrap
async def test_cannot_write_outside(tool: PythonTool, tmp_path: Path) -> None:
    for target in _write_targets(tmp_path):
        ok, out = await run(tool, f"open({target!r}, 'w').write('x')\nprint('WROTE')")
        assert not ok and "WROTE" not in out, target
        assert any(e in out for e in ("Read-only file system", "Permission denied", "No such file")), out
        assert not _exists(target), target


@needs_bwrap
async def test_cannot_open_network_connections(tool: PythonTool) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        code = (
            "import socket\n"
            f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "s.sendall(b'leak')\nprint('CONNECTED')"
        )
        ok, out = await run(tool, code)
        assert not ok and "CONNECTED" not in out
        assert "ConnectionRefusedError" in out
        with pytest.raises(BlockingIOError):
            server.accept()  # nothing ever reached the host's listener
        ok, out = await run(tool, "import socket; socket.create_connection(('1.1.1.1', 53), timeout=2)")
        assert not ok and ("Network is unreachable" in out or "OSError" in out)
    finally:
        server.close()


@needs_bwrap
async def test_process_limit_stops_forking(tool: PythonTool) -> None:
    """A bounded bomb: try 200 sleeping children and see fork refused near the limit."""
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(200):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(2); os._exit(0)\n"
        "        n += 1\n"
        "except OSError as e:\n"
        "    print('refused after', n, type(e).__name__)\n"
    )
    ok, out = await run(tool, code)
    assert ok and out.startswith("refused after") and "BlockingIOError" in out
    assert int(out.split()[2]) < TIGHT.max_processes


# Zeroing pages costs CPU time: with TIGHT's 1 s CPU cap a slow, loaded machine could hit the CPU
# limit before the memory cap, so the memory test gets CPU headroom and a small memory cap.
MEMORY_BOUND = dataclasses.replace(TIGHT, cpu_s=10, wall_s=20.0, memory_bytes=256 << 20)


@needs_bwrap
async def test_memory_bomb_fails() -> None:
    tool = PythonTool(MEMORY_BOUND)
    ok, out = await run(tool, "x = bytearray(8 * 1024**3)")
    assert not ok and "MemoryError" in out
    ok, out = await run(tool, "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024**2))")
    assert not ok and ("MemoryError" in out or "killed" in out), out


@needs_bwrap
async def test_infinite_loop_hits_cpu_limit(tool: PythonTool) -> None:
    ok, out = await run(tool, "while True:\n    pass")
    assert not ok and ("CPU time limit" in out or "did not finish" in out)


@needs_bwrap
async def test_sleeping_forever_hits_wall_deadline() -> None:
    tool = PythonTool(SandboxLimits(wall_s=1.5))
    ok, out = await run(tool, "print('started', flush=True)\nimport time\ntime.sleep(3600)")
    assert not ok and "did not finish within 1.5 s" in out and "started" in out
    assert _children_alive() == []


@needs_bwrap
async def test_output_flood_is_cut_and_stopped(tool: PythonTool) -> None:
    ok, out = await run(tool, "while True:\n    print('spam' * 100)")
    assert not ok and "printed more than 16384 bytes" in out
    assert len(out) < 2 * tool.max_output_chars
    ok, out = await run(tool, "import sys\nwhile True:\n    sys.stderr.write('e' * 1000)")
    assert not ok and "printed more than" in out


@needs_bwrap
async def test_file_size_and_disk_limits(tool: PythonTool) -> None:
    ok, out = await run(tool, "open('big', 'wb').write(b'x' * (2 << 20))")
    assert not ok and "File too large" in out
    for where in ("", "/dev/shm/"):  # both writable places are size-capped tmpfs
        code = f"for i in range(10):\n    open(f'{where}f{{i}}', 'wb').write(b'x' * (900 << 10))"
        ok, out = await run(tool, code)
        assert not ok and "No space left on device" in out


@needs_bwrap
async def test_caller_timeout_kills_the_sandbox() -> None:
    """The base class's deadline cancels run(); nothing from the sandbox may survive that."""
    tool = PythonTool(SandboxLimits(wall_s=60), timeout=1.0)
    result = await tool({"code": "import time\ntime.sleep(3600)"})
    assert result.error_kind == "timeout"
    assert _children_alive() == []


# --- kernel hardening: no new namespaces, no mounts, and the seccomp filter's denials -------------

_SYSCALL = r"""
import ctypes, errno, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    args = [ctypes.c_long(a) for a in args]
    r = libc.syscall(ctypes.c_long(nr), *args)
    e = ctypes.get_errno()
    return "ok" if r >= 0 else errno.errorcode.get(e, str(e))
"""

# x86_64 / aarch64 numbers of the calls exercised below by name
_NR = {
    "x86_64": {
        "clone": 56,
        "clone3": 435,
        "ptrace": 101,
        "keyctl": 250,
        "add_key": 248,
        "bpf": 321,
        "setns": 308,
    },
    "aarch64": {
        "clone": 220,
        "clone3": 435,
        "ptrace": 117,
        "keyctl": 219,
        "add_key": 217,
        "bpf": 280,
        "setns": 268,
    },
}
needs_filter = pytest.mark.skipif(seccomp.native_arch() is None, reason="no seccomp table for this CPU")
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
_NEW_FLAGS = {"newuser": CLONE_NEWUSER, "newns": CLONE_NEWNS, "newnet": 0x40000000, "newpid": 0x20000000}


async def _json_run(tool: PythonTool, body: str) -> dict[str, str]:
    code = _SYSCALL + f"NR = {json.dumps(_NR.get(seccomp.native_arch() or '', {}))}\n" + body
    ok, out = await run(tool, code + "\nprint(json.dumps(res))")
    assert ok, out
    result: dict[str, str] = json.loads(out.strip().splitlines()[-1])
    return result


@needs_bwrap
async def test_seccomp_filter_is_loaded(tool: PythonTool) -> None:
    ok, out = await run(tool, "print([l for l in open('/proc/self/status') if l.startswith('Seccomp:')])")
    assert ok and "Seccomp:\\t2" in out, out  # mode 2: a filter


@needs_bwrap
async def test_cannot_unshare_user_and_mount_namespaces_then_mount(tool: PythonTool) -> None:
    body = (
        "res = {}\n"
        f"res['unshare'] = 'ok' if libc.unshare({CLONE_NEWUSER | CLONE_NEWNS}) == 0 "
        "else errno.errorcode[ctypes.get_errno()]\n"
        "os.makedirs('/tmp/m', exist_ok=True)\n"
        "r = libc.mount(b'none', b'/tmp/m', b'tmpfs', 0, None)\n"
        "res['mount'] = 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]\n"
        "r = libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)\n"
        "res['mount_tmp'] = 'ok' if r == 0 else errno.errorcode[ctypes.get_errno()]\n"
        f"for flag, bit in {_NEW_FLAGS!r}.items():\n"
        "    res[flag] = 'ok' if libc.unshare(bit) == 0 else errno.errorcode[ctypes.get_errno()]\n"
        "res['setns'] = sc(NR['setns'], os.open('/proc/self/ns/uts', os.O_RDONLY), 0)\n"
    )
    res = await _json_run(tool, body)
    assert res == {
        "unshare": "EPERM",
        "mount": "EPERM",
        "mount_tmp": "EPERM",
        **dict.fromkeys(_NEW_FLAGS, "EPERM"),
        "setns": "EPERM",
    }


@needs_bwrap
@needs_filter
async def test_clone_into_new_namespaces_is_refused_and_clone3_falls_back(tool: PythonTool) -> None:
    body = (
        "res = {}\n"
        "for name, flags in (('newuser', 0x10000000), ('newns', 0x20000), ('newnet', 0x40000000)):\n"
        "    r = libc.syscall(ctypes.c_long(NR['clone']), ctypes.c_long(flags | 17), None, None, None, None)\n"
        "    if r == 0:\n"
        "        os._exit(0)  # a child in a new namespace: must never happen\n"
        "    res[name] = 'ok' if r > 0 else errno.errorcode[ctypes.get_errno()]\n"
        "res['clone3'] = sc(NR['clone3'], 0, 0)\n"
    )
    res = await _json_run(tool, body)
    assert res == {"newuser": "EPERM", "newns": "EPERM", "newnet": "EPERM", "clone3": "ENOSYS"}


@needs_bwrap
@needs_filter
async def test_ptrace_keyctl_and_bpf_are_refused(tool: PythonTool) -> None:
    body = (
        "res = {}\n"
        "r, w = os.pipe()\n"
        "child = os.fork()\n"
        "if child == 0:  # ask to be traced by the parent\n"
        "    os.write(w, sc(NR['ptrace'], 0, 0, 0, 0).encode()); os._exit(0)\n"
        "os.waitpid(child, 0)\n"
        "res['ptrace_traceme'] = os.read(r, 100).decode()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    import time; time.sleep(5); os._exit(0)\n"
        "res['ptrace_attach'] = sc(NR['ptrace'], 16, child, 0, 0)\n"  # PTRACE_ATTACH
        "res['ptrace_peek'] = sc(NR['ptrace'], 1, child, 0, 0)\n"  # PTRACE_PEEKTEXT
        "os.kill(child, 9); os.waitpid(child, 0)\n"
        "res['keyctl_session'] = sc(NR['keyctl'], 0, -3, 1)\n"  # KEYCTL_GET_KEYRING_ID, session, create
        "res['keyctl_join'] = sc(NR['keyctl'], 1, 0)\n"  # KEYCTL_JOIN_SESSION_KEYRING
        "k = ctypes.create_string_buffer(b'user'); d = ctypes.create_string_buffer(b'x')\n"
        "res['add_key'] = sc(NR['add_key'], ctypes.addressof(k), ctypes.addressof(d), ctypes.addressof(d), 1, -3)\n"
        "attr = ctypes.create_string_buffer(struct.pack('IIII', 2, 4, 4, 1) + bytes(112))\n"  # ARRAY map
        "res['bpf_map_create'] = sc(NR['bpf'], 0, ctypes.addressof(attr), 128)\n"
    )
    res = await _json_run(tool, "import struct\n" + body)
    assert res == {
        "ptrace_traceme": "EPERM",
        "ptrace_attach": "EPERM",
        "ptrace_peek": "EPERM",
        "keyctl_session": "EPERM",
        "keyctl_join": "EPERM",
        "add_key": "EPERM",
        "bpf_map_create": "EPERM",
    }


@needs_bwrap
@needs_filter
async def test_every_denied_call_gets_eperm(tool: PythonTool) -> None:
    """The whole table, called with zero arguments: each answer is the filter's, not the kernel's."""
    index = 0 if seccomp.native_arch() == "x86_64" else 1
    # ptrace(0) would trace this process and is covered above; the rest are harmless with zeros
    numbers = {n: nrs[index] for n, nrs in seccomp.DENIED.items() if nrs[index] is not None and n != "ptrace"}
    body = f"res = {{name: sc(nr, 0, 0, 0, 0, 0, 0) for name, nr in {numbers!r}.items()}}\n"
    res = await _json_run(tool, body)
    assert res == dict.fromkeys(numbers, "EPERM")


@needs_bwrap
async def test_foreign_syscall_abi_kills_the_process(tool: PythonTool) -> None:
    if seccomp.native_arch() != "x86_64":
        pytest.skip("the x32 ABI exists on x86_64 only")
    code = _SYSCALL + "print('before', flush=True)\nprint(sc(0x40000000 | 39))"  # x32 getpid
    ok, out = await run(tool, code)
    assert not ok and "killed by SIGSYS" in out and "before" in out


@needs_bwrap
async def test_threads_subprocesses_and_fork_still_work(tool: PythonTool) -> None:
    code = (
        "import os, subprocess, sys, threading\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "with ThreadPoolExecutor(4) as ex:\n"
        "    squares = list(ex.map(lambda i: i * i, range(8)))\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "child = subprocess.run([sys.executable, '-c', 'print(6 * 7)'], capture_output=True, text=True)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os._exit(3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(sum(squares), child.stdout.strip(), os.waitstatus_to_exitcode(status))"
    )
    assert await run(tool, code) == (True, "140 42 3\n")


@pytest.mark.integration
@needs_bwrap
async def test_real_fork_bomb_is_contained() -> None:
    """An unbounded fork bomb: capped at the process limit, then killed at the wall deadline."""
    tool = PythonTool(SandboxLimits(wall_s=3, cpu_s=2, max_processes=16))
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    ok, out = await run(tool, code)
    assert not ok and ("did not finish" in out or "CPU time limit" in out)
    assert _children_alive() == []
    # the host can still start processes right after
    assert await run(tool, "print('alive')") == (True, "alive\n")


# --- construction: missing bubblewrap and the explicit unsafe mode ---------------------------------


def test_missing_bwrap_refuses_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb.shutil, "which", lambda _name: None)
    with pytest.raises(
        RuntimeError, match=r"`bwrap` not found.*apt-get install -y bubblewrap.*unsafe_local=True"
    ):
        PythonTool()


@needs_bwrap
def test_unsafe_local_still_prefers_a_working_sandbox(recwarn: pytest.WarningsRecorder) -> None:
    tool = PythonTool(unsafe_local=True)
    assert tool.bwrap is not None and not recwarn.list


async def test_unsafe_local_mode_warns_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sb.shutil, "which", lambda _name: None)
    with pytest.warns(RuntimeWarning, match="WITHOUT a sandbox"):
        tool = PythonTool(SandboxLimits(wall_s=1.5), unsafe_local=True)
    assert tool.bwrap is None
    assert await run(tool, "print(2 + 2)") == (True, "4\n")
    ok, out = await run(tool, "import time; time.sleep(60)")  # deadlines and limits still apply
    assert not ok and "did not finish" in out
    ok, out = await run(tool, "x = bytearray(8 * 1024**3)")
    assert not ok and "MemoryError" in out
    assert _children_alive() == []


def test_command_shape() -> None:
    if _PROBLEM is not None:
        pytest.skip(f"no usable bubblewrap: {_PROBLEM}")
    cmd = PythonTool(TIGHT).command(drop_to_uid=1234)
    assert "--unshare-net" in cmd and "--remount-ro" in cmd and "UID=1234" in cmd
    assert "RLIMIT_NPROC=16" in cmd and f"RLIMIT_AS={512 << 20}" in cmd
    user_cmd = PythonTool(TIGHT).command()
    assert "--unshare-user" in user_cmd and "--disable-userns" in user_cmd
    assert "--seccomp" not in user_cmd
    filtered = PythonTool(TIGHT).command(drop_to_uid=1234, seccomp_fd=7)
    assert filtered[filtered.index("--seccomp") + 1] == "7"
    assert "--disable-userns" not in filtered  # it needs --unshare-user; the filter covers root mode


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="wall_s"):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError, match="max_processes"):
        SandboxLimits(max_processes=-1)


# --- the unprivileged-caller mode (user namespace), exercised from root by becoming "nobody" -------

_AS_NOBODY = r"""
import asyncio, json, site, sys
site.addsitedir(sys.argv[1])
from agentrl.tools.python_sandbox import PythonTool, SandboxLimits

USERNS = '''
import ctypes, os

libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000 | 0x00020000) != 0:
    print("unshare", os.strerror(ctypes.get_errno()))
else:
    os.makedirs("/tmp/m", exist_ok=True)
    r = libc.mount(b"none", b"/tmp/m", b"tmpfs", 0, None)
    print("MOUNTED" if r == 0 else "mount " + os.strerror(ctypes.get_errno()))
'''

async def main():
    tool = PythonTool(SandboxLimits(wall_s=5, cpu_s=2, max_processes=12), python=sys.executable)
    codes = {
        "hello": "print(2 + 2)",
        "fork": "import os, time\nn = 0\ntry:\n    for _ in range(100):\n        if os.fork() == 0:\n"
        "            time.sleep(2); os._exit(0)\n        n += 1\nexcept OSError:\n    print(n)",
        "net": "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)",
        "dev": "open('/dev/x', 'w')",
        "userns": USERNS,
    }
    out = {}
    for key, code in codes.items():
        r = await tool({"code": code})
        out[key] = [r.ok, r.content]
    tool.seccomp = False  # --disable-userns on its own must hold as well
    r = await tool({"code": USERNS})
    out["userns_without_filter"] = [r.ok, r.content]
    print(json.dumps({"cmd": tool.command(seccomp_fd=9)[:12], "out": out}))

asyncio.run(main())
"""


_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
_SYSTEM_PYTHON = f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}"


def _nobody_preflight() -> str | None:
    """Why the unprivileged mode cannot be exercised here, or None."""
    if os.geteuid() != 0:
        return "not root (the unprivileged mode is what the other tests already run)"
    if shutil.which("setpriv") is None or not os.path.exists(_SYSTEM_PYTHON) or not sb._site_packages():
        return f"needs setpriv, {_SYSTEM_PYTHON} and a virtual environment"
    probe = "import site, sys; site.addsitedir(sys.argv[1]); import agentrl.tools.base"
    argv = [*_NOBODY, _SYSTEM_PYTHON, "-c", probe, sb._site_packages()[0]]
    check = subprocess.run(argv, capture_output=True, timeout=60, check=False)
    return None if check.returncode == 0 else "user nobody cannot import agentrl from this checkout"


@pytest.mark.integration
@needs_bwrap
def test_unprivileged_caller_mode_holds_the_limits() -> None:
    why = _nobody_preflight()
    if why is not None:
        pytest.skip(why)
    argv = [*_NOBODY, _SYSTEM_PYTHON, "-c", _AS_NOBODY, sb._site_packages()[0]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "--unshare-user" in report["cmd"] and "--seccomp" in report["cmd"]
    disable_userns = sb._supports_disable_userns(_BWRAP or "bwrap")
    assert ("--disable-userns" in report["cmd"]) == disable_userns
    out = report["out"]
    assert out["userns"] == [True, "unshare Operation not permitted\n"]
    if disable_userns:  # bwrap caps nested user namespaces at zero: ENOSPC, and no mount
        ok, text = out["userns_without_filter"]
        assert ok and text.startswith("unshare") and "MOUNTED" not in text, text
    assert out["hello"] == [True, "4\n"]
    assert out["fork"][0] and int(out["fork"][1]) < 12
    assert not out["net"][0] and "ConnectionRefusedError" in out["net"][1]
    assert not out["dev"][0] and "Read-only file system" in out["dev"][1]
