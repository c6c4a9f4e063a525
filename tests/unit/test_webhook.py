"""The webhook's wiring around the pure decision: settings, certificates, the bounded hand-over
from kopf's loop to the operator's, and the answers of a replica whose cache is not filled."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonpatch  # kopf's own dependency: it builds the webhook's patches with it
import pytest

from session_operator import __main__ as cli
from session_operator import admission, kopf_adapter
from session_operator.metrics import Metrics
from session_operator.model import Owner
from session_operator.probes import Readiness
from session_operator.runtime import Operator
from session_operator.settings import Settings
from support.webhook import make_tls


def settings_of(*argv: str) -> Settings:
    return cli.load_settings(cli.build_parser().parse_args(["run", *argv]), environ={})


# Settings ---------------------------------------------------------------------------------


def test_no_webhook_by_default() -> None:
    settings = settings_of()
    assert settings.webhook_port == 0
    assert cli.webhook_tls_problem(settings) is None


def test_webhook_flags_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(
        "--webhook-port", "9443", "--webhook-cert-file", "/c", "--webhook-key-file", "/k",
        "--webhook-bind-address", "127.0.0.1",
    )
    assert (settings.webhook_port, settings.webhook_cert_file, settings.webhook_key_file) == (9443, "/c", "/k")
    assert settings.webhook_bind_address == "127.0.0.1"
    for key, value in {
        "SESSION_OPERATOR_WEBHOOK_PORT": "9443", "SESSION_OPERATOR_WEBHOOK_CERT_FILE": "/c",
        "SESSION_OPERATOR_WEBHOOK_KEY_FILE": "/k",
    }.items():
        monkeypatch.setenv(key, value)
    assert Settings().webhook_port == 9443


@pytest.mark.parametrize("missing", ["--webhook-cert-file", "--webhook-key-file"])
def test_a_webhook_port_needs_a_certificate_and_key(missing: str) -> None:
    given = {"--webhook-cert-file": "/c", "--webhook-key-file": "/k"}
    del given[missing]
    argv = ["--webhook-port", "9443", *(part for item in given.items() for part in item)]
    with pytest.raises(cli.UsageError, match=rf"^{missing} \(SESSION_OPERATOR_\w+\): required when the webhook port"):
        settings_of(*argv)


def test_unreadable_certificates_are_named_before_anything_starts(tmp_path: Path) -> None:
    tls = make_tls(tmp_path)
    good = settings_of("--webhook-port", "9443", "--webhook-cert-file", str(tls.cert_file),
                       "--webhook-key-file", str(tls.key_file))
    assert cli.webhook_tls_problem(good) is None
    missing = settings_of("--webhook-port", "9443", "--webhook-cert-file", str(tmp_path / "nope.crt"),
                          "--webhook-key-file", str(tls.key_file))
    assert "nope.crt" in (cli.webhook_tls_problem(missing) or "")
    other = make_tls(tmp_path / "other")
    mismatched = settings_of("--webhook-port", "9443", "--webhook-cert-file", str(tls.cert_file),
                             "--webhook-key-file", str(other.key_file))
    assert cli.webhook_tls_problem(mismatched) is not None


def test_kopf_serves_the_given_files_and_manages_no_configuration(tmp_path: Path) -> None:
    webhook = kopf_adapter.Webhook(port=9443, cert_file="/c", key_file="/k", bind_address="127.0.0.1")
    config = kopf_adapter.kopf_settings(webhook)
    server = config.admission.server
    assert (server.addr, server.port, server.certfile, server.pkeyfile) == ("127.0.0.1", 9443, "/c", "/k")
    assert config.admission.managed is None
    assert kopf_adapter.kopf_settings().admission.server is None


# The hand-over between loops -------------------------------------------------------------


@pytest.fixture
def operator_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """Another thread's event loop, standing for the operator's (kopf's is the test's)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


async def test_the_answer_comes_from_the_operators_loop(operator_loop: asyncio.AbstractEventLoop) -> None:
    seen: list[asyncio.AbstractEventLoop] = []

    async def admit(request: admission.Request) -> admission.Admission:
        seen.append(asyncio.get_running_loop())
        return admission.Admission(allowed=False, code=409, message=request.body["metadata"]["name"])

    across = kopf_adapter.across_loops(admit, operator_loop, bound=1.0)
    answer = await across(admission.Request("CREATE", {"metadata": {"name": "bob-1"}}))
    assert (answer.allowed, answer.code, answer.message) == (False, 409, "bob-1")
    assert seen == [operator_loop]


