"""Offline checks of the Session CustomResourceDefinition (no API server).

The CRD is the user-facing contract (see the design notes, session-api.md): names,
printer columns, enums, defaults, descriptions for `kubectl explain`, and the
patterns the API server enforces. The API server evaluates `pattern` with Go's
RE2; where the RE2 bindings (google-re2, a dependency of cel-python) are
installed, the pattern tests run under both RE2 and Python `re`, and property
tests check that the two engines agree on what the patterns mean.
"""

from __future__ import annotations

import datetime
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import re2  # the API server's regex engine (google-re2, declared in the test extra)
import yaml
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "sessions.session-operator.io.yaml"
CHART_CRD_PATH = ROOT / "charts" / "session-operator" / "crds" / "sessions.session-operator.io.yaml"
PACKAGED_CRD_PATH = ROOT / "operator" / "session_operator" / "crds" / "sessions.session-operator.io.yaml"

DURATION_FIELDS = ("idleTimeout", "maxDuration", "archiveAfter", "deleteAfter")
TIME_FIELDS = ("activeSince", "lastActivityTime", "idleDeadline", "endedAt", "archivedAt")
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
GO_MAX_DURATION_NS = 2**63 - 1  # time.Duration is an int64 of nanoseconds



# --------------------------------------------------------------------------- helpers


@functools.cache
def crd() -> dict[str, Any]:
    with CRD_PATH.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def version() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]


def root_schema() -> dict[str, Any]:
    return version()["schema"]["openAPIV3Schema"]


def spec_props() -> dict[str, Any]:
    return root_schema()["properties"]["spec"]["properties"]


def status_props() -> dict[str, Any]:
    return root_schema()["properties"]["status"]["properties"]


def duration_pattern() -> str:
    return spec_props()["idleTimeout"]["pattern"]


