"""The python sandbox's seccomp filter: a classic-BPF program, built here with `struct`.

bubblewrap loads it (`--seccomp FD`) just before it starts the sandboxed interpreter, so it binds
every process in the sandbox. It allows ordinary work (files in the sandbox, threads, fork and exec,
pipes, signals, sockets) and answers EPERM to the calls that reach the kernel's riskier corners and
that sandboxed code never needs: namespace creation and entry, ptrace and cross-process memory
access, every mount call, the key store, eBPF, perf events, userfaultfd, io_uring, kernel modules,
kexec, reboot, swap, accounting, quotas and the clock. `clone3` answers ENOSYS, because its flags sit
in memory a classic filter cannot read; libc then falls back to `clone`, whose flags are checked.

Only x86_64 and aarch64 are known. A call made through any other ABI (i386 `int 0x80`, x32, arm32
compat) kills the process, so no second syscall table can be used to get around the checks.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
X32_SYSCALL_BIT = 0x40000000

# name: (x86_64 number, aarch64 number); None where the call does not exist on that architecture
DENIED: dict[str, tuple[int | None, int | None]] = {
    # namespaces: creating or joining one (clone is checked by its flags, clone3 gets ENOSYS)
    "unshare": (272, 97),
    "setns": (308, 268),
    # reading or steering other processes
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "kcmp": (312, 272),
    "pidfd_getfd": (438, 438),
    # the mount table, old and new API
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "chroot": (161, 51),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "open_tree_attr": (467, 467),
    "open_by_handle_at": (304, 265),
    # kernel key store
    "keyctl": (250, 219),
    "add_key": (248, 217),
    "request_key": (249, 218),
    # large kernel attack surface no sandboxed program needs
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "fanotify_init": (300, 262),
    "lookup_dcookie": (212, 18),
    # the machine itself
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "reboot": (169, 142),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "acct": (163, 89),
    "quotactl": (179, 60),
    "quotactl_fd": (443, 443),
    "syslog": (103, 116),
    "vhangup": (153, 58),
    "settimeofday": (164, 170),
    "clock_settime": (227, 112),
    "clock_adjtime": (305, 266),
    "iopl": (172, None),
    "ioperm": (173, None),
}
CLONE = {"x86_64": 56, "aarch64": 220}
CLONE3 = 435
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET (NEWTIME is clone3/unshare only)
CLONE_NEW_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000

# classic BPF opcodes used here
LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
RET_K = 0x06  # BPF_RET | BPF_K

# offsets in struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]
OFF_NR, OFF_ARCH, OFF_ARG0_LOW = 0, 4, 16  # both architectures are little-endian


def native_arch() -> str | None:
    """This machine's architecture if the filter knows its system calls, else None."""
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return machine if machine in AUDIT_ARCH else None


class _Assembler:
    """Instructions with symbolic jump targets, resolved to the 8-bit relative offsets BPF uses."""

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def op(self, code: int, k: int, jt: str | int = 0, jf: str | int = 0) -> None:
        self.code.append((code, jt, jf, k))

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, jt, jf, k) in enumerate(self.code):
            offsets = []
            for target in (jt, jf):
                off = target if isinstance(target, int) else self.labels[target] - pc - 1
                if not 0 <= off <= 255:
                    raise ValueError(f"seccomp filter: jump from {pc} to {target!r} out of range")
                offsets.append(off)
            out += struct.pack("<HBBI", code, offsets[0], offsets[1], k)
        return bytes(out)


def sandbox_filter() -> bytes:
    """The filter program: 8-byte `struct sock_filter` entries in native order, as bwrap reads them."""
    asm = _Assembler()
    asm.op(LD_W_ABS, OFF_ARCH)
    asm.op(JEQ_K, AUDIT_ARCH["x86_64"], jt="x86_64")
    asm.op(JEQ_K, AUDIT_ARCH["aarch64"], jt="aarch64")
    asm.op(RET_K, RET_KILL_PROCESS)  # a foreign ABI: its syscall numbers mean other calls
    for index, arch in enumerate(("x86_64", "aarch64")):
        asm.label(arch)
        asm.op(LD_W_ABS, OFF_NR)
        if arch == "x86_64":
            asm.op(JGE_K, X32_SYSCALL_BIT, jt="kill")  # the x32 ABI shares the x86_64 arch value
        asm.op(JEQ_K, CLONE[arch], jt=f"clone_{arch}")
        asm.op(JEQ_K, CLONE3, jt="enosys")
        for numbers in DENIED.values():
            if numbers[index] is not None:
                asm.op(JEQ_K, numbers[index], jt="eperm")
        asm.op(RET_K, RET_ALLOW)
        asm.label(f"clone_{arch}")
        asm.op(LD_W_ABS, OFF_ARG0_LOW)  # clone's flags: only the low 32 bits count
        asm.op(JSET_K, CLONE_NEW_FLAGS, jt="eperm")
        asm.op(RET_K, RET_ALLOW)
    asm.label("eperm")
    asm.op(RET_K, RET_ERRNO | errno.EPERM)
    asm.label("enosys")
    asm.op(RET_K, RET_ERRNO | errno.ENOSYS)
    asm.label("kill")
    asm.op(RET_K, RET_KILL_PROCESS)
    return asm.assemble()
