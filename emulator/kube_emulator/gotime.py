"""Go ``time.Parse`` for the two layouts Kubernetes uses in JSON, with Go's error wording.

``metav1.Time`` is RFC 3339 (second resolution on output); ``metav1.MicroTime``
must carry exactly six fractional digits.
"""

from __future__ import annotations

import datetime as _dt

RFC3339 = "2006-01-02T15:04:05Z07:00"
RFC3339_MICRO = "2006-01-02T15:04:05.000000Z07:00"

_CHUNKS = {
    RFC3339: ["2006", "-", "01", "-", "02", "T", "15", ":", "04", ":", "05", "Z07:00"],
    RFC3339_MICRO: ["2006", "-", "01", "-", "02", "T", "15", ":", "04", ":", "05", ".000000", "Z07:00"],
}
_DIGITS = {"2006": 4, "01": 2, "02": 2, "15": 2, "04": 2, "05": 2}


class GoTimeError(ValueError):
    pass


def _err(value: str, layout: str, rest: str, chunk: str) -> GoTimeError:
    return GoTimeError(f'parsing time "{value}" as "{layout}": cannot parse "{rest}" as "{chunk}"')


def parse(value: str, layout: str) -> _dt.datetime:
    rest = value
    fields: dict[str, int] = {}
    micro = 0
    tz: _dt.timezone = _dt.UTC
    for chunk in _CHUNKS[layout]:
        if chunk in _DIGITS:
            width = _DIGITS[chunk]
            head = rest[:width]
            if len(head) != width or not head.isdigit():
                raise _err(value, layout, rest, chunk)
            fields[chunk] = int(head)
            rest = rest[width:]
            if chunk == "05" and layout == RFC3339 and rest.startswith("."):
                # Go accepts a fractional second after "05" even if the layout has none.
                index = 1
                while index < len(rest) and rest[index].isdigit():
                    index += 1
                if index == 1:
                    raise _err(value, layout, rest, "Z07:00")
                micro = int((rest[1:index] + "000000")[:6])
                rest = rest[index:]
        elif chunk == ".000000":
            head = rest[:7]
            if len(head) != 7 or head[0] != "." or not head[1:].isdigit():
                raise _err(value, layout, rest, chunk)
            micro = int(head[1:])
            rest = rest[7:]
        elif chunk == "Z07:00":
            if rest.startswith("Z"):
                rest = rest[1:]
            elif len(rest) >= 6 and rest[0] in "+-" and rest[3] == ":" and (rest[1:3] + rest[4:6]).isdigit():
                sign = 1 if rest[0] == "+" else -1
                tz = _dt.timezone(sign * _dt.timedelta(hours=int(rest[1:3]), minutes=int(rest[4:6])))
                rest = rest[6:]
            else:
                raise _err(value, layout, rest, chunk)
        else:
            if not rest.startswith(chunk):
                raise _err(value, layout, rest, chunk)
            rest = rest[len(chunk) :]
    if rest:
        raise GoTimeError(f'parsing time "{value}": extra text: "{rest}"')
    try:
        return _dt.datetime(
            fields["2006"], fields["01"], fields["02"], fields["15"], fields["04"], fields["05"], micro, tz
        )
    except ValueError as exc:
        raise GoTimeError(f'parsing time "{value}": {exc}') from exc


def format_time(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro(moment: _dt.datetime) -> str:
    return moment.astimezone(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now() -> str:
    return format_time(_dt.datetime.now(_dt.UTC))
