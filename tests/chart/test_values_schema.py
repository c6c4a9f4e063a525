"""values.yaml documents every value; values.schema.json refuses unknown keys and wrong types.

Helm validates the values of `helm install`/`upgrade`/`template` against the schema, so
these checks use Helm's validator (``Chart.validate_schema``), and one of them goes
through a full render to show that the render path applies it too.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest
import yaml

from support import chart
from support.chart import CHART_DIR, MODES, NAMESPACE, RELEASE

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
DEFAULTS = yaml.safe_load(VALUES_TEXT)


def closed_objects(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every object in the schema that lists its keys (additionalProperties: false)."""
    if schema.get("type") == "object" and schema.get("additionalProperties") is False:
        yield path, schema
        for key, sub in schema.get("properties", {}).items():
            yield from closed_objects(sub, (*path, key))


def leaves(schema: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every declared key whose value is not itself a closed object."""
    for key, sub in schema.get("properties", {}).items():
        if sub.get("type") == "object" and sub.get("additionalProperties") is False:
            yield from leaves(sub, (*path, key))
        else:
            yield (*path, key), sub


def with_value(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    node = values
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return values


def refused(values: dict[str, Any]) -> str | None:
    try:
        chart.chart().validate_schema(values)
    except helm.HelmValuesError as e:
        return str(e)
    return None


# values.yaml ----------------------------------------------------------------------------


def key_lines() -> dict[tuple[str, ...], int]:
    """Line number of every mapping key in values.yaml, by path (list items skipped)."""
    lines = VALUES_TEXT.splitlines()
    found: dict[tuple[str, ...], int] = {}
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z][\w-]*):", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(2)))
        found[tuple(key for _, key in stack)] = number
    return found


def documented(path: tuple[str, ...], lines: dict[tuple[str, ...], int]) -> bool:
    text = VALUES_TEXT.splitlines()
    for depth in range(len(path), 0, -1):
        number = lines.get(path[:depth])
        if number is not None and number > 0 and text[number - 1].strip().startswith("#"):
            return True
    return False


def test_every_value_is_documented_in_values_yaml() -> None:
    lines = key_lines()
    missing = [".".join(p) for p, _ in leaves(SCHEMA) if p != ("global",) and p not in lines]
    assert missing == [], f"declared in the schema, absent from values.yaml: {missing}"
    undocumented = [".".join(p) for p, _ in leaves(SCHEMA) if p in lines and not documented(p, lines)]
    assert undocumented == [], f"values without a comment: {undocumented}"


def test_every_value_in_values_yaml_is_declared() -> None:
    declared = {p for p, _ in leaves(SCHEMA)} | {p for p, _ in closed_objects(SCHEMA)}
    leaf_paths = [p for p, _ in leaves(SCHEMA)]

    def below_a_leaf(path: tuple[str, ...]) -> bool:  # resources.requests.cpu is resources' default
        return any(path[: len(leaf)] == leaf and len(path) > len(leaf) for leaf in leaf_paths)

    extra = [".".join(p) for p in key_lines() if p not in declared and not below_a_leaf(p)]
    assert extra == []


def test_defaults_and_modes_pass() -> None:
    assert refused(DEFAULTS) is None
    for mode, values in MODES.items():
        assert refused(values) is None, mode


# Unknown keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in closed_objects(SCHEMA)], ids=lambda p: ".".join(p) or "(top)")
def test_unknown_keys_are_refused_at_every_level(path: tuple[str, ...]) -> None:
    values = with_value((*path, "replicaCuont"), 1) if path else {"replicaCuont": 1}
    message = refused(values)
    assert message is not None and "replicaCuont" in message, message


def test_render_applies_the_schema() -> None:
    with pytest.raises(helm.HelmValuesError, match="not allowed"):
        chart.chart().render({"monitoring": {"serviceMonitr": {"enabled": True}}}, name=RELEASE, namespace=NAMESPACE)


# Wrong types ----------------------------------------------------------------------------

WRONG = {"string": 12, "integer": "twelve", "number": "twelve", "boolean": "yes", "array": "a,b", "object": "x"}


def wrong_value(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if isinstance(kind, list):  # ["integer", "null"]: the value may be left to the operator
        kind = next(k for k in kind if k != "null")
    if kind:
        return WRONG[kind]
    return True  # anyOf (int-or-percent, quantities): a boolean is none of them


@pytest.mark.parametrize("leaf", list(leaves(SCHEMA)), ids=lambda leaf: ".".join(leaf[0]))
def test_wrong_types_are_refused(leaf: tuple[tuple[str, ...], dict[str, Any]]) -> None:
    path, schema = leaf
    message = refused(with_value(path, wrong_value(schema)))
    assert message is not None, f"{'.'.join(path)} accepted a {type(wrong_value(schema)).__name__}"


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 0},
        {"image": {"pullPolicy": "Sometimes"}},
        {"image": {"digest": "latest"}},
        {"watchNamespaces": ["Team_A"]},
        {"watchNamespaces": ["team-a", "team-a"]},
        {"operator": {"logFormat": "xml"}},
        {"operator": {"logLevel": "info"}},
        {"operator": {"defaultArchiveAfter": "7d"}},
        {"operator": {"defaultDeleteAfter": "1.5h"}},
        {"operator": {"workers": 0}},
        {"operator": {"leaderElection": {"retryPeriod": 0}}},
        {"podDisruptionBudget": {"minAvailable": "50"}},
        {"podDisruptionBudget": {"unhealthyPodEvictionPolicy": "Never"}},
        {"updateStrategy": {"rollingUpdate": {"maxUnavailable": "all"}}},
        {"resources": {"limits": {"memory": "lots"}}},
        {"monitoring": {"serviceMonitor": {"interval": "30 seconds"}}},
        {"monitoring": {"prometheusRule": {"alerts": {"noLeader": {"for": "five minutes"}}}}},
        {"imagePullSecrets": [{"nam": "x"}]},
        {"webhook": {"timeoutSeconds": 31}},
        {"webhook": {"timeoutSeconds": 0}},
        {"webhook": {"port": 0}},
        {"webhook": {"certificateValidityDays": 0}},
        {"webhook": {"certManager": {"issuerRef": {"kind": "Vault"}}}},
    ],
    ids=lambda v: json.dumps(v, separators=(",", ":")),
)
def test_bad_values_are_refused(values: dict[str, Any]) -> None:
    assert refused(values) is not None


def test_good_variants_pass() -> None:
    for values in (
        {"operator": {"defaultDeleteAfter": "720h", "defaultArchiveAfter": "0s"}},
        {"podDisruptionBudget": {"minAvailable": "0%"}},
        {"resources": {"limits": {"cpu": 2, "memory": "1Gi"}, "requests": {"cpu": "250m"}}},
        {"image": {"digest": "sha256:" + "0" * 64}},
        {"webhook": {"certManager": {"enabled": True, "issuerRef": {"name": "ca", "kind": "ClusterIssuer"}}}},
        {"webhook": {"enabled": False, "timeoutSeconds": 30}},
    ):
        assert refused(copy.deepcopy(values)) is None, values
