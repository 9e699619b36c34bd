"""The orchestrator's secrets never leave it: during a real preview (bubblewrap sandbox, agent, Vite)
every place a secret could show is scanned for FLY_API_TOKEN, DATABASE_URL, the HS256 JWT secret and
the ES256 private key."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.e2e.harness import EXAMPLE, EmulatedFly, Live, emulated_fly, live_orchestrator
from velocity.emulator.faults import Faults
from velocity.providers.local.provider import agent_socket

pytestmark = pytest.mark.e2e

MAX_FILE = 8 << 20  # bytes read of any one file scanned


@dataclass
class Secrets:
    """Each secret by name, in every form it could be written in."""

    forms: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, name: str, *values: bytes) -> None:
        forms = self.forms.setdefault(name, [])
        for value in values:
            forms += [value, base64.b64encode(value), base64.urlsafe_b64encode(value).rstrip(b"=")]

    def found_in(self, data: bytes) -> list[str]:
        return [name for name, forms in self.forms.items() if any(form in data for form in forms)]


@dataclass
class Scan:
    """Everything looked at, by where it came from."""

    secrets: Secrets
    seen: dict[str, bytes] = field(default_factory=dict)

    def add(self, where: str, data: bytes | str) -> None:
        self.seen[where] = data.encode(errors="replace") if isinstance(data, str) else data

    def response(self, where: str, response: httpx.Response) -> None:
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.add(f"{where} ({response.status_code})", headers.encode() + b"\n\n" + response.content)

    def leaks(self) -> list[str]:
        return [
            f"{name} in {where}" for where, data in self.seen.items() for name in self.secrets.found_in(data)
        ]


@dataclass
class Deployment:
    """An orchestrator whose environment holds a Fly token, a database URL and (in some variants) the
    JWT secret, as a deployed one's does; with ``fly`` its machines come from the Fly emulator."""

    live: Live
    fly: EmulatedFly | None

    def home(self, machine_id: str) -> Path:
        """The directory of the sandbox that is (or backs) the machine."""
        if self.fly is None:
            return self.live.settings.data_dir / "sandboxes" / machine_id
        backing = self.fly.emulator.fleet.machines[machine_id].backing_id
        assert backing is not None
        return self.fly.sandboxes / backing


