"""Operator settings: one model, filled from flags and ``SESSION_OPERATOR_*`` variables.

Flags win over environment variables, which win over the defaults below. Every field
is documented here once; ``session-operator run --help`` is generated from these
descriptions so the two never drift apart.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .model import MAX_DURATION, InvalidSpecError, format_duration, parse_duration


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SESSION_OPERATOR_", extra="ignore")

    # NoDecode: SESSION_OPERATOR_NAMESPACES=a,b is split below, not parsed as JSON.
    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch (repeatable; env: comma-separated). Empty means all namespaces.",
    )
    leader_elect: bool = Field(
        default=True,
        description="Take part in leader election; only the leader reconciles.",
    )
    leader_election_namespace: str = Field(
        default="",
        description="Namespace of the leader Lease (default: the pod's namespace, else 'default').",
    )
    leader_election_lease_name: str = Field(
        default="session-operator-leader",
        description="Name of the leader-election Lease.",
    )
    lease_duration: float = Field(
        default=15.0, gt=0, description="How long a leader Lease is valid without renewal."
    )
    renew_deadline: float = Field(
        default=10.0,
        gt=0,
        description="How long the leader keeps trying to renew before it stops acting (< lease duration).",
    )
    retry_period: float = Field(
        default=2.0, gt=0, description="Time between leader-election attempts and renewals."
    )
    identity: str = Field(
        default="",
        description="This replica's identity in the leader Lease (default: hostname, process id and a random suffix).",
    )
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics (0: pick one).")
    health_port: int = Field(
        default=8081, ge=0, le=65535, description="Port of /healthz and /readyz (0: pick one)."
    )
    bind_address: str = Field(default="0.0.0.0", description="Address the metrics and health servers bind.")
    webhook_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the validating admission webhook (HTTPS, path /validate-session), served by every "
        "replica; 0: no webhook.",
    )
    webhook_bind_address: str = Field(default="0.0.0.0", description="Address the admission webhook binds.")
    webhook_cert_file: str = Field(
        default="",
        validate_default=True,
        description="PEM certificate (with its chain) the webhook serves; required with a webhook port. "
        "Read again when it changes on disk (a renewed certificate).",
    )
    webhook_key_file: str = Field(
        default="",
        validate_default=True,
        description="PEM private key of the webhook certificate; required with a webhook port.",
    )
    log_format: Literal["text", "json"] = Field(default="text", description="Log format: text or json.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    default_archive_after: str = Field(
        default="168h",
        description="archiveAfter for sessions that do not set it: time in a terminal phase before Archived.",
    )
    default_delete_after: str = Field(
        default="",
        description="deleteAfter for sessions that do not set it: time Archived before deletion "
        "(empty: keep forever).",
    )
    workers: int = Field(
        default=16, ge=1, le=256, description="Targets reconciled concurrently (one worker per target at a time)."
    )
    write_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Independent writes of one decision sent at once (say, a burst of sessions queued together).",
    )
    queue_refresh_rate: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="Status writes per second per target that bring waiting sessions' holder and queue position "
        "up to date after the queue changes (head first; the head itself is written at once). Every waiting "
        "session shows the truth within about ceil(waiting / rate) seconds of the last change.",
    )
    delete_batch_size: int = Field(
        default=50,
        ge=1,
        le=10000,
        description="Targets whose deadline passed (idle, retention, ...) handed to the workers at once before "
        "new work gets a turn.",
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("lease_duration", "renew_deadline", "retry_period", mode="before")
    @classmethod
    def _seconds_of_duration(cls, value: object) -> object:
        # Floats of seconds for their consumers; given as 15s, 1m30s or plain seconds.
        if isinstance(value, str):
            return parse_setting_duration(value).total_seconds()
        return value

    @field_validator("webhook_cert_file", "webhook_key_file")
    @classmethod
    def _webhook_needs_tls(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("webhook_port") and not value:
            raise ValueError("required when the webhook port is set (the API server calls webhooks over HTTPS only)")
        return value

    @field_validator("default_archive_after")
    @classmethod
    def _check_archive_after(cls, value: str) -> str:
        parse_setting_duration(value)
        return value

    @field_validator("default_delete_after")
    @classmethod
    def _check_delete_after(cls, value: str) -> str:
        if value:
            parse_setting_duration(value)
        return value

    @property
    def archive_after(self) -> timedelta:
        return parse_setting_duration(self.default_archive_after)

    @property
    def delete_after(self) -> timedelta | None:
        if not self.default_delete_after:
            return None
        return parse_setting_duration(self.default_delete_after)


DURATION_FORMS = "use forms like 15s, 1m30s, or plain seconds such as 15 or 0.5"


def parse_setting_duration(text: str) -> timedelta:
    """A duration setting: the CRD's forms (``15s``, ``1m30s``, ``168h``) or plain seconds
    (``15``, ``0.5``). The ValueError's message quotes the value; the caller names the flag."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f'"{text}" is not a duration ({DURATION_FORMS})')
        if seconds > MAX_DURATION.total_seconds():
            raise ValueError(f'duration "{text}" is out of range (at most {format_duration(MAX_DURATION)})')
        return timedelta(seconds=seconds)
    try:
        return parse_duration(value, "")
    except InvalidSpecError as e:
        detail = e.message.removeprefix(": ")
        if "out of range" not in detail:
            detail = f'"{text}" is not a duration ({DURATION_FORMS})'
        raise ValueError(detail) from e
