"""Reading plain JSON dicts with paths: the shape checks every table shares.

The translations take what a client sent as decoded JSON (dicts, lists, strings), so every
access is checked here, and a wrong shape becomes :class:`UntranslatableError` naming the path
(``messages[1].tool_calls[0].function``) rather than a ``KeyError`` or a ``TypeError`` deep in
a table.  Only the structure the translation needs is checked; values that pass through (a
JSON schema, a text) are the provider's to judge.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from service.llm.translate.errors import refuse

__all__ = ["cache_control", "is_unset", "list_at", "object_at", "only_keys", "string_at"]


def is_unset(value: Any) -> bool:
    """True for the values a client sends when it means "not set": None (the OpenAI SDK's
    ``model_dump()`` of a message is full of them) and empty lists or dicts."""
    return value is None or value == [] or value == {}


def object_at(value: Any, path: str) -> dict[str, Any]:
    """``value`` as a JSON object, or a refusal naming ``path``."""
    if not isinstance(value, dict):
        refuse(path, f"must be an object, not {_kind(value)}")
    return value


def list_at(value: Any, path: str) -> list[Any]:
    """``value`` as a JSON array, or a refusal naming ``path``."""
    if not isinstance(value, list):
        refuse(path, f"must be an array, not {_kind(value)}")
    return value


def string_at(value: Any, path: str) -> str:
    """``value`` as a JSON string, or a refusal naming ``path``."""
    if not isinstance(value, str):
        refuse(path, f"must be a string, not {_kind(value)}")
    return value


def only_keys(obj: dict[str, Any], allowed: Collection[str], path: str) -> None:
    """Refuse the first key of ``obj`` outside ``allowed`` whose value is set (``path`` is the
    object's path; the error names ``path.key``).  Unset values (see :func:`is_unset`) are
    accepted whatever the key: they ask for nothing."""
    for key, value in obj.items():
        if key not in allowed and not is_unset(value):
            refuse(_join(path, key), "has no counterpart in the target format")


def cache_control(source: dict[str, Any], block: dict[str, Any], path: str) -> None:
    """Copy ``source``'s ``cache_control`` (Anthropic's prompt-cache mark) onto ``block``, when
    it is set; ``path`` is ``source``'s path."""
    mark = source.get("cache_control")
    if mark is not None:
        block["cache_control"] = object_at(mark, _join(path, "cache_control"))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
