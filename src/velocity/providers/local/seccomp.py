"""The system calls no dev server needs, refused in every sandbox (bubblewrap's ``--seccomp``).

A dev server, npm and the tools they run need files, sockets, processes and threads; they never
need new namespaces (the way to a kernel's less trodden code as a fake root), other processes'
memory, kernel keyrings, BPF programs, mounts or kernel modules. Those calls fail with ``EPERM``, as
in Docker's and Flatpak's default profiles; ``clone3`` fails with ``ENOSYS``, because its flags sit in
memory a filter cannot read, and glibc then falls back to ``clone``, whose flags it can.
``io_uring`` (a second way to every file operation, outside the filter's sight) fails with
``ENOSYS`` too, and libuv falls back to its thread pool.
"""

from __future__ import annotations

import contextlib
import errno
import os

import pyseccomp as seccomp

from velocity.domain import SandboxUnavailable

# Refused outright (EPERM).
REFUSED = (
    # namespaces and mounts
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "mount_setattr",
    # other processes' memory
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    # the kernel's own facilities
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "settimeofday",
    "clock_settime",
    "adjtimex",
)
# Refused as if the kernel had no such call (ENOSYS), so that libraries fall back to what is allowed.
ABSENT = ("clone3", "io_uring_setup", "io_uring_enter", "io_uring_register")

# clone(2) flags that make a namespace.
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (
    CLONE_NEWNS,
    CLONE_NEWCGROUP,
    CLONE_NEWUTS,
    CLONE_NEWIPC,
    CLONE_NEWUSER,
    CLONE_NEWPID,
    CLONE_NEWNET,
)


def program() -> bytes:
    """The filter as a compiled BPF program, for ``bwrap --seccomp FD``."""
    try:
        rules = seccomp.SyscallFilter(seccomp.ALLOW)
    except OSError as exc:  # libseccomp is missing or refused
        raise SandboxUnavailable(f"could not build the sandboxes' seccomp filter: {exc}") from exc
    for name in REFUSED:
        _refuse(rules, errno.EPERM, name)
    for name in ABSENT:
        _refuse(rules, errno.ENOSYS, name)
    # clone's flags are its first argument on every architecture we run on (x86-64, arm64).
    for flag in NAMESPACE_FLAGS:
        rules.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    fd = os.memfd_create("seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            rules.export_bpf(out)
        os.lseek(fd, 0, os.SEEK_SET)
        return _read_all(fd)
    finally:
        os.close(fd)


def _refuse(rules: seccomp.SyscallFilter, code: int, name: str) -> None:
    # A call this architecture does not have (iopl on arm64) needs no rule.
    with contextlib.suppress(OSError, ValueError):
        rules.add_rule(seccomp.ERRNO(code), name)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)
