"""The namespace's Redis key and channel names (their contents: see ``service.cluster``)."""

from __future__ import annotations


class Keys:
    """The namespace's key and channel names (see the package docstring for their contents)."""

    __slots__ = ("channel", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.channel = f"{namespace}:events"

    def state(self, breaker: str) -> str:
        return f"{self.namespace}:state:{breaker}"

    def lease(self, breaker: str) -> str:
        return f"{self.namespace}:lease:{breaker}"

    def counts(self, breaker: str, second: int) -> str:
        return f"{self.namespace}:counts:{breaker}:{second}"
