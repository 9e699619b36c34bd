"""Request and response bodies of the API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from velocity.domain import Machine, Preview, PreviewState, Project, WebhookDelivery

ProjectId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$", examples=["my-app"])]
PreviewId = Annotated[str, Field(pattern=r"^[a-z0-9]{12}$", examples=["k3v9x2m1q8ab"])]


class CreatePreview(BaseModel):
    model_config = ConfigDict(extra="forbid")
    project_id: ProjectId


class PreviewOut(BaseModel):
    id: str
    user_id: str
    project_id: str
    state: str
    stage: str
    url: str
    # Opens the preview and signs the opener in to it; short-lived (PREVIEW_ACCESS_LINK_SECONDS).
    access_url: str | None
    machine_id: str | None
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None
    expires_at: datetime
    last_activity_at: datetime
    failure_reason: str | None
    failure_logs: list[str] = Field(
        description="a failed preview's last log lines (GET …/logs: any ended one's)"
    )

    @classmethod
    def of(
        cls, preview: Preview, url: str, stage: str | None = None, *, access_url: str | None = None
    ) -> PreviewOut:
        return cls(
            id=preview.id,
            user_id=preview.user_id,
            project_id=preview.project_id,
            state=preview.state.value,
            stage=stage or preview.state.value,
            url=url,
            access_url=access_url,
            machine_id=preview.machine_id,
            created_at=preview.created_at,
            updated_at=preview.updated_at,
            ready_at=preview.ready_at,
            expires_at=preview.expires_at,
            last_activity_at=preview.last_activity_at,
            failure_reason=preview.failure_reason,
            failure_logs=list(preview.failure_logs) if preview.state == PreviewState.FAILED else [],
        )


class PreviewList(BaseModel):
    previews: list[PreviewOut]


class LogLine(BaseModel):
    stream: str
    line: str
    at: str | None = None


class Logs(BaseModel):
    preview_id: str
    lines: list[LogLine]


class ProjectOut(BaseModel):
    id: str
    name: str
    file_count: int
    size_bytes: int
    public: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, project: Project) -> ProjectOut:
        return cls(
            id=project.id,
            name=project.name,
            file_count=project.file_count,
            size_bytes=project.size_bytes,
            public=project.public,
            created_at=project.created_at,
            updated_at=project.updated_at,
        )


class ProjectList(BaseModel):
    projects: list[ProjectOut]


class MachineOut(BaseModel):
    id: str
    state: str
    region: str
    created_at: datetime
    preview_id: str | None
    user_id: str | None
    exit_reason: str | None

    @classmethod
    def of(cls, machine: Machine) -> MachineOut:
        return cls(
            id=machine.id,
            state=machine.state.value,
            region=machine.region,
            created_at=machine.created_at,
            preview_id=machine.metadata.get("velocity_preview_id"),
            user_id=machine.metadata.get("user_id"),
            exit_reason=machine.exit_reason,
        )


class MachineList(BaseModel):
    machines: list[MachineOut]


class HistoryEvent(BaseModel):
    id: int
    state: str
    detail: str | None
    at: datetime


class History(BaseModel):
    preview_id: str
    events: list[HistoryEvent] = Field(description="the states the preview entered, oldest first")


class DeliveryOut(BaseModel):
    event_id: int = Field(description="the event's id, sent as Velocity-Delivery (the same on every retry)")
    preview_id: str
    kind: str = Field(description="preview.created, preview.ready, preview.failed or preview.stopped")
    attempt: int
    at: datetime
    delivered: bool
    final: bool = Field(description="the last attempt for the event: delivered, or given up on")
    status_code: int | None
    error: str | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            event_id=delivery.event_id,
            preview_id=delivery.preview_id,
            kind=delivery.kind,
            attempt=delivery.attempt,
            at=delivery.at,
            delivered=delivery.delivered,
            final=delivery.final,
            status_code=delivery.status_code,
            error=delivery.error,
        )


class DeliveryList(BaseModel):
    enabled: bool = Field(description="whether WEBHOOK_URL is set")
    deliveries: list[DeliveryOut] = Field(description="the latest attempts, newest first")


class MaintenanceOut(BaseModel):
    done: list[str]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody


class LoopOut(BaseModel):
    state: str = Field(description="starting, ok, failing, or standby (another replica leads)")
    last_success_at: datetime | None
    last_error: str | None
    failures: int = Field(description="passes failed in a row")


class Health(BaseModel):
    status: str = Field(description="ok; degraded while a loop is failing (the provider or the database)")
    version: str
    provider: str
    instance: str = Field(description="this replica's id among the orchestrators on the database")
    leader: bool = Field(description="whether this replica runs the maintenance loops")
    loops: dict[str, LoopOut]