async def test_a_busy_operator_loop_means_allowed_could_not_check(operator_loop: asyncio.AbstractEventLoop) -> None:
    operator_loop.call_soon_threadsafe(time.sleep, 0.5)  # the operator's loop is blocked

    async def admit(request: admission.Request) -> admission.Admission:
        return admission.Admission(allowed=False, code=409, message="too late")

    across = kopf_adapter.across_loops(admit, operator_loop, bound=0.1)
    started = time.monotonic()
    answer = await across(admission.Request("CREATE", {}))
    assert time.monotonic() - started < 0.4
    assert answer.allowed
    assert "did not answer within 100 ms" in answer.warnings[0]
    await asyncio.sleep(0.5)  # the operator's loop drops the review it was too late for


async def test_a_stopped_operator_loop_means_allowed_could_not_check() -> None:
    loop = asyncio.new_event_loop()
    loop.close()

    async def admit(request: admission.Request) -> admission.Admission:
        raise AssertionError("not called")

    answer = await kopf_adapter.across_loops(admit, loop, bound=0.2)(admission.Request("CREATE", {}))
    assert answer.allowed and "stopping" in answer.warnings[0]


async def test_the_handler_denies_with_the_code_and_returns_warnings() -> None:
    """Through kopf's own admission engine, as the webhook server calls it."""
    from kopf._cogs.structs import ephemera, references
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.reactor.inventory import ResourceMemories

    answers = {
        "bob-1": admission.Admission(allowed=False, code=409, message="held", warnings=()),
        "carol-1": admission.Admission(allowed=True, warnings=('will queue behind "alice-1"',)),
    }

    seen: list[admission.Request] = []

    async def admit(request: admission.Request) -> admission.Admission:
        seen.append(request)
        return answers[request.body["metadata"]["name"]]

    async def credentials() -> dict[str, Any]:
        return {}

    registry = kopf_adapter.registry(credentials, admit)
    resource = references.Resource("session-operator.io", "v1alpha1", "sessions", namespaced=True)
    insights = references.Insights()
    insights.webhook_resources.add(resource)

    async def review(
        name: str, operation: str = "CREATE", webhook: str = kopf_adapter.WEBHOOK_ID,
        spec: dict[str, Any] | None = None, old: dict[str, Any] | None = None, subresource: str | None = None,
    ) -> dict[str, Any]:
        request: dict[str, Any] = {
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "operation": operation,
                "userInfo": {"username": "alice", "groups": ["devs", "system:authenticated"]},
                "resource": {"group": "session-operator.io", "version": "v1alpha1", "resource": "sessions"},
                "object": {"metadata": {"name": name, "namespace": "team-a"}, "spec": spec or {"target": "t"}},
            },
        }
        if old is not None:
            request["request"]["oldObject"] = {"metadata": {"name": name, "namespace": "team-a"}, "spec": old}
        if subresource is not None:
            request["request"]["subResource"] = subresource
        response = await serve_admission_request(
            request, webhook=webhook, settings=kopf_adapter.kopf_settings(),
            memories=ResourceMemories(), memobase=ephemera.Memo(), registry=registry, insights=insights,
            indices={},
        )
        return dict(response["response"])

    denied = await review("bob-1")
    assert denied["allowed"] is False
    assert denied["status"] == {"message": "held", "code": 409}
    allowed = await review("carol-1")
    assert allowed["allowed"] is True
    assert allowed["warnings"] == ['will queue behind "alice-1"']
    # UPDATEs are reviewed too (an activation request takes a target); status writes are not.
    assert (await review("bob-1", operation="UPDATE", old={"target": "t"}))["allowed"] is False
    assert seen[-1].operation == "UPDATE" and seen[-1].old == {
        "metadata": {"name": "bob-1", "namespace": "team-a"}, "spec": {"target": "t"},
    }
    assert seen[-1].user == Owner("alice", ("devs", "system:authenticated"))
    count = len(seen)
    assert (await review("bob-1", operation="UPDATE", old={"target": "t"}, subresource="status"))["allowed"]
    assert len(seen) == count


def patched(response: dict[str, Any]) -> Any:
    return json.loads(base64.b64decode(response["patch"])) if response.get("patch") else []


