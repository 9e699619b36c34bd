"""Where local sandboxes may live: a unix socket's path has at most 107 bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from velocity.domain import SandboxUnavailable
from velocity.providers.local.provider import LocalSandboxProvider, SandboxOptions


def test_a_data_directory_too_long_for_the_sandboxes_sockets_is_refused_at_start(tmp_path: Path) -> None:
    """Otherwise every preview would fail later, each with "AF_UNIX path too long"."""
    root = tmp_path / ("d" * 80) / "sandboxes"
    with pytest.raises(SandboxUnavailable, match=r"too long for the unix sockets.*VELOCITY_DATA_DIR"):
        LocalSandboxProvider(SandboxOptions(root=root, npm_cache=tmp_path / "npm"))
