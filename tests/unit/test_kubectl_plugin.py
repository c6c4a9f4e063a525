"""``kubectl session`` (session_operator.plugin): the command line, the tables and paragraphs
it prints, and the messages of its errors. The real process against an API server:
tests/integration/test_plugin.py."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from session_operator import plugin
from session_operator.errors import ApiError, NotFound

NOW = datetime(2026, 11, 21, 10, 30, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def session(
    name: str,
    phase: str | None,
    *,
    target: str = "repo/payments",
    namespace: str = "team-a",
    created: float = 600,
    priority: int = 0,
    profile: str = "gpt-4o",
    reason: str = "",
    message: str = "",
    generation: int = 1,
    **status: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "session-operator.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "generation": generation,
                     "creationTimestamp": stamp(created)},
        "spec": {"target": target, "profile": profile, "priority": priority},
        "status": {},
    }
    if phase is not None:
        body["status"] = {
            "phase": phase,
            "observedGeneration": status.pop("observed", generation),
            "conditions": [
                {"type": "Ready", "status": "True" if phase == "Active" else "False", "reason": reason or phase,
                 "message": message, "lastTransitionTime": stamp(created)},
                {"type": "Reconciling", "status": "True" if phase == "Queued" else "False",
                 "reason": reason or phase, "message": "", "lastTransitionTime": stamp(status.pop("queued", created))},
            ],
            **status,
        }
    return body


def holder_info(name: str, since: float = 130) -> dict[str, Any]:
    return {"name": name, "uid": f"uid-{name}", "profile": "gpt-4o", "activeSince": stamp(since)}


QUEUE = [
    session("alice-1", "Active", created=300, activeSince=stamp(130), lastActivityTime=stamp(10),
            idleDeadline=(NOW + timedelta(minutes=27, seconds=50)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            reason="Acquired", message='session "alice-1" holds target "repo/payments"'),
    # Queue order: priority, then age, then name -- not the order of the list, nor the
    # positions the statuses show (carol's is stale).
    session("carol-1", "Queued", created=40, profile="gpt-5", queuePosition=3, holder=holder_info("old-1"),
            reason="Queued", queued=40),
    session("bob-1", "Queued", created=40, profile="gpt-5", queuePosition=1, holder=holder_info("alice-1"),
            reason="Queued", queued=40),
    session("vip-1", "Queued", created=10, priority=5, queuePosition=1, holder=holder_info("alice-1"),
            reason="Queued", queued=10),
    session("dave-1", "Rejected", created=20, reason="DuplicateProfile", holder=holder_info("alice-1"),
            message='target "repo/payments" is held by session "alice-1" (profile "gpt-4o", active since '
            f'{stamp(130)}) with the same profile; use session "alice-1" (ReplaceIfProfileChanged replaces only a '
            "holder whose profile differs), or archive it, or change spec.profile or spec.onConflict"),
    session("elsewhere", "Active", target="repo/other", activeSince=stamp(5)),
]


# --- the command line ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["who", "repo/payments", "-n", "team-a", "-o", "json"],
        ["-n", "team-a", "who", "repo/payments", "-o", "json"],
        ["-n=team-a", "-o=json", "who", "repo/payments"],
        ["--namespace", "team-a", "--output", "json", "who", "repo/payments"],
        ["who", "--namespace=team-a", "--output=json", "repo/payments"],
    ],
)
def test_flags_go_before_or_after_the_command_as_with_kubectl(argv: list[str]) -> None:
    args = plugin.parse_args(argv)
    assert (args.command, args.target, args.namespace, args.output, args.all_namespaces) == (
        "who", "repo/payments", "team-a", "json", False,
    )


def test_defaults_context_kubeconfig_and_activate_flags() -> None:
    args = plugin.parse_args(["activate", "bob-1"])
    assert (args.namespace, args.context, args.kubeconfig, args.output) == (None, None, None, None)
    assert (args.wait, args.timeout) == (True, 30.0)
    args = plugin.parse_args(["--context", "prod", "--kubeconfig", "/k", "activate", "bob-1", "--wait=false",
                              "--timeout", "2m"])
    assert (args.context, args.kubeconfig, args.wait, args.timeout) == ("prod", "/k", False, 120.0)
    assert plugin.parse_args(["activate", "b", "--timeout", "5"]).timeout == 5.0


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["why", "bob-1", "-A"], "-A/--all-namespaces works with 'who' only"),
        (["who", "t", "-A", "-n", "x"], "choose one"),
        (["who", "t", "-o", "wide"], "unknown output format 'wide': use json or yaml"),
        (["who"], "the following arguments are required: TARGET"),
        (["frobnicate", "x"], "invalid choice: 'frobnicate'"),
        (["activate", "b", "--timeout", "soon"], '"soon" is not a duration'),
        (["activate", "b", "--wait=perhaps"], "'perhaps' is not true or false"),
    ],
)
def test_a_bad_command_line_says_what_is_wrong(argv: list[str], complaint: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        plugin.parse_args(argv)
    assert exited.value.code == plugin.EXIT_USAGE
    assert complaint in capsys.readouterr().err


def test_help_lists_every_command_with_its_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        plugin.parse_args(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: kubectl session COMMAND ARGUMENT [flags]")
    for command, (argument, summary) in plugin.COMMANDS.items():
        assert f"  {command} {argument}" in out and summary in out
    for flag in ("--kubeconfig", "--context", "-n NS, --namespace NS", "-A, --all-namespaces", "-o FORMAT"):
        assert flag in out


# --- who --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(-5, "<invalid>"), (-1, "0s"), (0, "0s"), (119, "119s"), (130, "2m10s"), (600, "10m"), (3 * 3600, "3h"),
     (3 * 3600 + 60, "3h1m"), (47 * 3600, "47h"), (50 * 3600, "2d2h"), (10 * 86400, "10d"),
     (800 * 86400, "2y70d"), (3000 * 86400, "8y")],
)
def test_durations_read_as_kubectl_prints_ages(seconds: float, text: str) -> None:
    assert plugin.human_duration(seconds) == text


def test_who_computes_the_live_queue_from_the_sessions() -> None:
    (view,) = plugin.target_views(QUEUE, "repo/payments", NOW)
    assert (view.namespace, view.target, view.sessions) == ("team-a", "repo/payments", 5)
    assert view.holder is not None and view.holder["name"] == "alice-1"
    assert (view.holder["heldForSeconds"], view.holder["idleInSeconds"]) == (130, 27 * 60 + 50)
    assert [(e["position"], e["name"]) for e in view.queue] == [(1, "vip-1"), (2, "bob-1"), (3, "carol-1")]
    # What the statuses show is reported beside it, not used.
    assert [(e["statusPosition"], e["statusHolder"]) for e in view.queue] == [
        (1, "alice-1"), (1, "alice-1"), (3, "old-1"),
    ]


def test_who_prints_the_holder_then_the_queue_as_kubectl_tables() -> None:
    views = plugin.target_views(QUEUE, "repo/payments", NOW)
    owned = [{**item, "spec": {**item["spec"], "owner": {"username": "alice"}}} if i in (0, 2) else item
             for i, item in enumerate(QUEUE)]
    views = plugin.target_views(owned, "repo/payments", NOW)
    assert plugin.render_who(views, all_namespaces=False) == (
        "TARGET          HOLDER    OWNER   PROFILE   HELD FOR   IDLE DEADLINE                   WAITING\n"
        "repo/payments   alice-1   alice   gpt-4o    2m10s      2026-11-21T10:57:50Z (in 27m)   3\n"
        "\n"
        "POSITION   NAME      OWNER    PROFILE   PRIORITY   WAITING FOR\n"
        "1          vip-1     <none>   gpt-4o    5          10s\n"
        "2          bob-1     alice    gpt-5     0          40s\n"
        "3          carol-1   <none>   gpt-5     0          40s"
    )


def test_who_in_every_namespace_adds_the_namespace_and_leaves_out_an_empty_queue() -> None:
    items = [*QUEUE, session("x-1", "Active", namespace="team-b", activeSince=stamp(7200), profile="")]
    views = plugin.target_views(items, "repo/payments", NOW)
    text = plugin.render_who(views, all_namespaces=True)
    lines = text.splitlines()
    assert lines[0].split() == ["NAMESPACE", "TARGET", "HOLDER", "OWNER", "PROFILE", "HELD", "FOR", "IDLE",
                                "DEADLINE", "WAITING"]
    assert lines[2].split() == ["team-b", "repo/payments", "x-1", "<none>", "<none>", "120m", "<none>", "0"]
    assert lines[4].split()[:3] == ["NAMESPACE", "POSITION", "NAME"]
    assert [line.split()[0] for line in lines[5:]] == ["team-a"] * 3
    (alone,) = plugin.target_views([items[-1]], "repo/payments", NOW)
    assert "\n\n" not in plugin.render_who([alone], all_namespaces=False)


def test_who_as_json_or_yaml() -> None:
    views = plugin.target_views(QUEUE, "repo/payments", NOW)
    document = plugin.who_document(views, "repo/payments", "team-a")
    assert document["holder"]["name"] == "alice-1" and [e["name"] for e in document["queue"]] == [
        "vip-1", "bob-1", "carol-1",
    ]
    assert json.loads(plugin.dump(document, "json")) == document
    assert yaml.safe_load(plugin.dump(document, "yaml")) == document
    everywhere = plugin.who_document(views, "repo/payments", None)
    assert everywhere["target"] == "repo/payments" and [i["namespace"] for i in everywhere["items"]] == ["team-a"]
    assert plugin.who_document([], "nothing", "team-a") == {
        "namespace": "team-a", "target": "nothing", "holder": None, "queue": [],
    }


# --- why ----------------------------------------------------------------------------------------


def why(name: str, items: list[dict[str, Any]] = QUEUE) -> str:
    body = next(i for i in items if i["metadata"]["name"] == name)
    return plugin.why_paragraph(body, items, NOW)


def test_why_active_names_the_deadline_and_who_is_next() -> None:
    assert why("alice-1") == (
        'Session "alice-1" (namespace "team-a", target "repo/payments") is Active (reason Acquired): session '
        f'"alice-1" holds target "repo/payments"; it has held the target since {stamp(130)} (2m10s). Unless '
        "activity is recorded (kubectl session touch alice-1 -n team-a), it is Abandoned at 2026-11-21T10:57:50Z "
        "(in 27m). 3 sessions wait behind it; next: vip-1."
    )


def test_why_names_the_owner_and_what_a_governed_rejection_can_do() -> None:
    rejected = session("bob-2", "Rejected", created=20, reason="NotPermitted", holder=holder_info("alice-1"),
                       message='target "repo/payments" is held by session "alice-1"; user "bob" may not take it')
    rejected["spec"]["owner"] = {"username": "bob"}
    text = plugin.why_paragraph(rejected, [*QUEUE, rejected], NOW)
    assert text.startswith('Session "bob-2" (namespace "team-a", target "repo/payments", owner "bob") is Rejected '
                           "(reason NotPermitted)")
    assert 'the verb "preempt"' in text and "kubectl session activate" not in text


def test_why_queued_gives_the_live_place_and_says_when_the_status_lags() -> None:
    assert why("bob-1") == (
        'Session "bob-1" (namespace "team-a", target "repo/payments") is Queued, number 2 of 3 in line behind '
        '"alice-1" (profile "gpt-4o", active for 2m10s). Its status still shows position 1 behind "alice-1"; it '
        "is brought up to date within seconds. It becomes Active when the target is released and it is first in "
        "line; to take the target now: kubectl session activate bob-1 -n team-a."
    )
    assert "number 1 of 3" in why("vip-1") and "still shows" not in why("vip-1")


def test_why_rejected_for_the_same_profile_says_which_session_to_use() -> None:
    text = why("dave-1")
    assert text.startswith('Session "dave-1" (namespace "team-a", target "repo/payments") is Rejected (reason '
                           'DuplicateProfile): target "repo/payments" is held by session "alice-1"')
    assert 'To reuse the running session, use "alice-1" (still Active).' in text
    assert text.endswith("to take the target anyway: kubectl session activate dave-1 -n team-a.")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (session("new-1", None), 'is not decided yet: no operator has written its status. Check that '
         'session-operator runs and watches namespace "team-a".'),
        (session("gone-1", "Replaced", reason="Replaced", message='replaced by session "x"'),
         'is Replaced (reason Replaced): replaced by session "x". The target is held by "alice-1" now.'),
        (session("bad-1", "Invalid", reason="InvalidSpec", message="spec.idleTimeout: out of range"),
         "is Invalid (reason InvalidSpec): spec.idleTimeout: out of range. Fix the spec to have it evaluated again."),
        (session("nap-1", "Inactive", message="spec.state is Inactive"),
         "Set spec.state to Active to ask for the target again, or: kubectl session activate nap-1 -n team-a."),
        (session("late-1", "Completed", generation=3, observed=2), "(This describes generation 2; the operator "
         "has not yet evaluated the latest spec, generation 3.)"),
    ],
)
def test_why_other_phases(body: dict[str, Any], expected: str) -> None:
    assert expected in plugin.why_paragraph(body, [*QUEUE, body], NOW)


def test_why_as_a_document() -> None:
    body = QUEUE[2]
    document = plugin.why_document(body, "because")
    assert document == {"namespace": "team-a", "name": "bob-1", "target": "repo/payments", "phase": "Queued",
                        "reason": "Queued", "message": "", "holder": "alice-1", "why": "because"}


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "verb", "name", "expected"),
    [
        (NotFound(404, "NotFound", 'sessions.session-operator.io "bob-1" not found'), "get", "bob-1",
         'Error from server (NotFound): session "bob-1" not found in namespace "team-a"; list the sessions there '
         "with: kubectl get sess -n team-a"),
        (NotFound(404, "NotFound", "the server could not find the requested resource"), "list", None,
         "Error from server (NotFound): this cluster does not serve sessions.session-operator.io (the Session CRD "
         "is not installed); install it with: kubectl apply --server-side -f charts/session-operator/crds/"),
        (ApiError(403, "Forbidden", 'sessions.session-operator.io "bob-1" is forbidden'), "patch", "bob-1",
         "Error from server (Forbidden): you may not patch sessions.session-operator.io in namespace \"team-a\"; "
         "ask for a Role that grants it, and check with: kubectl auth can-i patch sessions.session-operator.io "
         "-n team-a"),
        (ApiError(401, "Unauthorized", ""), "get", "b",
         "Error from server (Unauthorized): the API server did not accept your credentials; log in again to "
         "refresh them, or pick another context with --context"),
        (ApiError(0, "ConnectionError", "Connection refused"), "get", "b",
         "error: cannot reach the API server at https://k:6443: Connection refused; check the context (kubectl "
         "config current-context) and that the cluster is up"),
    ],
)
def test_api_errors_name_the_problem_and_the_fix(error: ApiError, verb: str, name: str | None, expected: str) -> None:
    assert plugin.api_problem(error, verb=verb, namespace="team-a", name=name, server="https://k:6443") == expected


def test_forbidden_everywhere_names_the_cluster_wide_verb() -> None:
    text = plugin.api_problem(ApiError(403, "Forbidden", ""), verb="list", namespace=None)
    assert "you may not list sessions.session-operator.io in all namespaces" in text
    assert text.endswith("kubectl auth can-i list sessions.session-operator.io -A")


def test_a_missing_kubeconfig_says_how_to_point_at_one(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    text = plugin.kubeconfig_problem(None, home)
    assert text is not None and f"looked at {tmp_path}/.kube/config" in text
    assert "--kubeconfig PATH or the KUBECONFIG environment variable" in text
    missing = plugin.kubeconfig_problem(None, {**home, "KUBECONFIG": "/no/such"})
    assert missing is not None and "looked at $KUBECONFIG (/no/such)" in missing
    assert "does not exist" in (plugin.kubeconfig_problem("/no/such", home) or "")
    assert plugin.kubeconfig_problem(None, {**home, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}) is None
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text("{}")
    assert plugin.kubeconfig_problem(None, home) is None


# --- activate, touch, complete, archive (with a fake API) -----------------------------------------


class FakeClient:
    """The plugin's Client against bodies in memory; ``decide`` plays the operator."""

    def __init__(self, body: dict[str, Any], decide: Any = None) -> None:
        self.body = body
        self.decide = decide
        self.patches: list[dict[str, Any]] = []

    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        if self.decide is not None:
            self.decide(self.body)
        return json.loads(json.dumps(self.body))

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        for key, value in patch.items():
            self.body.setdefault(key, {}).update(value)
        return json.loads(json.dumps(self.body))

    async def list(self, namespace: str | None) -> list[dict[str, Any]]:
        return [self.body]


