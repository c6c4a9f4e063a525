"""A mutating webhook's JSON patch, decoded and applied as kube-apiserver v1.24 does it, with the
same error texts: ``response.patch`` is base64 (Go's ``encoding/base64``), the patch is JSON
(Go's ``encoding/json`` scanner) decoded into ``jsonpatch.Patch`` and applied with
``github.com/evanphx/json-patch`` v4.12, whose semantics differ from RFC 6902 in places a
webhook may meet: ``replace`` of a missing object key adds it, ``test`` of a missing key
against ``null`` passes, a path not starting with ``/`` is read from its second segment,
negative array indices count from the end.

Applied to parsed JSON (dicts, lists) rather than to raw bytes, so two scalars are equal for
``test`` when their JSON texts are (``1`` is not ``1.0``), as Go compares compacted bytes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Any


class PatchError(Exception):
    """The patch cannot be decoded or applied; the text is Go's."""


# --------------------------------------------------------------------------- base64


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def b64decode(text: str) -> bytes:
    """``base64.StdEncoding.Decode``, as ``encoding/json`` decodes a ``[]byte``; a ValueError
    says ``illegal base64 data at input byte N`` as Go does."""
    src = text.encode("latin-1", errors="replace") if text.isascii() else text.encode()
    out = bytearray()
    si = 0
    while si < len(src):
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == len(src):
                if not quantum:
                    return bytes(out)
                raise ValueError(f"illegal base64 data at input byte {si - len(quantum)}")
            char = src[si]
            si += 1
            value = _B64.get(chr(char))
            if value is not None:
                quantum.append(value)
                continue
            if char in (0x0A, 0x0D):
                continue
            if char != 0x3D:  # '='
                raise ValueError(f"illegal base64 data at input byte {si - 1}")
            if len(quantum) < 2:
                raise ValueError(f"illegal base64 data at input byte {si - 1}")
            if len(quantum) == 2:  # "==" expected
                while si < len(src) and src[si] in (0x0A, 0x0D):
                    si += 1
                if si == len(src):
                    raise ValueError(f"illegal base64 data at input byte {len(src)}")
                if src[si] != 0x3D:
                    raise ValueError(f"illegal base64 data at input byte {si - 1}")
                si += 1
            while si < len(src) and src[si] in (0x0A, 0x0D):
                si += 1
            _emit(out, quantum)
            if si < len(src):
                raise ValueError(f"illegal base64 data at input byte {si}")
            return bytes(out)
        _emit(out, quantum)
    return bytes(out)


def _emit(out: bytearray, quantum: list[int]) -> None:
    value = 0
    for index in range(4):
        value = value << 6 | (quantum[index] if index < len(quantum) else 0)
    out.extend(value.to_bytes(3, "big")[: len(quantum) - 1])


# --------------------------------------------------------------------------- JSON syntax


_SPACE = frozenset(b" \t\r\n")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_MAX_DEPTH = 10000


def _quote_rune(data: bytes, at: int) -> str:
    """``jsonwire.QuoteRune``: the UTF-8 rune at ``data[at]`` quoted like ``strconv.QuoteRune``
    (an invalid byte as ``'\\xNN'``)."""
    char = ""
    for size in (1, 2, 3, 4):
        try:
            char = data[at : at + size].decode()
            break
        except UnicodeDecodeError:
            continue
    if not char:
        return f"'\\x{data[at]:x}'"
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    if char in escapes:
        return f"'{escapes[char]}'"
    if char in "'\\":
        return f"'\\{char}'"
    code = ord(char)
    if code < 0x20 or code == 0x7F:
        return f"'\\x{code:02x}'"
    if char != " " and unicodedata.category(char)[0] in "CZ":
        return f"'\\u{code:04x}'" if code <= 0xFFFF else f"'\\U{code:08x}'"
    return f"'{char}'"


class _SyntaxError(Exception):
    pass


class _EndOfInput(Exception):
    pass


# Go 1.27 (which built the recorded server) backs encoding/json v1 with v2 and rewords some of
# the classic scanner's errors; these are the texts it gives instead
_V2_CONTEXT = {
    "in string literal": "in string",
    "after decimal point in numeric literal": "in numeric literal",
    "in exponent of numeric literal": "in numeric literal",
}


