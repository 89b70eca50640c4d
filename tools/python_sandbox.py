"""`python`: run model-written code in a bubblewrap sandbox.

bubblewrap (`bwrap`) gives the code its own PID, network, IPC and UTS namespaces: no network at all,
only its own processes, and a filesystem of read-only binds (the system, the Python installation, the
environment's site-packages) plus size-capped private tmpfs mounts for /tmp (the working directory)
and /dev/shm. A small bootstrap inside the sandbox sets the limits (CPU, address space, processes,
file size, open files) before it reads the user's code from stdin. Output is read up to a byte cap;
past it or past the wall-clock deadline the whole sandbox is killed.

The process limit needs care: the kernel exempts host uid 0 from RLIMIT_NPROC. An unprivileged caller
gets a user namespace whose sandbox uid maps to its own uid, so the limit holds. A root caller would
map the sandbox to uid 0 that way, so instead bwrap runs privileged without a user namespace and the
bootstrap drops to a spare unprivileged host uid (one per concurrent run) before touching user code.

Two more layers stop code from reaching kernel features that isolation does not cover. A seccomp
filter (`agentrl.tools.seccomp`, loaded by bwrap with `--seccomp`) answers EPERM to namespace
creation, ptrace, mount, the key store, eBPF, perf events, kernel modules and the like, in both
modes. In the user-namespace mode bwrap's `--disable-userns` (bubblewrap >= 0.8) also forbids any
nested user namespace, so `unshare(CLONE_NEWUSER | CLONE_NEWNS)` followed by `mount` fails twice over.

Without bubblewrap the tool refuses to start unless `unsafe_local=True` is passed explicitly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, ClassVar

from agentrl.tools.base import Tool, ToolError
from agentrl.tools.seccomp import native_arch, sandbox_filter

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: `apt-get install -y bubblewrap`; Fedora: `dnf install bubblewrap`), "
    "or pass unsafe_local=True to allow running code WITHOUT isolation (never with untrusted code)"
)
SANDBOX_UID = 65534  # "nobody" inside the sandbox's own user namespace
MAX_CODE_CHARS = 20_000

# Runs first inside the sandbox: lower the limits (irreversibly: soft == hard), then read the user's
# code from stdin and run it as __main__. A trailing expression is echoed like in a notebook, since
# small models often end with `x` instead of `print(x)`.
_BOOTSTRAP = r"""
import ast, linecache, os, resource, sys, traceback
lim = dict(arg.split("=") for arg in sys.argv[1:])
uid = int(lim.pop("UID", -1))
for name, value in lim.items():
    soft, _, hard = value.partition(":")
    resource.setrlimit(getattr(resource, name), (int(soft), int(hard or soft)))
if uid >= 0:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
code = sys.stdin.read()
linecache.cache["main.py"] = (len(code), None, code.splitlines(True), "main.py")
sys.stdin = open(os.devnull)
sys.argv = ["main.py"]
ns = {"__name__": "__main__", "__builtins__": __builtins__}
def show_error(e):
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.stderr.flush()
try:
    tree = ast.parse(code, "main.py")
except SyntaxError as e:
    traceback.print_exception(type(e), e, None)
    sys.exit(1)
tail = None
if tree.body and isinstance(tree.body[-1], ast.Expr):
    tail = ast.Expression(tree.body.pop().value)
try:
    exec(compile(tree, "main.py", "exec"), ns)
    if tail is not None:
        value = eval(compile(tail, "main.py", "eval"), ns)
        if value is not None:
            print(repr(value))
except SystemExit:
    raise
except BaseException as e:
    show_error(e)
    sys.exit(1)