def args_of(*argv: str) -> argparse.Namespace:
    return plugin.parse_args(list(argv))


async def test_activate_patches_state_and_a_fresh_token_at_once_and_waits_for_the_decision() -> None:
    body = session("bob-1", "Queued", holder=holder_info("alice-1"), queuePosition=1)

    def operator(current: dict[str, Any]) -> None:
        token = current["spec"].get("activateRequest")
        if token:
            current["status"].update(phase="Active", activateRequest=token, replaces="alice-1")

    client = FakeClient(body, operator)
    result = await plugin.run_activate(client, args_of("activate", "bob-1"), "team-a")
    (patch,) = client.patches
    token = patch["spec"]["activateRequest"]
    assert patch == {"spec": {"state": "Active", "activateRequest": token}}
    assert token.endswith("Z") and len(token) == len("2026-11-21T10:00:00.000000Z")
    assert result.text == 'session.session-operator.io/bob-1 activated (replaced "alice-1")'
    assert result.code == plugin.EXIT_OK and result.document["status"]["phase"] == "Active"


async def test_activate_the_holder_says_so() -> None:
    body = session("alice-1", "Active", activeSince=stamp(60))

    def operator(current: dict[str, Any]) -> None:
        current["status"]["activateRequest"] = current["spec"].get("activateRequest")

    result = await plugin.run_activate(FakeClient(body, operator), args_of("activate", "alice-1"),
                                       "team-a")
    assert result.text == "session.session-operator.io/alice-1 activated (already held the target)"