class _Scanner:
    """A port of Go's ``encoding/json`` scanner: one step function per state; the errors are
    worded as Go 1.27's v1-on-v2 ``checkValid`` words them."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0  # the index of the byte being stepped
        self.skip = 0  # bytes of a \u escape already checked
        self.step = self.begin_value
        self.stack: list[str] = []  # "key", "value" (in an object), "array"
        self.end_top = False

    def error(self, c: int, context: str) -> _SyntaxError:
        if self.at >= len(self.data):
            raise _EndOfInput
        context = _V2_CONTEXT.get(context, context)
        return _SyntaxError(f"invalid character {_quote_rune(self.data, self.at)} {context}")

    def push(self, c: int, state: str) -> None:
        self.stack.append(state)
        if len(self.stack) > _MAX_DEPTH:
            raise self.error(c, "exceeded max depth")

    def pop(self) -> None:
        self.stack.pop()
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
        else:
            self.step = self.end_value

    def begin_value_or_empty(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == 0x5D:
            self.end_value(c)
            return
        self.begin_value(c)

    def begin_value(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == 0x7B:
            self.step = self.begin_string_or_empty
            self.push(c, "key")
        elif c == 0x5B:
            self.step = self.begin_value_or_empty
            self.push(c, "array")
        elif c == 0x22:
            self.step = self.in_string
        elif c == 0x2D:
            self.step = self.neg
        elif c == 0x30:
            self.step = self.zero
        elif c == 0x74:
            self.step = self.literal("true", 1)
        elif c == 0x66:
            self.step = self.literal("false", 1)
        elif c == 0x6E:
            self.step = self.literal("null", 1)
        elif 0x31 <= c <= 0x39:
            self.step = self.digits
        else:
            raise self.error(c, "looking for beginning of value")

    def begin_string_or_empty(self, c: int) -> None:
        if c in _SPACE:
            return
        if c == 0x7D:
            self.stack[-1] = "value"
            self.end_value(c)
            return
        self.begin_string(c)

    def begin_string(self, c: int) -> None:
        if c in _SPACE:
            return
        if c != 0x22:
            raise self.error(c, "looking for beginning of object key string")
        self.step = self.in_string

    def end_value(self, c: int) -> None:
        if not self.stack:
            self.step = self.end_top_state
            self.end_top = True
            self.end_top_state(c)
            return
        if c in _SPACE:
            self.step = self.end_value
            return
        top = self.stack[-1]
        if top == "key":
            if c != 0x3A:
                raise self.error(c, "after object key")
            self.stack[-1] = "value"
            self.step = self.begin_value
        elif top == "value":
            if c == 0x2C:
                self.stack[-1] = "key"
                self.step = self.begin_string
            elif c == 0x7D:
                self.pop()
            else:
                raise self.error(c, "after object key:value pair")
        elif c == 0x2C:
            self.step = self.begin_value
        elif c == 0x5D:
            self.pop()
        else:
            raise self.error(c, "after array element")

    def end_top_state(self, c: int) -> None:
        if c not in _SPACE:
            raise self.error(c, "after top-level value")

    def in_string(self, c: int) -> None:
        if self.skip:
            self.skip -= 1
            return
        if c == 0x22:
            self.step = self.end_value
        elif c == 0x5C:
            self.step = self.in_string_escape
        elif c < 0x20:
            raise self.error(c, "in string literal")

    def in_string_escape(self, c: int) -> None:
        if self.at >= len(self.data):
            raise _EndOfInput
        if c in b'bfnrt\\/"':
            self.step = self.in_string
            return
        if c != 0x75:
            raise _SyntaxError(f"invalid escape sequence {_go_text(self.data[self.at - 1 : self.at + 1])} in string")
        digits = self.data[self.at + 1 : self.at + 5]
        if not all(d in _HEX for d in digits):
            text = self.data[self.at - 1 : self.at + 1 + len(digits)]
            raise _SyntaxError(f"invalid escape sequence {_go_text(text)} in string")
        if len(digits) < 4:
            raise _EndOfInput
        self.step = self.in_string
        self.skip = 4

    def neg(self, c: int) -> None:
        if c == 0x30:
            self.step = self.zero
        elif 0x31 <= c <= 0x39:
            self.step = self.digits
        else:
            raise self.error(c, "in numeric literal")

    def digits(self, c: int) -> None:
        if 0x30 <= c <= 0x39:
            return
        self.zero(c)

    def zero(self, c: int) -> None:
        if c == 0x2E:
            self.step = self.dot
        elif c in (0x65, 0x45):
            self.step = self.exponent
        else:
            self.end_value(c)

    def dot(self, c: int) -> None:
        if not 0x30 <= c <= 0x39:
            raise self.error(c, "after decimal point in numeric literal")
        self.step = self.fraction

    def fraction(self, c: int) -> None:
        if 0x30 <= c <= 0x39:
            return
        if c in (0x65, 0x45):
            self.step = self.exponent
        else:
            self.end_value(c)

    def exponent(self, c: int) -> None:
        if c in (0x2B, 0x2D):
            self.step = self.exponent_sign
            return
        self.exponent_sign(c)

    def exponent_sign(self, c: int) -> None:
        if not 0x30 <= c <= 0x39:
            raise self.error(c, "in exponent of numeric literal")
        self.step = self.exponent_digits

    def exponent_digits(self, c: int) -> None:
        if 0x30 <= c <= 0x39:
            return
        self.end_value(c)

    def literal(self, word: str, at: int) -> Any:
        def step(c: int) -> None:
            if c != ord(word[at]):
                raise self.error(c, f"in literal {word} (expecting '{word[at]}')")
            self.step = self.end_value if at + 1 == len(word) else self.literal(word, at + 1)

        return step


def _go_text(raw: bytes) -> str:
    """``InvalidTextError``'s quoting of a text of several runes: in backquotes, or as
    ``strconv.Quote`` does if it holds spaces, backquotes or what is not printable."""
    text = raw.decode(errors="replace")
    if not any(c == "`" or c == "\ufffd" or c.isspace() or not c.isprintable() for c in text):
        return f"`{text}`"
    out = []
    at = 0
    while at < len(raw):
        rune = _quote_rune(raw, at)[1:-1]
        size = 1
        if not rune.startswith("\\x"):
            size = len(raw[at:].decode(errors="ignore")[:1].encode()) or 1
        out.append({"\\'": "'", '"': '\\"'}.get(rune, rune))
        at += size
    return '"' + "".join(out) + '"'


def syntax_error(data: bytes) -> str | None:
    """What Go's ``checkValid`` says about ``data``, or None if it is valid JSON."""
    scanner = _Scanner(data)
    try:
        for scanner.at, c in enumerate(data):
            scanner.step(c)
        if scanner.end_top:
            return None
        scanner.at = len(data)
        scanner.step(0x20)
    except _SyntaxError as exc:
        return str(exc)
    except _EndOfInput:
        return "unexpected end of JSON input"
    return None if scanner.end_top else "unexpected end of JSON input"


