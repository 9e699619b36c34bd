"""The FastAPI application and its routes."""

from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

import velocity
from velocity import metrics
from velocity.api import errors, events
from velocity.api.schemas import (
    CreatePreview,
    DeliveryList,
    DeliveryOut,
    ErrorOut,
    Health,
    History,
    HistoryEvent,
    LogLine,
    Logs,
    LoopOut,
    MachineList,
    MachineOut,
    MaintenanceOut,
    PreviewList,
    PreviewOut,
    ProjectList,
    ProjectOut,
)
from velocity.auth import Caller, TokenVerifier
from velocity.domain import Forbidden, Preview, Unauthorized, WebhookDelivery
from velocity.loops import LoopMonitor
from velocity.service import PreviewService, ProjectService
from velocity.service.access import PreviewAccess
from velocity.service.events import PreviewEvents
from velocity.settings import Settings

_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
# Every error answer has the body {"error": {"code", "message"}} (velocity.api.errors).
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "the body cannot be parsed"},
    401: {
        "model": ErrorOut,
        "description": "no bearer token, or one that does not verify",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"model": ErrorOut, "description": "not allowed"},
    404: {"model": ErrorOut, "description": "no such preview or project"},
    409: {"model": ErrorOut, "description": "contradicts the current state"},
    410: {"model": ErrorOut, "description": "the preview has ended"},
    413: {"model": ErrorOut, "description": "the body is larger than MAX_REQUEST_BODY_BYTES"},
    422: {"model": ErrorOut, "description": "invalid input"},
    429: {"model": ErrorOut, "description": "a per-user limit is reached", "headers": _RETRY_AFTER},
    502: {"model": ErrorOut, "description": "the machine or its agent failed"},
    503: {"model": ErrorOut, "description": "the machine backend is busy or down", "headers": _RETRY_AFTER},
}

# The operators' dashboard (``GET /admin``): HTML and JavaScript in one file, no build step.
ADMIN_PAGE = (resources.files("velocity.api") / "admin.html").read_text(encoding="utf-8")


