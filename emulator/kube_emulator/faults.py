"""Fault injection and request accounting.

Both are driven from the emulator's event loop; the HTTP control endpoints and
:class:`~kube_emulator.control.EmulatorControl` are the thread-safe
ways in from elsewhere.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

WRITE_METHODS = "^(POST|PUT|PATCH|DELETE)$"
_ids = itertools.count(1)


@dataclass
class Rule:
    kind: str  # "delay" | "fail"
    method: re.Pattern[str]
    path: re.Pattern[str]
    remaining: int | None  # None: until cleared
    seconds: float = 0.0
    status: int = 500
    retry_after: int = 1
    include_watches: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "method": self.method.pattern,
            "path": self.path.pattern,
            "remaining": self.remaining,
            "seconds": self.seconds,
            "status": self.status,
            "retryAfter": self.retry_after,
            "includeWatches": self.include_watches,
        }


class Faults:
    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def add_delay(
        self,
        seconds: float,
        *,
        method: str | None = None,
        path: str | None = None,
        count: int | None = None,
        include_watches: bool = False,
    ) -> int:
        """Add latency to matching requests (all methods by default), ``count`` times or until cleared."""
        rule = Rule(
            "delay",
            re.compile(method or ".*"),
            re.compile(path or ".*"),
            count,
            seconds=seconds,
            include_watches=include_watches,
        )
        self.rules.append(rule)
        return rule.id

    def fail_next(
        self,
        count: int = 1,
        *,
        status: int = 500,
        method: str | None = None,
        path: str | None = None,
        retry_after: int = 1,
    ) -> int:
        """Fail the next ``count`` matching requests (writes by default) with 500, 429 or 409."""
        if status not in (409, 429, 500, 503, 504):
            raise ValueError(f"unsupported injected status {status}")
        rule = Rule(
            "fail",
            re.compile(method or WRITE_METHODS),
            re.compile(path or ".*"),
            count,
            status=status,
            retry_after=retry_after,
        )
        self.rules.append(rule)
        return rule.id

    def remove(self, rule_id: int) -> None:
        self.rules = [r for r in self.rules if r.id != rule_id]

    def clear(self) -> None:
        self.rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        return [r.describe() for r in self.rules]

    def match(self, method: str, path: str, is_watch: bool) -> tuple[float, Rule | None]:
        """Consume matching rules: returns total delay and the failure to inject, if any."""
        delay = 0.0
        failure: Rule | None = None
        for rule in list(self.rules):
            if is_watch and not rule.include_watches and rule.kind == "delay":
                continue
            if not rule.method.search(method) or not rule.path.search(path):
                continue
            if rule.kind == "delay":
                delay += rule.seconds
            elif failure is None:
                failure = rule
            else:
                continue
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self.rules.remove(rule)
        return delay, failure


class RequestCounter:
    """Counts API requests as ``"<verb> <resource>"`` (``"list sessions"``, ``"patch sessions/status"``,
    ``"watch leases"``, ``"get discovery"``), in total and per client (first word of User-Agent)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.by_agent: dict[str, Counter[str]] = {}

    def add(self, key: str, agent: str) -> None:
        self.counts[key] += 1
        self.by_agent.setdefault(agent, Counter())[key] += 1

    def reset(self) -> None:
        self.counts.clear()
        self.by_agent.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "byAgent": {agent: dict(sorted(c.items())) for agent, c in sorted(self.by_agent.items())},
            "total": sum(self.counts.values()),
        }