def _go_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    return "number"


def decode_patch(raw: bytes) -> list[dict[str, Any] | None]:
    """``jsonpatch.DecodePatch``: the operations, or PatchError (a JSON syntax error, or a value
    that is not a list of objects)."""
    why = syntax_error(raw)
    if why is not None:
        raise PatchError(why)
    value = json.loads(raw.decode(errors="replace"))
    if value is None:
        return []
    if not isinstance(value, list):
        raise PatchError(f"json: cannot unmarshal {_go_kind(value)} into Go value of type jsonpatch.Patch")
    for index, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            raise PatchError(f"json: cannot unmarshal {_go_kind(item)} into Patch.{index} of type jsonpatch.Operation")
    return value


# --------------------------------------------------------------------------- applying


_MISSING = "missing value"
_INVALID_INDEX = "invalid index referenced"
_ATOI = re.compile(r"^[+-]?[0-9]+$")


class _Missing:
    """An operation's field that is not there (Go: a nil *json.RawMessage)."""


_ABSENT = _Missing()


def _atoi(key: str) -> int:
    if not _ATOI.match(key):
        raise PatchError(f'strconv.Atoi: parsing "{key}": invalid syntax')
    value = int(key)
    if not -(2**63) <= value < 2**63:
        raise PatchError(f'strconv.Atoi: parsing "{key}": value out of range')
    return value


