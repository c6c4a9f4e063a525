"""Structural openAPIV3Schema handling for custom resources: pruning, defaulting,
validation (with kube-apiserver's error wording) and CEL rules.

Compiled once per CRD version (:func:`compile_schema`), then applied to every
write. Patterns use RE2 (``google-re2``, the engine Kubernetes uses) when it is
importable, else Python's ``re`` (which differs on a few constructs, e.g.
possessive quantifiers and look-arounds, that RE2 rejects).
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import re
import uuid
from typing import Any

from .cel import CelCompileError, CelRule, to_cel
from .errors import FieldError

try:  # RE2 is what kube-apiserver uses for `pattern`.
    import re2 as _re2
except ImportError:  # pragma: no cover - cel-python depends on google-re2
    _re2 = None

_NO_DEFAULT = object()
ROOT_KEYS = ("apiVersion", "kind", "metadata")


class SchemaCompileError(Exception):
    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.errors = errors


def _compile_pattern(pattern: str) -> Any:
    if _re2 is not None:
        try:
            return _re2.compile(pattern)
        except Exception:
            pass
    return re.compile(pattern)


class Node:
    """A compiled structural schema node."""

    def __init__(self, raw: dict[str, Any], where: str, errors: list[FieldError]) -> None:
        self.raw = raw
        self.type: str | None = raw.get("type")
        self.format: str | None = raw.get("format")
        self.nullable: bool = bool(raw.get("nullable", False))
        self.int_or_string: bool = bool(raw.get("x-kubernetes-int-or-string", False))
        self.preserve_unknown: bool = bool(raw.get("x-kubernetes-preserve-unknown-fields", False))
        self.embedded: bool = bool(raw.get("x-kubernetes-embedded-resource", False))
        self.required: list[str] = list(raw.get("required") or [])
        self.enum: list[Any] | None = raw.get("enum")
        self.default: Any = raw.get("default", _NO_DEFAULT)
        self.max_length = raw.get("maxLength")
        self.min_length = raw.get("minLength")
        self.pattern_text: str | None = raw.get("pattern")
        self.pattern = _compile_pattern(self.pattern_text) if self.pattern_text else None
        self.minimum = raw.get("minimum")
        self.maximum = raw.get("maximum")
        self.exclusive_minimum = bool(raw.get("exclusiveMinimum", False))
        self.exclusive_maximum = bool(raw.get("exclusiveMaximum", False))
        self.multiple_of = raw.get("multipleOf")
        self.max_items = raw.get("maxItems")
        self.min_items = raw.get("minItems")
        self.unique_items = bool(raw.get("uniqueItems", False))
        self.max_properties = raw.get("maxProperties")
        self.min_properties = raw.get("minProperties")
        self.list_type: str | None = raw.get("x-kubernetes-list-type")
        self.list_map_keys: list[str] = list(raw.get("x-kubernetes-list-map-keys") or [])
        self.properties: dict[str, Node] = {
            key: Node(value, f"{where}.properties[{key}]", errors)
            for key, value in (raw.get("properties") or {}).items()
        }
        additional = raw.get("additionalProperties")
        self.additional: Node | None = None
        if isinstance(additional, dict):
            self.additional = Node(additional, f"{where}.additionalProperties", errors)
        elif additional is True:
            self.additional = Node({}, f"{where}.additionalProperties", errors)
            self.additional.preserve_unknown = True
        self.items: Node | None = (
            Node(raw["items"], f"{where}.items", errors) if isinstance(raw.get("items"), dict) else None
        )
        self.all_of = [Node(s, f"{where}.allOf", []) for s in raw.get("allOf") or []]
        self.any_of = [Node(s, f"{where}.anyOf", []) for s in raw.get("anyOf") or []]
        self.one_of = [Node(s, f"{where}.oneOf", []) for s in raw.get("oneOf") or []]
        self.not_ = Node(raw["not"], f"{where}.not", []) if isinstance(raw.get("not"), dict) else None
        self.rules: list[CelRule] = []
        for index, rule in enumerate(raw.get("x-kubernetes-validations") or []):
            try:
                self.rules.append(CelRule(rule))
            except CelCompileError as exc:
                errors.append(
                    FieldError(
                        "Invalid",
                        f"{where}.x-kubernetes-validations[{index}].rule",
                        rule.get("rule", ""),
                        str(exc),
                    )
                )
        untyped = not self.type and not self.int_or_string and not self.preserve_unknown and where
        if untyped and (not (self.all_of or self.any_of or self.one_of or self.not_) or self.properties):
            errors.append(
                FieldError("Required", f"{where}.type", detail="must not be empty for specified object fields")
            )
        self.has_cel: bool = bool(self.rules) or any(child.has_cel for child in self._children())

    def _children(self) -> list[Node]:
        out = list(self.properties.values())
        if self.additional is not None:
            out.append(self.additional)
        if self.items is not None:
            out.append(self.items)
        return out

    def child(self, key: str) -> Node | None:
        node = self.properties.get(key)
        if node is None:
            node = self.additional
        return node


def compile_schema(raw: dict[str, Any], where: str) -> Node:
    errors: list[FieldError] = []
    node = Node(raw, where, errors)
    if errors:
        raise SchemaCompileError(errors)
    return node


# --------------------------------------------------------------------------- pruning


def prune(value: Any, node: Node | None, root: bool = False, path: str = "", removed: list[str] | None = None) -> Any:
    """Drop fields the schema does not know (in place), like structural pruning.

    Paths of dropped fields are appended to ``removed`` (for ``fieldValidation``)."""
    if node is None:
        return value
    if isinstance(value, dict):
        if node.properties or not node.preserve_unknown:
            for key in list(value):
                if root and key in ROOT_KEYS:
                    continue
                if node.embedded and key in ROOT_KEYS:
                    continue
                sub = f"{path}.{key}" if path else key
                child = node.properties.get(key)
                if child is not None:
                    prune(value[key], child, False, sub, removed)
                elif node.additional is not None:
                    prune(value[key], node.additional, False, sub, removed)
                elif not node.preserve_unknown:
                    del value[key]
                    if removed is not None:
                        removed.append(sub)
        return value
    if isinstance(value, list) and node.items is not None:
        for index, item in enumerate(value):
            prune(item, node.items, False, f"{path}[{index}]", removed)
    return value


def prune_nulls(value: Any, node: Node | None) -> None:
    """``PruneNonNullableNullsWithoutDefaults``."""
    if node is None:
        return
    if isinstance(value, dict):
        for key in list(value):
            child: Node | None = node.properties.get(key) or node.additional
            if child is None:
                continue
            if value[key] is None and child.default is _NO_DEFAULT and not child.nullable:
                del value[key]
            else:
                prune_nulls(value[key], child)
    elif isinstance(value, list) and node.items is not None:
        for item in value:
            prune_nulls(item, node.items)


def _non_nullable_null(value: Any, node: Node) -> bool:
    return value is None and not node.nullable


def apply_defaults(value: Any, node: Node | None) -> None:
    """Structural defaulting (in place); nested defaults apply only under present parents."""
    if node is None:
        return
    if isinstance(value, dict):
        for key, child in node.properties.items():
            if child.default is _NO_DEFAULT:
                continue
            if key not in value or _non_nullable_null(value[key], child):
                value[key] = copy.deepcopy(child.default)
        for key in list(value):
            prop = node.properties.get(key)
            if prop is not None:
                apply_defaults(value[key], prop)
            elif node.additional is not None:
                add = node.additional
                if _non_nullable_null(value[key], add) and add.default is not _NO_DEFAULT:
                    value[key] = copy.deepcopy(add.default)
                apply_defaults(value[key], add)
    elif isinstance(value, list) and node.items is not None:
        items = node.items
        for index, item in enumerate(value):
            if _non_nullable_null(item, items) and items.default is not _NO_DEFAULT:
                value[index] = copy.deepcopy(items.default)
            apply_defaults(value[index], items)


def normalize(obj: dict[str, Any], node: Node, removed: list[str] | None = None) -> dict[str, Any]:
    """Prune unknown fields, drop non-nullable nulls, apply defaults (decoder order)."""
    prune(obj, node, root=True, removed=removed)
    prune_nulls(obj, node)
    apply_defaults(obj, node)
    return obj


# --------------------------------------------------------------------------- validation


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "unknown"


def _type_ok(value: Any, expected: str) -> bool:
    actual = _json_type(value)
    if expected == actual:
        return True
    if expected == "number" and actual == "integer":
        return True
    if expected == "integer" and actual == "number":
        return float(value).is_integer()
    return False


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def _format_ok(value: str, fmt: str) -> bool:
    try:
        if fmt == "date-time" or fmt == "datetime":
            text = value.replace("Z", "+00:00").replace("z", "+00:00")
            _dt.datetime.fromisoformat(text)
            return "T" in value.upper() or " " in value
        if fmt == "date":
            _dt.date.fromisoformat(value)
            return True
        if fmt in ("uuid", "uuid3", "uuid4", "uuid5"):
            uuid.UUID(value)
            return len(value) == 36
        if fmt == "byte":
            base64.b64decode(value, validate=True)
            return True
    except (ValueError, TypeError):
        return False
    return True


def validate(value: Any, node: Node, path: str, errors: list[FieldError]) -> None:
    """Validate one value like kube-openapi's schema validator, appending to ``errors``."""
    where = path or ""
    in_body = f"{where} in body" if where else "in body"
    if value is None:
        if node.nullable or (node.preserve_unknown and not node.type):
            return
        if node.type or node.int_or_string:
            expected = "integer,string" if node.int_or_string else node.type
            errors.append(FieldError("Invalid", where, None, f'{in_body} must be of type {expected}: "null"'))
        return
    # type
    if node.int_or_string:
        if not (_type_ok(value, "integer") or isinstance(value, str)):
            errors.append(
                FieldError("Invalid", where, value, f'{in_body} must be of type integer,string: "{_json_type(value)}"')
            )
            return
    elif node.type and not _type_ok(value, node.type):
        errors.append(
            FieldError("Invalid", where, value, f'{in_body} must be of type {node.type}: "{_json_type(value)}"')
        )
        return
    # allOf / anyOf / oneOf / not (value validation only)
    for sub in node.all_of:
        validate(value, sub, path, errors)
    if node.any_of and not any(_valid(value, sub, path) for sub in node.any_of):
        errors.append(FieldError("Invalid", where, value, f"{in_body} must validate at least one schema (anyOf)"))
    if node.one_of:
        matches = sum(1 for sub in node.one_of if _valid(value, sub, path))
        if matches != 1:
            errors.append(
                FieldError("Invalid", where, value, f"{in_body} must validate one and only one schema (oneOf)")
            )
    if node.not_ is not None and _valid(value, node.not_, path):
        errors.append(FieldError("Invalid", where, value, f"{in_body} must not validate the schema (not)"))
    # string: go-openapi reports only the first failing check (maxLength, minLength, pattern)
    if isinstance(value, str):
        length = len(value)
        if node.max_length is not None and length > node.max_length:
            errors.append(
                FieldError("Invalid", where, value, f"{in_body} should be at most {node.max_length} chars long")
            )
        elif node.min_length is not None and length < node.min_length:
            errors.append(
                FieldError("Invalid", where, value, f"{in_body} should be at least {node.min_length} chars long")
            )
        elif node.pattern is not None and not node.pattern.search(value):
            errors.append(FieldError("Invalid", where, value, f"{in_body} should match '{node.pattern_text}'"))
        if node.format and not _format_ok(value, node.format):
            errors.append(FieldError("Invalid", where, value, f"{in_body} must be of type {node.format}: {_q(value)}"))
    # number: range of the format, then multipleOf, minimum, maximum (all reported)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if node.format in _RANGES and isinstance(value, int):
            low, high = _RANGES[node.format]
            if not low <= value <= high:
                errors.append(
                    FieldError("Invalid", where, value, f"{in_body} must be of type {node.format}: {_q(_num(value))}")
                )
        if node.multiple_of:
            quotient = value / node.multiple_of
            if not float(quotient).is_integer():
                errors.append(
                    FieldError("Invalid", where, value, f"{in_body} should be a multiple of {_num(node.multiple_of)}")
                )
        if node.minimum is not None:
            if node.exclusive_minimum and value <= node.minimum:
                errors.append(
                    FieldError("Invalid", where, value, f"{in_body} should be greater than {_num(node.minimum)}")
                )
            elif not node.exclusive_minimum and value < node.minimum:
                errors.append(
                    FieldError(
                        "Invalid",
                        where,
                        value,
                        f"{in_body} should be greater than or equal to {_num(node.minimum)}",
                    )
                )
        if node.maximum is not None:
            if node.exclusive_maximum and value >= node.maximum:
                errors.append(
                    FieldError("Invalid", where, value, f"{in_body} should be less than {_num(node.maximum)}")
                )
            elif not node.exclusive_maximum and value > node.maximum:
                errors.append(
                    FieldError(
                        "Invalid", where, value, f"{in_body} should be less than or equal to {_num(node.maximum)}"
                    )
                )
    # array
    if isinstance(value, list):
        if node.min_items is not None and len(value) < node.min_items:
            errors.append(FieldError("Invalid", where, value, f"{in_body} should have at least {node.min_items} items"))
        if node.max_items is not None and len(value) > node.max_items:
            errors.append(FieldError("Invalid", where, value, f"{in_body} should have at most {node.max_items} items"))
        if node.unique_items or node.list_type == "set":
            seen: list[Any] = []
            for index, item in enumerate(value):
                if item in seen:
                    if node.list_type == "set":
                        errors.append(FieldError("Duplicate", f"{where}[{index}]", item))
                    else:
                        errors.append(FieldError("Invalid", where, value, f"{in_body} shouldn't contain duplicates"))
                        break
                seen.append(item)
        if node.list_type == "map" and node.list_map_keys:
            keys_seen: list[tuple[Any, ...]] = []
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    map_key = tuple(item.get(k) for k in node.list_map_keys)
                    if map_key in keys_seen:
                        errors.append(FieldError("Duplicate", f"{where}[{index}]", item))
                    keys_seen.append(map_key)
        if node.items is not None:
            for index, item in enumerate(value):
                validate(item, node.items, f"{where}.{index}" if where else str(index), errors)
    # enum
    if node.enum is not None and not any(_enum_eq(value, allowed) for allowed in node.enum):
        supported = [a if isinstance(a, str) else _json_dump(a) for a in node.enum]
        errors.append(FieldError("NotSupported", where, value, supported=supported))
    # object
    if isinstance(value, dict):
        if node.max_properties is not None and len(value) > node.max_properties:
            errors.append(
                FieldError("Invalid", where, value, f"{in_body} should have at most {node.max_properties} properties")
            )
        if node.min_properties is not None and len(value) < node.min_properties:
            errors.append(
                FieldError("Invalid", where, value, f"{in_body} should have at least {node.min_properties} properties")
            )
        for key in sorted(value):
            if not where and key in ROOT_KEYS:
                continue
            child = node.properties.get(key)
            if child is None:
                child = node.additional
            if child is not None:
                validate(value[key], child, f"{where}.{key}" if where else key, errors)
        for key in node.required:
            if key not in value:
                errors.append(FieldError("Required", f"{where}.{key}" if where else key))


def _valid(value: Any, node: Node, path: str) -> bool:
    errs: list[FieldError] = []
    validate(value, node, path, errs)
    return not errs


def _enum_eq(value: Any, allowed: Any) -> bool:
    if isinstance(value, bool) or isinstance(allowed, bool):
        return isinstance(value, bool) and isinstance(allowed, bool) and value == allowed
    return value == allowed


def _json_dump(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _q(text: str) -> str:
    import json

    return json.dumps(text)


# --------------------------------------------------------------------------- CEL

_CEL_TYPES = {
    "FieldValueInvalid": "Invalid",
    "FieldValueForbidden": "Forbidden",
    "FieldValueRequired": "Required",
    "FieldValueDuplicate": "Duplicate",
}


def _child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def validate_cel(value: Any, old: Any, has_old: bool, node: Node, path: str, errors: list[FieldError]) -> None:
    """Evaluate ``x-kubernetes-validations`` top-down (field.Path formatting for fields)."""
    if not node.has_cel or value is None:
        return
    if node.rules:
        self_value = to_cel(value, node)
        old_value = to_cel(old, node) if has_old else None
        for rule in node.rules:
            failure = rule.evaluate(self_value, old_value, has_old)
            if failure is None:
                continue
            field = path
            if failure.field_path:
                field = path + failure.field_path if failure.field_path.startswith((".", "[")) else path
            err_type = _CEL_TYPES.get(failure.reason, "Invalid")
            if err_type == "Required" or err_type == "Forbidden":
                errors.append(FieldError(err_type, field, detail=failure.message))
            else:
                errors.append(FieldError(err_type, field, value, failure.message))
    if isinstance(value, dict):
        for key in sorted(value):
            if not path and key in ROOT_KEYS:
                continue
            child = node.properties.get(key)
            is_map_entry = False
            if child is None:
                child = node.additional
                is_map_entry = True
            if child is None:
                continue
            child_has_old = has_old and isinstance(old, dict) and key in old
            child_old = old[key] if child_has_old else None
            child_path = f"{path}[{key}]" if is_map_entry else _child_path(path, key)
            validate_cel(value[key], child_old, child_has_old, child, child_path, errors)
    elif isinstance(value, list) and node.items is not None:
        old_by_key: dict[tuple[Any, ...], Any] = {}
        if has_old and isinstance(old, list) and node.list_type == "map" and node.list_map_keys:
            for item in old:
                if isinstance(item, dict):
                    old_by_key[tuple(item.get(k) for k in node.list_map_keys)] = item
        for index, item in enumerate(value):
            item_old = None
            item_has_old = False
            if old_by_key and isinstance(item, dict):
                key = tuple(item.get(k) for k in node.list_map_keys)
                if key in old_by_key:
                    item_old, item_has_old = old_by_key[key], True
            validate_cel(item, item_old, item_has_old, node.items, f"{path}[{index}]", errors)


def validate_object(obj: dict[str, Any], old: dict[str, Any] | None, node: Node) -> list[FieldError]:
    """Schema validation then CEL rules, as kube-apiserver's custom resource strategy does."""
    errors: list[FieldError] = []
    validate(obj, node, "", errors)
    if node.has_cel:
        blocking = any(e.type == "NotSupported" or "must be of type" in e.detail for e in errors)
        if not blocking:
            validate_cel(obj, old, old is not None, node, "", errors)
    return errors
