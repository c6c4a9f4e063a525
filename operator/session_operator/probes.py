"""HTTP endpoints for Prometheus and the kubelet: ``/metrics``, ``/healthz``, ``/readyz``.

One small aiohttp server per port (one server when both ports are the same non-zero
number). They run on the operator's event loop, so an answer from ``/healthz`` is itself
the proof that the loop is responsive; a blocked loop answers nothing and the kubelet's
probe timeout fails it.

``/readyz`` asks a ``Readiness`` object, which the operator keeps up to date.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from .metrics import Metrics
from .settings import Settings

log = logging.getLogger(__name__)

@dataclass
class Readiness:
    """What ``/readyz`` answers: ready only when this replica can decide.

    That is: connected, its cache of sessions and claims filled from a full listing, and
    leading (or running without leader election). A standby is live (``/healthz``) but
    not ready, so that a readiness-gated Service or dashboard points at the one replica
    that acts.
    """

    leader_election: bool
    connected: bool = False
    synced: bool = False
    leading: bool = False
    shutting_down: bool = False
    leader: Callable[[], str] = field(default=lambda: "", repr=False)  # who leads, as last seen
    missing: Callable[[], str | None] = field(default=lambda: None, repr=False)  # what cannot be listed, why

    def verdict(self) -> tuple[bool, str]:
        if self.shutting_down:
            return False, "shutting down"
        if not self.connected:
            return False, "not connected to the API server"
        if not self.synced:
            why = self.missing()
            return False, f"the cache of sessions and claims is not filled yet: {why}" if why else (
                "the cache of sessions and claims is not filled yet")
        if self.leader_election and not self.leading:
            holder = self.leader()
            return False, f"standby: {holder} leads" if holder else "standby: waiting for the leader lease"
        return True, "ok: leading" if self.leader_election else "ok"


_READINESS: web.AppKey[Readiness] = web.AppKey("readiness")
_REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry")


def metrics_app(metrics: Metrics) -> web.Application:
    app = web.Application()
    app[_REGISTRY] = metrics.registry
    app.router.add_get("/metrics", _metrics)
    return app


def health_app(readiness: Readiness) -> web.Application:
    app = web.Application()
    app[_READINESS] = readiness
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


async def _metrics(request: web.Request) -> web.Response:
    registry = request.app[_REGISTRY]
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _readyz(request: web.Request) -> web.Response:
    readiness = request.app[_READINESS]
    try:
        ready, reason = readiness.verdict()
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


async def start(settings: Settings, readiness: Readiness, metrics: Metrics) -> Probes:
    """Bind and serve; raises OSError if a port is taken (nothing is left running then)."""
    host = settings.bind_address
    if settings.metrics_port and settings.metrics_port == settings.health_port:
        app = health_app(readiness)
        app[_REGISTRY] = metrics.registry
        app.router.add_get("/metrics", _metrics)
        runner, port = await _serve(app, host, settings.metrics_port)
        log.info("Serving metrics and health probes on %s:%d", host, port)
        return Probes(metrics_port=port, health_port=port, _runners=[runner])

    metrics_runner, metrics_port = await _serve(metrics_app(metrics), host, settings.metrics_port)
    try:
        health_runner, health_port = await _serve(health_app(readiness), host, settings.health_port)
    except BaseException:
        await metrics_runner.cleanup()
        raise
    log.info("Serving metrics on %s:%d", host, metrics_port)
    log.info("Serving health probes on %s:%d", host, health_port)
    return Probes(metrics_port=metrics_port, health_port=health_port, _runners=[metrics_runner, health_runner])