def _decode_key(key: str) -> str:
    return key.replace("~1", "/").replace("~0", "~")


def _string_field(op: dict[str, Any], name: str, missing: str) -> str:
    """``Operation.Path`` / ``Operation.From``: the field as a string, or PatchError."""
    value = op.get(name)
    if value is None:
        raise PatchError(f"{missing}: {_MISSING}")
    if not isinstance(value, str):
        raise PatchError(f"json: cannot unmarshal {_go_kind(value)} into Go value of type string")
    return value


def _find(doc: Any, path: str) -> tuple[Any, str] | None:
    """``findObject``: the container holding the last segment of ``path``, and that segment."""
    split = path.split("/")
    if len(split) < 2 or not isinstance(doc, dict | list):
        return None
    for part in split[1:-1]:
        try:
            child = _get(doc, _decode_key(part))
        except PatchError:
            return None
        if not isinstance(child, dict | list):
            return None
        doc = child
    return doc, _decode_key(split[-1])


def _index(container: list[Any], key: str, size: int) -> int:
    index = _atoi(key)
    if index < 0:
        if index < -size:
            raise PatchError(f"Unable to access invalid index: {index}: {_INVALID_INDEX}")
        index += size
    if index >= size:
        raise PatchError(f"Unable to access invalid index: {index}: {_INVALID_INDEX}")
    _ = container
    return index


def _get(container: Any, key: str) -> Any:
    if isinstance(container, dict):
        return container.get(key)
    return container[_index(container, key, len(container))]


def _add(container: Any, key: str, value: Any) -> None:
    if isinstance(container, dict):
        container[key] = value
        return
    if key == "-":
        container.append(value)
        return
    try:
        index = _atoi(key)
    except PatchError as exc:
        raise PatchError(f"value was not a proper array index: '{key}': {exc}") from exc
    size = len(container) + 1
    if index >= size:
        raise PatchError(f"Unable to access invalid index: {index}: {_INVALID_INDEX}")
    if index < 0:
        if index < -size:
            raise PatchError(f"Unable to access invalid index: {index}: {_INVALID_INDEX}")
        index += size
    container.insert(index, value)


def _remove(container: Any, key: str) -> None:
    if isinstance(container, dict):
        if key not in container:
            raise PatchError(f"Unable to remove nonexistent key: {key}: {_MISSING}")
        del container[key]
        return
    del container[_index(container, key, len(container))]


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(
            (a[k] is None) == (b[k] is None) and (a[k] is None or _equal(a[k], b[k])) for k in a
        )
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        return False
    return json.dumps(a) == json.dumps(b)


def _value(op: dict[str, Any]) -> Any:
    return op.get("value")


def apply_patch(doc: dict[str, Any], operations: list[dict[str, Any] | None]) -> Any:
    """Apply ``operations`` to a copy of ``doc``; returns the result or raises PatchError."""
    result: Any = json.loads(json.dumps(doc))
    for op in operations:
        op = op or {}
        kind = op.get("op")
        kind = kind if isinstance(kind, str) else "unknown"
        if kind == "add":
            result = _op_add(result, op)
        elif kind == "remove":
            _op_remove(result, op)
        elif kind == "replace":
            result = _op_replace(result, op)
        elif kind == "move":
            _op_move(result, op)
        elif kind == "test":
            _op_test(result, op)
        elif kind == "copy":
            _op_copy(result, op)
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return result


def _path_or(op: dict[str, Any], message: str) -> str:
    """The path, or PatchError ``<message>: missing value`` (add, remove: Go drops the cause)."""
    try:
        return _string_field(op, "path", "operation missing path field")
    except PatchError as exc:
        raise PatchError(f"{message}: {_MISSING}") from exc


def _path_wrapped(op: dict[str, Any], message: str, name: str = "path") -> str:
    """The path (or from), or PatchError ``<message>: <cause>``."""
    missing = "operation missing path field" if name == "path" else "operation, missing from field"
    try:
        return _string_field(op, name, missing)
    except PatchError as exc:
        raise PatchError(f"{message}: {exc}") from exc


