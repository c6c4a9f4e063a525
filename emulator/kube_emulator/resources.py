"""Resource types: the built-ins the emulator serves and the ones CRDs register.

Built-in objects are decoded the way Go decodes them into typed structs: unknown
fields are dropped silently, a JSON type mismatch is a 400 ``BadRequest``
("... cannot be handled as a Lease: json: cannot unmarshal ..."), times are
re-serialised (``metav1.Time`` to whole seconds, ``MicroTime`` with exactly six
fractional digits, both in UTC), and fields Go always marshals are present.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import gotime
from .errors import FieldError, GoLiteral, Names, bad_request, go_json_kind, go_quote
from .schema import (
    Node,
    SchemaCompileError,
    apply_defaults,
    compile_schema,
    normalize,
    validate_object,
)

# --------------------------------------------------------------------------- name validation

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)
QUALIFIED_NAME_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
    "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
CONFIG_KEY_MSG = (
    "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  "
    "or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
)


def dns1123_label_errors(value: str) -> list[str]:
    out = []
    if len(value) > 63:
        out.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.match(value):
        out.append(DNS1123_LABEL_MSG)
    return out


def dns1123_subdomain_errors(value: str) -> list[str]:
    out = []
    if len(value) > 253:
        out.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(value):
        out.append(DNS1123_SUBDOMAIN_MSG)
    return out


def qualified_name_errors(value: str) -> list[str]:
    out: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            out.append("prefix part must be non-empty")
        else:
            out.extend("prefix part " + msg for msg in dns1123_subdomain_errors(prefix))
    else:
        return [
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex "
            "used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
            "subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        out.append("name part must be non-empty")
    elif len(name) > 63:
        out.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME.match(name):
        out.append(QUALIFIED_NAME_MSG)
    return out


# --------------------------------------------------------------------------- metadata

_META_FIELDS = {
    "name": "string",
    "generateName": "string",
    "namespace": "string",
    "selfLink": "string",
    "uid": "string",
    "resourceVersion": "string",
    "generation": "int64",
    "creationTimestamp": "time",
    "deletionTimestamp": "time",
    "deletionGracePeriodSeconds": "int64",
    "labels": "map[string]string",
    "annotations": "map[string]string",
    "ownerReferences": "[]ownerref",
    "finalizers": "[]string",
    "managedFields": "[]any",
}
_OWNER_REF_FIELDS = {
    "apiVersion": "string",
    "kind": "string",
    "name": "string",
    "uid": "string",
    "controller": "bool",
    "blockOwnerDeletion": "bool",
}


def validate_metadata(
    meta: dict[str, Any], *, namespaced: bool, name_check: Callable[[str], list[str]], creating: bool
) -> list[FieldError]:
    """``ValidateObjectMeta`` (the parts clients meet)."""
    errors: list[FieldError] = []
    name = meta.get("name", "")
    generate_name = meta.get("generateName", "")
    if not name and not generate_name:
        errors.append(FieldError("Required", "metadata.name", detail="name or generateName is required"))
    elif name:
        for msg in name_check(name):
            errors.append(FieldError("Invalid", "metadata.name", name, msg))
    if generate_name and not name:
        for msg in name_check(generate_name.rstrip("-") or "a"):
            if "no more than" in msg:
                continue
            errors.append(FieldError("Invalid", "metadata.generateName", generate_name, msg))
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        for msg in qualified_name_errors(key):
            errors.append(FieldError("Invalid", "metadata.labels", key, msg))
        if len(value) > 63:
            errors.append(FieldError("Invalid", "metadata.labels", value, "must be no more than 63 characters"))
        if not _LABEL_VALUE.match(value):
            errors.append(FieldError("Invalid", "metadata.labels", value, LABEL_VALUE_MSG))
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        for msg in qualified_name_errors(key.lower()):
            errors.append(FieldError("Invalid", "metadata.annotations", key, msg))
        total += len(key) + len(value)
    if total > 256 * 1024:
        errors.append(FieldError("TooLong", "metadata.annotations", detail="must have at most 262144 bytes"))
    for index, finalizer in enumerate(meta.get("finalizers") or []):
        for msg in qualified_name_errors(finalizer):
            errors.append(FieldError("Invalid", f"metadata.finalizers[{index}]", finalizer, msg))
    for index, ref in enumerate(meta.get("ownerReferences") or []):
        base = f"metadata.ownerReferences[{index}]"
        if not ref.get("apiVersion"):
            errors.append(
                FieldError("Invalid", f"{base}.apiVersion", ref.get("apiVersion", ""), "version must not be empty")
            )
        if not ref.get("kind"):
            errors.append(FieldError("Invalid", f"{base}.kind", ref.get("kind", ""), "kind must not be empty"))
        if not ref.get("name"):
            errors.append(FieldError("Invalid", f"{base}.name", ref.get("name", ""), "name must not be empty"))
        if not ref.get("uid"):
            errors.append(FieldError("Invalid", f"{base}.uid", ref.get("uid", ""), "uid must not be empty"))
    _ = namespaced, creating
    return errors


# --------------------------------------------------------------------------- typed decoding (built-ins)


class DecodeError(Exception):
    pass


_GO_TYPES = {
    "string": "string",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
    "time": "v1.Time",
    "microtime": "v1.MicroTime",
}


def _mismatch(value: Any, struct: str, path: str, go_type: str) -> DecodeError:
    return DecodeError(
        f"json: cannot unmarshal {go_json_kind(value)} into Go struct field {struct}.{path} of type {go_type}"
    )


_REMOVED: list[list[str]] = []  # collector stack for unknown fields (fieldValidation)


def decode_typed(obj: dict[str, Any], spec: dict[str, Any], struct: str, path: str = "") -> None:
    """Check types, drop unknown fields and normalise times, in place."""
    for key in list(obj):
        kind = spec.get(key)
        sub_path = f"{path}.{key}" if path else key
        if kind is None:
            del obj[key]
            if _REMOVED:
                _REMOVED[-1].append(sub_path)
            continue
        value = obj[key]
        if value is None:
            if kind in ("time", "microtime"):
                continue
            del obj[key]
            continue
        obj[key] = _decode_value(value, kind, struct, sub_path)


def _decode_value(value: Any, kind: Any, struct: str, path: str) -> Any:
    if isinstance(kind, tuple):  # (StructName, {fields})
        name, fields = kind
        if not isinstance(value, dict):
            raise _mismatch(value, struct, path, name)
        decode_typed(value, fields, name, path)
        return value
    if kind == "any":
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise _mismatch(value, struct, path, "string")
        return value
    if kind in ("int32", "int64"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _mismatch(value, struct, path, kind)
        if isinstance(value, float):
            if not value.is_integer():
                raise _mismatch(value, struct, path, kind)
            value = int(value)
        bits = 31 if kind == "int32" else 63
        if not -(2**bits) <= value < 2**bits:
            raise DecodeError(
                f"json: cannot unmarshal number {value} into Go struct field {struct}.{path} of type {kind}"
            )
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise _mismatch(value, struct, path, "bool")
        return value
    if kind in ("time", "microtime"):
        if not isinstance(value, str):
            raise _mismatch(value, struct, path, _GO_TYPES[kind])
        if value == "":
            return None
        layout = gotime.RFC3339 if kind == "time" else gotime.RFC3339_MICRO
        try:
            moment = gotime.parse(value, layout)
        except gotime.GoTimeError as exc:
            raise DecodeError(str(exc)) from exc
        return gotime.format_time(moment) if kind == "time" else gotime.format_micro(moment)
    if kind == "map[string]string":
        if not isinstance(value, dict):
            raise _mismatch(value, struct, path, "map[string]string")
        for item in value.values():
            if not isinstance(item, str):
                raise _mismatch(item, struct, path, "string")
        return value
    if kind == "bytes":
        if not isinstance(value, str):
            raise _mismatch(value, struct, path, "[]uint8")
        try:
            base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise DecodeError(f"illegal base64 data at input byte 0: {exc}") from exc
        return value
    if kind == "map[string]bytes":
        if not isinstance(value, dict):
            raise _mismatch(value, struct, path, "map[string][]uint8")
        for item in value.values():
            if not isinstance(item, str):
                raise _mismatch(item, struct, path, "[]uint8")
            try:
                base64.b64decode(item, validate=True)
            except ValueError as exc:
                raise DecodeError(f"illegal base64 data at input byte 0: {exc}") from exc
        return value
    if kind == "[]string":
        if not isinstance(value, list):
            raise _mismatch(value, struct, path, "[]string")
        for item in value:
            if not isinstance(item, str):
                raise _mismatch(item, struct, path, "string")
        return value
    if kind == "[]ownerref":
        if not isinstance(value, list):
            raise _mismatch(value, struct, path, "[]v1.OwnerReference")
        for item in value:
            if not isinstance(item, dict):
                raise _mismatch(item, struct, path, "v1.OwnerReference")
            decode_typed(item, _OWNER_REF_FIELDS, "OwnerReference", path)
        return value
    if kind == "[]any":
        if not isinstance(value, list):
            raise _mismatch(value, struct, path, "[]interface {}")
        return value
    if isinstance(kind, list):  # [ (StructName, fields) ]
        if not isinstance(value, list):
            raise _mismatch(value, struct, path, f"[]{kind[0][0]}")
        return [_decode_value(item, kind[0], struct, path) for item in value]
    raise AssertionError(kind)


def decode_metadata(obj: dict[str, Any], struct: str) -> None:
    meta = obj.get("metadata")
    if meta is None:
        obj["metadata"] = {}
        return
    if not isinstance(meta, dict):
        raise _mismatch(meta, struct, "metadata", "v1.ObjectMeta")
    decode_typed(meta, _META_FIELDS, struct, "metadata")


# --------------------------------------------------------------------------- resource types


def storage_version_hash(group: str, version: str, kind: str) -> str:
    gv = f"{group}/{version}" if group else version
    digest = hashlib.sha256(f"{gv}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


STANDARD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class VersionInfo:
    name: str
    served: bool = True
    storage: bool = False
    schema: Node | None = None
    status: bool = False
    printer_columns: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ResourceType:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    versions: dict[str, VersionInfo]
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    builtin: bool = True
    has_generation: bool = False
    allow_unconditional_update: bool = True
    allow_create_on_update: bool = False
    return_deleted_object: bool = False
    subresources: tuple[str, ...] = ()
    verbs: list[str] = field(default_factory=lambda: list(STANDARD_VERBS))
    storage_key: tuple[str, str] = ("", "")
    typed_spec: dict[str, Any] | None = None  # built-ins: fields of the Go struct (minus metadata)
    always: dict[str, Any] = field(default_factory=dict)  # built-ins: fields Go always marshals
    validator: Callable[..., list[FieldError]] | None = None
    defaulter: Callable[[dict[str, Any]], None] | None = None  # built-ins: the scheme's defaults, on decode
    name_check: Callable[[str], list[str]] = dns1123_subdomain_errors
    crd_name: str | None = None
    list_kind_name: str = ""
    # a resource served from another's storage (events.k8s.io/v1 events -> core v1 events)
    to_storage: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    from_storage: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if self.storage_key == ("", ""):
            self.storage_key = (self.group, self.plural)
        self.names = Names(self.group, self.plural, self.kind)

    @property
    def list_kind(self) -> str:
        return self.list_kind_name or f"{self.kind}List"

    @property
    def storage_version(self) -> str:
        for info in self.versions.values():
            if info.storage:
                return info.name
        return next(iter(self.versions))

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    def has_status(self, version: str) -> bool:
        info = self.versions.get(version)
        return bool(info and info.status)

    def decode(self, obj: dict[str, Any], version: str) -> list[str]:
        """Decode a request body into the stored shape (400 on a type mismatch).

        Returns the paths of the unknown fields that were dropped."""
        removed: list[str] = []
        _REMOVED.append(removed)
        try:
            self._decode(obj, version, removed)
        finally:
            _REMOVED.pop()
        return removed

    def _decode(self, obj: dict[str, Any], version: str, removed: list[str]) -> None:
        if self.builtin and self.typed_spec is not None:
            try:
                self._decode_typed(obj, self.typed_spec)
            except DecodeError as exc:
                raise bad_request(
                    f'{self.kind} in version "{version}" cannot be handled as a {self.kind}: {exc}'
                ) from exc
            return
        # custom resources: metadata is typed, the rest is pruned/defaulted by the schema
        try:
            decode_metadata(obj, self.kind)
        except DecodeError as exc:
            raise bad_request(f'{self.kind} in version "{version}" cannot be handled as a {self.kind}: {exc}') from exc
        info = self.versions.get(version)
        if info is not None and info.schema is not None:
            normalize(obj, info.schema, removed)

    def _decode_typed(self, obj: dict[str, Any], typed_spec: dict[str, Any]) -> None:
        decode_metadata(obj, self.kind)
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        decode_typed(body, typed_spec, self.kind)
        for key in [k for k in obj if k not in ("apiVersion", "kind", "metadata")]:
            del obj[key]
        obj.update(body)
        for key, value in self.always.items():
            if key not in obj:
                obj[key] = copy.deepcopy(value)
        if self.defaulter is not None:
            self.defaulter(obj)

    def decode_mutated(self, obj: dict[str, Any], version: str) -> None:
        """Decode, in place, what a mutating webhook's patch made of an object (in ``version``),
        as kube-apiserver decodes it into a new versioned object and defaults it: a built-in
        like a request body (unknown fields dropped), a custom resource only defaulted (it is
        pruned when it is stored: :meth:`prune`). Raises :class:`DecodeError` with Go's text."""
        if self.builtin and self.typed_spec is not None:
            self._decode_typed(obj, self.typed_spec)
            return
        decode_metadata(obj, self.kind)
        info = self.versions.get(version)
        if not self.builtin and info is not None and info.schema is not None:
            apply_defaults(obj, info.schema)

    def prune(self, obj: dict[str, Any], version: str) -> None:
        """Structural pruning of a custom resource (what storing it does to fields its schema does
        not know), in place; nothing for built-ins, which are typed when decoded."""
        info = self.versions.get(version)
        if not self.builtin and info is not None and info.schema is not None:
            normalize(obj, info.schema)

    def validate(
        self, obj: dict[str, Any], old: dict[str, Any] | None, version: str, *, status: bool = False
    ) -> list[FieldError]:
        errors = validate_metadata(
            obj.get("metadata", {}), namespaced=self.namespaced, name_check=self.name_check, creating=old is None
        )
        if self.validator is not None:
            errors.extend(self.validator(obj, old, version))
        if not self.builtin:
            info = self.versions.get(version)
            if info is not None and info.schema is not None:
                errors.extend(validate_object(obj, old, info.schema, status=status))
        return errors


