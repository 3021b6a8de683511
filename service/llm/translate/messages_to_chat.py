"""Anthropic Messages -> Chat Completions: an Anthropic request (``/v1/messages``) for an
OpenAI-wire provider, and an Anthropic answer for a Chat client.

As in ``chat_to_messages``, each request field has one rule: :data:`_TRANSLATED` lists the
fields with a counterpart, :data:`_REFUSED` those without one and why; anything else is refused
as unknown.

Choices made where the formats differ:

- ``max_tokens`` becomes ``max_tokens``, not ``max_completion_tokens``: every OpenAI-compatible
  server takes the older name, and OpenAI still does for its chat models.
- ``system`` becomes the first message (a string stays a string; text blocks stay text parts).
  A user turn whose only block (besides tool results) is one text block becomes a string.
- ``tool_result`` blocks become ``tool`` messages, placed before the rest of their user turn
  (OpenAI wants the results right after the assistant's calls).  ``is_error`` is not forwarded:
  Chat has no flag for it, and the result's text already says what failed.
- ``thinking`` and ``redacted_thinking`` blocks in earlier assistant turns are left out: they are
  the model's own notes, which Chat has no way to send back and no other model can read (their
  signatures are Anthropic's).  Asking for thinking (the ``thinking`` parameter) is refused.
- ``cache_control`` marks (on blocks, tools, or the whole request) are left out: they tell
  Anthropic where to cache, OpenAI caches prompts by itself.
- ``metadata.user_id`` becomes ``user``.
- A stream asks for ``stream_options.include_usage`` so that ``message_delta`` has the counts.
- ``output_config.format`` (Anthropic's JSON schema output) becomes ``response_format``
  ``json_schema`` with the name ``output``.
- A conversation that ends with an assistant turn (a prefill, which Anthropic continues) is
  refused: a Chat model would answer it with a new message instead.
"""

from __future__ import annotations

import time
from typing import Any

from service.llm.translate import media
from service.llm.translate.errors import refuse
from service.llm.translate.fields import is_unset, list_at, object_at, only_keys, string_at
from service.llm.translate.vocab import (
    chat_usage,
    finish_reason,
    input_to_arguments,
)

__all__ = ["messages_request_to_chat", "messages_response_to_chat"]

_TRANSLATED = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "temperature",
        "top_p",
        "stop_sequences",
        "stream",
        "tools",
        "tool_choice",
        "metadata",
        "output_config",
        "cache_control",  # consumed: see the module docstring
    }
)

#: Anthropic fields with no Chat counterpart, and why.  (Unset values always pass.)
_REFUSED = {
    "top_k": "Chat Completions has no top_k",
    "thinking": "Chat Completions has no extended thinking",
    "container": "containers belong to Anthropic's server tools",
    "mcp_servers": "MCP servers are Anthropic's server tools",
    "context_management": "context management is Anthropic's own",
    "service_tier": "service tiers differ per provider",
    "inference_geo": "inference regions differ per provider",
    "speed": "Chat Completions has no speed setting",
    "diagnostics": "diagnostics are Anthropic's own",
    "user_profile_id": "user profiles are Anthropic's own",
    "workspace_id": "workspaces are Anthropic's own",
}


