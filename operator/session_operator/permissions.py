"""Who may take a target from another owner: the verb "preempt" on sessions (RBAC).

The arbiter says which owners' permission a decision needs (``Plan.asks``); this asks
the API server, with one LocalSubjectAccessReview per (namespace, owner), and keeps the
answer for ``ttl`` seconds (10 by default), so a burst of decisions for one owner costs
one request, and a change to a Role or a binding takes effect within that time.
Concurrent questions about the same owner share one request. An answer that cannot be
had (the API server fails) is an error, not a "no": the target is decided again later,
and nothing is evicted on a guess.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from .metrics import Metrics
from .model import PLURAL, Owner
from .policy import PREEMPT_VERB

DEFAULT_TTL = 10.0


class Authorizer(Protocol):
    async def may(self, namespace: str, user: str, groups: Sequence[str], verb: str, resource: str) -> bool: ...


Key = tuple[str, str, tuple[str, ...]]  # (namespace, username, groups)


class Permissions:
    def __init__(
        self,
        api: Authorizer,
        metrics: Metrics | None = None,
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._metrics = metrics
        self._ttl = ttl
        self._clock = clock
        self._answers: dict[Key, tuple[bool, float]] = {}  # -> (allowed, until)
        self._asking: dict[Key, asyncio.Future[bool]] = {}

    @staticmethod
    def _key(namespace: str, owner: Owner) -> Key:
        return (namespace, owner.username, tuple(sorted(owner.groups)))

    def known(self, namespace: str, owners: Iterable[Owner]) -> dict[str, bool]:
        """The answers still fresh for these owners, by username (no request)."""
        now = self._clock()
        known = {}
        for owner in owners:
            answer = self._answers.get(self._key(namespace, owner))
            if answer is not None and answer[1] > now:
                known[owner.username] = answer[0]
        return known

    async def may_preempt(self, namespace: str, owner: Owner) -> bool:
        key = self._key(namespace, owner)
        now = self._clock()
        answer = self._answers.get(key)
        if answer is not None and answer[1] > now:
            return answer[0]
        pending = self._asking.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._asking[key] = future
        try:
            allowed = await self._api.may(namespace, owner.username, list(owner.groups), PREEMPT_VERB, PLURAL)
        except Exception as e:
            future.set_exception(e)
            future.exception()  # retrieved: waiters re-raise it, none is left unobserved
            if self._metrics is not None:
                self._metrics.permission_checks.labels(result="error").inc()
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._asking.pop(key, None)
        future.set_result(allowed)
        self._answers[key] = (allowed, self._clock() + self._ttl)
        if len(self._answers) > 4096:
            now = self._clock()
            for stale in [k for k, (_, until) in self._answers.items() if until <= now]:
                del self._answers[stale]
        if self._metrics is not None:
            self._metrics.permission_checks.labels(result="allowed" if allowed else "denied").inc()
        return allowed