# --------------------------------------------------------------------------- built-ins

_OBJECT_REFERENCE = (
    "ObjectReference",
    {
        "kind": "string",
        "namespace": "string",
        "name": "string",
        "uid": "string",
        "apiVersion": "string",
        "resourceVersion": "string",
        "fieldPath": "string",
    },
)

_CORE_EVENT_FIELDS: dict[str, Any] = {
    "involvedObject": _OBJECT_REFERENCE,
    "reason": "string",
    "message": "string",
    "source": ("EventSource", {"component": "string", "host": "string"}),
    "firstTimestamp": "time",
    "lastTimestamp": "time",
    "count": "int32",
    "type": "string",
    "eventTime": "microtime",
    "series": ("EventSeries", {"count": "int32", "lastObservedTime": "microtime"}),
    "action": "string",
    "related": _OBJECT_REFERENCE,
    "reportingComponent": "string",
    "reportingInstance": "string",
}
_CORE_EVENT_ALWAYS: dict[str, Any] = {
    "involvedObject": {},
    "source": {},
    "firstTimestamp": None,
    "lastTimestamp": None,
    "eventTime": None,
    "reportingComponent": "",
    "reportingInstance": "",
}

_EVENTS_V1_FIELDS: dict[str, Any] = {
    "eventTime": "microtime",
    "series": ("EventSeries", {"count": "int32", "lastObservedTime": "microtime"}),
    "reportingController": "string",
    "reportingInstance": "string",
    "action": "string",
    "reason": "string",
    "regarding": _OBJECT_REFERENCE,
    "related": _OBJECT_REFERENCE,
    "note": "string",
    "type": "string",
    "deprecatedSource": ("EventSource", {"component": "string", "host": "string"}),
    "deprecatedFirstTimestamp": "time",
    "deprecatedLastTimestamp": "time",
    "deprecatedCount": "int32",
}
_EVENTS_V1_ALWAYS: dict[str, Any] = {
    "eventTime": None,
    "regarding": {},
    "deprecatedSource": {},
    "deprecatedFirstTimestamp": None,
    "deprecatedLastTimestamp": None,
}
# events.k8s.io/v1 field -> core/v1 field
_EVENT_FIELD_MAP = {
    "regarding": "involvedObject",
    "note": "message",
    "deprecatedSource": "source",
    "deprecatedFirstTimestamp": "firstTimestamp",
    "deprecatedLastTimestamp": "lastTimestamp",
    "deprecatedCount": "count",
    "reportingController": "reportingComponent",
}