def messages_request_to_chat(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """The Chat Completions request for an Anthropic Messages request ``body``.

    ``model`` is the provider's model.  Raises :class:`UntranslatableError` naming the first
    field with no counterpart or a shape it cannot read.  Pure; ``body`` is not modified.
    """
    body = object_at(body, "body")
    for key, value in body.items():
        if key in _TRANSLATED or is_unset(value):
            continue
        reason = _REFUSED.get(key)
        if reason is None:
            refuse(key, "is not a Messages field that translates to Chat Completions")
        if key == "thinking" and isinstance(value, dict) and value.get("type") == "disabled":
            continue
        refuse(key, reason)

    messages: list[dict[str, Any]] = []
    if body.get("system") is not None:
        messages.append({"role": "system", "content": _system(body["system"])})
    turns = list_at(body.get("messages"), "messages")
    for i, turn in enumerate(turns):
        messages += _turn(turn, f"messages[{i}]")
    if turns and messages[-1]["role"] == "assistant":
        refuse(
            f"messages[{len(turns) - 1}].role",
            "a last assistant turn asks Anthropic to continue it (prefill); "
            "Chat Completions would answer it with a new message instead",
        )
    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences") is not None:
        stop = list_at(body["stop_sequences"], "stop_sequences")
        for i, item in enumerate(stop):
            string_at(item, f"stop_sequences[{i}]")
        out["stop"] = stop
    if body.get("stream") is not None:
        out["stream"] = body["stream"]
        if body["stream"] is True:
            out["stream_options"] = {"include_usage": True}
    _tools(body, out)
    if body.get("metadata") is not None:
        metadata = object_at(body["metadata"], "metadata")
        only_keys(metadata, ("user_id",), "metadata")
        if metadata.get("user_id") is not None:
            out["user"] = string_at(metadata["user_id"], "metadata.user_id")
    if body.get("output_config") is not None:
        out["response_format"] = _output_config(body["output_config"])
    return out


def _system(system: Any) -> str | list[dict[str, Any]]:
    if isinstance(system, str):
        return system
    parts = [_text(block, f"system[{i}]") for i, block in enumerate(list_at(system, "system"))]
    return parts[0]["text"] if len(parts) == 1 else parts


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    if body.get("tools") is not None:
        out["tools"] = [
            _tool(tool, f"tools[{i}]") for i, tool in enumerate(list_at(body["tools"], "tools"))
        ]
    if body.get("tool_choice") is None:
        return
    choice = object_at(body["tool_choice"], "tool_choice")
    match choice.get("type"):
        case "auto":
            only_keys(choice, ("type", "disable_parallel_tool_use"), "tool_choice")
            out["tool_choice"] = "auto"
        case "any":
            only_keys(choice, ("type", "disable_parallel_tool_use"), "tool_choice")
            out["tool_choice"] = "required"
        case "none":
            only_keys(choice, ("type",), "tool_choice")
            out["tool_choice"] = "none"
        case "tool":
            only_keys(choice, ("type", "name", "disable_parallel_tool_use"), "tool_choice")
            name = string_at(choice.get("name"), "tool_choice.name")
            out["tool_choice"] = {"type": "function", "function": {"name": name}}
        case other:
            refuse("tool_choice.type", f"{other!r} has no Chat Completions counterpart")
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _tool(tool: Any, path: str) -> dict[str, Any]:
    tool = object_at(tool, path)
    if tool.get("type") not in (None, "custom"):
        refuse(f"{path}.type", f"server tool {tool['type']!r} has no Chat Completions counterpart")
    only_keys(
        tool, ("type", "name", "description", "input_schema", "strict", "cache_control"), path
    )
    function: dict[str, Any] = {"name": string_at(tool.get("name"), f"{path}.name")}
    if tool.get("description") is not None:
        function["description"] = tool["description"]
    function["parameters"] = object_at(tool.get("input_schema"), f"{path}.input_schema")
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _output_config(config: Any) -> dict[str, Any]:
    config = object_at(config, "output_config")
    only_keys(config, ("format",), "output_config")
    spec = object_at(config.get("format"), "output_config.format")
    only_keys(spec, ("type", "schema"), "output_config.format")
    if spec.get("type") != "json_schema":
        refuse("output_config.format.type", f"{spec.get('type')!r} has no Chat counterpart")
    schema = object_at(spec.get("schema"), "output_config.format.schema")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}


def _turn(turn: Any, path: str) -> list[dict[str, Any]]:
    """The Chat messages for one Anthropic turn (a user turn with tool results becomes several)."""
    turn = object_at(turn, path)
    only_keys(turn, ("role", "content"), path)
    role = turn.get("role")
    if role not in ("user", "assistant"):
        refuse(f"{path}.role", f"{role!r} is not a Messages role (user or assistant)")
    content = turn.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = [
        object_at(block, f"{path}.content[{j}]")
        for j, block in enumerate(list_at(content, f"{path}.content"))
    ]
    if role == "assistant":
        return [_assistant(blocks, path)]
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        block_path = f"{path}.content[{j}]"
        match block.get("type"):
            case "tool_result":
                results.append(_tool_message(block, block_path))
            case "text":
                parts.append(_text(block, block_path))
            case "image":
                parts.append(media.chat_image(block, block_path))
            case "document":
                parts.append(media.chat_file(block, block_path))
            case other:
                refuse(f"{block_path}.type", f"block {other!r} has no Chat Completions counterpart")
    if len(parts) == 1 and parts[0]["type"] == "text":
        # One text block is just text: a string is what every OpenAI-compatible server takes.
        results.append({"role": "user", "content": parts[0]["text"]})
    elif parts or not results:
        results.append({"role": "user", "content": parts})
    return results


