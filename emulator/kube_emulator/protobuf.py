"""Decoding of ``application/vnd.kubernetes.protobuf`` request bodies for the built-ins.

kubectl's typed commands (``kubectl create namespace|configmap|secret``) send protobuf.
This decodes the few kinds the emulator serves into the JSON shape; responses are
always JSON (clients accept it). Other kinds answer 415.
"""

from __future__ import annotations

import base64
import datetime as _dt
from typing import Any

from . import gotime

MAGIC = b"k8s\x00"

_TIME = ("msg", {1: ("seconds", "int64"), 2: ("nanos", "int32")})
_OWNER = (
    "msg",
    {
        1: ("kind", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("controller", "bool"),
        7: ("blockOwnerDeletion", "bool"),
    },
)
_META = (
    "msg",
    {
        1: ("name", "string"),
        2: ("generateName", "string"),
        3: ("namespace", "string"),
        4: ("selfLink", "string"),
        5: ("uid", "string"),
        6: ("resourceVersion", "string"),
        7: ("generation", "int64"),
        8: ("creationTimestamp", "time"),
        9: ("deletionTimestamp", "time"),
        10: ("deletionGracePeriodSeconds", "int64"),
        11: ("labels", ("map", "string")),
        12: ("annotations", ("map", "string")),
        13: ("ownerReferences", ("repeated", _OWNER)),
        14: ("finalizers", ("repeated", "string")),
    },
)
_REF = (
    "msg",
    {
        1: ("kind", "string"),
        2: ("namespace", "string"),
        3: ("name", "string"),
        4: ("uid", "string"),
        5: ("apiVersion", "string"),
        6: ("resourceVersion", "string"),
        7: ("fieldPath", "string"),
    },
)
KINDS: dict[str, tuple[str, dict[int, tuple[str, Any]]]] = {
    "Namespace": (
        "msg",
        {
            1: ("metadata", _META),
            2: ("spec", ("msg", {1: ("finalizers", ("repeated", "string"))})),
            3: ("status", ("msg", {1: ("phase", "string")})),
        },
    ),
    "ConfigMap": (
        "msg",
        {
            1: ("metadata", _META),
            2: ("data", ("map", "string")),
            3: ("binaryData", ("map", "bytes")),
            4: ("immutable", "bool"),
        },
    ),
    "Secret": (
        "msg",
        {
            1: ("metadata", _META),
            2: ("data", ("map", "bytes")),
            3: ("type", "string"),
            4: ("stringData", ("map", "string")),
            5: ("immutable", "bool"),
        },
    ),
    "Lease": (
        "msg",
        {
            1: ("metadata", _META),
            2: (
                "spec",
                (
                    "msg",
                    {
                        1: ("holderIdentity", "string"),
                        2: ("leaseDurationSeconds", "int32"),
                        3: ("acquireTime", "microtime"),
                        4: ("renewTime", "microtime"),
                        5: ("leaseTransitions", "int32"),
                        6: ("strategy", "string"),
                        7: ("preferredHolder", "string"),
                    },
                ),
            ),
        },
    ),
    "Event": (
        "msg",
        {
            1: ("metadata", _META),
            2: ("involvedObject", _REF),
            3: ("reason", "string"),
            4: ("message", "string"),
            5: ("source", ("msg", {1: ("component", "string"), 2: ("host", "string")})),
            6: ("firstTimestamp", "time"),
            7: ("lastTimestamp", "time"),
            8: ("count", "int32"),
            9: ("type", "string"),
            10: ("eventTime", "microtime"),
            11: ("series", ("msg", {1: ("count", "int32"), 2: ("lastObservedTime", "microtime")})),
            12: ("action", "string"),
            13: ("related", _REF),
            14: ("reportingComponent", "string"),
            15: ("reportingInstance", "string"),
        },
    ),
    "DeleteOptions": (
        "msg",
        {
            1: ("gracePeriodSeconds", "int64"),
            2: ("preconditions", ("msg", {1: ("uid", "string"), 2: ("resourceVersion", "string")})),
            3: ("orphanDependents", "bool"),
            4: ("propagationPolicy", "string"),
            5: ("dryRun", ("repeated", "string")),
        },
    ),
}


class ProtobufError(ValueError):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    out: list[tuple[int, int, Any]] = []
    pos = 0
    value: Any
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _signed(value: int, bits: int = 64) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _scalar(kind: Any, value: Any) -> Any:
    if kind == "string":
        return value.decode()
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind in ("int32", "int64"):
        return _signed(value)
    if kind == "bool":
        return bool(value)
    if kind in ("time", "microtime"):
        fields = _message(_TIME[1], value)
        moment = _dt.datetime.fromtimestamp(fields.get("seconds", 0), _dt.UTC) + _dt.timedelta(
            microseconds=fields.get("nanos", 0) // 1000
        )
        return gotime.format_time(moment) if kind == "time" else gotime.format_micro(moment)
    if isinstance(kind, tuple) and kind[0] == "msg":
        return _message(kind[1], value)
    raise ProtobufError(f"unsupported type {kind!r}")


def _message(spec: dict[int, tuple[str, Any]], data: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, _wire, value in _fields(data):
        if number not in spec:
            continue
        name, kind = spec[number]
        if isinstance(kind, tuple) and kind[0] == "map":
            entry = {n: v for n, _, v in _fields(value)}
            key = entry.get(1, b"").decode()
            out.setdefault(name, {})[key] = _scalar(kind[1], entry.get(2, b""))
        elif isinstance(kind, tuple) and kind[0] == "repeated":
            out.setdefault(name, []).append(_scalar(kind[1], value))
        else:
            out[name] = _scalar(kind, value)
    return out


def decode(raw: bytes) -> dict[str, Any]:
    """Decode a Kubernetes protobuf envelope into a JSON-shaped object."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf prefix")
    envelope = {n: v for n, _, v in _fields(raw[len(MAGIC) :])}
    type_meta = {n: v.decode() for n, _, v in _fields(envelope.get(1, b""))}
    api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
    if kind not in KINDS:
        raise ProtobufError(f"no protobuf decoding for kind {kind!r}")
    body = _message(KINDS[kind][1], envelope.get(2, b""))
    return {"apiVersion": api_version, "kind": kind, **body}
