"""Posts Kubernetes Events about sessions, so that decisions never wait on them.

One Event per transition (never one per reconcile), posted after the status write that
made the transition. A few serial lanes, a session always on the same one: its events
keep their order, while a burst of thousands of transitions is not posted one at a time.
An Event is information, not state: when the API server refuses one, or too many are
waiting, it is dropped and counted, and decisions go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from .errors import ApiError
from .metrics import Metrics
from .model import SessionView

log = logging.getLogger(__name__)


class EventApi(Protocol):
    async def create_event(
        self,
        involved: Mapping[str, str],
        *,
        reason: str,
        message: str,
        event_type: str = "Normal",
        component: str = "session-operator",
        instance: str = "",
    ) -> dict[str, Any]: ...


class EventPoster:
    def __init__(
        self, api: EventApi, instance: str, metrics: Metrics, *, lanes: int = 4, capacity: int = 10_000
    ) -> None:
        self._api = api
        self._instance = instance
        self._metrics = metrics
        self._lanes: list[asyncio.Queue[tuple[SessionView, str, str, str]]] = [
            asyncio.Queue(capacity // lanes) for _ in range(lanes)
        ]

    def post(self, session: SessionView, reason: str, message: str, event_type: str) -> None:
        lane = self._lanes[hash(session.uid) % len(self._lanes)]
        try:
            lane.put_nowait((session, reason, message, event_type))
        except asyncio.QueueFull:
            self._metrics.events_dropped.inc()
            log.warning("Dropped event %s for session %s/%s: queue full", reason, session.namespace, session.name)

    @property
    def waiting(self) -> int:
        return sum(lane.qsize() for lane in self._lanes)

    async def run(self) -> None:
        await asyncio.gather(*(self._run_lane(lane) for lane in self._lanes))

    async def _run_lane(self, lane: asyncio.Queue[tuple[SessionView, str, str, str]]) -> None:
        while True:
            session, reason, message, event_type = await lane.get()
            involved = {"namespace": session.namespace, "name": session.name, "uid": session.uid}
            try:
                await self._api.create_event(
                    involved, reason=reason, message=message, event_type=event_type, instance=self._instance
                )
                self._metrics.events_posted.labels(reason=reason).inc()
            except ApiError as e:
                self._metrics.events_dropped.inc()
                log.warning("Failed to post event %s for %s/%s: %s", reason, session.namespace, session.name, e)