def _events_v1_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"apiVersion": "v1", "kind": "Event"}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        out[_EVENT_FIELD_MAP.get(key, key)] = value
    for key, value in _CORE_EVENT_ALWAYS.items():
        out.setdefault(key, copy.deepcopy(value))
    return out


def _core_to_events_v1(obj: dict[str, Any]) -> dict[str, Any]:
    reverse = {v: k for k, v in _EVENT_FIELD_MAP.items()}
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for key, value in obj.items():
        if key in ("apiVersion", "kind"):
            continue
        new_key = reverse.get(key, key)
        if new_key in ("reportingController", "reportingInstance", "note", "action", "reason", "type") and value == "":
            continue
        if new_key == "deprecatedCount" and not value:
            continue
        out[new_key] = value
    for key, value in _EVENTS_V1_ALWAYS.items():
        out.setdefault(key, copy.deepcopy(value))
    return out


def _validate_event(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    errors: list[FieldError] = []
    namespace = obj.get("metadata", {}).get("namespace", "")
    involved = obj.get("involvedObject") or {}
    involved_ns = involved.get("namespace", "")
    new_style = version == "events.k8s.io/v1"
    if not new_style and not obj.get("eventTime"):
        if not involved_ns:
            if namespace not in ("", "default"):
                errors.append(
                    FieldError("Invalid", "involvedObject.namespace", involved_ns, "does not match event.namespace")
                )
        elif namespace != involved_ns:
            errors.append(
                FieldError("Invalid", "involvedObject.namespace", involved_ns, "does not match event.namespace")
            )
    else:
        if not involved_ns and namespace not in ("default", "kube-system"):
            errors.append(
                FieldError("Invalid", "involvedObject.namespace", involved_ns, "does not match event.namespace")
            )
        if new_style and not obj.get("eventTime"):
            errors.append(FieldError("Required", "eventTime"))
        controller = obj.get("reportingComponent", "")
        if not controller:
            errors.append(FieldError("Required", "reportingController"))
        else:
            for msg in qualified_name_errors(controller):
                errors.append(FieldError("Invalid", "reportingController", controller, msg))
        instance = obj.get("reportingInstance", "")
        if not instance:
            errors.append(FieldError("Required", "reportingInstance"))
        elif len(instance) > 128:
            errors.append(FieldError("Invalid", "reportingInstance", "", "can have at most 128 characters"))
        action = obj.get("action", "")
        if not action:
            errors.append(FieldError("Required", "action"))
        elif len(action) > 128:
            errors.append(FieldError("Invalid", "action", "", "can have at most 128 characters"))
        reason = obj.get("reason", "")
        if not reason:
            errors.append(FieldError("Required", "reason"))
        elif len(reason) > 128:
            errors.append(FieldError("Invalid", "reason", "", "can have at most 128 characters"))
        if len(obj.get("message", "")) > 1024:
            errors.append(FieldError("Invalid", "note", "", "can have at most 1024 characters"))
        if new_style and obj.get("type") not in ("Normal", "Warning"):
            errors.append(FieldError("Invalid", "type", "", f"has invalid value: {obj.get('type', '')}"))
    _ = old
    return errors


def _validate_lease(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    errors: list[FieldError] = []
    spec = obj.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and duration <= 0:
        errors.append(FieldError("Invalid", "spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if transitions is not None and transitions < 0:
        errors.append(FieldError("Invalid", "spec.leaseTransitions", transitions, "must be greater than or equal to 0"))
    _ = old, version
    return errors


def _validate_configmap(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    errors: list[FieldError] = []
    for section in ("data", "binaryData"):
        for key in obj.get(section) or {}:
            if len(key) > 253 or not _CONFIG_KEY.match(key):
                errors.append(FieldError("Invalid", f"{section}[{key}]", key, CONFIG_KEY_MSG))
    if old is not None and old.get("immutable"):
        for section in ("data", "binaryData"):
            if (obj.get(section) or {}) != (old.get(section) or {}):
                errors.append(FieldError("Forbidden", section, detail="field is immutable when `immutable` is set"))
        if not obj.get("immutable"):
            errors.append(FieldError("Forbidden", "immutable", detail="field is immutable when `immutable` is set"))
    _ = version
    return errors


# --------------------------------------------------------------------------- admissionregistration.k8s.io/v1

_LABEL_SELECTOR = (
    "LabelSelector",
    {
        "matchLabels": "map[string]string",
        "matchExpressions": [
            ("LabelSelectorRequirement", {"key": "string", "operator": "string", "values": "[]string"})
        ],
    },
)
# ValidatingWebhook's fields, in Go struct order (the order they are answered in)
_VALIDATING_WEBHOOK: dict[str, Any] = {
    "name": "string",
    "clientConfig": (
        "WebhookClientConfig",
        {
            "url": "string",
            "service": (
                "ServiceReference",
                {"namespace": "string", "name": "string", "path": "string", "port": "int32"},
            ),
            "caBundle": "bytes",
        },
    ),
    "rules": [
        (
            "RuleWithOperations",
            {
                "operations": "[]string",
                "apiGroups": "[]string",
                "apiVersions": "[]string",
                "resources": "[]string",
                "scope": "string",
            },
        )
    ],
    "failurePolicy": "string",
    "matchPolicy": "string",
    "namespaceSelector": _LABEL_SELECTOR,
    "objectSelector": _LABEL_SELECTOR,
    "sideEffects": "string",
    "timeoutSeconds": "int32",
    "admissionReviewVersions": "[]string",
}
# MutatingWebhook: the same fields, and reinvocationPolicy last
_MUTATING_WEBHOOK: dict[str, Any] = {**_VALIDATING_WEBHOOK, "reinvocationPolicy": "string"}
_REINVOCATION_POLICIES = ["IfNeeded", "Never"]
_ACCEPTED_REVIEW_VERSIONS = ["v1", "v1beta1"]
_NO_SIDE_EFFECTS = ["None", "NoneOnDryRun"]
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_URL_FORM = "; desired format: https://host[/path]"


def _default_vwc(obj: dict[str, Any]) -> None:
    """``SetDefaults_ValidatingWebhook``, ``SetDefaults_Rule``, ``SetDefaults_ServiceReference``."""
    _default_webhooks(obj, _VALIDATING_WEBHOOK)


def _default_mwc(obj: dict[str, Any]) -> None:
    """``SetDefaults_MutatingWebhook``: the validating kind's defaults, and ``reinvocationPolicy`` Never."""
    for hook in obj.get("webhooks") or []:
        hook.setdefault("reinvocationPolicy", "Never")
    _default_webhooks(obj, _MUTATING_WEBHOOK)


def _default_webhooks(obj: dict[str, Any], fields: dict[str, Any]) -> None:
    hooks = []
    for hook in obj.get("webhooks") or []:
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        hook.setdefault("namespaceSelector", {})
        hook.setdefault("objectSelector", {})
        hook.setdefault("timeoutSeconds", 10)
        hook.setdefault("clientConfig", {})
        service = hook["clientConfig"].get("service")
        if isinstance(service, dict):
            service.setdefault("port", 443)
        for rule in hook.get("rules") or []:
            rule.setdefault("scope", "*")
        hooks.append({k: hook[k] for k in fields if k in hook})
    if "webhooks" in obj:
        obj["webhooks"] = hooks


def _go_strings(type_name: str, values: list[str]) -> GoLiteral:
    """``%#v`` of a Go string slice."""
    return GoLiteral(f"[]{type_name}{{" + ", ".join(go_quote(v) for v in values) + "}")


def _validate_rule(rule: dict[str, Any], path: str) -> list[FieldError]:
    """``validateRuleWithOperations`` (subresources allowed)."""
    errors: list[FieldError] = []
    operations = rule.get("operations") or []
    if not operations:
        errors.append(FieldError("Required", f"{path}.operations"))
    if len(operations) > 1 and "*" in operations:
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.operations",
                _go_strings("admissionregistration.OperationType", operations),
                "if '*' is present, must not specify other operations",
            )
        )
    supported = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]
    for index, operation in enumerate(operations):
        if operation not in supported:
            errors.append(FieldError("NotSupported", f"{path}.operations[{index}]", operation, supported=supported))
    groups = rule.get("apiGroups") or []
    if not groups:
        errors.append(FieldError("Required", f"{path}.apiGroups"))
    if len(groups) > 1 and "*" in groups:
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.apiGroups",
                _go_strings("string", groups),
                "if '*' is present, must not specify other API groups",
            )
        )
    versions = rule.get("apiVersions") or []
    if not versions:
        errors.append(FieldError("Required", f"{path}.apiVersions"))
    if len(versions) > 1 and "*" in versions:
        errors.append(
            FieldError(
                "Invalid",
                f"{path}.apiVersions",
                _go_strings("string", versions),
                "if '*' is present, must not specify other API versions",
            )
        )
    for index, version in enumerate(versions):
        if version == "":
            errors.append(FieldError("Required", f"{path}.apiVersions[{index}]"))
    errors.extend(_validate_rule_resources(rule.get("resources") or [], f"{path}.resources"))
    scope = rule.get("scope")
    if scope is not None and scope not in ("*", "Cluster", "Namespaced"):
        errors.append(FieldError("NotSupported", f"{path}.scope", scope, supported=["*", "Cluster", "Namespaced"]))
    return errors


