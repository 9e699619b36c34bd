"""Fixtures of the proxy tests: an upstream on 127.0.0.1 and a client talking to the proxy in front of it."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.proxy.harness import Activity, UpstreamApp, proxy_to, serve
from velocity.proxy import Upstream


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # Unix socket paths are limited to 107 bytes, which pytest's tmp_path can exceed.
    with tempfile.TemporaryDirectory(prefix="vp-", dir="/tmp") as directory:
        yield Path(directory)


@pytest.fixture
async def upstream_app() -> UpstreamApp:
    return UpstreamApp()


@pytest.fixture
async def upstream_url(upstream_app: UpstreamApp) -> AsyncIterator[str]:
    async with serve(upstream_app) as url:
        yield url


@pytest.fixture
def activity() -> Activity:
    return Activity()


@pytest.fixture
async def client(upstream_url: str, activity: Activity) -> AsyncIterator[httpx.AsyncClient]:
    async with proxy_to(Upstream(upstream_url), on_activity=activity) as client:
        yield client
