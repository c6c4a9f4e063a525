"""HTTP endpoints for Prometheus and the kubelet: ``/metrics``, ``/healthz``, ``/readyz``.

One small aiohttp server per port (one server when both ports are the same non-zero
number). They run on the operator's event loop, so an answer from ``/healthz`` is itself
the proof that the loop is responsive; a blocked loop answers nothing and the kubelet's
probe timeout fails it.

``/readyz`` asks a ``readiness()`` callable for ``(ready, reason)``; ``readiness_verdict``
below is the pure rule the entry point uses for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import metrics
from .settings import Settings

log = logging.getLogger(__name__)

Readiness = Callable[[], tuple[bool, str]]
_READINESS: web.AppKey[Readiness] = web.AppKey("readiness")


def readiness_verdict(
    *,
    connected: bool,
    shutting_down: bool = False,
    leader_election: bool,
    leading: bool,
    runtime_ready: bool,
    standby_healthy: bool,
) -> tuple[bool, str]:
    """Ready when connected and either leading (or not electing) with filled caches, or a
    healthy standby (one that reads the leader Lease), so that a rollout of standbys is not
    held up by the one replica that may lead."""
    if shutting_down:
        return False, "shutting down"
    if not connected:
        return False, "not connected to the API server"
    if leading or not leader_election:
        if runtime_ready:
            return True, "ok: leading" if leader_election else "ok"
        return False, "caches are not filled yet"
    if standby_healthy:
        return True, "ok: standby"
    return False, "standby cannot read the leader lease"


def metrics_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    return app


def health_app(readiness: Readiness) -> web.Application:
    app = web.Application()
    app[_READINESS] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[_READINESS]
    try:
        ready, reason = readiness()
    except Exception as e:  # a probe must answer, whatever the check does
        log.exception("Readiness check failed")
        return web.Response(status=503, text=f"readiness check failed: {e}")
    return web.Response(status=200 if ready else 503, text=reason or ("ok" if ready else "not ready"))


@dataclass
class Probes:
    """The running servers; ports are the bound ones (useful when 0 was asked for)."""

    metrics_port: int
    health_port: int
    _runners: list[web.AppRunner] = field(default_factory=list, repr=False)

    async def stop(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()


async def _serve(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    # access_log=None: the kubelet probes every few seconds; those lines are noise.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            bound = int(address[1])
            break
    return runner, bound


async def start(settings: Settings, readiness: Readiness) -> Probes:
    """Bind and serve; raises OSError if a port is taken (nothing is left running then)."""
    host = settings.bind_address
    if settings.metrics_port and settings.metrics_port == settings.health_port:
        app = health_app(readiness)
        app.router.add_get("/metrics", _metrics)
        runner, port = await _serve(app, host, settings.metrics_port)
        log.info("Serving metrics and health probes on %s:%d", host, port)
        return Probes(metrics_port=port, health_port=port, _runners=[runner])

    metrics_runner, metrics_port = await _serve(metrics_app(), host, settings.metrics_port)
    try:
        health_runner, health_port = await _serve(health_app(readiness), host, settings.health_port)
    except BaseException:
        await metrics_runner.cleanup()
        raise
    log.info("Serving metrics on %s:%d", host, metrics_port)
    log.info("Serving health probes on %s:%d", host, health_port)
    return Probes(metrics_port=metrics_port, health_port=health_port, _runners=[metrics_runner, health_runner])