def _validate_rule_resources(resources: list[str], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not resources:
        errors.append(FieldError("Required", path))
    wildcard_sub: set[str] = set()  # x/*
    wildcard_res: set[str] = set()  # */x
    double = single = plain = False
    for index, entry in enumerate(resources):
        if entry == "":
            errors.append(FieldError("Required", f"{path}[{index}]"))
            continue
        double = double or entry == "*/*"
        single = single or entry == "*"
        if "/" not in entry:
            plain = entry != "*"
            continue
        res, sub = entry.split("/", 1)
        if res in wildcard_sub:
            errors.append(
                FieldError("Invalid", f"{path}[{index}]", entry, f"if '{res}/*' is present, must not specify {entry}")
            )
        if sub in wildcard_res:
            errors.append(
                FieldError("Invalid", f"{path}[{index}]", entry, f"if '*/{sub}' is present, must not specify {entry}")
            )
        if sub == "*":
            wildcard_sub.add(res)
        if res == "*":
            wildcard_res.add(sub)
    if len(resources) > 1 and double:
        errors.append(
            FieldError(
                "Invalid",
                path,
                _go_strings("string", resources),
                "if '*/*' is present, must not specify other resources",
            )
        )
    if single and plain:
        errors.append(
            FieldError(
                "Invalid",
                path,
                _go_strings("string", resources),
                "if '*' is present, must not specify other resources without subresources",
            )
        )
    return errors


def _validate_label_selector(selector: dict[str, Any], path: str) -> list[FieldError]:
    """``metav1validation.ValidateLabelSelector``."""
    errors: list[FieldError] = []
    for key, value in (selector.get("matchLabels") or {}).items():
        for msg in qualified_name_errors(key):
            errors.append(FieldError("Invalid", f"{path}.matchLabels", key, msg))
        if len(value) > 63:
            errors.append(FieldError("Invalid", f"{path}.matchLabels", value, "must be no more than 63 characters"))
        if not _LABEL_VALUE.match(value):
            errors.append(FieldError("Invalid", f"{path}.matchLabels", value, LABEL_VALUE_MSG))
    for index, requirement in enumerate(selector.get("matchExpressions") or []):
        base = f"{path}.matchExpressions[{index}]"
        operator = requirement.get("operator", "")
        values = requirement.get("values") or []
        if operator in ("In", "NotIn"):
            if not values:
                errors.append(
                    FieldError(
                        "Required", f"{base}.values", detail="must be specified when `operator` is 'In' or 'NotIn'"
                    )
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                errors.append(
                    FieldError(
                        "Forbidden",
                        f"{base}.values",
                        detail="may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    )
                )
        else:
            errors.append(FieldError("Invalid", f"{base}.operator", operator, "not a valid selector operator"))
        key = requirement.get("key", "")
        for msg in qualified_name_errors(key):
            errors.append(FieldError("Invalid", f"{base}.key", key, msg))
    return errors


def _validate_webhook_url(url: str, path: str) -> list[FieldError]:
    """``webhook.ValidateWebhookURL`` (https forced)."""
    errors: list[FieldError] = []
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        return [FieldError("Required", path, detail=f"url must be a valid URL: {exc}{_URL_FORM}")]
    if parts.scheme != "https":
        errors.append(FieldError("Invalid", path, parts.scheme, "'https' is the only allowed URL scheme" + _URL_FORM))
    if not parts.netloc.rpartition("@")[2]:
        errors.append(FieldError("Invalid", path, "", "host must be provided" + _URL_FORM))
    if "@" in parts.netloc:
        userinfo = parts.netloc.rpartition("@")[0]
        errors.append(FieldError("Invalid", path, userinfo, "user information is not permitted in the URL"))
    if parts.fragment:
        errors.append(FieldError("Invalid", path, parts.fragment, "fragments are not permitted in the URL"))
    if parts.query:
        errors.append(FieldError("Invalid", path, parts.query, "query parameters are not permitted in the URL"))
    return errors


def _validate_webhook_service(service: dict[str, Any], path: str) -> list[FieldError]:
    """``webhook.ValidateWebhookService``."""
    errors: list[FieldError] = []
    if not service.get("name"):
        errors.append(FieldError("Required", f"{path}.name", detail="service name is required"))
    if not service.get("namespace"):
        errors.append(FieldError("Required", f"{path}.namespace", detail="service namespace is required"))
    port = service.get("port", 443)
    if not 1 <= port <= 65535:
        errors.append(
            FieldError("Invalid", f"{path}.port", port, "port is not valid: must be between 1 and 65535, inclusive")
        )
    url_path = service.get("path")
    if url_path is None or url_path in ("", "/"):
        return errors
    if url_path == "//":
        return [*errors, FieldError("Invalid", f"{path}.path", url_path, "segment[0] may not be empty")]
    if not url_path.startswith("/"):
        errors.append(FieldError("Invalid", f"{path}.path", url_path, "must start with a '/'"))
    steps = url_path[1:].removesuffix("/").split("/")
    for index, step in enumerate(steps):
        if not step:
            errors.append(FieldError("Invalid", f"{path}.path", url_path, f"segment[{index}] may not be empty"))
            continue
        for msg in dns1123_subdomain_errors(step):
            errors.append(FieldError("Invalid", f"{path}.path", url_path, f"segment[{index}]: {msg}"))
    return errors


def _validate_review_versions(versions: list[str], require_recognized: bool, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not versions:
        return [FieldError("Required", path, detail="must specify one of " + ", ".join(_ACCEPTED_REVIEW_VERSIONS))]
    seen: set[str] = set()
    recognized = False
    for index, version in enumerate(versions):
        if version in seen:
            errors.append(FieldError("Invalid", f"{path}[{index}]", version, "duplicate version"))
            continue
        seen.add(version)
        if len(version) > 63:
            errors.append(FieldError("Invalid", f"{path}[{index}]", version, "must be no more than 63 characters"))
        if not _DNS1035_LABEL.match(version):
            errors.append(FieldError("Invalid", f"{path}[{index}]", version, DNS1035_LABEL_MSG))
        recognized = recognized or version in _ACCEPTED_REVIEW_VERSIONS
    if require_recognized and not recognized:
        errors.append(
            FieldError(
                "Invalid",
                path,
                _go_strings("string", versions),
                "must include at least one of " + ", ".join(_ACCEPTED_REVIEW_VERSIONS),
            )
        )
    return errors


def _validate_webhook(
    hook: dict[str, Any], require_no_side_effects: bool, path: str, mutating: bool = False
) -> list[FieldError]:
    """``validateValidatingWebhook``, or (``mutating``) ``validateMutatingWebhook``."""
    errors: list[FieldError] = []
    name = hook.get("name", "")
    if not name:
        errors.append(FieldError("Required", f"{path}.name"))
    elif dns1123_subdomain_errors(name):
        errors.append(FieldError("Invalid", f"{path}.name", name, ",".join(dns1123_subdomain_errors(name))))
    elif len(name.split(".")) < 3:
        errors.append(
            FieldError(
                "Invalid", f"{path}.name", name, "should be a domain with at least three segments separated by dots"
            )
        )
    for index, rule in enumerate(hook.get("rules") or []):
        errors.extend(_validate_rule(rule, f"{path}.rules[{index}]"))
    policy = hook.get("failurePolicy")
    if policy is not None and policy not in ("Fail", "Ignore"):
        errors.append(FieldError("NotSupported", f"{path}.failurePolicy", policy, supported=["Fail", "Ignore"]))
    match_policy = hook.get("matchPolicy")
    if match_policy is not None and match_policy not in ("Equivalent", "Exact"):
        errors.append(
            FieldError("NotSupported", f"{path}.matchPolicy", match_policy, supported=["Equivalent", "Exact"])
        )
    allowed = _NO_SIDE_EFFECTS if require_no_side_effects else ["None", "NoneOnDryRun", "Some", "Unknown"]
    side_effects = hook.get("sideEffects")
    if side_effects is None:
        errors.append(FieldError("Required", f"{path}.sideEffects", detail="must specify one of " + ", ".join(allowed)))
    elif side_effects not in allowed:
        errors.append(FieldError("NotSupported", f"{path}.sideEffects", side_effects, supported=allowed))
    timeout = hook.get("timeoutSeconds")
    if timeout is not None and not 1 <= timeout <= 30:
        errors.append(
            FieldError(
                "Invalid", f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"
            )
        )
    for key in ("namespaceSelector", "objectSelector"):
        if hook.get(key) is not None:
            errors.extend(_validate_label_selector(hook[key], f"{path}.{key}"))
    reinvocation = hook.get("reinvocationPolicy")
    if mutating and reinvocation is not None and reinvocation not in _REINVOCATION_POLICIES:
        errors.append(
            FieldError("NotSupported", f"{path}.reinvocationPolicy", reinvocation, supported=_REINVOCATION_POLICIES)
        )
    config = hook.get("clientConfig") or {}
    if ("url" in config) == ("service" in config):
        errors.append(
            FieldError("Required", f"{path}.clientConfig", detail="exactly one of url or service is required")
        )
    elif "url" in config:
        errors.extend(_validate_webhook_url(config["url"], f"{path}.clientConfig.url"))
    else:
        errors.extend(_validate_webhook_service(config["service"], f"{path}.clientConfig.service"))
    return errors


def _validate_vwc(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    """``ValidateValidatingWebhookConfiguration`` and its update variant (which is lenient where
    the stored object already is)."""
    _ = version
    return _validate_configuration(obj, old, mutating=False)


def _validate_mwc(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    """``ValidateMutatingWebhookConfiguration`` and its update variant: the same checks, and
    ``reinvocationPolicy``."""
    _ = version
    return _validate_configuration(obj, old, mutating=True)


def _validate_configuration(obj: dict[str, Any], old: dict[str, Any] | None, mutating: bool) -> list[FieldError]:
    require_no_side_effects = require_recognized = require_unique = True
    if old is not None:
        old_hooks = old.get("webhooks") or []
        require_no_side_effects = all(h.get("sideEffects") in _NO_SIDE_EFFECTS for h in old_hooks)
        require_recognized = all(
            not h.get("admissionReviewVersions")
            or any(v in _ACCEPTED_REVIEW_VERSIONS for v in h["admissionReviewVersions"])
            for h in old_hooks
        )
        names = [h.get("name", "") for h in old_hooks]
        require_unique = len(names) == len(set(names))
    errors: list[FieldError] = []
    seen: set[str] = set()
    for index, hook in enumerate(obj.get("webhooks") or []):
        path = f"webhooks[{index}]"
        errors.extend(_validate_webhook(hook, require_no_side_effects, path, mutating))
        errors.extend(
            _validate_review_versions(
                hook.get("admissionReviewVersions") or [], require_recognized, f"{path}.admissionReviewVersions"
            )
        )
        name = hook.get("name", "")
        if require_unique and name:
            if name in seen:
                errors.append(FieldError("Duplicate", f"{path}.name", name))
            seen.add(name)
    return errors


def _validate_namespace(obj: dict[str, Any], old: dict[str, Any] | None, version: str) -> list[FieldError]:
    _ = obj, old, version
    return []


def builtin_types() -> list[ResourceType]:
    core_v1 = {"v1": VersionInfo("v1", storage=True)}
    return [
        ResourceType(
            group="",
            plural="namespaces",
            singular="namespace",
            kind="Namespace",
            namespaced=False,
            versions={"v1": VersionInfo("v1", storage=True, status=True)},
            short_names=["ns"],
            allow_unconditional_update=True,
            return_deleted_object=True,
            subresources=("status", "finalize"),
            verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
            typed_spec={
                "spec": ("NamespaceSpec", {"finalizers": "[]string"}),
                "status": (
                    "NamespaceStatus",
                    {"phase": "string", "conditions": "[]any"},
                ),
            },
            always={"spec": {}, "status": {}},
            validator=_validate_namespace,
            name_check=dns1123_label_errors,
        ),
        ResourceType(
            group="",
            plural="events",
            singular="event",
            kind="Event",
            namespaced=True,
            versions=dict(core_v1),
            short_names=["ev"],
            allow_unconditional_update=True,
            allow_create_on_update=True,
            typed_spec=_CORE_EVENT_FIELDS,
            always=_CORE_EVENT_ALWAYS,
            validator=_validate_event,
        ),
        ResourceType(
            group="",
            plural="configmaps",
            singular="configmap",
            kind="ConfigMap",
            namespaced=True,
            versions=dict(core_v1),
            short_names=["cm"],
            allow_unconditional_update=True,
            typed_spec={"data": "map[string]string", "binaryData": "map[string]bytes", "immutable": "bool"},
            validator=_validate_configmap,
        ),
        ResourceType(
            group="",
            plural="secrets",
            singular="secret",
            kind="Secret",
            namespaced=True,
            versions=dict(core_v1),
            allow_unconditional_update=True,
            typed_spec={
                "data": "map[string]bytes",
                "stringData": "map[string]string",
                "type": "string",
                "immutable": "bool",
            },
        ),
        ResourceType(
            group="coordination.k8s.io",
            plural="leases",
            singular="lease",
            kind="Lease",
            namespaced=True,
            versions={"v1": VersionInfo("v1", storage=True)},
            allow_unconditional_update=False,
            allow_create_on_update=True,
            typed_spec={
                "spec": (
                    "LeaseSpec",
                    {
                        "holderIdentity": "string",
                        "leaseDurationSeconds": "int32",
                        "acquireTime": "microtime",
                        "renewTime": "microtime",
                        "leaseTransitions": "int32",
                        "strategy": "string",
                        "preferredHolder": "string",
                    },
                )
            },
            always={"spec": {}},
            validator=_validate_lease,
        ),
        ResourceType(
            group="events.k8s.io",
            plural="events",
            singular="event",
            kind="Event",
            namespaced=True,
            versions={"v1": VersionInfo("v1", storage=True)},
            short_names=["ev"],
            allow_unconditional_update=True,
            allow_create_on_update=True,
            storage_key=("", "events"),
            typed_spec=_EVENTS_V1_FIELDS,
            always=_EVENTS_V1_ALWAYS,
            validator=_validate_event,
            to_storage=_events_v1_to_core,
            from_storage=_core_to_events_v1,
        ),
        ResourceType(
            group="admissionregistration.k8s.io",
            plural="validatingwebhookconfigurations",
            singular="validatingwebhookconfiguration",
            kind="ValidatingWebhookConfiguration",
            namespaced=False,
            versions={"v1": VersionInfo("v1", storage=True)},
            categories=["api-extensions"],
            has_generation=True,
            allow_unconditional_update=False,
            typed_spec={"webhooks": [("ValidatingWebhook", _VALIDATING_WEBHOOK)]},
            validator=_validate_vwc,
            defaulter=_default_vwc,
        ),
        ResourceType(
            group="admissionregistration.k8s.io",
            plural="mutatingwebhookconfigurations",
            singular="mutatingwebhookconfiguration",
            kind="MutatingWebhookConfiguration",
            namespaced=False,
            versions={"v1": VersionInfo("v1", storage=True)},
            categories=["api-extensions"],
            has_generation=True,
            allow_unconditional_update=False,
            typed_spec={"webhooks": [("MutatingWebhook", _MUTATING_WEBHOOK)]},
            validator=_validate_mwc,
            defaulter=_default_mwc,
        ),
        ResourceType(
            group="apiextensions.k8s.io",
            plural="customresourcedefinitions",
            singular="customresourcedefinition",
            kind="CustomResourceDefinition",
            namespaced=False,
            versions={"v1": VersionInfo("v1", storage=True, status=True)},
            short_names=["crd", "crds"],
            categories=["api-extensions"],
            has_generation=True,
            allow_unconditional_update=False,
            return_deleted_object=True,
            subresources=("status",),
        ),
    ]


# --------------------------------------------------------------------------- CRDs


def default_crd(crd: dict[str, Any]) -> None:
    """Fill what kube-apiserver defaults in a CRD (listKind, singular, conversion, ...)."""
    spec = crd.setdefault("spec", {})
    names = spec.setdefault("names", {})
    if names.get("kind") and not names.get("listKind"):
        names["listKind"] = names["kind"] + "List"
    if names.get("kind") and not names.get("singular"):
        names["singular"] = names["kind"].lower()
    spec.setdefault("conversion", {"strategy": "None"})
    for version in spec.get("versions") or []:
        for column in version.get("additionalPrinterColumns") or []:
            column.setdefault("type", "string")
    status = crd.setdefault("status", {})
    status.setdefault("conditions", None)
    status.setdefault("acceptedNames", {"plural": "", "kind": ""})
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    existing = list(status.get("storedVersions") or [])
    for name in stored:
        if name not in existing:
            existing.append(name)
    status["storedVersions"] = existing


def validate_crd(crd: dict[str, Any]) -> tuple[list[FieldError], dict[str, Node | None]]:
    """The CRD validations a client is likely to meet; returns errors and compiled schemas."""
    errors: list[FieldError] = []
    schemas: dict[str, Node | None] = {}
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    plural = names.get("plural", "")
    name = crd.get("metadata", {}).get("name", "")
    if not group:
        errors.append(FieldError("Required", "spec.group"))
    elif len(group.split(".")) < 2:
        errors.append(FieldError("Invalid", "spec.group", group, "should be a domain with at least one dot"))
    if not plural:
        errors.append(FieldError("Required", "spec.names.plural"))
    if not names.get("kind"):
        errors.append(FieldError("Required", "spec.names.kind"))
    if name and plural and group and name != f"{plural}.{group}":
        errors.append(FieldError("Invalid", "metadata.name", name, 'must be spec.names.plural+"."+spec.group'))
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        if not scope:
            errors.append(FieldError("Required", "spec.scope"))
        else:
            errors.append(FieldError("NotSupported", "spec.scope", scope, supported=["Cluster", "Namespaced"]))
    versions = spec.get("versions") or []
    if not versions:
        errors.append(
            FieldError("Invalid", "spec.versions", versions, "must have exactly one version marked as storage version")
        )
    storage = [v for v in versions if v.get("storage")]
    if versions and len(storage) != 1:
        errors.append(
            FieldError("Invalid", "spec.versions", versions, "must have exactly one version marked as storage version")
        )
    for index, version in enumerate(versions):
        raw = ((version.get("schema") or {}).get("openAPIV3Schema")) if isinstance(version, dict) else None
        if raw is None:
            errors.append(
                FieldError("Required", f"spec.versions[{index}].schema.openAPIV3Schema", detail="schemas are required")
            )
            schemas[version.get("name", "")] = None
            continue
        try:
            schemas[version["name"]] = compile_schema(raw, f"spec.versions[{index}].schema.openAPIV3Schema")
        except SchemaCompileError as exc:
            errors.extend(exc.errors)
    return errors, schemas


def crd_resource_type(crd: dict[str, Any], schemas: dict[str, Node | None]) -> ResourceType:
    spec = crd["spec"]
    names = spec["names"]
    versions: dict[str, VersionInfo] = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        versions[version["name"]] = VersionInfo(
            name=version["name"],
            served=True,
            storage=bool(version.get("storage")),
            schema=schemas.get(version["name"]),
            status="status" in (version.get("subresources") or {}),
            printer_columns=list(version.get("additionalPrinterColumns") or []),
        )
    storage_name = next(v["name"] for v in spec["versions"] if v.get("storage"))
    if storage_name not in versions:  # stored but not served: keep it for storage purposes
        versions[storage_name] = VersionInfo(name=storage_name, served=False, storage=True)
    return ResourceType(
        group=spec["group"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        kind=names["kind"],
        namespaced=spec.get("scope") == "Namespaced",
        versions=versions,
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        builtin=False,
        has_generation=True,
        allow_unconditional_update=False,
        return_deleted_object=False,  # the custom resource store answers a Status (no ReturnDeletedObject)
        crd_name=crd["metadata"]["name"],
        list_kind_name=names.get("listKind") or "",
    )
