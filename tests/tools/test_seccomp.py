"""The seccomp filter program itself, run through a small classic-BPF interpreter (no kernel needed)."""

from __future__ import annotations

import errno
import re
import struct
from pathlib import Path

import pytest

from agentrl.tools import seccomp

ARCHES = ("x86_64", "aarch64")
I386, ARM, AARCH64_BE = 0x40000003, 0x40000028, 0x800000B7
SIGCHLD = 17
THREAD_FLAGS = 0x3D0F00  # glibc's pthread_create: VM|FS|FILES|SIGHAND|THREAD|SYSVSEM|SETTLS|*_TID


def run_filter(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate the filter on one `struct seccomp_data` the way the kernel would."""
    full = [*args, *[0] * (6 - len(args))]
    data = struct.pack("<iIQ6Q", nr, arch, 0, *(a & (2**64 - 1) for a in full))
    insns = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    assert len(insns) <= 4096  # the kernel's BPF_MAXINSNS
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        if code == seccomp.LD_W_ABS:
            acc = struct.unpack_from("<I", data, k)[0]
        elif code == seccomp.RET_K:
            return k
        elif code in (seccomp.JEQ_K, seccomp.JGE_K, seccomp.JSET_K):
            hit = {seccomp.JEQ_K: acc == k, seccomp.JGE_K: acc >= k, seccomp.JSET_K: bool(acc & k)}[code]
            pc += jt if hit else jf
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


@pytest.fixture(scope="module")
def program() -> bytes:
    return seccomp.sandbox_filter()


EPERM = seccomp.RET_ERRNO | errno.EPERM


@pytest.mark.parametrize("arch", ARCHES)
def test_denied_calls_get_eperm(program: bytes, arch: str) -> None:
    index = ARCHES.index(arch)
    audit = seccomp.AUDIT_ARCH[arch]
    for name, numbers in seccomp.DENIED.items():
        if numbers[index] is not None:
            assert run_filter(program, numbers[index], audit) == EPERM, name


@pytest.mark.parametrize("arch", ARCHES)
def test_ordinary_calls_are_allowed(program: bytes, arch: str) -> None:
    audit = seccomp.AUDIT_ARCH[arch]
    denied = {nrs[ARCHES.index(arch)] for nrs in seccomp.DENIED.values()}
    allowed = [nr for nr in range(0, 470) if nr not in denied and nr not in (seccomp.CLONE[arch], 435)]
    assert len(allowed) > 380
    for nr in allowed:
        assert run_filter(program, nr, audit) == seccomp.RET_ALLOW, nr


@pytest.mark.parametrize("arch", ARCHES)
def test_clone_is_judged_by_its_flags(program: bytes, arch: str) -> None:
    audit, clone = seccomp.AUDIT_ARCH[arch], seccomp.CLONE[arch]
    assert run_filter(program, clone, audit, (SIGCHLD,)) == seccomp.RET_ALLOW  # fork
    assert run_filter(program, clone, audit, (THREAD_FLAGS,)) == seccomp.RET_ALLOW  # a thread
    assert run_filter(program, clone, audit, (0x4111,)) == seccomp.RET_ALLOW  # vfork
    for bit in (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000):
        assert run_filter(program, clone, audit, (bit | SIGCHLD,)) == EPERM, hex(bit)
    # the kernel reads only the low 32 bits of clone's flags; so does the filter
    assert run_filter(program, clone, audit, ((1 << 40) | SIGCHLD,)) == seccomp.RET_ALLOW
    assert run_filter(program, 435, audit) == seccomp.RET_ERRNO | errno.ENOSYS  # clone3


def test_foreign_abis_are_killed(program: bytes) -> None:
    for arch in (I386, ARM, AARCH64_BE, 0):
        assert run_filter(program, 20, arch) == seccomp.RET_KILL_PROCESS
    x86 = seccomp.AUDIT_ARCH["x86_64"]
    assert run_filter(program, seccomp.X32_SYSCALL_BIT | 39, x86) == seccomp.RET_KILL_PROCESS
    assert run_filter(program, seccomp.X32_SYSCALL_BIT | 272, x86) == seccomp.RET_KILL_PROCESS


_HEADERS = {
    "x86_64": Path("/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    "aarch64": Path("/usr/include/asm-generic/unistd.h"),  # aarch64 uses the generic table
}


@pytest.mark.parametrize("arch", ARCHES)
def test_numbers_match_the_kernel_headers(arch: str) -> None:
    header = _HEADERS[arch]
    if not header.exists():
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    found = dict(re.findall(r"^#define __NR_(\w+)\s+(\d+)\s*$", header.read_text(), re.M))
    index = ARCHES.index(arch)
    table = {name: nrs[index] for name, nrs in seccomp.DENIED.items()}
    table |= {"clone": seccomp.CLONE[arch], "clone3": seccomp.CLONE3}
    checked = 0
    for name, nr in table.items():
        if name in found:
            assert int(found[name]) == nr, name
            checked += 1
        else:  # newer than the headers, or not on this architecture
            assert nr is None or nr >= 450, name
    assert checked >= 40


def test_program_is_well_formed(program: bytes) -> None:
    assert len(program) % 8 == 0 and len(program) // 8 < 256
    assert seccomp.native_arch() in (None, *ARCHES)