"""


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-run resource limits. Memory is address space, so it must leave room for imports."""

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_bytes: int = 1 << 30
    max_processes: int = 32
    max_file_bytes: int = 16 << 20
    max_open_files: int = 256
    tmpfs_bytes: int = 64 << 20
    max_output_bytes: int = 64 << 10  # read this much at most; the sandbox is killed past it

    def __post_init__(self) -> None:
        for key in (
            "wall_s",
            "cpu_s",
            "memory_bytes",
            "max_processes",
            "max_file_bytes",
            "max_open_files",
            "tmpfs_bytes",
            "max_output_bytes",
        ):
            if getattr(self, key) <= 0:
                raise ValueError(f"SandboxLimits.{key} must be > 0, got {getattr(self, key)}")

    def rlimit_args(self) -> list[str]:
        return [
            # soft < hard: SIGXCPU first (a clear exit reason), SIGKILL a second later
            f"RLIMIT_CPU={max(1, math.ceil(self.cpu_s))}:{max(1, math.ceil(self.cpu_s)) + 1}",
            f"RLIMIT_AS={self.memory_bytes}",
            f"RLIMIT_NPROC={self.max_processes}",
            f"RLIMIT_FSIZE={self.max_file_bytes}",
            f"RLIMIT_NOFILE={self.max_open_files}",
            "RLIMIT_CORE=0",
        ]


@dataclass(slots=True)
class RunResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool = False
    output_overflow: bool = False


def _site_packages() -> list[str]:
    """The active environment's package dirs, so numpy and sympy import inside the sandbox."""
    paths = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    return sorted(p for p in paths if os.path.isdir(p) and not p.startswith(sys.base_prefix + os.sep))


def _interpreter() -> str:
    """The base interpreter (a venv's python is only a symlink to it plus a pyvenv.cfg)."""
    exe = os.path.realpath(sys.executable)
    if exe.startswith(os.path.realpath(sys.base_prefix) + os.sep):
        return exe
    candidate = os.path.join(sys.base_prefix, "bin", f"python{sys.version_info[0]}.{sys.version_info[1]}")
    return candidate if os.path.exists(candidate) else exe


# Unprivileged callers: a user namespace whose uid maps to the caller's own (non-root) uid.
_USERNS_FLAGS = (
    "--unshare-all",  # user, pid, net, ipc, uts, cgroup: no network, own process tree
    "--unshare-user",
    "--uid",
    str(SANDBOX_UID),
    "--gid",
    str(SANDBOX_UID),
    "--cap-drop",
    "ALL",
)
# Root callers: a user namespace would map the sandbox to host uid 0, which the kernel exempts from
# RLIMIT_NPROC. So bwrap runs privileged without one and the bootstrap drops to a spare host uid.
_ROOT_FLAGS = (
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--cap-drop",
    "ALL",
    "--cap-add",
    "CAP_SETUID",
    "--cap-add",
    "CAP_SETGID",
)


class _UidPool:
    """Spare host uids for root mode, one per concurrent run, so process counts are per sandbox.

    The range is offset by pid so two processes on one host rarely share a uid; if they do, the
    only effect is that their sandboxes share one process budget.
    """

    def __init__(self, base: int = 1_000_000, size: int = 256) -> None:
        self.base = base + (os.getpid() % 16384) * size
        self.size = size
        self.in_use: set[int] = set()

    def acquire(self) -> int:
        for uid in range(self.base, self.base + self.size):
            if uid not in self.in_use:
                self.in_use.add(uid)
                return uid
        raise RuntimeError(f"more than {self.size} sandboxes at once in one process")

    def release(self, uid: int) -> None:
        self.in_use.discard(uid)


_UID_POOL = _UidPool()


