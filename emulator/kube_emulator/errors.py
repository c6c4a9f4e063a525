"""Kubernetes ``Status`` errors, shaped exactly like kube-apiserver's (v1.24)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

OPTIMISTIC_LOCK_MSG = "the object has been modified; please apply your changes to the latest version and try again"


def go_quote(text: str) -> str:
    """Approximate Go's ``%q`` for a string."""
    return json.dumps(text, ensure_ascii=False)


def go_value(value: Any) -> str:
    """Approximate Go's ``%#v`` for an unstructured (JSON-decoded) value."""
    if value is None:
        return "interface {}(nil)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, dict):
        inner = ", ".join(f"{go_quote(k)}:{go_value(value[k])}" for k in sorted(value))
        return "map[string]interface {}{" + inner + "}"
    if isinstance(value, list):
        return "[]interface {}{" + ", ".join(go_value(v) for v in value) + "}"
    return repr(value)


def go_float(value: float) -> str:
    """Go's ``%v`` for a float64 (shortest repr, exponent for large/small values)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mant, exp = text.split("e")
        sign = "-" if exp.startswith("-") else "+"
        exp = exp.lstrip("+-").rjust(2, "0")
        return f"{mant}e{sign}{exp}"
    return text


def field_value(value: Any) -> str:
    """How ``field.Error.ErrorBody`` prints a bad value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, GoLiteral):
        return value.text
    return go_value(value)


@dataclass(frozen=True)
class GoLiteral:
    """A value printed verbatim (e.g. ``0x0`` for a uint64 zero)."""

    text: str


# field.ErrorType -> (cause reason, human prefix)
ERROR_TYPES = {
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "Required": ("FieldValueRequired", "Required value"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
    "TooLong": ("FieldValueTooLong", "Too long"),
    "TooMany": ("FieldValueTooMany", "Too many"),
    "TypeInvalid": ("FieldValueTypeInvalid", "Invalid value"),
    "NotFound": ("FieldValueNotFound", "Not found"),
}

_MISSING = object()


@dataclass
class FieldError:
    """One ``field.Error``."""

    type: str
    field: str
    value: Any = _MISSING
    detail: str = ""
    supported: list[str] | None = None

    @property
    def reason(self) -> str:
        return ERROR_TYPES[self.type][0]

    def body(self) -> str:
        prefix = ERROR_TYPES[self.type][1]
        if self.type in ("Required", "Forbidden", "TooLong"):
            text = prefix
        else:
            text = f"{prefix}: {field_value(None if self.value is _MISSING else self.value)}"
        detail = self.detail
        if self.type == "NotSupported" and self.supported is not None:
            detail = "supported values: " + ", ".join(go_quote(s) for s in self.supported)
        if detail:
            text += f": {detail}"
        return text

    def __str__(self) -> str:
        if self.field:
            return f"{self.field}: {self.body()}"
        return self.body()

    def cause(self) -> dict[str, Any]:
        out = {"reason": self.reason, "message": self.body()}
        if self.field:
            out["field"] = self.field
        return out


class ApiError(Exception):
    """An error answered as a ``Status`` object."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        status_value: str = "Failure",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.status_value = status_value
        self.warnings: list[str] = []  # answered as Warning headers beside the Status

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": self.status_value,
            "message": self.message,
        }
        if self.reason:  # omitempty: a webhook's denial may have none
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


@dataclass(frozen=True)
class Names:
    """What an error needs to know about a resource type."""

    group: str
    plural: str
    kind: str

    @property
    def qualified_resource(self) -> str:  # widgets.example.test / namespaces
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:  # Widget.example.test / Event
        return f"{self.kind}.{self.group}" if self.group else self.kind


def _details(names: Names, name: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if names.group:
        details["group"] = names.group
    details["kind"] = kind
    details.update(extra)
    return details


def not_found(names: Names, name: str) -> ApiError:
    return ApiError(
        404,
        "NotFound",
        f"{names.qualified_resource} {go_quote(name)} not found",
        _details(names, name, names.plural),
    )


def namespace_not_found(namespace: str) -> ApiError:
    return not_found(Names("", "namespaces", "Namespace"), namespace)


def already_exists(names: Names, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f"{names.qualified_resource} {go_quote(name)} already exists",
        _details(names, name, names.plural),
    )


def conflict(names: Names, name: str, why: str = OPTIMISTIC_LOCK_MSG) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {names.qualified_resource} {go_quote(name)}: {why}",
        _details(names, name, names.plural),
    )


def delete_precondition_conflict(names: Names, name: str, why: str) -> ApiError:
    # The delete path reports the GroupKind, not the GroupResource (see transcript).
    return ApiError(
        409,
        "Conflict",
        f"Operation cannot be fulfilled on {names.qualified_kind} {go_quote(name)}: {why}",
        _details(names, name, names.kind),
    )


def invalid(group: str, kind: str, name: str, errors: list[FieldError]) -> ApiError:
    qualified = f"{kind}.{group}" if group else kind
    seen: list[str] = []
    for err in errors:
        text = str(err)
        if text not in seen:
            seen.append(text)
    if not seen:
        message = f"{qualified} {go_quote(name)} is invalid"
    elif len(seen) == 1:
        message = f"{qualified} {go_quote(name)} is invalid: {seen[0]}"
    else:
        message = f"{qualified} {go_quote(name)} is invalid: [{', '.join(seen)}]"
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [err.cause() for err in errors]
    return ApiError(422, "Invalid", message, details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(names: Names, name: str, why: str, causes: list[dict[str, Any]] | None = None) -> ApiError:
    if name:
        message = f"{names.qualified_resource} {go_quote(name)} is forbidden: {why}"
    else:
        message = f"{names.qualified_resource} is forbidden: {why}"
    extra = {"causes": causes} if causes else {}
    return ApiError(403, "Forbidden", message, _details(names, name, names.plural, **extra))


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
        {},
    )


def unprocessable_patch() -> ApiError:
    """What kube-apiserver answers when a JSON patch does not apply (e.g. a failed ``test``)."""
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {})


def internal_error(why: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {why}",
        {"causes": [{"message": why}]},
    )


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        "Too many requests, please try again later.",
        {"retryAfterSeconds": retry_after},
        headers={"Retry-After": str(retry_after)},
    )


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def go_json_kind(value: Any) -> str:
    """The value kind encoding/json names in 'cannot unmarshal X into Go ...' errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return f"number {value}" if isinstance(value, float) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"