def _op_add(doc: Any, op: dict[str, Any]) -> Any:
    path = _path_or(op, "add operation failed to decode path")
    found = _find(doc, path)
    if found is None:
        raise PatchError(f'add operation does not apply: doc is missing path: "{path}": {_MISSING}')
    container, key = found
    try:
        _add(container, key, json.loads(json.dumps(_value(op))))
    except PatchError as exc:
        raise PatchError(f"error in add for path: '{path}': {exc}") from exc
    return doc


def _op_remove(doc: Any, op: dict[str, Any]) -> None:
    path = _path_or(op, "remove operation failed to decode path")
    found = _find(doc, path)
    if found is None:
        raise PatchError(f'remove operation does not apply: doc is missing path: "{path}": {_MISSING}')
    container, key = found
    try:
        _remove(container, key)
    except PatchError as exc:
        raise PatchError(f"error in remove for path: '{path}': {exc}") from exc


def _op_replace(doc: Any, op: dict[str, Any]) -> Any:
    path = _path_wrapped(op, "replace operation failed to decode path")
    if path == "":
        value = _value(op)
        if isinstance(value, dict | list):
            return json.loads(json.dumps(value))
        return doc  # neither object nor array: Go wraps a nil error, so nothing happens
    found = _find(doc, path)
    if found is None:
        raise PatchError(f"replace operation does not apply: doc is missing path: {path}: {_MISSING}")
    container, key = found
    if isinstance(container, list):
        try:
            index = _index(container, key, len(container))
        except PatchError as exc:
            raise PatchError(f"replace operation does not apply: doc is missing key: {path}: {_MISSING}") from exc
        container[index] = json.loads(json.dumps(_value(op)))
    else:
        container[key] = json.loads(json.dumps(_value(op)))
    return doc


def _op_move(doc: Any, op: dict[str, Any]) -> None:
    source = _path_wrapped(op, "move operation failed to decode from", "from")
    found = _find(doc, source)
    if found is None:
        raise PatchError(f"move operation does not apply: doc is missing from path: {source}: {_MISSING}")
    container, key = found
    try:
        value = _get(container, key)
        _remove(container, key)
    except PatchError as exc:
        raise PatchError(f"error in move for path: '{key}': {exc}") from exc
    path = _path_wrapped(op, "move operation failed to decode path")
    found = _find(doc, path)
    if found is None:
        raise PatchError(f"move operation does not apply: doc is missing destination path: {path}: {_MISSING}")
    container, key = found
    try:
        _add(container, key, value)
    except PatchError as exc:
        raise PatchError(f"error in move for path: '{path}': {exc}") from exc


def _op_test(doc: Any, op: dict[str, Any]) -> None:
    path = _path_wrapped(op, "test operation failed to decode path")
    failed = PatchError(f"testing value {path} failed: test failed")
    if path == "":
        if not _equal(doc, _value(op)):
            raise failed
        return
    found = _find(doc, path)
    if found is None:
        raise PatchError(f"test operation does not apply: is missing path: {path}: {_MISSING}")
    container, key = found
    try:
        value = _get(container, key)
    except PatchError as exc:
        raise PatchError(f"error in test for path: '{path}': {exc}") from exc
    expected = _value(op)
    if value is None:
        if expected is None:
            return
        raise failed
    if expected is None or not _equal(value, expected):
        raise failed


def _op_copy(doc: Any, op: dict[str, Any]) -> None:
    source = _path_wrapped(op, "copy operation failed to decode from", "from")
    found = _find(doc, source)
    if found is None:
        raise PatchError(f"copy operation does not apply: doc is missing from path: {source}: {_MISSING}")
    container, key = found
    try:
        value = _get(container, key)
    except PatchError as exc:
        raise PatchError(f"error in copy for from: '{source}': {exc}") from exc
    path = _path_or(op, "copy operation failed to decode path")
    found = _find(doc, path)
    if found is None:
        raise PatchError(f"copy operation does not apply: doc is missing destination path: {path}: {_MISSING}")
    container, key = found
    try:
        _add(container, key, json.loads(json.dumps(value)))
    except PatchError as exc:
        raise PatchError(f"error while adding value during copy: {exc}") from exc
