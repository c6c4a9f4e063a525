"""``meta.k8s.io/v1`` Table output for ``kubectl get`` (additionalPrinterColumns for CRDs)."""

from __future__ import annotations

import datetime as _dt
import re
from typing import Any

from .resources import ResourceType

_NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
_AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this object was created.",
    "priority": 0,
}
_BUILTIN_COLUMNS: dict[tuple[str, str], list[tuple[dict[str, Any], str]]] = {
    ("coordination.k8s.io", "leases"): [
        ({"name": "Holder", "type": "string", "format": "", "description": "", "priority": 0}, ".spec.holderIdentity")
    ],
    ("", "namespaces"): [
        ({"name": "Status", "type": "string", "format": "", "description": "", "priority": 0}, ".status.phase")
    ],
    ("", "configmaps"): [],
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): [
        (
            {
                "name": "Webhooks",
                "type": "integer",
                "format": "",
                "description": "Webhooks indicates the number of webhooks registered in this configuration",
                "priority": 0,
            },
            "len .webhooks",  # the number of items
        )
    ],
}


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes = total // 60
    if minutes < 10:
        rest = total % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = total // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if rest == 0 else f"{hours // 24 // 365}y{rest}d"
    return f"{hours // 24 // 365}y"


def _age(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    return human_duration((_dt.datetime.now(_dt.UTC) - moment).total_seconds())


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def _jsonpath(obj: Any, path: str) -> Any:
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1]
    tokens = re.findall(r"\.([^.\[]+)|\[(\d+)\]|\['([^']+)'\]", path)
    current = obj
    for key, index, quoted in tokens:
        if current is None:
            return None
        if index:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
        else:
            name = key or quoted
            if not isinstance(current, dict):
                return None
            current = current.get(name)
    return current


def _columns(rt: ResourceType, version: str) -> list[tuple[dict[str, Any], str]]:
    if rt.builtin:
        extra = _BUILTIN_COLUMNS.get(rt.storage_key, [])
        return [(_NAME_COLUMN, ".metadata.name"), *extra, (_AGE_COLUMN, ".metadata.creationTimestamp")]
    info = rt.versions.get(version)
    printer = info.printer_columns if info else []
    if not printer:
        return [(_NAME_COLUMN, ".metadata.name"), (_AGE_COLUMN, ".metadata.creationTimestamp")]
    out = [(_NAME_COLUMN, ".metadata.name")]
    for column in printer:
        definition = {
            "name": column["name"],
            "type": column.get("type", "string"),
            "format": column.get("format", ""),
            "description": column.get("description", ""),
            "priority": column.get("priority", 0),
        }
        out.append((definition, column["jsonPath"]))
    return out


def _row(obj: dict[str, Any], columns: list[tuple[dict[str, Any], str]]) -> dict[str, Any]:
    cells = []
    for definition, path in columns:
        if path.startswith("len "):
            value: Any = len(_jsonpath(obj, path[4:]) or [])
        else:
            value = _jsonpath(obj, path)
        if definition["type"] == "date":
            value = _age(value)
        elif isinstance(value, dict | list) and definition["type"] == "string":
            import json

            value = json.dumps(value, separators=(",", ":"))
        cells.append(value)
    meta = obj.get("metadata", {})
    return {
        "cells": cells,
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta},
    }


def to_table(rt: ResourceType, version: str, result: dict[str, Any], *, is_list: bool) -> dict[str, Any]:
    columns = _columns(rt, version)
    items = result["items"] if is_list else [result]
    metadata: dict[str, Any] = {}
    if is_list:
        metadata = {k: v for k, v in result.get("metadata", {}).items() if k in ("resourceVersion", "continue")}
    else:
        metadata = {"resourceVersion": result.get("metadata", {}).get("resourceVersion", "")}
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [definition for definition, _ in columns],
        "rows": [_row(item, columns) for item in items],
    }
