"""The words both formats have, each mapped in one place: stop reasons, token usage,
tool-call arguments and error types.

Anthropic's ``input_tokens`` leaves out the tokens read from or written to the prompt cache
(they come as ``cache_read_input_tokens`` and ``cache_creation_input_tokens``); OpenAI's
``prompt_tokens`` includes the cached ones and reports them in
``prompt_tokens_details.cached_tokens``.  The two usage functions below convert so that the
totals agree both ways.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.llm.translate.errors import refuse

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "anthropic_error_type",
    "arguments_to_input",
    "chat_usage",
    "finish_reason",
    "input_to_arguments",
    "messages_usage",
    "stop_reason",
]

#: Anthropic ``stop_reason`` -> Chat Completions ``finish_reason``.  ``pause_turn`` (a server
#: tool paused a long turn) only follows server tools, which no translated request carries.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Chat Completions ``finish_reason`` -> Anthropic ``stop_reason``.  OpenAI does not say whether
#: ``stop`` came from a stop sequence, so it is always ``end_turn``; the deprecated
#: ``function_call`` is a tool call.
_STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason(stop: str | None, *, structured: bool = False) -> str:
    """The ``finish_reason`` for an Anthropic ``stop_reason``.  With ``structured`` (the request
    forced the schema tool), the tool call *is* the answer, so ``tool_use`` finishes with
    ``stop``.  A missing or unknown reason is ``stop`` (the only neutral value the format has)."""
    if stop == "tool_use" and structured:
        return "stop"
    return _FINISH_REASONS.get(stop or "", "stop")


def stop_reason(finish: str | None) -> str:
    """The ``stop_reason`` for a Chat Completions ``finish_reason`` (missing or unknown:
    ``end_turn``)."""
    return _STOP_REASONS.get(finish or "", "end_turn")


#: The error types Anthropic's SDK knows; an OpenAI type is mapped onto one of them.
_ANTHROPIC_ERRORS = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "rate_limit_error",
        "timeout_error",
        "api_error",
        "overloaded_error",
    }
)
_OPENAI_ERRORS = {
    "server_error": "api_error",
    "insufficient_quota": "rate_limit_error",
    "rate_limit_exceeded": "rate_limit_error",
    "requests": "rate_limit_error",  # OpenAI's 429 types name the limit that was hit
    "tokens": "rate_limit_error",
}


#: Anthropic's error ``type`` for each HTTP status it gives one (any other: ``api_error``).
ANTHROPIC_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def anthropic_error_type(openai_type: str | None) -> str:
    """The Anthropic error ``type`` for an OpenAI stream error's type (unknown: ``api_error``,
    a provider fault, which is what an error inside a 200 stream almost always is)."""
    if openai_type in _ANTHROPIC_ERRORS:
        return openai_type
    return _OPENAI_ERRORS.get(openai_type or "", "api_error")


def chat_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic ``usage`` object as Chat Completions ``usage``."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (usage.get("input_tokens") or 0) + cached
    prompt += usage.get("cache_creation_input_tokens") or 0
    completion = usage.get("output_tokens") or 0
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    return out


def messages_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """A Chat Completions ``usage`` object as Anthropic ``usage``."""
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") or 0
    out: dict[str, Any] = {
        "input_tokens": max(0, (usage.get("prompt_tokens") or 0) - cached),
        "output_tokens": usage.get("completion_tokens") or 0,
    }
    if cached:
        out["cache_read_input_tokens"] = cached
    return out


def arguments_to_input(arguments: Any, path: str) -> dict[str, Any]:
    """Chat Completions tool-call ``arguments`` (a JSON string) as an Anthropic ``input``
    object.  An empty string is ``{}`` (some clients send it for a tool without parameters);
    anything that is not a JSON object is refused: Anthropic takes only objects."""
    if not isinstance(arguments, str):
        refuse(path, "must be a string of JSON")
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError as exc:
        refuse(path, f"is not valid JSON ({exc})")
    if not isinstance(value, dict):
        refuse(path, "must be a JSON object: Anthropic tool input is always an object")
    return value


def input_to_arguments(tool_input: Any) -> str:
    """An Anthropic tool ``input`` as Chat Completions ``arguments``: compact JSON, keys in
    the order the model wrote them."""
    return msgspec.json.encode(tool_input).decode()
