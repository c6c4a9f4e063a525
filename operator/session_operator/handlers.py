"""kopf wiring only: watch events become "reconcile this target"; no decisions here.

Sessions are indexed by (namespace, target) with ``@kopf.index``, so a reconcile finds
its group in O(1) instead of listing. kopf runs handlers only once every index is filled
from the initial listing, which makes the first round after a start a full resync: every
session's target, and every claim's target, is reconciled once.

Every handler is ``async``: kopf runs plain functions in a thread pool, and these touch
the event loop's queue, which must only be touched from the loop's own thread.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import kopf

from .model import (
    GROUP,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    PLURAL,
    TARGET_ANNOTATION,
    VERSION,
    ActivityClock,
    Claim,
    SessionView,
    rv_order,
)

log = logging.getLogger(__name__)

INDEX_ID = "sessions_by_target"
CLAIM_INDEX_ID = "claims_by_target"
TargetKey = tuple[str, str]


class Wiring:
    """The handlers, bound to one operator run (no module-level state)."""

    def __init__(
        self,
        *,
        enqueue: Callable[[TargetKey], None],
        forget: Callable[[str], None],
        activity: ActivityClock,
        credentials: Callable[[], Awaitable[dict[str, Any]]],
    ) -> None:
        self.registry = kopf.OperatorRegistry()
        self._enqueue = enqueue
        self._forget = forget
        self._activity = activity
        self._credentials = credentials
        # kopf's read-only indices, captured from the first handler call.
        self.index: Any = None
        self.claim_index: Any = None
        self._register()

    def sessions(self, key: TargetKey) -> Iterable[SessionView]:
        if self.index is None:
            return ()
        try:
            return list(self.index[key])
        except KeyError:
            return ()

    def claim(self, key: TargetKey) -> Claim | None:
        """The target's claim as last seen on the watch (the caller overlays its own writes)."""
        if self.claim_index is None:
            return None
        try:
            found = list(self.claim_index[key])
        except KeyError:
            return None
        return max(found, key=lambda c: rv_order(c.resource_version)) if found else None

    def all_sessions(self) -> Iterable[SessionView]:
        if self.index is None:
            return ()
        return [view for key in list(self.index) for view in self.index[key]]

    def _capture(self, kwargs: dict[str, Any]) -> None:
        self.index = kwargs[INDEX_ID]
        self.claim_index = kwargs[CLAIM_INDEX_ID]

    def _register(self) -> None:
        registry = self.registry

        @kopf.on.login(registry=registry)
        async def login(**_: Any) -> kopf.ConnectionInfo:
            # The same kubeconfig / in-cluster credentials the rest of the operator uses.
            return kopf.ConnectionInfo(**await self._credentials())

        @kopf.index(GROUP, VERSION, PLURAL, id=INDEX_ID, registry=registry)
        async def sessions_by_target(
            namespace: str | None, body: kopf.Body, **_: Any
        ) -> dict[TargetKey, SessionView]:
            view = SessionView.from_body(body, self._activity)
            return {(namespace or "", view.target): view}

        @kopf.index(
            "coordination.k8s.io",
            "v1",
            "leases",
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            id=CLAIM_INDEX_ID,
            registry=registry,
        )
        async def claims_by_target(namespace: str | None, body: kopf.Body, **_: Any) -> dict[TargetKey, Claim] | None:
            target = (body.get("metadata", {}).get("annotations") or {}).get(TARGET_ANNOTATION)
            if not isinstance(target, str) or not target:
                return None
            return {(namespace or "", target): Claim.from_body(body)}

        @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
        async def session_event(type: str, namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
            self._capture(kwargs)
            spec = body.get("spec") or {}
            target = spec.get("target") if isinstance(spec, dict) or hasattr(spec, "get") else None
            if type == "DELETED":
                self._forget(body.get("metadata", {}).get("uid", ""))
            if isinstance(target, str):
                self._enqueue((namespace or "", target))

        @kopf.on.event(
            "coordination.k8s.io",
            "v1",
            "leases",
            labels={MANAGED_BY_LABEL: MANAGED_BY_VALUE},
            registry=registry,
        )
        async def claim_event(namespace: str | None, body: kopf.Body, **kwargs: Any) -> None:
            self._capture(kwargs)
            target = (body.get("metadata", {}).get("annotations") or {}).get(TARGET_ANNOTATION)
            if isinstance(target, str) and target:
                self._enqueue((namespace or "", target))