async def test_activate_without_an_operator_times_out_naming_what_to_check() -> None:
    client = FakeClient(session("bob-1", "Queued"))
    with pytest.raises(plugin.PluginError) as failed:
        await plugin.run_activate(client, args_of("activate", "bob-1", "--timeout", "300ms"), "team-a")
    text = str(failed.value)
    assert text.startswith("error: the operator has not acted on the request within 0.3s; spec.activateRequest ")
    assert 'Check that session-operator runs and watches namespace "team-a"' in text
    assert text.endswith("kubectl session why bob-1 -n team-a")


async def test_activate_without_waiting() -> None:
    client = FakeClient(session("bob-1", "Queued"))
    result = await plugin.run_activate(client, args_of("activate", "bob-1", "--wait=false"), "team-a")
    assert result.text.startswith("session.session-operator.io/bob-1 activation requested (spec.activateRequest ")


async def test_touch_complete_and_archive_patch_one_field_each() -> None:
    client = FakeClient(session("bob-1", "Active"))
    touched = await plugin.run_touch(client, args_of("touch", "bob-1"), "team-a")
    value = client.patches[0]["metadata"]["annotations"]["session-operator.io/last-activity"]
    assert touched.text == f"session.session-operator.io/bob-1 touched (last activity {value})"
    for command, state in (("complete", "Completed"), ("archive", "Archived")):
        result = await plugin.run_state(client, args_of(command, "bob-1"), "team-a")
        assert client.patches[-1] == {"spec": {"state": state}}
        assert result.text == f"session.session-operator.io/bob-1 {command}d (spec.state {state})"