@functools.cache
def _supports_disable_userns(bwrap: str) -> bool:
    """Whether this bubblewrap has `--disable-userns` (added in 0.8)."""
    try:
        proc = subprocess.run([bwrap, "--help"], capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return b"--disable-userns" in proc.stdout + proc.stderr


@contextlib.contextmanager
def _seccomp_fd() -> Iterator[int]:
    """A readable pipe holding the seccomp filter, for bwrap's `--seccomp FD` (it reads to EOF)."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, sandbox_filter())  # under 1 KiB: far below a pipe's buffer
    finally:
        os.close(write_end)
    try:
        yield read_end
    finally:
        os.close(read_end)


@functools.cache
def _probe_bwrap(bwrap: str, seccomp: bool = True) -> str | None:
    """None if bwrap can build a sandbox here, else why not (e.g. user namespaces disabled)."""
    flags = _namespace_flags(_supports_disable_userns(bwrap))
    try:
        with _seccomp_fd() as fd:
            extra = ["--seccomp", str(fd)] if seccomp else []
            proc = subprocess.run(
                [bwrap, *flags, *extra, "--die-with-parent", "--ro-bind", "/", "/", "true"],
                capture_output=True,
                timeout=10,
                check=False,
                pass_fds=(fd,),
            )
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if proc.returncode == 0 else proc.stderr.decode(errors="replace").strip()


def _namespace_flags(disable_userns: bool, root: bool | None = None) -> tuple[str, ...]:
    """bwrap's namespace flags for a root or an unprivileged caller (default: this process)."""
    if root is None:
        root = os.geteuid() == 0
    if root:
        return _ROOT_FLAGS
    return _USERNS_FLAGS + (("--disable-userns",) if disable_userns else ())


def _env(pythonpath: Sequence[str]) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp",
        # one thread each: threads count against the process limit and BLAS pools reserve memory
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    return env


def bwrap_command(
    bwrap: str,
    python: str,
    limits: SandboxLimits,
    ro_paths: Sequence[str],
    pythonpath: Sequence[str],
    drop_to_uid: int | None = None,
    *,
    seccomp_fd: int | None = None,
    disable_userns: bool = True,
) -> list[str]:
    """The full bwrap argv: read-only system, private /tmp, own namespaces, limits set at start.

    `drop_to_uid` is for root callers (see `_ROOT_FLAGS`); others get a user namespace, with nested
    ones forbidden if `disable_userns`. `seccomp_fd` is a readable fd holding the seccomp filter,
    which the caller must pass on to bwrap.
    """
    cmd = [
        bwrap,
        *_namespace_flags(disable_userns, root=drop_to_uid is not None),
        *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
        "--die-with-parent",
        "--new-session",
        "--hostname",
        "sandbox",
        "--clearenv",
    ]
    for key, value in _env(pythonpath).items():
        cmd += ["--setenv", key, value]
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(path):
            cmd += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            cmd += ["--ro-bind", path, path]
    for path in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        cmd += ["--ro-bind-try", path, path]
    extra = [p for p in ro_paths if not p.startswith("/usr/")]
    # bwrap would create the parents of a mount point with mode 0700, which a dropped uid can't enter
    parents = {str(a) for p in extra for a in PurePosixPath(p).parents if str(a) != "/"}
    for parent in sorted(parents, key=lambda d: (d.count("/"), d)):
        cmd += ["--perms", "0755", "--dir", parent]
    for path in extra:
        cmd += ["--ro-bind", path, path]
    cmd += [
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        # tmpfs pages are host memory outside RLIMIT_AS: every writable place gets a size cap, and
        # the /dev tmpfs itself (writable to the sandbox user in a user namespace) goes read-only
        "--perms",
        "1777",
        "--size",
        str(max(1 << 20, limits.tmpfs_bytes // 8)),
        "--tmpfs",
        "/dev/shm",
        "--remount-ro",
        "/dev",
        "--perms",
        "1777",
        "--size",
        str(limits.tmpfs_bytes),
        "--tmpfs",
        "/tmp",
        "--chdir",
        "/tmp",
        "--remount-ro",
        "/",
        python,
        "-s",
        "-B",
        "-c",
        _BOOTSTRAP,
        *limits.rlimit_args(),
    ]
    if drop_to_uid is not None:
        cmd.append(f"UID={drop_to_uid}")
    return cmd


async def _read_capped(
    stream: asyncio.StreamReader, cap: int, overflow: asyncio.Event, sink: bytearray
) -> None:
    """Keep up to `cap` bytes; past it, flag the overflow and keep draining to EOF.

    Draining matters: an unread pipe pauses its transport, and asyncio (3.11) only reports the
    process as finished once every pipe has reached EOF.
    """
    while chunk := await stream.read(65536):
        room = cap - len(sink)
        if room > 0:
            sink += chunk[:room]
        if len(chunk) > room:
            overflow.set()


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stdin.write(data)
        await stdin.drain()
        stdin.close()


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def run_sandboxed(
    argv: Sequence[str],
    code: str,
    limits: SandboxLimits,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> RunResult:
    """Start `argv`, feed `code` on stdin, collect capped output, and kill the group at the deadline.

    Also safe under cancellation: whatever ends the call, the process group is killed and reaped.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limits.wall_s
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # own process group: one killpg reaches everything it started
        cwd=cwd,
        env=env,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdin and proc.stdout and proc.stderr
    out, err = bytearray(), bytearray()
    overflow = asyncio.Event()
    tasks = [
        asyncio.create_task(_feed(proc.stdin, code.encode())),
        asyncio.create_task(_read_capped(proc.stdout, limits.max_output_bytes, overflow, out)),
        asyncio.create_task(_read_capped(proc.stderr, limits.max_output_bytes, overflow, err)),
    ]
    exited = asyncio.create_task(proc.wait())
    overflowed = asyncio.create_task(overflow.wait())
    timed_out = False
    try:
        done, _ = await asyncio.wait(
            {exited, overflowed},
            timeout=max(0.0, deadline - loop.time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        timed_out = not done
    finally:
        overflowed.cancel()
        if not exited.done():  # timeout, overflow, or a cancelled caller: nothing may outlive the call
            _kill_group(proc)
        try:
            # the readers hold the last buffered output even after exit; EOF is near once the group is dead
            await asyncio.wait([exited, *tasks], timeout=5.0)
        finally:
            for task in [exited, *tasks]:
                task.cancel()
    return RunResult(
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        returncode=proc.returncode,
        timed_out=timed_out,
        output_overflow=overflow.is_set(),
    )


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = text[: limit * 3 // 4]
    tail = text[-(limit // 4) :]
    return f"{head}\n[... {len(text) - len(head) - len(tail)} characters omitted ...]\n{tail}"


class PythonTool(Tool):
    """Run Python code in a bubblewrap sandbox; the printed output is the result."""

    name: ClassVar[str] = "python"
    description: ClassVar[str] = (
        "Run Python 3 code and get what it prints. Use print() to show results (a final bare "
        "expression is printed too). sympy, numpy, math and fractions are available. "
        "There is no network and no file access outside the working directory; "
        "each call starts fresh, so define everything you need in the same code."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "code": {
                "type": "string",
                "description": "Python source code to run, e.g. import sympy\nprint(sympy.factorint(360))",
                "maxLength": MAX_CODE_CHARS,
            }
        },
        "required": ["code"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        unsafe_local: bool = False,
        max_output_chars: int = 4000,
        extra_ro_paths: Sequence[str] = (),
        python: str | None = None,
        bwrap: str | None = None,
        timeout: float | None = None,
        max_concurrency: int = 4,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        # the wall deadline is enforced by run(); the base timeout is only a backstop behind it
        super().__init__(
            timeout=timeout or self.limits.wall_s + 10.0,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
        )
        if max_output_chars < 100:
            raise ValueError(f"PythonTool: max_output_chars must be >= 100, got {max_output_chars}")
        self.max_output_chars = max_output_chars
        self.python = python or _interpreter()
        self.pythonpath = _site_packages()
        self.unsafe_local = unsafe_local
        self.bwrap = bwrap or shutil.which("bwrap")
        # the seccomp filter knows x86_64 and aarch64; elsewhere the namespaces must do on their own
        self.seccomp = native_arch() is not None
        if not self.seccomp:
            log.warning("PythonTool: no seccomp filter for this architecture; namespaces only")
        problem = (
            "`bwrap` not found on PATH" if self.bwrap is None else _probe_bwrap(self.bwrap, self.seccomp)
        )
        if problem is not None:
            if not unsafe_local:
                raise RuntimeError(f"PythonTool cannot sandbox code: {problem}. To fix, {INSTALL_HINT}")
            # unsafe_local permits the fallback; a working bubblewrap is still preferred when present
            self.bwrap = None
            msg = (
                f"PythonTool(unsafe_local=True): no sandbox ({problem}), so model-written code runs "
                "WITHOUT a sandbox, with only resource limits; it can read and write your files and "
                "use the network"
                + ("; and as root not even the process limit applies" if os.geteuid() == 0 else "")
            )
            warnings.warn(msg, RuntimeWarning, stacklevel=2)
            log.warning(msg)
        ro = [os.path.realpath(sys.base_prefix), *self.pythonpath, *extra_ro_paths]
        missing = [p for p in ro if not os.path.isabs(p) or not os.path.exists(p)]
        if missing:
            raise ValueError(f"PythonTool: read-only paths must be existing absolute paths: {missing}")
        self._ro_paths = list(dict.fromkeys(ro))

    def command(self, drop_to_uid: int | None = None, seccomp_fd: int | None = None) -> list[str]:
        """The argv that runs one piece of code (exposed for inspection and tests)."""
        if self.bwrap is None:
            return [self.python, "-s", "-B", "-c", _BOOTSTRAP, *self.limits.rlimit_args()]
        return bwrap_command(
            self.bwrap,
            self.python,
            self.limits,
            self._ro_paths,
            self.pythonpath,
            drop_to_uid,
            seccomp_fd=seccomp_fd,
            disable_userns=_supports_disable_userns(self.bwrap),
        )

    async def execute(self, code: str) -> RunResult:
        """Run `code` once under the limits; the result carries raw output and how it ended."""
        if self.bwrap is not None:
            uid = _UID_POOL.acquire() if os.geteuid() == 0 else None
            try:
                with contextlib.ExitStack() as stack:
                    fd = stack.enter_context(_seccomp_fd()) if self.seccomp else None
                    argv = self.command(uid, seccomp_fd=fd)
                    return await run_sandboxed(argv, code, self.limits, pass_fds=() if fd is None else (fd,))
            finally:
                if uid is not None:
                    _UID_POOL.release(uid)
        with tempfile.TemporaryDirectory(prefix="agentrl-py-") as tmp:
            env = _env(self.pythonpath) | {"HOME": tmp, "TMPDIR": tmp, "MPLCONFIGDIR": tmp}
            return await run_sandboxed(self.command(), code, self.limits, cwd=tmp, env=env)

    async def run(self, **arguments: Any) -> str:
        code: str = arguments["code"]
        if not code.strip():
            raise ToolError("code is empty; write Python code that prints a result")
        res = await self.execute(code)
        stdout = _clip(res.stdout, self.max_output_chars)
        stderr = _clip(res.stderr, self.max_output_chars // 2)
        if res.returncode == 1 and res.stderr.startswith("bwrap: ") and not res.stdout:
            raise RuntimeError(f"the sandbox failed to start: {res.stderr.strip()}")
        if res.output_overflow:
            raise ToolError(
                f"the program printed more than {self.limits.max_output_bytes} bytes and was stopped; "
                f"print less. Start of the output:\n{_clip(res.stdout, self.max_output_chars // 4)}"
            )
        if res.timed_out:
            raise ToolError(
                f"the program did not finish within {self.limits.wall_s:g} s and was stopped"
                + (f". Output so far:\n{stdout}" if stdout else "")
            )
        if res.returncode != 0:
            why = _describe_exit(res.returncode, via_bwrap=self.bwrap is not None)
            parts = [f"the program failed ({why})."]
            if stdout:
                parts.append(f"Output:\n{stdout}")
            if stderr:
                parts.append(f"Error:\n{stderr.rstrip()}")
            raise ToolError("\n".join(parts))
        return stdout if stdout.strip() else "(no output; use print() to show results)"


def _describe_exit(code: int | None, via_bwrap: bool = False) -> str:
    """Say why the program ended; bwrap reports a child killed by signal N as exit status 128+N."""
    if code is None:
        return "no exit status"
    sig = -code if code < 0 else code - 128 if via_bwrap and 128 < code < 160 else 0
    if sig == signal.SIGXCPU:
        return "CPU time limit exceeded"
    if sig == signal.SIGXFSZ:
        return "file size limit exceeded"
    if sig == signal.SIGKILL:
        return "killed: a CPU or memory limit was exceeded"
    if sig > 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(sig).name}"
    return f"exit status {code}"
