"""The ``session-operator`` command line: settings precedence, errors, help, and ``run``.

``run`` is exercised in-process with a fake ``session_operator.runtime`` (its Operator)
and a fake ``Kube`` holding Leases in memory, so signals, leadership and exit codes are
tested without an API server.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import os
import signal
import socket
import subprocess
import sys
import types
from collections.abc import Iterator, Mapping
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import session_operator
from session_operator import __main__ as cli
from session_operator import leader
from session_operator.kube import ApiError, Conflict, NotFound
from session_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.upper().startswith("SESSION_OPERATOR_"):
            monkeypatch.delenv(key)


def settings_of(*argv: str) -> Settings:
    return cli.load_settings(cli.build_parser().parse_args(["run", *argv]))


def exit_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


# Settings precedence -----------------------------------------------------------------------


def test_defaults_without_flags_or_env() -> None:
    settings = settings_of()
    assert settings.metrics_port == 8080
    assert settings.namespaces == []
    assert settings.leader_elect is True
    assert settings.log_format == "text"


def test_env_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_OPERATOR_METRICS_PORT", "9000")
    monkeypatch.setenv("SESSION_OPERATOR_LEADER_ELECT", "false")
    monkeypatch.setenv("SESSION_OPERATOR_DEFAULT_ARCHIVE_AFTER", "1h")
    settings = settings_of()
    assert settings.metrics_port == 9000
    assert settings.leader_elect is False
    assert settings.default_archive_after == "1h"


def test_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_OPERATOR_METRICS_PORT", "9000")
    monkeypatch.setenv("SESSION_OPERATOR_LEADER_ELECT", "false")
    monkeypatch.setenv("SESSION_OPERATOR_LOG_FORMAT", "text")
    settings = settings_of("--metrics-port", "9100", "--leader-elect", "--log-format", "json")
    assert settings.metrics_port == 9100
    assert settings.leader_elect is True
    assert settings.log_format == "json"


def test_only_given_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_OPERATOR_HEALTH_PORT", "9001")
    settings = settings_of("--metrics-port", "9100")
    assert settings.health_port == 9001  # env kept: --health-port was not given


def test_no_leader_elect_flag() -> None:
    assert settings_of("--no-leader-elect").leader_elect is False


def test_namespace_is_repeatable() -> None:
    assert settings_of("--namespace", "team-a", "--namespace", "team-b").namespaces == ["team-a", "team-b"]
    assert settings_of("--namespace", "team-a,team-b").namespaces == ["team-a", "team-b"]


def test_env_namespaces_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_OPERATOR_NAMESPACES", "team-a, team-b")
    assert settings_of().namespaces == ["team-a", "team-b"]
    monkeypatch.setenv("SESSION_OPERATOR_NAMESPACES", "solo")
    assert settings_of().namespaces == ["solo"]
    assert settings_of("--namespace", "flag").namespaces == ["flag"]


def test_every_setting_has_a_flag_and_unset_flags_pass_nothing() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["run"])
    for field in Settings.model_fields:
        assert not hasattr(args, field)  # not given -> not passed, so env/defaults apply
    (commands,) = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    run_parser = commands.choices["run"]
    dests = {action.dest for action in run_parser._actions}
    assert set(Settings.model_fields) <= dests
    for field in Settings.model_fields:
        assert cli.flag_of(field) in run_parser._option_string_actions


# Durations: 15s, 1m30s or plain seconds, for every duration flag and variable -----------------

# (field, flag, value, the setting it gives); each given alone, so the timings stay consistent.
DURATION_CASES = [
    ("lease_duration", "--lease-duration", "15s", 15.0),
    ("lease_duration", "--lease-duration", "1m30s", 90.0),
    ("lease_duration", "--lease-duration", "20", 20.0),
    ("renew_deadline", "--renew-deadline", "12s", 12.0),
    ("renew_deadline", "--renew-deadline", "0m12.5s", 12.5),
    ("renew_deadline", "--renew-deadline", "4", 4.0),
    ("retry_period", "--retry-period", "3s", 3.0),
    ("retry_period", "--retry-period", "0m1s", 1.0),
    ("retry_period", "--retry-period", "2", 2.0),
    ("retry_period", "--retry-period", "0.5", 0.5),
    ("default_archive_after", "--default-archive-after", "15s", timedelta(seconds=15)),
    ("default_archive_after", "--default-archive-after", "1m30s", timedelta(seconds=90)),
    ("default_archive_after", "--default-archive-after", "2", timedelta(seconds=2)),
    ("default_delete_after", "--default-delete-after", "15s", timedelta(seconds=15)),
    ("default_delete_after", "--default-delete-after", "1m30s", timedelta(seconds=90)),
    ("default_delete_after", "--default-delete-after", "2", timedelta(seconds=2)),
]



def duration_of(settings: Settings, field: str) -> object:
    """What consumers read: floats of seconds for leader election, timedeltas for retention."""
    consumed = {"default_archive_after": "archive_after", "default_delete_after": "delete_after"}
    return getattr(settings, consumed.get(field, field))


@pytest.mark.parametrize(("field", "flag", "value", "expected"), DURATION_CASES)
def test_duration_flags_take_go_durations_and_plain_seconds(
    field: str, flag: str, value: str, expected: object
) -> None:
    got = duration_of(settings_of(flag, value), field)
    assert got == expected
    assert type(got) is type(expected)


@pytest.mark.parametrize(("field", "flag", "value", "expected"), DURATION_CASES)
def test_duration_env_vars_take_go_durations_and_plain_seconds(
    field: str, flag: str, value: str, expected: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.env_of(field), value)
    got = duration_of(settings_of(), field)
    assert got == expected
    assert type(got) is type(expected)


def test_readme_lease_duration_example_works() -> None:
    settings = settings_of("--lease-duration", "6s", "--renew-deadline", "4s", "--retry-period", "1s")
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (6.0, 4.0, 1.0)


DURATION_FIELDS = ["lease_duration", "renew_deadline", "retry_period", "default_archive_after", "default_delete_after"]
BAD_DURATIONS = ["6 seconds", "soon", "-5", "15x", "inf"]


@pytest.mark.parametrize("field", DURATION_FIELDS)
@pytest.mark.parametrize("bad", BAD_DURATIONS)
@pytest.mark.parametrize("via", ["flag", "env"])
def test_bad_duration_exits_2_with_a_clear_message(
    field: str, bad: str, via: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    if via == "flag":
        argv, where = [cli.flag_of(field), bad], cli.flag_of(field)
    else:
        monkeypatch.setenv(cli.env_of(field), bad)
        argv, where = [], cli.env_of(field)
    code, _, err = exit_of(["run", *argv], capsys)
    assert code == 2
    assert err == (
        f'session-operator: error: {where}: "{bad}" is not a duration '
        "(use forms like 15s, 1m30s, or plain seconds such as 15 or 0.5)\n"
    )


def test_duration_help_shows_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = exit_of(["run", "--help"], capsys)
    for field in DURATION_FIELDS:
        assert f"{cli.flag_of(field)} DURATION" in out
    flat = " ".join(out.split())
    assert "default: 15s]" in flat and "default: 10s]" in flat and "default: 2s]" in flat


# Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--default-archive-after", "5minutes"], {}, "--default-archive-after"),
        (["--metrics-port", "abc"], {}, "--metrics-port"),
        (["--metrics-port", "70000"], {}, "--metrics-port"),
        (["--log-format", "xml"], {}, "--log-format"),
        (["--workers", "0"], {}, "--workers"),
        ([], {"SESSION_OPERATOR_METRICS_PORT": "abc"}, "SESSION_OPERATOR_METRICS_PORT"),
        ([], {"SESSION_OPERATOR_DEFAULT_DELETE_AFTER": "soon"}, "SESSION_OPERATOR_DEFAULT_DELETE_AFTER"),
        (["--lease-duration", "5"], {}, "--renew-deadline"),
        (["--retry-period", "9"], {}, "--retry-period"),
    ],
)
def test_bad_values_exit_2_with_one_line_naming_the_source(
    argv: list[str],
    env: dict[str, str],
    named: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, _, err = exit_of(["run", *argv], capsys)
    assert code == 2
    assert err.startswith("session-operator: error: ")
    assert named in err
    assert err.strip().count("\n") == 0  # one line
    assert "Traceback" not in err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = exit_of(["run", "--no-such-flag"], capsys)
    assert code == 2
    assert "--no-such-flag" in err


# Help and version ---------------------------------------------------------------------------


def test_help_documents_every_flag_with_env_and_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = exit_of(["--help"], capsys)
    assert code == 0
    assert "run" in out and "version" in out
    flat = " ".join(out.split())
    for field in Settings.model_fields:
        flag = cli.flag_of(field)
        assert flag in out, flag
        assert f"env: {cli.env_of(field)};" in flat, field
    assert "--no-leader-elect" in out and "--kubeconfig" in out
    assert "default: 8080]" in flat and "default: 168h]" in flat and "default: on]" in flat


def test_run_help_lists_the_same_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = exit_of(["run", "--help"], capsys)
    assert code == 0
    for field in Settings.model_fields:
        assert cli.flag_of(field) in out


def test_help_text_comes_from_the_settings_descriptions(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = exit_of(["run", "--help"], capsys)
    squeezed = "".join(out.split())  # argparse wraps lines, also after hyphens
    for info in Settings.model_fields.values():
        assert "".join((info.description or "").split()) in squeezed


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = exit_of(["version"], capsys)
    assert code == 0
    assert out.startswith(f"session-operator {session_operator.__version__}")


def test_version_flag_prints_the_distribution_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = exit_of(["--version"], capsys)
    assert code == 0
    assert out == f"session-operator {metadata.version('session-operator')}\n"
    assert err == ""


def test_no_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_of([], capsys)[0] == 2


def test_module_entry_point_runs() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "operator")}
    result = subprocess.run(
        [sys.executable, "-m", "session_operator", "run", "--metrics-port", "x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "session-operator: error: --metrics-port: "
        "Input should be a valid integer, unable to parse string as an integer (got 'x')"
    )


# run: signals, leadership, exit codes -------------------------------------------------------


class FakeKube:
    """Leases in memory (resourceVersion-checked), plus close()."""

    def __init__(self) -> None:
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 0
        self.down = False
        self.closed = False

    def _check(self) -> None:
        if self.down:
            raise ApiError(503, "ServiceUnavailable", "down")

    def _store(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self.rv += 1
        stored = copy.deepcopy(dict(body))
        stored["metadata"] = {**stored.get("metadata", {}), "name": name, "resourceVersion": str(self.rv)}
        self.leases[(namespace, name)] = stored
        return copy.deepcopy(stored)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any]:
        self._check()
        if (namespace, name) not in self.leases:
            raise NotFound(404, "NotFound", "not found")
        return copy.deepcopy(self.leases[(namespace, name)])

    async def create_lease(self, namespace: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        if (namespace, body["metadata"]["name"]) in self.leases:
            raise Conflict(409, "AlreadyExists", "exists")
        return self._store(namespace, body["metadata"]["name"], body)

    async def replace_lease(self, namespace: str, name: str, body: Mapping[str, Any]) -> dict[str, Any]:
        self._check()
        current = self.leases[(namespace, name)]
        if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"]:
            raise Conflict(409, "Conflict", "modified")
        return self._store(namespace, name, body)

    async def close(self) -> None:
        self.closed = True


class FakeRuntime(types.ModuleType):
    """``session_operator.runtime`` with an ``Operator`` whose cache fills at once and whose
    leading work only waits for ``stop`` (the real one is tested by the integration tier)."""

    def __init__(self) -> None:
        super().__init__("session_operator.runtime")
        self.started = asyncio.Event()
        self.calls = 0
        self.saw_stop = False
        self.cancelled = False
        self.metrics: Any = None
        fake = self

        class Operator:
            def __init__(self, settings: Settings, kube: Any, *, metrics: Any, readiness: Any) -> None:
                self.metrics = fake.metrics = metrics
                self.readiness = readiness

            async def lead(self, stop: asyncio.Event) -> None:
                await fake.serve(stop, self.readiness, self.metrics)

            async def run(self, stop: asyncio.Event, elector: Any = None) -> None:
                self.readiness.synced = True
                if elector is None:
                    await self.lead(stop)
                else:
                    await leader.run_leading(elector, lambda: self.lead(stop), stop=stop)

        self.Operator = Operator

    async def serve(self, stop: asyncio.Event, readiness: Any, metrics: Any) -> None:
        self.calls += 1
        readiness.leading = True
        metrics.leader.set(1)
        self.started.set()
        try:
            await stop.wait()
            self.saw_stop = True
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            readiness.leading = False
            metrics.leader.set(0)

    def leader_gauge(self) -> float | None:
        return self.metrics.registry.get_sample_value("session_operator_leader")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRuntime]:
    fake = FakeRuntime()
    monkeypatch.setitem(sys.modules, "session_operator.runtime", fake)
    monkeypatch.setattr(session_operator, "runtime", fake, raising=False)
    yield fake


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch) -> FakeKube:
    fake = FakeKube()

    class Connector:
        @staticmethod
        async def connect(kubeconfig: str | None = None) -> FakeKube:
            return fake

    monkeypatch.setattr(cli, "Kube", Connector)
    return fake


def run_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "metrics_port": free_port(),
        "health_port": free_port(),
        "bind_address": "127.0.0.1",
        "lease_duration": 1.0,
        "renew_deadline": 0.4,
        "retry_period": 0.1,
        "leader_election_namespace": "ops",
        "identity": "me",
    }
    values.update(overrides)
    return Settings(**values)


async def readyz(settings: Settings) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{settings.health_port}/readyz") as response,
    ):
        return response.status, await response.text()


async def test_sigterm_stops_serving_releases_the_lease_and_exits_0(runtime: FakeRuntime, kube: FakeKube) -> None:
    settings = run_settings()
    running = asyncio.ensure_future(cli.run(settings))
    await asyncio.wait_for(runtime.started.wait(), 2)
    assert await readyz(settings) == (200, "ok: leading")
    assert runtime.leader_gauge() == 1
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 2) == 0
    assert runtime.saw_stop and not runtime.cancelled
    assert kube.leases[("ops", "session-operator-leader")]["spec"]["holderIdentity"] == ""
    assert kube.closed
    assert runtime.leader_gauge() == 0


async def test_lost_leadership_cancels_serving_and_exits_1(
    runtime: FakeRuntime, kube: FakeKube, caplog: pytest.LogCaptureFixture
) -> None:
    settings = run_settings()
    running = asyncio.ensure_future(cli.run(settings))
    await asyncio.wait_for(runtime.started.wait(), 2)
    kube.down = True
    with caplog.at_level(logging.INFO):
        assert await asyncio.wait_for(running, 2) == 1
    assert runtime.cancelled and not runtime.saw_stop
    assert "Lost leadership of lease ops/session-operator-leader; exiting" in caplog.messages
    assert kube.leases[("ops", "session-operator-leader")]["spec"]["holderIdentity"] == "me"  # not released
    assert kube.closed


async def test_standby_is_live_but_not_ready_and_does_not_serve(runtime: FakeRuntime, kube: FakeKube) -> None:
    settings = run_settings()
    kube.leases[("ops", "session-operator-leader")] = {
        "metadata": {"name": "session-operator-leader", "resourceVersion": "1"},
        "spec": {"holderIdentity": "other", "leaseDurationSeconds": 15},
    }
    running = asyncio.ensure_future(cli.run(settings))
    for _ in range(50):
        await asyncio.sleep(0.05)
        status, text = await readyz(settings)
        if text == "standby: other leads":
            break
    assert (status, text) == (503, "standby: other leads")
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{settings.health_port}/healthz") as response,
    ):
        assert response.status == 200
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 2) == 0
    assert runtime.calls == 0


async def test_without_leader_election_serves_at_once(runtime: FakeRuntime, kube: FakeKube) -> None:
    settings = run_settings(leader_elect=False)
    running = asyncio.ensure_future(cli.run(settings))
    await asyncio.wait_for(runtime.started.wait(), 2)
    assert await readyz(settings) == (200, "ok")
    assert kube.leases == {}
    os.kill(os.getpid(), signal.SIGINT)
    assert await asyncio.wait_for(running, 2) == 0
    assert runtime.saw_stop


async def test_a_taken_port_exits_1(runtime: FakeRuntime, kube: FakeKube) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        settings = run_settings(metrics_port=sock.getsockname()[1])
        assert await asyncio.wait_for(cli.run(settings), 2) == 1
    assert runtime.calls == 0
    assert kube.closed


async def test_a_second_signal_cancels_at_once(
    runtime: FakeRuntime, kube: FakeKube, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def stubborn_serve(stop: asyncio.Event, readiness: Any, metrics: Any) -> None:
        runtime.started.set()
        await asyncio.Event().wait()  # never returns on stop

    monkeypatch.setattr(runtime, "serve", stubborn_serve)
    running = asyncio.ensure_future(cli.run(run_settings(leader_elect=False)))
    await asyncio.wait_for(runtime.started.wait(), 2)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.1)
    assert not running.done()
    os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 2)
    assert kube.closed
