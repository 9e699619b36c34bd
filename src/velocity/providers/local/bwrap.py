"""The bubblewrap command line of one sandbox, and the small shell shim that starts it.

The shim joins the sandbox's cgroups, runs bubblewrap as its child and writes bubblewrap's exit
status to a file, so the status survives an orchestrator restart. bubblewrap's
``--die-with-parent`` ties the sandbox to the shim; the shim runs in its own session, so the
sandbox outlives a crash of the orchestrator and is adopted by the next one.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import velocity
from velocity.providers.local.network import EGRESS_DIR

# The machine's main process, as the preview image's CMD runs it (tests hold the two equal).
AGENT_ARGS = ("-m", "velocity.agent")
WORKSPACE = "/workspace"
NPM_CACHE = "/cache/npm"

# Only what programs need from /etc: no shadow files, no private keys, no host configuration.
ETC_ENTRIES = (
    "passwd",
    "group",
    "hosts",
    "resolv.conf",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "localtime",
    "ssl/certs",
    "ca-certificates",
    "ca-certificates.conf",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "npmrc",
    "mime.types",
)

# What the sandbox's first process keeps when the host starts bubblewrap as root: enough to become the
# agent's uid (``agent_contract.as_agent``), whose exec leaves it CAP_SETUID, CAP_SETGID and CAP_KILL.
ROOT_KEEPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")

SHIM = """
exit_file=$1; cgroup_procs=$2; shift 2
for f in $cgroup_procs; do echo $$ > "$f" || exit 97; done
"$@" &
child=$!
trap 'kill -KILL $child 2>/dev/null' TERM INT HUP
wait $child
code=$?
echo $code > "$exit_file"
exit $code
"""


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    """The host directories a sandbox may write. Its agent's socket is not among them: the host binds
    it in the machine's directory, outside the sandbox, and hands the agent the listening socket."""

    workspace: Path
    npm_cache: Path


def runtime_paths() -> list[Path]:
    """Where the agent's Python lives on this host: bound read-only into every sandbox."""
    paths = [Path(sys.base_prefix), Path(sys.prefix), Path(velocity.__file__).resolve().parent.parent]
    unique: list[Path] = []
    for path in paths:
        if str(path).startswith("/usr/") or any(_inside(path, p) for p in unique):
            continue
        unique = [p for p in unique if not _inside(p, path)] + [path]
    return unique


def readable_by_others(path: Path) -> bool:
    """Whether an unprivileged user can read and enter ``path`` itself. Its parents need not be open:
    in a sandbox they are directories of bubblewrap's making (``bwrap_args``)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return mode & (stat.S_IROTH | stat.S_IXOTH) == stat.S_IROTH | stat.S_IXOTH


def bwrap_args(
    paths: SandboxPaths,
    *,
    hostname: str,
    runtime: Iterable[Path],
    egress: Path | None = None,
    as_root: bool = False,
) -> list[str]:
    """With ``egress`` (the directory of the sandbox's egress proxy socket) the sandbox gets a network
    namespace of its own, loopback only; without, it shares the host's network. The agent is reached
    through a unix socket either way, one the sandbox cannot see.

    ``as_root``: bubblewrap runs as the host's root, so the sandbox has no user namespace (the host's
    uids, not one mapped uid) and its first process keeps ``ROOT_KEEPS``, to start the agent and the
    project's code as two unprivileged uids. Otherwise a user namespace maps the caller's uid alone,
    and every process of the sandbox is that uid with no capabilities."""
    if as_root:
        unshare = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try"]
        unshare += ["--unshare-net"] if egress is not None else []
        keeps = [arg for cap in ROOT_KEEPS for arg in ("--cap-add", cap)]
    else:
        unshare = ["--unshare-all", *(() if egress is not None else ("--share-net",))]
        keeps = []
    runtime = list(runtime)
    args = [
        "bwrap",
        *unshare,
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        *keeps,
        "--hostname",
        hostname,
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        host = Path("/") / top
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), str(host)]
        elif host.is_dir():
            args += ["--ro-bind", str(host), str(host)]
    # /tmp as on any Linux (and in the preview image): every uid may write there, the sticky bit
    # keeps each from another's files. Package managers and dev servers make their scratch there.
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--tmpfs", "/tmp", "--tmpfs", "/run"]
    etc = [Path("/etc") / entry for entry in ETC_ENTRIES if (Path("/etc") / entry).exists()]
    targets = [*etc, *runtime, Path(NPM_CACHE), *([Path(EGRESS_DIR)] if egress is not None else [])]
    # The parents of what is bound, made open here (bubblewrap would make them 0700): /etc/ssl,
    # /cache, and a runtime below a private home directory are reachable by every uid.
    for directory in sorted({d for path in targets for d in path.parents if d != d.parent}):
        args += ["--perms", "0755", "--dir", str(directory)]
    for path in [*etc, *runtime]:
        args += ["--ro-bind", str(path), str(path)]
    args += [
        "--bind",
        str(paths.workspace),
        WORKSPACE,
        "--bind",
        str(paths.npm_cache),
        NPM_CACHE,
    ]
    if egress is not None:
        # Read-only: the sandbox can use the socket, not replace it.
        args += ["--ro-bind", str(egress), EGRESS_DIR]
    args += ["--chdir", WORKSPACE]
    return args


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents
