"""Structural openAPIV3Schema handling for custom resources: pruning, defaulting,
validation (with kube-apiserver's error wording), list-type invariants and CEL rules.

Field paths follow what kube-apiserver v1.24 answers (see the transcripts' ``crew-*``
exchanges): schema errors inside array items name the array, not the element
(``status.conditions.status``, never ``.0.`` or ``[0]``), and identical schema errors are
reported once, as kube-openapi's result merging keeps the first error of each message;
list-type (``x-kubernetes-list-type``) and CEL errors do index the element
(``spec.members[1]``).

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
            errors.append(FieldError("Invalid", where, "null", f'{in_body} must be of type {expected}: "null"'))
        return
    # type: the reported value is the JSON type found, and validation goes on (an enum is
    # still checked, and so are the checks that apply to what the value is)
    if node.int_or_string:
        if not (_type_ok(value, "integer") or isinstance(value, str)):
            errors.append(
                FieldError("Invalid", where, value, f'{in_body} must be of type integer,string: "{_json_type(value)}"')
            )
            return
    elif node.type and not _type_ok(value, node.type):
        found = _json_type(value)
        errors.append(FieldError("Invalid", where, found, f'{in_body} must be of type {node.type}: "{found}"'))
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
    # number: multipleOf, minimum, maximum (all reported). v1.24 does not hold integers to
    # the range of their format (int32, int64): only minimum/maximum bound them.
    if isinstance(value, int | float) and not isinstance(value, bool):
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
        if node.unique_items:
            seen: list[str] = []
            for item in value:
                if _set_key(item) in seen:
                    errors.append(FieldError("Invalid", where, value, f"{in_body} shouldn't contain duplicates"))
                    break
                seen.append(_set_key(item))
        if node.items is not None:
            # v1.24 validates every item under the array's own path: no index
            for item in value:
                validate(item, node.items, where, errors)
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


def _openapi_message(err: FieldError) -> tuple[Any, ...]:
    """The text kube-openapi's error would have: its result merging drops an error whose
    text was already reported (so, array items being unindexed, an error repeated in
    several items is reported once, with the first item's value)."""
    if err.type == "Invalid":
        return (err.type, err.detail)
    if err.type == "Required":
        return (err.type, err.field)
    if err.type == "NotSupported":
        return (err.type, err.field, tuple(err.supported or ()))
    return (err.type, err.field, repr(err.value), err.detail)


def validate_schema(value: Any, node: Node) -> list[FieldError]:
    """openAPI v3 schema validation of a whole object, each distinct error once."""
    found: list[FieldError] = []
    validate(value, node, "", found)
    errors: list[FieldError] = []
    seen: set[tuple[Any, ...]] = set()
    for err in found:
        key = _openapi_message(err)
        if key not in seen:
            seen.add(key)
            errors.append(err)
    return errors


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


# --------------------------------------------------------------------------- list types


class _Unspecified:
    """A list-map item without its key (or a null item): equal only to another such."""

    def __repr__(self) -> str:
        return "<unspecified>"


_UNSPECIFIED_KEY = _Unspecified()


def _set_key(value: Any) -> Any:
    """What makes two set elements equal: Go compares scalars by type and value (1 and 1.0
    and true differ) and objects and arrays by their JSON (keys sorted)."""
    if isinstance(value, dict | list):
        return ("json", _json_dump_sorted(value))
    if value is _UNSPECIFIED_KEY:
        return ("unspecified",)
    return ("scalar", type(value).__name__, value)


def _json_dump_sorted(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def _first_repeats(values: list[Any]) -> list[int]:
    """Indices of the first repetition of each repeated element (a third copy is not reported)."""
    counts: dict[Any, int] = {}
    repeats: list[int] = []
    for index, value in enumerate(values):
        key = _set_key(value)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] == 2:
            repeats.append(index)
    return repeats


def _list_map_errors(value: list[Any], node: Node, path: str) -> list[FieldError]:
    for index, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            return [FieldError("Invalid", f"{path}[{index}]", item, "must be an object for an array of list-type map")]
    if len(value) <= 1:
        return []
    keys: list[Any] = []
    for item in value:
        if len(node.list_map_keys) == 1:
            name = node.list_map_keys[0]
            keys.append(item[name] if isinstance(item, dict) and name in item else _UNSPECIFIED_KEY)
        else:
            present = item if isinstance(item, dict) else {}
            keys.append({k: present[k] for k in node.list_map_keys if k in present})
    errors = []
    for index in _first_repeats(keys):
        key = keys[index]
        if len(node.list_map_keys) == 1:
            key = {} if key is _UNSPECIFIED_KEY else {node.list_map_keys[0]: key}
        errors.append(FieldError("Duplicate", f"{path}[{index}]", key))
    return errors


def validate_list_types(value: Any, node: Node | None, path: str = "") -> list[FieldError]:
    """The ``x-kubernetes-list-type`` invariants: no element of a ``set`` twice, no key of a
    ``map`` twice (and only objects in a ``map``). Paths index the element."""
    errors: list[FieldError] = []
    if node is None:
        return errors
    if isinstance(value, dict):
        if node.additional is not None:
            for key in sorted(value):
                errors.extend(validate_list_types(value[key], node.additional, f"{path}[{key}]"))
        for key in sorted(value):
            child = node.properties.get(key)
            if child is not None:
                errors.extend(validate_list_types(value[key], child, _child_path(path, key)))
    elif isinstance(value, list):
        if node.list_type == "set":
            errors.extend(FieldError("Duplicate", f"{path}[{i}]", value[i]) for i in _first_repeats(value))
        elif node.list_type == "map":
            errors.extend(_list_map_errors(value, node, path))
        if node.items is not None:
            for index, item in enumerate(value):
                errors.extend(validate_list_types(item, node.items, f"{path}[{index}]"))
    return errors


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


_TYPE_ERROR = re.compile(r'must be of type (?:string|integer|number|boolean|array|object|integer,string): "\w+"$')


def validate_object(
    obj: dict[str, Any], old: dict[str, Any] | None, node: Node, *, status: bool = False
) -> list[FieldError]:
    """What kube-apiserver v1.24's custom resource strategy checks, in its order: the schema,
    then the list-type invariants, then CEL rules.

    The list-type invariants are checked on create and on updates of the main resource, and
    there only if the stored object kept them (an object that already breaks them may be
    updated into one that breaks them anew); v1.24 does not check them on writes to the
    status subresource (``status=True``).
    """
    errors = validate_schema(obj, node)
    if not status:
        broken = validate_list_types(obj, node)
        if broken and (old is None or not validate_list_types(old, node)):
            errors.extend(broken)
    # v1.24 evaluates the rules whatever else failed; on a value of the wrong type it then
    # reports cel-go's conversion errors, which are not emulated: the rules are skipped.
    if node.has_cel and not any(e.type == "Invalid" and _TYPE_ERROR.search(e.detail) for e in errors):
        validate_cel(obj, old, old is not None, node, "", errors)
    return errors