async def test_the_mutating_webhook_records_the_requesting_user_as_owner() -> None:
    """At CREATE whatever the body says; at UPDATE the owner kept where a replace drops it."""
    from kopf._cogs.structs import ephemera, references
    from kopf._core.engines.admission import serve_admission_request
    from kopf._core.reactor.inventory import ResourceMemories

    async def admit(request: admission.Request) -> admission.Admission:
        return admission.ALLOW

    async def credentials() -> dict[str, Any]:
        return {}

    registry = kopf_adapter.registry(credentials, admit)
    insights = references.Insights()
    insights.webhook_resources.add(references.Resource("session-operator.io", "v1alpha1", "sessions", namespaced=True))

    async def mutate(operation: str, spec: dict[str, Any], old: dict[str, Any] | None = None) -> Any:
        request: dict[str, Any] = {"request": {
            "uid": "u1", "operation": operation, "userInfo": {"username": "bob", "groups": ["system:authenticated"]},
            "resource": {"group": "session-operator.io", "version": "v1alpha1", "resource": "sessions"},
            "object": {"metadata": {"name": "s", "namespace": "team-a"}, "spec": spec},
        }}
        if old is not None:
            request["request"]["oldObject"] = {"metadata": {"name": "s", "namespace": "team-a"}, "spec": old}
        response = await serve_admission_request(
            request, webhook=kopf_adapter.MUTATING_WEBHOOK_ID, settings=kopf_adapter.kopf_settings(),
            memories=ResourceMemories(), memobase=ephemera.Memo(), registry=registry, insights=insights, indices={},
        )
        assert response["response"]["allowed"] is True
        return patched(dict(response["response"]))

    bob = {"username": "bob", "groups": ["system:authenticated"]}
    assert await mutate("CREATE", {"target": "t"}) == [{"op": "add", "path": "/spec/owner", "value": bob}]
    forged = {"username": "alice", "groups": ["system:masters"]}
    ops = await mutate("CREATE", {"target": "t", "owner": forged})
    # The patch, as the API server applies it, leaves exactly the requesting user there.
    after = jsonpatch.apply_patch({"spec": {"target": "t", "owner": forged}}, ops)
    assert after["spec"]["owner"] == bob
    alice = {"username": "alice", "groups": ["system:authenticated"]}
    assert await mutate("UPDATE", {"target": "t"}, old={"target": "t", "owner": alice}) == [
        {"op": "add", "path": "/spec/owner", "value": alice}
    ]
    assert await mutate("UPDATE", {"target": "t", "owner": alice}, old={"target": "t", "owner": alice}) == []


def test_a_denial_is_no_error_in_the_log() -> None:
    keep = kopf_adapter._DenialsAreAnswers()

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.ERROR, __file__, 1, message, None, None)

    assert not keep.filter(record("Webhook 'validate-session' failed permanently: target held"))
    assert keep.filter(record("Webhook 'other' failed permanently: boom"))


# A replica's answers from its cache --------------------------------------------------------


def operator(*argv: str) -> Operator:
    return Operator(settings_of(*argv), object(), metrics=Metrics(), readiness=Readiness(leader_election=True))  # type: ignore[arg-type]


def new(namespace: str = "team-a", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "bob-1", "namespace": namespace}, "spec": {"target": "repo/x", **spec}}


def create(body: dict[str, Any]) -> admission.Request:
    return admission.Request("CREATE", body, user=Owner("bob", ("system:authenticated",)))


async def test_a_replica_whose_cache_is_not_filled_allows_and_says_so() -> None:
    answer = await operator().admit(create(new()))
    assert answer.allowed
    assert "not filled yet" in answer.warnings[0]


async def test_a_filled_cache_answers_from_the_target_group() -> None:
    op = operator()
    for informer in op.informers:  # as after their first listing
        informer.synced.set()
    holder = {
        "metadata": {"name": "alice-1", "namespace": "team-a", "uid": "a", "resourceVersion": "3", "generation": 1,
                     "creationTimestamp": "2026-11-21T10:00:00Z"},
        "spec": {"target": "repo/x", "profile": "p"},
        "status": {"phase": "Active", "observedGeneration": 1, "activeSince": "2026-11-21T10:00:01Z"},
    }
    op.cache.session_event("ADDED", holder)
    answer = await op.admit(create(new()))
    assert (answer.allowed, answer.code) == (False, 409)
    assert 'held by session "alice-1"' in answer.message
    assert await op.admit(create(new(namespace="team-b"))) == admission.ALLOW  # another namespace: another target


async def test_namespaces_not_watched_are_not_checked() -> None:
    op = operator("--namespace", "team-a")
    assert await op.admit(create(new(namespace="elsewhere"))) == admission.ALLOW
