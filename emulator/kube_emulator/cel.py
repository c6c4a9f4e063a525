"""CEL ``x-kubernetes-validations`` rules, evaluated with cel-python (``celpy``).

Each rule is compiled once per CRD version. ``self`` is the value at the rule's
schema node and ``oldSelf`` the value at the same place in the stored object; a
rule that mentions ``oldSelf`` (a *transition rule*) is evaluated only on an
update where the old value exists, as in Kubernetes.

Not emulated: the runtime cost budget and estimated-cost checks, the Kubernetes
CEL libraries beyond a handful of string/list helpers (``lowerAscii``,
``upperAscii``, ``trim``, ``replace``, ``split``, ``join``, ``indexOf``,
``lastIndexOf``, ``isSorted``, ``sum``, ``min``, ``max``, ``find``, ``findAll``),
and ``optional`` types.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes

_OLD_SELF = re.compile(r"\boldSelf\b")


class CelCompileError(Exception):
    pass


def _s(value: Any) -> str:
    return str(value)


def _lower(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).lower())


def _upper(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).upper())


def _trim(value: Any) -> celtypes.StringType:
    return celtypes.StringType(_s(value).strip())


def _replace(value: Any, old: Any, new: Any, count: Any = None) -> celtypes.StringType:
    n = -1 if count is None else int(count)
    return celtypes.StringType(_s(value).replace(_s(old), _s(new), n))


def _split(value: Any, sep: Any, count: Any = None) -> celtypes.ListType:
    n = -1 if count is None else int(count) - 1
    parts = _s(value).split(_s(sep), n) if n != -2 else []
    return celtypes.ListType([celtypes.StringType(p) for p in parts])


def _join(value: Any, sep: Any = "") -> celtypes.StringType:
    return celtypes.StringType(_s(sep).join(_s(v) for v in value))


def _index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, celtypes.ListType):
        for i, v in enumerate(value):
            if v == item:
                return celtypes.IntType(i)
        return celtypes.IntType(-1)
    return celtypes.IntType(_s(value).find(_s(item)))


def _last_index_of(value: Any, item: Any) -> celtypes.IntType:
    if isinstance(value, celtypes.ListType):
        for i in range(len(value) - 1, -1, -1):
            if value[i] == item:
                return celtypes.IntType(i)
        return celtypes.IntType(-1)
    return celtypes.IntType(_s(value).rfind(_s(item)))


def _is_sorted(value: Any) -> celtypes.BoolType:
    items = list(value)
    return celtypes.BoolType(all(items[i] <= items[i + 1] for i in range(len(items) - 1)))


def _sum(value: Any) -> Any:
    items = list(value)
    if not items:
        return celtypes.IntType(0)
    total = items[0]
    for item in items[1:]:
        total = total + item
    return total


def _min(value: Any) -> Any:
    return min(list(value))


def _max(value: Any) -> Any:
    return max(list(value))


def _find(value: Any, pattern: Any) -> celtypes.StringType:
    import re2

    match = re2.search(_s(pattern), _s(value))
    return celtypes.StringType(match.group(0) if match else "")


def _find_all(value: Any, pattern: Any, limit: Any = None) -> celtypes.ListType:
    import re2

    found = [m.group(0) for m in re2.finditer(_s(pattern), _s(value))]
    if limit is not None and int(limit) >= 0:
        found = found[: int(limit)]
    return celtypes.ListType([celtypes.StringType(f) for f in found])


FUNCTIONS: dict[str, Any] = {
    "lowerAscii": _lower,
    "upperAscii": _upper,
    "trim": _trim,
    "replace": _replace,
    "split": _split,
    "join": _join,
    "indexOf": _index_of,
    "lastIndexOf": _last_index_of,
    "isSorted": _is_sorted,
    "sum": _sum,
    "min": _min,
    "max": _max,
    "find": _find,
    "findAll": _find_all,
}

_ENV = celpy.Environment()
_SCALARS = (celtypes.StringType, celtypes.IntType, celtypes.DoubleType, celtypes.BoolType, type(None))


@dataclass
class CelResult:
    ok: bool
    message: str
    reason: str
    field_path: str
    error: bool = False


class CelRule:
    """One compiled ``x-kubernetes-validations`` entry."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.rule: str = spec.get("rule", "")
        self.message: str = spec.get("message", "") or ""
        self.message_expression: str = spec.get("messageExpression", "") or ""
        self.reason: str = spec.get("reason", "") or "FieldValueInvalid"
        self.field_path: str = spec.get("fieldPath", "") or ""
        self.transition = bool(_OLD_SELF.search(self.rule))
        # The immutability rule is by far the most common; on two scalars of one type,
        # CEL's == is Python's, and celpy's interpreter costs ~0.4 ms a write for it.
        self._is_immutability = "".join(self.rule.split()) in ("self==oldSelf", "oldSelf==self")
        self._memo: dict[tuple[Any, ...], CelResult | None] = {}
        try:
            self._program = _ENV.program(_ENV.compile(self.rule), functions=FUNCTIONS)
        except Exception as exc:  # celpy raises CELParseError and friends
            raise CelCompileError(f"compilation failed: {exc}") from exc
        self._message_program = None
        if self.message_expression:
            try:
                self._message_program = _ENV.program(_ENV.compile(self.message_expression), functions=FUNCTIONS)
            except Exception as exc:
                raise CelCompileError(f"messageExpression compilation failed: {exc}") from exc

    def evaluate(self, self_value: Any, old_value: Any = None, has_old: bool = False) -> CelResult | None:
        """Return ``None`` when the rule passes or does not apply, else a failure."""
        if self.transition and not has_old:
            return None
        if self._is_immutability and isinstance(self_value, _SCALARS) and type(self_value) is type(old_value):
            return None if self_value == old_value else self._failed({"self": self_value, "oldSelf": old_value})
        key = None
        if isinstance(self_value, _SCALARS) and (not self.transition or isinstance(old_value, _SCALARS)):
            # CEL is pure: memoise scalar evaluations (celpy is slow; most writes repeat values)
            key = (type(self_value), self_value, type(old_value), old_value if self.transition else None)
            if key in self._memo:
                return self._memo[key]
        result = self._evaluate(self_value, old_value)
        if key is not None:
            if len(self._memo) > 4096:
                self._memo.clear()
            self._memo[key] = result
        return result

    def _eval_error(self, exc: BaseException) -> str:
        # the rule is named by its message when it has one (ruleErrorString)
        return f"{_cel_go_error(_error_text(exc))} evaluating rule: {(self.message or self.rule).strip()}"

    def _evaluate(self, self_value: Any, old_value: Any) -> CelResult | None:
        activation: dict[str, Any] = {"self": self_value}
        if self.transition:
            activation["oldSelf"] = old_value
        try:
            result = self._program.evaluate(activation)
        except Exception as exc:
            return CelResult(False, self._eval_error(exc), "FieldValueInvalid", "", error=True)
        if isinstance(result, celtypes.BoolType) and bool(result):
            return None
        if not isinstance(result, celtypes.BoolType) and isinstance(result, Exception):
            return CelResult(False, self._eval_error(result), "FieldValueInvalid", "", True)
        return self._failed(activation)

    def _failed(self, activation: dict[str, Any]) -> CelResult:
        message = self.message or f"failed rule: {self.rule.strip()}"
        if self._message_program is not None:
            try:
                rendered = self._message_program.evaluate(activation)
                if isinstance(rendered, str) and rendered.strip():
                    message = str(rendered)
            except Exception:  # falls back to message, as Kubernetes does
                pass
        return CelResult(False, message, self.reason, self.field_path)