def create_api(
    *,
    previews: PreviewService,
    projects: ProjectService,
    verifier: TokenVerifier,
    access: PreviewAccess,
    settings: Settings,
    jwks: dict[str, Any] | None = None,
    provider_name: str,
    monitor: LoopMonitor,
    preview_events: PreviewEvents | None = None,
    webhook_deliveries: Callable[[], Awaitable[list[WebhookDelivery]]] | None = None,
) -> FastAPI:
    app = FastAPI(
        title="Velocity Previews",
        version=velocity.__version__,
        description="Live previews of user code: one isolated machine per open project.",
        responses=ERRORS,
    )
    errors.install(app)
    bearer = HTTPBearer(auto_error=False)

    async def caller(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Caller:
        if credentials is None:
            raise Unauthorized("missing bearer token: send Authorization: Bearer <token> (velocity token)")
        who = await verifier.verify(credentials.credentials)
        if who.is_agent:
            await previews.require_live_agent(who)
        return who

    async def user(who: Annotated[Caller, Depends(caller)]) -> Caller:
        if who.is_agent:
            raise Unauthorized("agent tokens cannot manage previews")
        return who

    async def operator(who: Annotated[Caller, Depends(user)]) -> Caller:
        if not who.operator:
            raise Forbidden("operators only: a token whose app_metadata.velocity_role is 'operator'")
        return who

    User = Annotated[Caller, Depends(user)]
    Operator = Annotated[Caller, Depends(operator)]
    events.install(
        app,
        user=user,
        operator=operator,
        previews=previews,
        events=preview_events or PreviewEvents(previews, listen=None),
        settings=settings,
    )
    AnyCaller = Annotated[Caller, Depends(caller)]
    PreviewPath = Annotated[str, Path(pattern=r"^[a-z0-9]{12}$", description="a preview id")]
    ProjectPath = Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", description="a project id")]

    def out(preview: Preview, stage: str | None = None) -> PreviewOut:
        link = access.link(preview) if preview.is_live else None
        return PreviewOut.of(preview, settings.preview_url(preview.id), stage, access_url=link)

    if jwks is not None:

        @app.get("/auth/v1/.well-known/jwks.json", tags=["auth"])
        async def jwks_document() -> dict[str, Any]:
            """The public keys user tokens are signed with (locally, this orchestrator plays Supabase Auth)."""
            return jwks

    @app.get("/healthz", response_model=Health, tags=["health"])
    async def healthz() -> Health:
        """Serving; with the loops' last passes. A failing loop (the provider or the database) makes
        it ``degraded``, still 200: restarting would not mend either."""
        loops = {
            name: LoopOut(
                state=loop.state,
                last_success_at=loop.last_success_at,
                last_error=loop.last_error,
                failures=loop.failures,
            )
            for name, loop in monitor.loops.items()
        }
        return Health(
            status="ok" if monitor.healthy() else "degraded",
            version=velocity.__version__,
            provider=provider_name,
            instance=monitor.instance,
            leader=monitor.leader,
            loops=loops,
        )

    @app.post("/v1/previews", response_model=PreviewOut, status_code=201, tags=["previews"])
    async def create_preview(body: CreatePreview, who: User, response: Response) -> PreviewOut:
        """Create a preview of a project; a second create for the same project returns the live one (200)."""
        preview, created = await previews.create(who, body.project_id)
        if not created:
            response.status_code = 200
        return out(preview)

    @app.get("/v1/previews", response_model=PreviewList, tags=["previews"])
    async def list_previews(who: User) -> PreviewList:
        return PreviewList(previews=[out(p) for p in await previews.list_previews(who)])

    @app.get("/v1/previews/{preview_id}", response_model=PreviewOut, tags=["previews"])
    async def get_preview(preview_id: PreviewPath, who: User) -> PreviewOut:
        """The preview; while booting, ``stage`` says what its agent is doing (installing, starting)."""
        preview = await previews.get(who, preview_id)
        return out(preview, await previews.stage(preview))

    @app.delete("/v1/previews/{preview_id}", response_model=PreviewOut, tags=["previews"])
    async def delete_preview(preview_id: PreviewPath, who: User) -> PreviewOut:
        """Stop the preview and destroy its machine."""
        return out(await previews.delete(who, preview_id))

    @app.post("/v1/previews/{preview_id}/keepalive", response_model=PreviewOut, tags=["previews"])
    async def keepalive(preview_id: PreviewPath, who: User) -> PreviewOut:
        """Count as activity, so the idle timeout starts again."""
        return out(await previews.keepalive(who, preview_id))

    @app.get("/v1/previews/{preview_id}/logs", response_model=Logs, tags=["previews"])
    async def logs(
        preview_id: PreviewPath, who: User, tail: Annotated[int, Query(ge=1, le=2000)] = 200
    ) -> Logs:
        """The dev server's output (the machine's last lines once it has ended)."""
        lines = await previews.logs(who, preview_id, tail=tail)
        return Logs(preview_id=preview_id, lines=[LogLine(**line) for line in lines])

    @app.get("/v1/admin/previews", response_model=PreviewList, tags=["admin"])
    async def admin_previews(_who: Operator) -> PreviewList:
        """Every user's previews."""
        return PreviewList(previews=[out(p) for p in await previews.all_previews()])

    @app.get("/v1/admin/machines", response_model=MachineList, tags=["admin"])
    async def admin_machines(_who: Operator) -> MachineList:
        """The machines of ours the provider knows, with the preview each belongs to."""
        return MachineList(machines=[MachineOut.of(m) for m in await previews.machines()])

    @app.get("/admin", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard() -> HTMLResponse:
        """The operators' dashboard: one page, no build step; its data come from the admin API with
        the operator's token, which the page asks for (or takes from ``#token=`` in its link)."""
        page = ADMIN_PAGE.replace("__HOURLY_COST__", str(settings.machine_hourly_cost_usd))
        return HTMLResponse(page, headers={"cache-control": "no-store", "x-frame-options": "DENY"})

    @app.get("/v1/admin/previews/{preview_id}/history", response_model=History, tags=["admin"])
    async def admin_history(preview_id: PreviewPath, who: Operator) -> History:
        """The states a preview entered, with when and why."""
        found = await previews.events(who, preview_id)
        return History(
            preview_id=preview_id,
            events=[HistoryEvent(id=i, state=e.state.value, detail=e.detail, at=e.at) for i, e in found],
        )

    @app.post("/v1/admin/previews/{preview_id}/extend", response_model=PreviewOut, tags=["admin"])
    async def admin_extend(
        preview_id: PreviewPath,
        _who: Operator,
        minutes: Annotated[float, Query(gt=0, le=24 * 60, description="how much longer it may live")] = 30,
    ) -> PreviewOut:
        """Let a live preview live longer than MAX_CONTAINER_LIFETIME_MINUTES allowed it."""
        return out(await previews.extend(preview_id, minutes))

    @app.post("/v1/admin/machines/{machine_id}/destroy", status_code=204, tags=["admin"])
    async def admin_destroy_machine(
        machine_id: Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="a machine id")],
        _who: Operator,
    ) -> Response:
        """Destroy one of our machines now; its preview fails at the next maintenance pass."""
        await previews.destroy_machine(machine_id)
        return Response(status_code=204)

    @app.get("/v1/admin/webhooks", response_model=DeliveryList, tags=["admin"])
    async def admin_webhooks(_who: Operator) -> DeliveryList:
        """The delivery log: the latest attempts to deliver preview events to WEBHOOK_URL."""
        if webhook_deliveries is None or not settings.webhook_url:
            return DeliveryList(enabled=False, deliveries=[])
        return DeliveryList(enabled=True, deliveries=[DeliveryOut.of(d) for d in await webhook_deliveries()])

    @app.get(
        "/metrics",
        tags=["admin"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics_text(_who: Operator) -> Response:
        """Prometheus metrics (docs/operations.md): an operator's token, as Prometheus's
        ``authorization`` setting sends it. Gauges of what exists are read at each scrape."""
        await previews.census()
        return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/admin/maintenance", response_model=MaintenanceOut, tags=["admin"])
    async def admin_maintenance(_who: Operator) -> MaintenanceOut:
        """Run a reconcile and reap pass now; answers what it did."""
        return MaintenanceOut(done=await previews.reconcile() + await previews.reap())

    @app.put(
        "/v1/projects/{project_id}",
        response_model=ProjectOut,
        tags=["projects"],
        # The body is read raw, so FastAPI cannot see it: declared here for the document.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def import_project(
        project_id: ProjectPath,
        request: Request,
        who: User,
        name: Annotated[str, Query(max_length=200)] = "",
        public: Annotated[bool | None, Query(description="previews open without sign-in")] = None,
    ) -> ProjectOut:
        """Register or replace a project from a gzip tarball body (``application/gzip``)."""
        archive = await request.body()
        project = await projects.import_archive(who, project_id, name=name, archive=archive, public=public)
        return ProjectOut.of(project)

    @app.get("/v1/projects", response_model=ProjectList, tags=["projects"])
    async def list_projects(who: User) -> ProjectList:
        return ProjectList(projects=[ProjectOut.of(p) for p in await projects.list_projects(who)])

    @app.get(
        "/v1/pool/template",
        response_class=Response,
        tags=["projects"],
        responses={200: {"content": {"application/gzip": {}}}},
    )
    async def pool_template(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Response:
        """The warm pool's template, for the agents of the machines it boots (a pool token)."""
        if credentials is None or previews.pool is None:
            raise Forbidden("the pool's template is for the agents of machines the pool is booting")
        who = await verifier.verify(credentials.credentials)
        data = await previews.pool.template_for(who)
        return Response(content=data, media_type="application/gzip")

    @app.get(
        "/v1/projects/{project_id}/snapshot",
        response_class=Response,
        tags=["projects"],
        responses={200: {"content": {"application/gzip": {}}}},
    )
    async def snapshot(project_id: ProjectPath, who: AnyCaller) -> Response:
        """The project's files as a gzip tarball: for its owner and its previews' agents."""
        data = await projects.snapshot(who, project_id)
        return Response(content=data, media_type="application/gzip")

    return app