def target_pattern() -> str:
    return spec_props()["target"]["pattern"]


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below `node` (properties and array items), with a dotted path."""
    for name, child in node.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        yield child_path, child
        yield from walk(child, child_path)
    if "items" in node:
        child_path = f"{path}[]"
        yield child_path, node["items"]
        yield from walk(node["items"], child_path)


def matches_python(pattern: str, value: str) -> bool:
    # JSON Schema `pattern` semantics, as the jsonschema library implements them.
    return re.search(pattern, value) is not None


def matches_go(pattern: str, value: str) -> bool:
    # What the API server does: an unanchored RE2 search.
    assert re2 is not None
    return re2.search(pattern, value) is not None


def engines() -> list[Any]:
    found: list[Any] = [matches_python]
    if re2 is not None:
        found.append(matches_go)
    return found


def validator() -> jsonschema.Draft7Validator:
    # No format checker: the API server's formats (int32, date-time) are not
    # jsonschema's; this checks types, enums, lengths, patterns, bounds, required.
    return jsonschema.Draft7Validator(root_schema())


def full_session() -> dict[str, Any]:
    return {
        "apiVersion": "session-operator.io/v1alpha1",
        "kind": "Session",
        "metadata": {"name": "alice-1", "namespace": "team-a"},
        "spec": {
            "target": "repo/payments",
            "profile": "gpt-4o",
            "onConflict": "ReplaceIfProfileChanged",
            "priority": -3,
            "state": "Active",
            "idleTimeout": "30m",
            "maxDuration": "24h",
            "archiveAfter": "0s",
            "deleteAfter": "1h30m",
            "activateRequest": "2026-11-21T10:00:00.123456Z",
        },
        "status": {
            "phase": "Queued",
            "observedGeneration": 2,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Queued",
                    "message": 'target "repo/payments" is held by session "bob-2"',
                    "lastTransitionTime": "2026-11-21T10:00:00Z",
                    "observedGeneration": 2,
                },
                {"type": "Reconciling", "status": "True", "reason": "Queued", "message": ""},
            ],
            "activeSince": "2026-11-21T09:00:00Z",
            "lastActivityTime": "2026-11-21T09:30:00Z",
            "idleDeadline": "2026-11-21T10:00:00Z",
            "endedAt": "2026-11-21T11:00:00Z",
            "archivedAt": "2026-11-21T12:00:00Z",
            "holder": {
                "name": "bob-2",
                "uid": "190f7464-d3d8-4ec7-bab5-e778dae3c7fc",
                "profile": "gpt-4o-mini",
                "activeSince": "2026-11-21T08:00:00Z",
            },
            "queuePosition": 1,
            "replacedBy": "carol-3",
            "replaces": "dave-4",
            "activateRequest": "2026-11-21T09:59:00.000001Z",
        },
    }


# --------------------------------------------------------------------------- the file


def test_crd_file_is_one_customresourcedefinition() -> None:
    with CRD_PATH.open(encoding="utf-8") as f:
        documents = [d for d in yaml.safe_load_all(f) if d is not None]
    assert len(documents) == 1
    (document,) = documents
    assert document["apiVersion"] == "apiextensions.k8s.io/v1"
    assert document["kind"] == "CustomResourceDefinition"
    assert document["metadata"]["name"] == "sessions.session-operator.io"


def test_chart_copy_is_byte_identical() -> None:
    assert CHART_CRD_PATH.read_bytes() == CRD_PATH.read_bytes(), (
        f"{CHART_CRD_PATH.relative_to(ROOT)} differs from {CRD_PATH.relative_to(ROOT)}; "
        "copy crds/ over the chart's copy"
    )


def test_group_names_and_scope() -> None:
    spec = crd()["spec"]
    assert spec["group"] == "session-operator.io"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == "Session"
    assert names["plural"] == "sessions"
    assert names["singular"] == "session"
    assert names["shortNames"] == ["sess"]
    assert names.get("listKind", "SessionList") == "SessionList"
    # `kubectl get all` must not list sessions.
    assert "all" not in names.get("categories", [])


def test_one_version_served_and_stored() -> None:
    versions = crd()["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    assert versions[0]["served"] is True
    assert versions[0]["storage"] is True


def test_status_is_a_subresource() -> None:
    assert version()["subresources"] == {"status": {}}


def test_printer_columns_in_contract_order() -> None:
    columns = version()["additionalPrinterColumns"]
    default = [c for c in columns if c.get("priority", 0) == 0]
    assert [(c["name"], c["type"], c["jsonPath"]) for c in default] == [
        ("Target", "string", ".spec.target"),
        ("Profile", "string", ".spec.profile"),
        ("Phase", "string", ".status.phase"),
        ("Holder", "string", ".status.holder.name"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    # Beyond the contract's columns, only `-o wide` ones (priority 1): the owner.
    wide = [(c["name"], c["jsonPath"], c.get("priority")) for c in columns if c not in default]
    assert wide == [("Owner", ".spec.owner.username", 1)]
    assert all(c.get("description", "").strip() for c in columns)
    holder = next(c for c in columns if c["name"] == "Holder")
    assert "in the way" in holder["description"]


# --------------------------------------------------------------------------- structure


def test_every_property_has_a_description() -> None:
    assert root_schema().get("description", "").strip()
    missing = [
        path
        for path, node in walk(root_schema())
        # The API server forbids anything but `type` on the root metadata.
        if path != "metadata" and not node.get("description", "").strip()
    ]
    assert missing == []


def test_root_metadata_carries_nothing_but_its_type() -> None:
    # A description (or anything else) here makes the API server reject the CRD:
    # "must not specify anything other than name and generateName".
    assert root_schema()["properties"]["metadata"] == {"type": "object"}


FORBIDDEN_IN_STRUCTURAL = {
    "$ref",
    "$schema",
    "id",
    "definitions",
    "dependencies",
    "patternProperties",
    "additionalItems",
}


def test_schema_is_structural() -> None:
    problems = []
    for path, node in [("<root>", root_schema()), *walk(root_schema())]:
        if path == "metadata":
            continue
        if "type" not in node:
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        if node.get("uniqueItems") is True:
            problems.append(f"{path}: uniqueItems true is not allowed")
        if node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: preserves unknown fields (nothing should)")
        for keyword in FORBIDDEN_IN_STRUCTURAL & node.keys():
            problems.append(f"{path}: {keyword} is not allowed")
        for name in node.get("required", []):
            if name not in node.get("properties", {}):
                problems.append(f"{path}: required {name!r} is not a property")
        for key in node.get("x-kubernetes-list-map-keys", []):
            item = node["items"]
            if key not in item.get("required", []) and "default" not in item["properties"].get(key, {}):
                problems.append(f"{path}: list-map key {key!r} must be required or defaulted")
    assert problems == []


def test_defaults_are_valid_against_their_own_schema() -> None:
    # The API server refuses a CRD whose defaults do not validate.
    defaulted = [(path, node) for path, node in walk(root_schema()) if "default" in node]
    assert defaulted
    for path, node in defaulted:
        errors = list(jsonschema.Draft7Validator(node).iter_errors(node["default"]))
        assert errors == [], path


def test_spec_is_required_and_target_is_required_in_it() -> None:
    assert root_schema()["required"] == ["spec"]
    assert root_schema()["properties"]["spec"]["required"] == ["target"]


def test_spec_fields_are_the_contract() -> None:
    assert set(spec_props()) == {
        "target",
        "profile",
        "onConflict",
        "priority",
        "state",
        "activateRequest",
        "owner",
        *DURATION_FIELDS,
    }


def test_status_fields_are_the_contract() -> None:
    assert set(status_props()) == {
        "phase",
        "observedGeneration",
        "conditions",
        *TIME_FIELDS,
        "holder",
        "queuePosition",
        "replacedBy",
        "replaces",
        "activateRequest",
        "limits",
    }


# --------------------------------------------------------------------------- enums and defaults


@pytest.mark.parametrize(
    ("path", "values"),
    [
        ("spec.onConflict", ["Reject", "Queue", "Replace", "ReplaceIfProfileChanged"]),
        ("spec.state", ["Active", "Inactive", "Completed", "Archived"]),
        (
            "status.phase",
            [
                "Pending",
                "Active",
                "Queued",
                "Rejected",
                "Replaced",
                "Inactive",
                "Completed",
                "Abandoned",
                "Archived",
                "Invalid",
            ],
        ),
        ("status.conditions[].status", ["True", "False", "Unknown"]),
    ],
)
def test_enums_are_the_contract(path: str, values: list[str]) -> None:
    node = dict(walk(root_schema()))[path]
    assert node["type"] == "string"
    assert node["enum"] == values
    # Each value is explained where `kubectl explain` shows it.
    for value in values:
        assert value in node["description"], f"{path}: {value} not described"


def test_spec_defaults_are_the_contract() -> None:
    defaults = {name: node["default"] for name, node in spec_props().items() if "default" in node}
    assert defaults == {"profile": "", "onConflict": "Reject", "priority": 0, "state": "Active"}


@pytest.mark.parametrize("name", ["profile", "onConflict", "priority", "state"])
def test_descriptions_state_the_default(name: str) -> None:
    node = spec_props()[name]
    shown = '""' if node["default"] == "" else str(node["default"])
    assert f"Defaults to {shown}" in node["description"]


def test_status_has_no_defaults() -> None:
    assert [path for path, node in walk(root_schema()["properties"]["status"]) if "default" in node] == []


# --------------------------------------------------------------------------- spec fields


def test_target_constraints_and_immutability_rule() -> None:
    target = spec_props()["target"]
    assert target["type"] == "string"
    assert target["minLength"] == 1
    assert target["maxLength"] == 253
    assert target["x-kubernetes-validations"] == [{"rule": "self == oldSelf", "message": "target is immutable"}]
    assert "Immutable" in target["description"]


def test_target_immutability_rule_evaluates_as_intended() -> None:
    celpy = pytest.importorskip("celpy")
    from celpy import celtypes

    env = celpy.Environment()
    (rule,) = spec_props()["target"]["x-kubernetes-validations"]
    program = env.program(env.compile(rule["rule"]))

    def allowed(old: str, new: str) -> bool:
        return bool(program.evaluate({"self": celtypes.StringType(new), "oldSelf": celtypes.StringType(old)}))

    assert allowed("repo/payments", "repo/payments")
    assert not allowed("repo/payments", "repo/billing")


def test_profile_constraints() -> None:
    profile = spec_props()["profile"]
    assert profile["type"] == "string"
    assert profile["maxLength"] == 253


def test_priority_is_int32_with_explicit_bounds() -> None:
    priority = spec_props()["priority"]
    assert priority["type"] == "integer"
    assert priority["format"] == "int32"
    assert priority["minimum"] == INT32_MIN
    assert priority["maximum"] == INT32_MAX


@pytest.mark.parametrize("name", DURATION_FIELDS)
def test_duration_fields_share_one_pattern_and_have_no_default(name: str) -> None:
    node = spec_props()[name]
    assert node["type"] == "string"
    assert node["pattern"] == duration_pattern()
    assert "default" not in node
    assert 0 < node["maxLength"] <= 32
    assert "format" not in node  # `format: duration` would accept "5 minutes" and "1d" on the server
    for example in ("90s", "30m", "24h", "1h30m"):
        assert f'"{example}"' in node["description"], f"{name}: example {example} missing"
    assert "Unset means" in node["description"]


# --------------------------------------------------------------------------- the duration pattern

GOOD_DURATIONS = [
    "90s",
    "30m",
    "24h",
    "1h30m",
    "0s",
    "1h30m15s",
    "2m30s",
    "1h5s",
    "168h",
    "0h0m0s",
    "999999h9999999m99999999s",
]
BAD_DURATIONS = [
    "5 minutes",
    "10",
    "0",
    "-5m",
    "+5m",
    "1d",
    "1w",
    "",
    "1.5h",
    ".5h",
    "500ms",
    "1us",
    "10ns",
    "1h 30m",
    " 90s",
    "30m1h",  # units out of order
    "1h1h",  # unit repeated
    "5M",
    "5S",
    "h",
    "m30s",
    "٣s",  # a non-ASCII digit (Python's \d would take it)
    "90s\n90s",
]


@pytest.mark.parametrize("value", GOOD_DURATIONS)
@pytest.mark.parametrize("matches", engines(), ids=lambda f: f.__name__)
def test_duration_pattern_accepts(matches: Any, value: str) -> None:
    assert matches(duration_pattern(), value)


@pytest.mark.parametrize("value", BAD_DURATIONS)
@pytest.mark.parametrize("matches", engines(), ids=lambda f: f.__name__)
def test_duration_pattern_rejects(matches: Any, value: str) -> None:
    assert not matches(duration_pattern(), value)


def test_duration_pattern_rejects_a_trailing_newline_on_the_api_server() -> None:
    # RE2's `$` is end of text; Python's `$` also matches before a final "\n",
    # so only the API server's engine can be asked this.
    assert not matches_go(duration_pattern(), "90s\n")


def go_duration_ns(value: str) -> int:
    """Nanoseconds of a duration in the restricted form the pattern accepts."""
    parts = re.findall(r"([0-9]+)([hms])", value)
    assert "".join(n + u for n, u in parts) == value
    seconds = sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
    return seconds * 10**9


def test_duration_that_overflows_passes_the_schema_and_is_left_to_the_operator() -> None:
    # The schema judges the form; whether the value fits Go's int64 nanoseconds is for
    # the operator to judge (phase Invalid naming the field), as the contract says.
    value = "9999999999h"
    assert matches_python(duration_pattern(), value)
    assert matches_go(duration_pattern(), value)
    assert go_duration_ns(value) > GO_MAX_DURATION_NS


@given(st.from_regex(duration_pattern(), fullmatch=True))
def test_every_accepted_duration_is_read_alike_by_the_operator(value: str) -> None:
    from session_operator.model import InvalidSpecError, parse_duration

    ns = go_duration_ns(value)
    try:
        parsed = parse_duration(value, "spec.idleTimeout")
    except InvalidSpecError:
        assert ns > GO_MAX_DURATION_NS
    else:
        assert ns <= GO_MAX_DURATION_NS
        assert parsed == datetime.timedelta(microseconds=ns // 1000)
    assert matches_go(duration_pattern(), value)


@given(st.text(alphabet=st.sampled_from("0123456789hms.-+ µnud\n٣"), max_size=30))
def test_duration_pattern_means_the_same_in_re2_and_python(value: str) -> None:
    # RE2 search of an anchored pattern == Python fullmatch, whatever the input:
    # no construct (\d, $, ...) is read differently by the two engines.
    assert matches_go(duration_pattern(), value) == (re.fullmatch(duration_pattern(), value) is not None)


# --------------------------------------------------------------------------- the target pattern

GOOD_TARGETS = [
    "repo/payments",
    "task-42/plan",
    "user/alice",
    "repo/ünïcode",
    "with spaces / and slashes",
    "a",
    "emoji 🚀 target",
    "back\\slash",
    "quotes \"'`",
    "x" * 253,
]
BAD_TARGETS = [
    "",
    "line\nbreak",
    "tab\there",
    "nul\x00byte",
    "\n",
    "carriage\rreturn",
    "escape\x1b[31m",
    "del\x7fchar",
    "c1\x85control",
]


@pytest.mark.parametrize("value", GOOD_TARGETS)
@pytest.mark.parametrize("matches", engines(), ids=lambda f: f.__name__)
def test_target_pattern_accepts(matches: Any, value: str) -> None:
    assert matches(target_pattern(), value)


@pytest.mark.parametrize("value", BAD_TARGETS)
@pytest.mark.parametrize("matches", engines(), ids=lambda f: f.__name__)
def test_target_pattern_rejects(matches: Any, value: str) -> None:
    assert not matches(target_pattern(), value)


def test_target_pattern_rejects_a_trailing_newline_on_the_api_server() -> None:
    # See test_duration_pattern_rejects_a_trailing_newline_on_the_api_server.
    assert not matches_go(target_pattern(), "repo/payments\n")


def is_control(char: str) -> bool:
    return ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F


@given(st.text(max_size=40))
def test_target_pattern_rejects_exactly_control_characters(value: str) -> None:
    expected = bool(value) and not any(is_control(c) for c in value)
    assert matches_go(target_pattern(), value) == expected
    assert (re.fullmatch(target_pattern(), value) is not None) == expected


# --------------------------------------------------------------------------- status fields


def test_conditions_are_a_list_map_of_metav1_conditions() -> None:
    conditions = status_props()["conditions"]
    assert conditions["type"] == "array"
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert item["type"] == "object"
    assert sorted(item["required"]) == ["status", "type"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert item["properties"]["observedGeneration"]["type"] == "integer"
    assert item["properties"]["observedGeneration"]["format"] == "int64"


@pytest.mark.parametrize("path", [*(f"status.{n}" for n in TIME_FIELDS), "status.holder.activeSince"])
def test_times_are_date_time_strings(path: str) -> None:
    node = dict(walk(root_schema()))[path]
    assert (node["type"], node["format"]) == ("string", "date-time")


def test_holder_queue_position_and_replacement_fields() -> None:
    status = status_props()
    assert status["observedGeneration"]["type"] == "integer"
    assert status["observedGeneration"]["format"] == "int64"
    holder = status["holder"]
    assert holder["type"] == "object"
    assert set(holder["properties"]) == {"name", "uid", "profile", "activeSince"}
    assert {holder["properties"][n]["type"] for n in ("name", "uid", "profile")} == {"string"}
    position = status["queuePosition"]
    assert (position["type"], position["format"], position["minimum"]) == ("integer", "int32", 1)
    assert status["replacedBy"]["type"] == "string"
    assert status["replaces"]["type"] == "string"


def test_activate_request_is_a_one_shot_token_described_where_kubectl_explain_shows_it() -> None:
    spec, status = spec_props()["activateRequest"], status_props()["activateRequest"]
    assert (spec["type"], spec["maxLength"], "default" in spec) == ("string", 253, False)
    assert (status["type"], status["maxLength"]) == ("string", 253)
    for words in ("whatever spec.onConflict says", "kubectl session", "as if", "Replace",
                  "status.activateRequest", "consumed", "leaves the queue"):
        assert words in spec["description"], words
    # How fast waiting sessions learn the truth is documented where it is shown.
    for name in ("holder", "queuePosition"):
        assert "--queue-refresh-rate" in status_props()[name]["description"], name


# --------------------------------------------------------------------------- whole objects


def test_a_full_session_validates() -> None:
    errors = [e.message for e in validator().iter_errors(full_session())]
    assert errors == []


def at(document: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *parents, leaf = dotted.split(".")
    node = document
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    return node, leaf


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("spec.target", ""),
        ("spec.target", "t" * 254),
        ("spec.target", "bad\ttarget"),
        ("spec.profile", "p" * 254),
        ("spec.activateRequest", "t" * 254),
        ("spec.activateRequest", 20261121),
        ("spec.onConflict", "Sometimes"),
        ("spec.state", "Paused"),
        ("spec.priority", INT32_MAX + 1),
        ("spec.priority", INT32_MIN - 1),
        ("spec.priority", "high"),
        ("spec.idleTimeout", "5 minutes"),
        ("spec.maxDuration", "1d"),
        ("spec.archiveAfter", "-5m"),
        ("spec.deleteAfter", "10"),
        ("status.phase", "Running"),
        ("status.queuePosition", 0),
        ("status.conditions.0.status", "Maybe"),
        ("status.holder.name", 42),
        ("status.observedGeneration", -1),
    ],
)
def test_the_schema_rejects_a_bad_value(field: str, value: Any) -> None:
    document = full_session()
    parent, leaf = at(document, field)
    parent[leaf] = value
    errors = list(validator().iter_errors(document))
    assert errors, f"{field}={value!r} was accepted"
    paths = {".".join(str(p) for p in e.absolute_path) for e in errors}
    assert paths == {field}


@pytest.mark.parametrize("field", ["spec", "spec.target", "status.conditions.0.type", "status.conditions.0.status"])
def test_the_schema_rejects_a_missing_required_field(field: str) -> None:
    document = full_session()
    parent, leaf = at(document, field)
    del parent[leaf]
    errors = list(validator().iter_errors(document))
    assert [e.validator for e in errors] == ["required"]
    assert repr(leaf) in errors[0].message