def _assistant(blocks: list[dict[str, Any]], path: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(blocks):
        block_path = f"{path}.content[{j}]"
        match block.get("type"):
            case "text":
                texts.append(_text(block, block_path)["text"])
            case "tool_use":
                only_keys(block, ("type", "id", "name", "input", "cache_control"), block_path)
                calls.append(
                    {
                        "id": string_at(block.get("id"), f"{block_path}.id"),
                        "type": "function",
                        "function": {
                            "name": string_at(block.get("name"), f"{block_path}.name"),
                            "arguments": input_to_arguments(
                                object_at(block.get("input"), f"{block_path}.input")
                            ),
                        },
                    }
                )
            case "thinking" | "redacted_thinking":
                continue  # the model's own notes: see the module docstring
            case other:
                refuse(f"{block_path}.type", f"block {other!r} has no Chat Completions counterpart")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tool_message(block: dict[str, Any], path: str) -> dict[str, Any]:
    only_keys(block, ("type", "tool_use_id", "content", "is_error", "cache_control"), path)
    content = block.get("content")
    if content is None:
        content = ""
    elif not isinstance(content, str):
        content = [
            _text(part, f"{path}.content[{j}]")
            for j, part in enumerate(list_at(content, f"{path}.content"))
        ]
    return {
        "role": "tool",
        "tool_call_id": string_at(block.get("tool_use_id"), f"{path}.tool_use_id"),
        "content": content,
    }


def _text(block: Any, path: str) -> dict[str, Any]:
    block = object_at(block, path)
    if block.get("type") != "text":
        refuse(f"{path}.type", f"only text blocks are allowed here, not {block.get('type')!r}")
    only_keys(block, ("type", "text", "cache_control"), path)
    return {"type": "text", "text": string_at(block.get("text"), f"{path}.text")}


# -- answers -------------------------------------------------------------------------------


def messages_response_to_chat(
    resp: dict[str, Any], *, model: str, structured: bool = False, created: int | None = None
) -> dict[str, Any]:
    """The Chat Completions answer for an Anthropic ``Message``.

    ``model`` is the model name the client asked for; ``created`` the Unix time to report
    (default: now).  Text blocks are joined into ``content``; ``tool_use`` blocks become
    ``tool_calls`` (``arguments`` as compact JSON); thinking blocks are left out (Chat has no
    field for them).  With ``structured`` (the request had ``response_format``, sent as a
    forced tool) the tool's input *is* the answer: it becomes ``content`` as a JSON string,
    with ``finish_reason: stop``; a refusal then goes to ``refusal``, as OpenAI reports one.
    """
    resp = object_at(resp, "response")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(list_at(resp.get("content"), "content")):
        block = object_at(block, f"content[{j}]")
        if block.get("type") == "text":
            texts.append(string_at(block.get("text"), f"content[{j}].text"))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": string_at(block.get("id"), f"content[{j}].id"),
                    "type": "function",
                    "function": {
                        "name": string_at(block.get("name"), f"content[{j}].name"),
                        "arguments": input_to_arguments(block.get("input")),
                    },
                }
            )
        # thinking and redacted_thinking: see the docstring.
    stop = resp.get("stop_reason")
    content = "".join(texts) if texts else None
    refusal = None
    if structured and calls:
        content, calls = calls[0]["function"]["arguments"], []
    elif structured and stop == "refusal":
        content, refusal = None, content
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": refusal,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": string_at(resp.get("id"), "id"),
        "object": "chat.completion",
        "created": created if created is not None else _now(),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(stop, structured=structured),
            }
        ],
    }
    if resp.get("usage") is not None:
        out["usage"] = chat_usage(object_at(resp["usage"], "usage"))
    return out


def _now() -> int:
    return int(time.time())