@pytest.fixture(
    params=[("local", "secrets.json"), ("local", "SUPABASE_JWT_SECRET"), ("fly", "SUPABASE_JWT_SECRET")],
    ids=["local-secrets.json", "local-SUPABASE_JWT_SECRET", "fly-SUPABASE_JWT_SECRET"],
)
async def deployment(
    request: pytest.FixtureRequest,
    npm_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> AsyncIterator[Deployment]:
    caplog.set_level(logging.DEBUG)  # from before the start, whose lines are scanned too
    provider, jwt_secret = request.param
    data = Path(tempfile.mkdtemp(prefix="vp-"))
    monkeypatch.setenv("FLY_API_TOKEN", "FlyV1 fm2_" + secrets.token_urlsafe(32))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{data}/db-pw-{secrets.token_hex(12)}.sqlite")
    if jwt_secret == "SUPABASE_JWT_SECRET":
        monkeypatch.setenv("SUPABASE_JWT_SECRET", secrets.token_urlsafe(40))
    try:
        async with AsyncExitStack() as stack:
            fly = (
                await stack.enter_async_context(emulated_fly(npm_cache=npm_cache))
                if provider == "fly"
                else None
            )
            overrides = fly.settings() if fly is not None else {}
            if fly is not None:  # the emulator knows one token: it is this orchestrator's FLY_API_TOKEN
                monkeypatch.setenv("FLY_API_TOKEN", overrides.pop("fly_api_token"))
            live = await stack.enter_async_context(
                live_orchestrator(npm_cache=npm_cache, data=data, **overrides)
            )
            yield Deployment(live, fly)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def secrets_of(live: Live) -> Secrets:
    found = Secrets()
    fly = os.environ["FLY_API_TOKEN"]
    found.add("FLY_API_TOKEN", fly.encode(), fly.split(" ", 1)[-1].encode())
    url = os.environ["DATABASE_URL"]
    found.add("DATABASE_URL", url.encode(), Path(url).name.encode())
    settings = live.running.runtime.settings
    assert settings.supabase_jwt_secret is not None
    found.add("the JWT secret", settings.supabase_jwt_secret.get_secret_value().encode())
    local = settings.data_dir / "secrets.json"
    if local.exists():  # made at the first start when SUPABASE_JWT_SECRET is unset
        found.add("the JWT secret", json.loads(local.read_text())["jwt_secret"].encode())
    pem = (settings.data_dir / "signing-key.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    found.add("the ES256 private key", pem.strip(), scalar)
    found.forms["the ES256 private key"] += [
        scalar.hex().encode(),
        str(key.private_numbers().private_value).encode(),
    ]
    return found


def sandbox_processes(home: Path) -> list[int]:
    """The machine's processes: those whose command line names its directory (the shim, bwrap) and
    all their descendants (the agent, npm, Vite)."""
    parents: dict[int, int] = {}
    roots = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        if str(home).encode() in cmdline:
            roots.append(int(entry.name))
    found = set(roots)
    while True:
        more = {pid for pid, parent in parents.items() if parent in found} - found
        if not more:
            return sorted(found)
        found |= more


def read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:  # the process is gone
        return b""


def in_sandbox(pid: int) -> bool:
    """Whether the process has a mount namespace of its own (bwrap's), not the host's."""
    return os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def files_under(root: Path) -> Iterator[Path]:
    for path in root.rglob("*"):
        if "node_modules" in path.parts:
            continue
        try:
            if path.is_file() and not path.is_symlink():
                yield path
        except OSError:
            continue


async def test_no_secret_shows_in_a_sandbox_a_log_an_answer_or_an_error(
    deployment: Deployment, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Environments and command lines of the sandbox's processes, its files and /tmp, the console log,
    the machine's config, the logs API, the agent's /health, error bodies, the preview, and the
    orchestrator's own logs."""
    live = deployment.live
    assert live.running.runtime.provider.name == ("local" if deployment.fly is None else "fly")
    scan = Scan(secrets_of(live))
    api = live.api
    await live.import_project(EXAMPLE, "example")
    created = await api.post("/v1/previews", json={"project_id": "example"})
    scan.response("POST /v1/previews", created)
    preview_id = created.json()["id"]
    ready = await live.settled(preview_id)
    assert ready["state"] == "ready", ready
    home = deployment.home(ready["machine_id"])
    if deployment.fly is not None:  # what Fly keeps of the machine, shown to anyone with the app
        scan.add(
            "Fly machine config",
            json.dumps(deployment.fly.emulator.fleet.machines[ready["machine_id"]].config),
        )

    scan_machine(scan, home, data_dir=live.settings.data_dir)

    # The agent, over its socket, and the preview through the router.
    transport = httpx.AsyncHTTPTransport(uds=str(agent_socket(home)))
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as agent_client:
        for path in ("/health", "/__velocity/logs?tail=2000"):
            scan.response(f"agent {path}", await agent_client.get(path))
    for path in ("/", "/src/App.jsx", "/@vite/client", "/@vite/env", "/__velocity/access?token=forged"):
        scan.response(f"preview {path}", await live.fetch(preview_id, path))

    await scan_answers(scan, live, preview_id)

    # Ended: what the preview keeps, and its event stream (which ends with it).
    scan.response("DELETE", await api.delete(f"/v1/previews/{preview_id}"))
    scan.response("GET after delete", await api.get(f"/v1/previews/{preview_id}"))
    scan.response("events", await api.get(f"/v1/previews/{preview_id}/events"))
    scan.response(
        "logs after delete", await api.get(f"/v1/previews/{preview_id}/logs", params={"tail": 2000})
    )

    if deployment.fly is not None:  # a create Fly refuses: its error reaches the preview's reason
        deployment.fly.emulator.faults = Faults(full_regions=frozenset(live.settings.fly_regions))
        await live.import_project(EXAMPLE, "refused")
        refused = await live.create("refused")
        failed = await live.ended(refused["id"])
        assert failed["state"] == "failed" and failed["failure_reason"], failed
        scan.add("a preview Fly refused", json.dumps(failed))

    # The orchestrator's own output: its log records (with tracebacks) and what reached stdout/stderr.
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    records = caplog.get_records("setup") + caplog.get_records("call")
    scan.add("log records", "\n".join(formatter.format(record) for record in records))
    out, err = capfd.readouterr()
    scan.add("stdout", out)
    scan.add("stderr", err)
    assert any(r.name.startswith("velocity.") for r in records), "the orchestrator's logs were captured"
    assert not scan.leaks(), scan.leaks()


def scan_machine(scan: Scan, home: Path, *, data_dir: Path) -> None:
    """Every process's environment and command line, the files of the machine's directory, and the
    sandbox's own view of the file system (its /tmp; the orchestrator's secret files not in it)."""
    pids = sandbox_processes(home)
    for pid in pids:
        for part in ("environ", "cmdline"):
            scan.add(f"/proc/{pid}/{part}", read(f"/proc/{pid}/{part}"))
    environs = [data for where, data in scan.seen.items() if where.endswith("/environ")]
    assert len(pids) >= 3 and any(b"PROJECT_ID=" in env for env in environs), (
        "the sandbox's environments were read"
    )
    agent = next(pid for pid in pids if in_sandbox(pid) and b"velocity.agent" in read(f"/proc/{pid}/cmdline"))
    inside = Path(f"/proc/{agent}/root")  # the sandbox's own view of the file system
    assert (inside / "workspace" / "package.json").exists(), "the sandbox's view was read"
    assert not (inside / str(home).lstrip("/")).exists()
    for path in files_under(inside / "tmp"):
        scan.add(f"sandbox {path.relative_to(inside)}", path.read_bytes()[:MAX_FILE])
    for secret_file in ("secrets.json", "signing-key.pem", Path(os.environ["DATABASE_URL"]).name):
        seen_inside = inside / str(data_dir / secret_file).lstrip("/")
        assert not seen_inside.exists(), f"{secret_file} is visible inside the sandbox"
    for path in files_under(home):
        scan.add(f"machine {path.relative_to(home)}", path.read_bytes()[:MAX_FILE])


async def scan_answers(scan: Scan, live: Live, preview_id: str) -> None:
    """The API's answers, good and bad: wrong credentials, bad input, unknown paths, refused roles."""
    api = live.api
    other = live.running.runtime.issuer.mint_user("someone-else")
    bad = {
        "no token": {"authorization": ""},
        "forged token": {"authorization": "Bearer " + other[:-4] + "AAAA"},
        "garbage token": {"authorization": "Bearer not-a-jwt"},
        "HS256 token signed by another secret": {"authorization": "Bearer " + forged_hs256()},
        "another user": {"authorization": f"Bearer {other}"},
    }
    for name, headers in bad.items():
        for method, path in (("GET", f"/v1/previews/{preview_id}"), ("GET", "/v1/projects/example/snapshot")):
            scan.response(f"{method} {path} with {name}", await api.request(method, path, headers=headers))
    failing = [
        ("POST", "/v1/previews", b"{not json"),
        ("POST", "/v1/previews", b'{"project_id": "missing"}'),
        ("PUT", "/v1/projects/broken", b"not a tarball"),
        ("POST", "/v1/previews", b"\0" * (live.settings.max_request_body_bytes + 1)),
        ("GET", "/v1/previews/zzzzzzzzzzzz", b""),
        ("GET", "/v1/previews/..%2F..%2Fetc", b""),
        ("GET", "/v1/admin/machines", b""),
        ("POST", "/v1/admin/maintenance", b""),
        ("GET", "/metrics", b""),
        ("GET", "/nope", b""),
        ("DELETE", "/v1/healthz", b""),
    ]
    for method, path, body in failing:
        response = await api.request(method, path, content=body, headers={"content-type": "application/json"})
        assert response.status_code >= 400, (method, path)
        scan.response(f"{method} {path}", response)
    for path in (
        "/healthz",
        "/openapi.json",
        "/auth/v1/.well-known/jwks.json",
        "/v1/realtime",
        "/v1/projects",
    ):
        scan.response(f"GET {path}", await api.get(path))
    scan.response("logs", await api.get(f"/v1/previews/{preview_id}/logs", params={"tail": 2000}))


def forged_hs256() -> str:
    header = base64.urlsafe_b64encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()).rstrip(b"=")
    claims = base64.urlsafe_b64encode(json.dumps({"sub": "x", "aud": "authenticated"}).encode()).rstrip(b"=")
    return (header + b"." + claims + b".c2lnbmF0dXJl").decode()
