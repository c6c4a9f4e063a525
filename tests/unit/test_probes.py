"""/metrics, /healthz and /readyz: status codes, bodies, ports."""

from __future__ import annotations

import logging
import socket
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from session_operator import probes
from session_operator.metrics import Metrics
from session_operator.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def readiness(**state: Any) -> probes.Readiness:
    values: dict[str, Any] = {"leader_election": True, "connected": True, "synced": True}
    values.update(state)
    return probes.Readiness(**values)


class Fixed:
    """A readiness with a fixed answer, for the HTTP tests."""

    def __init__(self, ready: bool, reason: str) -> None:
        self.answer = (ready, reason)

    def verdict(self) -> tuple[bool, str]:
        return self.answer


# The readiness rule ---------------------------------------------------------------------------


def test_a_standby_is_live_but_not_ready_and_names_the_leader() -> None:
    assert readiness(leader=lambda: "pod-a").verdict() == (False, "standby: pod-a leads")
    assert readiness().verdict() == (False, "standby: waiting for the leader lease")


def test_a_leader_is_ready_only_once_the_cache_is_filled() -> None:
    assert readiness(leading=True).verdict() == (True, "ok: leading")
    ready, reason = readiness(leading=True, synced=False).verdict()
    assert not ready and "not filled" in reason


def test_without_leader_election_ready_once_the_cache_is_filled() -> None:
    assert readiness(leader_election=False).verdict() == (True, "ok")
    assert readiness(leader_election=False, synced=False).verdict()[0] is False


def test_not_connected_or_shutting_down_is_not_ready() -> None:
    assert readiness(connected=False, leading=True).verdict() == (False, "not connected to the API server")
    assert readiness(shutting_down=True, leading=True).verdict() == (False, "shutting down")


# The HTTP endpoints -------------------------------------------------------------------------


async def get(app: aiohttp.web.Application, path: str) -> tuple[int, str, str]:
    async with TestClient(TestServer(app)) as client:
        response = await client.get(path)
        return response.status, await response.text(), response.headers.get("Content-Type", "")


async def test_healthz_answers_ok() -> None:
    status, text, _ = await get(probes.health_app(Fixed(False, "whatever")), "/healthz")
    assert (status, text) == (200, "ok")


async def test_readyz_is_200_when_ready() -> None:
    status, text, _ = await get(probes.health_app(Fixed(True, "ok: leading")), "/readyz")
    assert (status, text) == (200, "ok: leading")


async def test_readyz_is_503_with_the_reason_when_not_ready() -> None:
    status, text, _ = await get(probes.health_app(Fixed(False, "caches are not filled yet")), "/readyz")
    assert (status, text) == (503, "caches are not filled yet")


async def test_readyz_is_503_when_the_check_itself_fails() -> None:
    class Broken:
        def verdict(self) -> tuple[bool, str]:
            raise RuntimeError("oops")

    status, text, _ = await get(probes.health_app(Broken()), "/readyz")
    assert status == 503 and "oops" in text


async def test_metrics_are_prometheus_text_with_our_prefix() -> None:
    status, text, content_type = await get(probes.metrics_app(Metrics()), "/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert "# TYPE session_operator_leader gauge" in text
    assert "session_operator_decisions_total" in text


async def test_servers_on_separate_ports(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(bind_address="127.0.0.1", metrics_port=free_port(), health_port=free_port())
    with caplog.at_level(logging.INFO, logger="session_operator.probes"):
        servers = await probes.start(settings, Fixed(True, "ok"), Metrics())
    try:
        assert (servers.metrics_port, servers.health_port) == (settings.metrics_port, settings.health_port)
        assert f"Serving metrics on 127.0.0.1:{settings.metrics_port}" in caplog.messages
        assert f"Serving health probes on 127.0.0.1:{settings.health_port}" in caplog.messages
        async with aiohttp.ClientSession() as session:
            base_metrics = f"http://127.0.0.1:{servers.metrics_port}"
            base_health = f"http://127.0.0.1:{servers.health_port}"
            async with session.get(f"{base_metrics}/metrics") as response:
                assert response.status == 200
            async with session.get(f"{base_health}/healthz") as response:
                assert response.status == 200
            async with session.get(f"{base_health}/readyz") as response:
                assert response.status == 200
            async with session.get(f"{base_health}/metrics") as response:
                assert response.status == 404
            async with session.get(f"{base_metrics}/readyz") as response:
                assert response.status == 404
    finally:
        await servers.stop()
    with socket.socket() as sock:  # stopped: the port is free again
        sock.bind(("127.0.0.1", settings.health_port))


async def test_port_zero_picks_a_free_port() -> None:
    settings = Settings(bind_address="127.0.0.1", metrics_port=0, health_port=0)
    servers = await probes.start(settings, Fixed(False, "not yet"), Metrics())
    try:
        assert servers.metrics_port > 0 and servers.health_port > 0
        assert servers.metrics_port != servers.health_port
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{servers.health_port}/readyz") as response,
        ):
            assert response.status == 503
            assert await response.text() == "not yet"
    finally:
        await servers.stop()


async def test_one_server_when_both_ports_are_the_same() -> None:
    port = free_port()
    settings = Settings(bind_address="127.0.0.1", metrics_port=port, health_port=port)
    servers = await probes.start(settings, Fixed(True, "ok"), Metrics())
    try:
        async with aiohttp.ClientSession() as session:
            for path in ("/metrics", "/healthz", "/readyz"):
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    assert response.status == 200, path
    finally:
        await servers.stop()


async def test_a_taken_port_raises_and_leaves_nothing_running() -> None:
    metrics_port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = Settings(bind_address="127.0.0.1", metrics_port=metrics_port, health_port=taken.getsockname()[1])
        with pytest.raises(OSError):
            await probes.start(settings, Fixed(True, "ok"), Metrics())
    with socket.socket() as sock:  # the metrics server that did start was closed again
        sock.bind(("127.0.0.1", metrics_port))
