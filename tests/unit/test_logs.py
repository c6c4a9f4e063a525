"""Log formats (text and JSON), levels, and one line per record even with kopf around."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import kopf
import pytest

from session_operator import logs

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (\w+) (\S+) (.*)$")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in logs.CHATTY_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)


def configured(log_format: str, level: str = "INFO") -> io.StringIO:
    stream = io.StringIO()
    logs.configure(log_format, level, stream=stream)
    return stream


def test_text_lines_read_like_kubernetes_ones() -> None:
    stream = configured("text")
    logging.getLogger("session_operator.handlers").info("Activated session %s/%s", "team-a", "x")
    (line,) = stream.getvalue().splitlines()
    match = TEXT_LINE.match(line)
    assert match, line
    assert match.groups() == ("INFO", "session_operator.handlers", "Activated session team-a/x")


def test_timestamp_is_utc_with_milliseconds() -> None:
    assert logs.format_timestamp(1795255200.1239) == "2026-11-21T10:00:00.123Z"


def test_json_lines_parse_with_the_expected_keys() -> None:
    stream = configured("json")
    log = logging.getLogger("session_operator.handlers")
    log.info("Activated session team-a/x", extra=logs.context(namespace="team-a", name="x", target="repo/p"))
    log.warning("Plain line")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert set(first) == {"time", "level", "logger", "message", "namespace", "name", "target"}
    assert first["level"] == "INFO"
    assert first["logger"] == "session_operator.handlers"
    assert first["message"] == "Activated session team-a/x"
    assert (first["namespace"], first["name"], first["target"]) == ("team-a", "x", "repo/p")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", first["time"])
    assert set(second) == {"time", "level", "logger", "message"}
    assert second["level"] == "WARNING"


def test_json_exception_is_a_string_on_the_same_line() -> None:
    stream = configured("json")
    try:
        raise ValueError('bad "thing"\nwith a newline')
    except ValueError:
        logging.getLogger("session_operator").exception("Reconcile failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["level"] == "ERROR"
    assert isinstance(entry["exc_info"], str)
    assert "ValueError" in entry["exc_info"] and "Traceback" in entry["exc_info"]


def test_text_exception_follows_the_line() -> None:
    stream = configured("text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("session_operator").exception("Reconcile failed")
    text = stream.getvalue()
    assert TEXT_LINE.match(text.splitlines()[0])
    assert "ValueError: boom" in text


def test_name_cannot_be_a_logging_extra_so_context_uses_another_key() -> None:
    configured("json")
    with pytest.raises(KeyError):
        logging.getLogger("session_operator").info("x", extra={"name": "x"})
    assert logs.context(namespace="a", name="b") == {"namespace": "a", "object_name": "b"}


def test_kopf_object_records_carry_namespace_and_name() -> None:
    stream = configured("json")
    ref = {"namespace": "team-a", "name": "x", "uid": "u", "kind": "Session", "apiVersion": "v"}
    logging.getLogger("kopf.objects").warning("Handler failed", extra={"k8s_ref": ref})
    entry = json.loads(stream.getvalue())
    assert (entry["logger"], entry["namespace"], entry["name"]) == ("kopf.objects", "team-a", "x")

    stream = configured("text")
    logging.getLogger("kopf.objects").warning("Handler failed", extra={"k8s_ref": ref})
    assert stream.getvalue().rstrip().endswith("kopf.objects [team-a/x] Handler failed")


def test_chatty_loggers_are_quiet_unless_debug() -> None:
    stream = configured("text", "INFO")
    logging.getLogger("kopf.reactor").info("chatter")
    logging.getLogger("aiohttp.access").info("GET /healthz")
    logging.getLogger("kopf.reactor").warning("worth seeing")
    logging.getLogger("session_operator").info("ours")
    messages = [TEXT_LINE.match(line).group(3) for line in stream.getvalue().splitlines()]  # type: ignore[union-attr]
    assert messages == ["worth seeing", "ours"]

    stream = configured("text", "DEBUG")
    logging.getLogger("kopf.reactor").debug("chatter")
    assert "chatter" in stream.getvalue()


def test_configure_twice_keeps_one_handler() -> None:
    configured("text")
    stream = configured("json")
    logging.getLogger("session_operator").info("once")
    assert len(stream.getvalue().splitlines()) == 1
    assert sum(isinstance(h, logs.OperatorHandler) for h in logging.getLogger().handlers) == 1


def test_kopf_lines_go_through_our_handler_once_even_after_kopf_configure() -> None:
    kopf.configure(verbose=True)  # installs kopf's own root handler, as `kopf run` would
    stream = configured("json")
    logging.getLogger("kopf.reactor").warning("from kopf")
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["from kopf"]
    kinds = [type(h).__name__ for h in logging.getLogger().handlers]
    assert "_KopfStreamHandler" not in kinds


def test_bad_format_or_level_is_refused() -> None:
    with pytest.raises(ValueError, match="format"):
        logs.configure("xml", "INFO", stream=io.StringIO())
    with pytest.raises(ValueError, match="level"):
        logs.configure("text", "LOUD", stream=io.StringIO())