def _cel_go_error(text: str) -> str:
    """Reword celpy's errors the way cel-go says them."""
    match = re.search(r"no such member in mapping: '([^']*)'", text)
    if match:
        return f"no such key: {match.group(1)}"
    return text


def _error_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], str):
        return args[0]
    return str(exc)


def to_cel(value: Any, node: Any) -> Any:
    """Convert a JSON value to CEL types, guided by the structural schema node."""
    if value is None:
        return None
    if isinstance(value, bool):
        return celtypes.BoolType(value)
    node_type = getattr(node, "type", None) if node is not None else None
    if isinstance(value, int):
        if node_type == "number":
            return celtypes.DoubleType(float(value))
        return celtypes.IntType(value)
    if isinstance(value, float):
        if node_type == "integer" and value == int(value):
            return celtypes.IntType(int(value))
        return celtypes.DoubleType(value)
    if isinstance(value, str):
        fmt = getattr(node, "format", None) if node is not None else None
        if fmt == "date-time":
            try:
                parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return celtypes.TimestampType(parsed)
            except ValueError:
                pass
        elif fmt == "duration":
            try:
                return celtypes.DurationType(value)
            except Exception:
                pass
        return celtypes.StringType(value)
    if isinstance(value, list):
        item_node = getattr(node, "items", None) if node is not None else None
        return celtypes.ListType([to_cel(v, item_node) for v in value])
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            child = node.child(key) if node is not None else None
            out[celtypes.StringType(key)] = to_cel(item, child)
        return celtypes.MapType(out)
    return celpy.json_to_cel(value)
