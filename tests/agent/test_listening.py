"""Where a dev server that ignores PORT listens, read from the kernel's socket tables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from velocity.agent import listening

HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local: str, state: str, inode: str) -> str:
    return f"   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000 10001 0 {inode} 1\n"


def test_listeners_of_other_processes_are_named_and_the_agent_s_own_left_out(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(
        HEADER
        + row("0100007F:0F9F", "0A", "111")  # 127.0.0.1:3999, listening: the dev server
        + row("0100007F:1F90", "0A", "222")  # 127.0.0.1:8080, listening: the agent's own
        + row("0100007F:A1B2", "01", "333")  # an established connection
    )
    (tmp_path / "net" / "tcp6").write_text(
        HEADER + row("00000000000000000000000001000000:1F41", "0A", "444")  # [::1]:8001
    )
    (tmp_path / "self" / "fd").mkdir(parents=True)
    os.symlink("socket:[222]", tmp_path / "self" / "fd" / "3")
    os.symlink("/dev/null", tmp_path / "self" / "fd" / "4")
    assert listening.others(tmp_path) == ["127.0.0.1:3999", "[::1]:8001"]
    # Something on the port asked for is a dev server still getting ready: nothing is elsewhere.
    assert listening.others(tmp_path, besides=3999) == []


def test_on_this_machine_another_process_s_listener_is_listed_and_our_own_is_not() -> None:
    """Against the real /proc: a child's listening socket is found by its port, ours is left out."""
    code = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    code += "print(s.getsockname()[1], flush=True); sys.stdin.read()"
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        theirs = int(child.stdout.readline())
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as own:
            own.bind(("127.0.0.1", 0))
            own.listen()
            found = listening.others()
            assert f"127.0.0.1:{theirs}" in found
            assert f"127.0.0.1:{own.getsockname()[1]}" not in found
    finally:
        child.kill()
        child.wait()
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
