"""``velocity doctor`` for the Fly path: is everything in place to create preview machines?

Settings are checked first, offline; then the token, the app and the right to list its machines, each
with one Machines API call. Every failure says how to fix it; warnings do not fail the run. Creating a
machine is the one thing the doctor does not try: ``smoke-test`` does, and cleans up after itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from velocity.deploy import MachineTemplate, disagreements
from velocity.domain import NotFound, PreviewError, ProviderDenied
from velocity.fly.client import FlyClient
from velocity.fly.image import parse_image
from velocity.settings import ProviderKind, Settings

_APP_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
_REGION = re.compile(r"^[a-z]{3}$")
TOKEN_FIX = (
    "create one with `fly tokens create deploy -a {app}` and set FLY_API_TOKEN; see docs/fly.md#tokens"
)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    warning: bool = False  # reported, but does not fail the doctor

    @property
    def failed(self) -> bool:
        return not self.ok and not self.warning


def check_settings(settings: Settings, template: MachineTemplate | None = None) -> list[Check]:
    """What can be told without calling Fly."""
    app = settings.fly_app_name
    checks = [
        _token_is_set(settings),
        Check("FLY_APP_NAME", True, app)
        if _APP_NAME.match(app)
        else Check(
            "FLY_APP_NAME", False, f"{app!r} is not a Fly app name", "use 3-63 lowercase letters, digits, '-'"
        ),
    ]
    bad_regions = [r for r in settings.fly_regions if not _REGION.match(r)]
    if not settings.fly_regions or bad_regions:
        checks.append(
            Check(
                "FLY_REGIONS",
                False,
                f"{settings.fly_regions!r}",
                "list region codes such as FLY_REGIONS=ord,iad",
            )
        )
    else:
        checks.append(Check("FLY_REGIONS", True, ", ".join(settings.fly_regions)))
    checks += _image_checks(settings.preview_container_image)
    checks.append(_guest_check(settings))
    base = urlsplit(settings.fly_api_base_url)
    local = base.hostname in ("localhost", "127.0.0.1", "::1")
    if base.scheme != "https" and not local:
        checks.append(
            Check(
                "FLY_API_BASE_URL",
                False,
                settings.fly_api_base_url,
                "use https://api.machines.dev",
                warning=True,
            )
        )
    if settings.preview_provider is ProviderKind.FLY and settings.velocity_public_url is None and not local:
        checks.append(
            Check(
                "VELOCITY_PUBLIC_URL",
                False,
                "unset: machines on Fly would be told to reach the orchestrator at 127.0.0.1",
                "set VELOCITY_PUBLIC_URL to the orchestrator's public https URL",
            )
        )
    if template is not None:
        for disagreement in disagreements(template, settings):
            checks.append(
                Check(disagreement.variable, False, str(disagreement), "make them agree", warning=True)
            )
    return checks


async def check_fly(settings: Settings, client: FlyClient) -> list[Check]:
    """Token, app and machine listing, one API call each; later checks are skipped once one fails."""
    app = settings.fly_app_name
    checks: list[Check] = []
    try:
        info = await client.current_token()
        orgs = sorted({t.get("org_slug", "?") for t in info.get("tokens", [])})
        checks.append(Check("token", True, f"valid (organizations: {', '.join(orgs) or 'unknown'})"))
    except ProviderDenied as exc:
        return [Check("token", False, exc.message, TOKEN_FIX.format(app=app))]
    except NotFound:
        checks.append(
            Check("token", True, "token introspection unavailable; checking it on the app", warning=True)
        )
    except PreviewError as exc:
        return [Check("token", False, exc.message, f"is {settings.fly_api_base_url} reachable?")]
    try:
        found = await client.get_app()
        checks.append(
            Check("app", True, f"{app}: {found.get('status', '?')}, {found.get('machine_count', 0)} machines")
        )
    except NotFound:
        fix = f"create it: `fly apps create {app}` (or set FLY_APP_NAME to the app the machines live in)"
        return [*checks, Check("app", False, f"{app} does not exist or the token cannot see it", fix)]
    except ProviderDenied as exc:
        return [*checks, Check("app", False, exc.message, TOKEN_FIX.format(app=app))]
    except PreviewError as exc:
        return [*checks, Check("app", False, exc.message)]
    try:
        machines = await client.list_machines(summary=True)
        checks.append(Check("machines", True, f"the token can list the app's machines ({len(machines)})"))
    except ProviderDenied as exc:
        checks.append(Check("machines", False, exc.message, TOKEN_FIX.format(app=app)))
    except PreviewError as exc:
        checks.append(Check("machines", False, exc.message))
    return checks


def _token_is_set(settings: Settings) -> Check:
    token = settings.fly_api_token.get_secret_value().strip() if settings.fly_api_token else ""
    if not token:
        return Check("FLY_API_TOKEN", False, "not set", TOKEN_FIX.format(app=settings.fly_app_name))
    kind = "macaroon (FlyV1)" if token.startswith(("fm1", "fm2", "FlyV1 ")) else "bearer"
    return Check("FLY_API_TOKEN", True, f"set ({kind})")


def _image_checks(image: str) -> list[Check]:
    try:
        ref = parse_image(image)
    except ValueError as exc:
        fix = "set PREVIEW_CONTAINER_IMAGE to registry/repository:tag"
        return [Check("PREVIEW_CONTAINER_IMAGE", False, f"{image!r}: {exc}", fix)]
    checks = [
        Check("PREVIEW_CONTAINER_IMAGE", True, f"{ref.registry}/{ref.repository}:{ref.tag or 'latest'}")
    ]
    if not ref.pinned:
        fix = "deploy an immutable tag or a digest (the CI workflow pushes both), so rollbacks are exact"
        checks.append(Check("image tag", False, f"{image} floats ({ref.tag or 'latest'})", fix, warning=True))
    return checks


def _guest_check(settings: Settings) -> Check:
    memory, cpus, kind = (
        settings.container_memory_mb,
        settings.container_cpu_count,
        settings.container_cpu_kind,
    )
    # Fly's sizes: memory in 256 MiB steps; shared CPUs take 256 MiB to 2 GiB each, performance 2 to 8 GiB.
    low, high = (256 * cpus, 2048 * cpus) if kind == "shared" else (2048 * cpus, 8192 * cpus)
    detail = f"{cpus} {kind} CPU(s), {memory} MiB"
    if cpus not in (1, 2, 4, 8, 16):
        return Check("machine size", False, detail, "CONTAINER_CPU_COUNT must be 1, 2, 4, 8 or 16")
    if memory % 256 or not low <= memory <= high:
        fix = f"set CONTAINER_MEMORY_MB to a multiple of 256 between {low} and {high} for this CPU"
        return Check("machine size", False, detail, fix, warning=True)
    return Check("machine size", True, detail)
