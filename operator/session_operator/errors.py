"""API failures as the operator acts on them, free of any client library.

``kube.py`` raises these; everything else catches them without importing the client.
"""

from __future__ import annotations


class ApiError(Exception):
    """Any failed API call (status 0: no answer, e.g. a connection error or a timeout)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(ApiError):
    """409: a conditional write lost (stale resourceVersion) or a create found the object."""


class NotFound(ApiError):
    """404: the object (or its namespace) does not exist."""
