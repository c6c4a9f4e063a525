"""Label and field selectors (the string forms clients send)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Predicate = Callable[[dict[str, Any]], bool]

_TERM = re.compile(
    r"""^\s*(?:
        (?P<not>!)\s*(?P<nkey>[^\s=!(),]+) |
        (?P<skey>[^\s=!(),]+)\s+(?P<op>in|notin)\s*\((?P<vals>[^)]*)\) |
        (?P<key>[^\s=!(),]+)\s*(?P<eq>==|=|!=)\s*(?P<val>[^\s,()]*) |
        (?P<ekey>[^\s=!(),]+)
    )\s*$""",
    re.X,
)


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    terms.append("".join(current))
    return [t for t in terms if t.strip()]


def _label_check(match: re.Match[str]) -> Callable[[dict[str, str]], bool]:
    if match.group("not"):
        absent = match.group("nkey")
        return lambda labels: absent not in labels
    if match.group("skey"):
        key, op = match.group("skey"), match.group("op")
        values = {v.strip() for v in match.group("vals").split(",") if v.strip()}
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    if match.group("key"):
        key, eq, val = match.group("key"), match.group("eq"), match.group("val")
        if eq == "!=":
            return lambda labels: labels.get(key) != val
        return lambda labels: key in labels and labels[key] == val
    present = match.group("ekey")
    return lambda labels: present in labels


def parse_label_selector(text: str | None) -> Predicate | None:
    if not text or not text.strip():
        return None
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(text):
        match = _TERM.match(term)
        if not match:
            raise bad_request(f"unable to parse requirement: found '{term.strip()}', expected: identifier")
        checks.append(_label_check(match))

    def predicate(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


# Field labels each built-in supports (besides metadata.name / metadata.namespace).
EXTRA_FIELDS: dict[tuple[str, str], dict[str, Callable[[dict[str, Any]], str]]] = {
    ("", "events"): {
        "involvedObject.kind": lambda o: (o.get("involvedObject") or {}).get("kind", ""),
        "involvedObject.namespace": lambda o: (o.get("involvedObject") or {}).get("namespace", ""),
        "involvedObject.name": lambda o: (o.get("involvedObject") or {}).get("name", ""),
        "involvedObject.uid": lambda o: (o.get("involvedObject") or {}).get("uid", ""),
        "involvedObject.apiVersion": lambda o: (o.get("involvedObject") or {}).get("apiVersion", ""),
        "involvedObject.resourceVersion": lambda o: (o.get("involvedObject") or {}).get("resourceVersion", ""),
        "involvedObject.fieldPath": lambda o: (o.get("involvedObject") or {}).get("fieldPath", ""),
        "reason": lambda o: o.get("reason", ""),
        "reportingComponent": lambda o: o.get("reportingComponent", ""),
        "source": lambda o: (o.get("source") or {}).get("component", ""),
        "type": lambda o: o.get("type", ""),
    },
    ("", "namespaces"): {"status.phase": lambda o: (o.get("status") or {}).get("phase", "")},
    ("", "secrets"): {"type": lambda o: o.get("type", "")},
}


def _field_check(getter: Callable[[dict[str, Any]], str], op: str, value: str) -> Predicate:
    if op == "!=":
        return lambda obj: getter(obj) != value
    return lambda obj: getter(obj) == value


def parse_field_selector(text: str | None, storage_key: tuple[str, str]) -> Predicate | None:
    if not text or not text.strip():
        return None
    extra = EXTRA_FIELDS.get(storage_key, {})
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_terms(text):
        match = re.match(r"^\s*([^=!\s]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        key, op, value = match.groups()
        getter: Callable[[dict[str, Any]], str]
        if key == "metadata.name":
            getter = lambda o: o.get("metadata", {}).get("name", "")  # noqa: E731
        elif key == "metadata.namespace":
            getter = lambda o: o.get("metadata", {}).get("namespace", "")  # noqa: E731
        elif key in extra:
            getter = extra[key]
        else:
            raise bad_request(f"field label not supported: {key}")
        checks.append(_field_check(getter, op, value))

    def predicate(obj: dict[str, Any]) -> bool:
        return all(check(obj) for check in checks)

    return predicate


def combine(*predicates: Predicate | None) -> Predicate | None:
    active = [p for p in predicates if p is not None]
    if not active:
        return None
    if len(active) == 1:
        return active[0]
    return lambda obj: all(p(obj) for p in active)
