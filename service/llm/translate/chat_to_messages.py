"""Chat Completions -> Anthropic Messages: a Chat request for an Anthropic provider, and a Chat
answer for an Anthropic-wire client (``/v1/messages`` served by an OpenAI-wire provider).

Each request field has one rule, found by its name: :data:`_TRANSLATED` lists the fields with a
counterpart (their rules are the ``_`` functions below), :data:`_REFUSED` those without one,
with the reason the error gives.  A field in neither table is refused as unknown, so a
parameter OpenAI adds tomorrow fails loudly instead of vanishing.  A refused field set to its
neutral value (``n: 1``, ``logprobs: false``, ``presence_penalty: 0``, any ``null``) asks for
nothing and passes.

Choices made where the formats differ:

- ``system`` and ``developer`` messages, wherever they are, become the top-level ``system``
  (Anthropic has no system turn): one message stays a string, several become text blocks in
  their order.
- ``tool`` messages become ``tool_result`` blocks of one user turn; a user message right after
  them joins that turn, because Anthropic wants the results first in the turn that follows the
  ``tool_use``.  Other turns pass as they are (Anthropic itself joins consecutive turns).
- ``response_format: json_schema`` becomes a tool named after the schema, with the schema as
  its ``input_schema``, and ``tool_choice`` forcing it; the answer's tool input is then the
  message content (see ``messages_to_chat``).  ``json_object`` does the same with an open
  object schema and a tool named ``json_object``: Anthropic has no JSON mode, and a forced tool
  is the only way to get a JSON object for certain.  Because the forced tool takes the place of
  ``tool_choice``, a structured request that also has ``tools`` or ``tool_choice`` is refused.
- ``user``, ``safety_identifier`` and ``metadata.user_id`` (or ``metadata.user``) all name the
  end user: they become ``metadata.user_id`` (two different values are refused).
- ``temperature`` passes as it is, even above Anthropic's maximum of 1: rescaling would change
  its meaning, and the provider's 400 says what is wrong.
- ``cache_control`` (Anthropic's prompt-cache mark, which OpenAI-format clients of Claude put on
  content parts, messages and tools, as LiteLLM accepts it) is carried to the block it marks;
  on a message it marks the message's last block.
- Whitespace-only ``stop`` sequences (``"\\n"``) are refused: Anthropic refuses them, and dropping
  them would let the answer run on.
- A conversation with tool calls or results but no ``tools`` is refused: Anthropic requires the
  tools to be declared, OpenAI does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.llm.translate import media
from service.llm.translate.errors import refuse
from service.llm.translate.fields import (
    cache_control,
    is_unset,
    list_at,
    object_at,
    only_keys,
    string_at,
)
from service.llm.translate.vocab import arguments_to_input, messages_usage, stop_reason

__all__ = [
    "JSON_OBJECT_TOOL",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "structured_output_requested",
]

#: The forced tool's name for ``response_format: json_object``.
JSON_OBJECT_TOOL = "json_object"

#: Chat fields with a counterpart (or consumed here), each handled by the rule named after it.
_TRANSLATED = frozenset(
    {
        "model",  # replaced by the provider's model
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stream",
        "stream_options",  # consumed: include_usage is the stream translator's business
        "stop",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "metadata",
        "user",
        "safety_identifier",
    }
)


def _never(value: Any) -> bool:
    return False


#: Chat fields with no Anthropic counterpart: field -> (is it neutral?, why it is refused).
_REFUSED: dict[str, tuple[Callable[[Any], bool], str]] = {
    "n": (lambda v: v == 1, "Anthropic returns one choice per request (n > 1)"),
    "logprobs": (lambda v: v is False, "Anthropic returns no log probabilities"),
    "top_logprobs": (lambda v: v == 0, "Anthropic returns no log probabilities"),
    "seed": (_never, "Anthropic has no seeded sampling"),
    "presence_penalty": (lambda v: v == 0, "Anthropic has no presence penalty"),
    "frequency_penalty": (lambda v: v == 0, "Anthropic has no frequency penalty"),
    "logit_bias": (_never, "Anthropic has no logit bias"),
    "modalities": (lambda v: v == ["text"], "Anthropic answers with text only"),
    "audio": (_never, "Anthropic answers with text only"),
    "prediction": (_never, "Anthropic has no predicted outputs"),
    "store": (lambda v: v is False, "Anthropic does not store completions"),
    "reasoning_effort": (_never, "Anthropic's thinking is configured differently"),
    "verbosity": (_never, "Anthropic has no verbosity setting"),
    "service_tier": (lambda v: v in ("auto", "default"), "service tiers differ per provider"),
    "web_search_options": (_never, "Anthropic's web search is a server tool"),
    "functions": (_never, "the deprecated functions API: use tools"),
    "function_call": (_never, "the deprecated functions API: use tool_choice"),
    "prompt_cache_key": (_never, "Anthropic caches by cache_control marks, not by key"),
    "prompt_cache_retention": (_never, "Anthropic caches by cache_control marks, not by key"),
    "moderation": (_never, "Anthropic has no moderation option"),
}


def structured_output_requested(body: dict[str, Any]) -> bool:
    """True when a Chat request asks for JSON (``response_format`` ``json_schema`` or
    ``json_object``): an Anthropic provider then answers through a forced tool, and the answer
    must be translated with ``structured=True``."""
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in (
        "json_schema",
        "json_object",
    )


def chat_request_to_messages(
    body: dict[str, Any], *, model: str, default_max_tokens: int
) -> dict[str, Any]:
    """The Anthropic Messages request for a Chat Completions request ``body``.

    ``model`` is the provider's model (it replaces ``body["model"]``); ``default_max_tokens``
    applies when the request sets neither ``max_tokens`` nor ``max_completion_tokens``
    (Anthropic requires a limit).  Texts and schemas pass through as the same objects
    (nothing is copied that needs no translation).

    Raises :class:`UntranslatableError` naming the first field with no counterpart, or with a
    shape the translation cannot read.  Pure: no I/O, and ``body`` is not modified.
    """
    body = object_at(body, "body")
    for key, value in body.items():
        if key in _TRANSLATED or is_unset(value):
            continue
        rule = _REFUSED.get(key)
        if rule is None:
            refuse(key, "is not a Chat Completions field that translates to Anthropic")
        neutral, reason = rule
        if not neutral(value):
            refuse(key, reason)

    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body, default_max_tokens)}
    system, turns = _messages(list_at(body.get("messages"), "messages"))
    if system is not None:
        out["system"] = system
    out["messages"] = turns
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop") is not None:
        out["stop_sequences"] = _stop(body["stop"])
    if body.get("stream") is not None:
        out["stream"] = body["stream"]
    if body.get("stream_options") is not None:
        only_keys(
            object_at(body["stream_options"], "stream_options"),
            ("include_usage", "include_obfuscation"),
            "stream_options",
        )
    _tools(body, out)
    if "tools" not in out and _has_tool_blocks(turns):
        refuse(
            "tools", "the conversation has tool calls, and Anthropic requires their tools declared"
        )
    user_id = _user_id(body)
    if user_id is not None:
        out["metadata"] = {"user_id": user_id}
    return out


# -- request fields ------------------------------------------------------------------------


def _max_tokens(body: dict[str, Any], default: int) -> int:
    # max_completion_tokens is the current name, max_tokens the deprecated one; both set to
    # different values would leave one of them ignored.
    newer, older = body.get("max_completion_tokens"), body.get("max_tokens")
    if newer is not None and older is not None and newer != older:
        refuse("max_tokens", "conflicts with max_completion_tokens (set one)")
    value = newer if newer is not None else older
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        refuse("max_completion_tokens" if newer is not None else "max_tokens", "must be an integer")
    return value


def _stop(stop: Any) -> list[str]:
    if isinstance(stop, str):
        _stop_sequence(stop, "stop")
        return [stop]
    for i, item in enumerate(list_at(stop, "stop")):
        _stop_sequence(string_at(item, f"stop[{i}]"), f"stop[{i}]")
    return list(stop)


def _stop_sequence(value: str, path: str) -> None:
    if not value.strip():
        refuse(path, "Anthropic refuses stop sequences made only of whitespace")


def _tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    """``tools``, ``tool_choice``, ``parallel_tool_calls`` and ``response_format``: they
    decide together which tools Anthropic gets and how it must use them."""
    tools = [
        _tool(tool, f"tools[{i}]")
        for i, tool in enumerate(list_at(body.get("tools") or [], "tools"))
    ]
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    forced = _response_format(body.get("response_format"))
    if forced is not None:
        if tools or choice is not None:
            refuse(
                "response_format",
                "cannot be combined with tools or tool_choice for an Anthropic provider "
                "(the schema is sent as a forced tool)",
            )
        tools = [forced]
        choice = {"type": "tool", "name": forced["name"]}
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        refuse("parallel_tool_calls", "must be a boolean")
    if parallel is False and tools:
        # Anthropic says it on the tool choice; "none" calls no tool, so there is nothing to say.
        choice = choice or {"type": "auto"}
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice


def _tool(tool: Any, path: str) -> dict[str, Any]:
    tool = object_at(tool, path)
    if tool.get("type") != "function":
        refuse(
            f"{path}.type", f"only function tools translate to Anthropic, not {tool.get('type')!r}"
        )
    only_keys(tool, ("type", "function", "cache_control"), path)
    function = object_at(tool.get("function"), f"{path}.function")
    only_keys(
        function,
        ("name", "description", "parameters", "strict", "cache_control"),
        f"{path}.function",
    )
    out: dict[str, Any] = {"name": string_at(function.get("name"), f"{path}.function.name")}
    if function.get("description") is not None:
        out["description"] = function["description"]
    # OpenAI: "omitting parameters defines a function with an empty parameter list".
    parameters = function.get("parameters")
    out["input_schema"] = (
        parameters if parameters is not None else {"type": "object", "properties": {}}
    )
    if function.get("strict") is not None:
        out["strict"] = function["strict"]
    cache_control(tool, out, path)
    cache_control(function, out, f"{path}.function")
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    match choice:
        case "auto" | "none":
            return {"type": choice}
        case "required":
            return {"type": "any"}
        case {"type": "function"}:
            only_keys(choice, ("type", "function"), "tool_choice")
            function = object_at(choice.get("function"), "tool_choice.function")
            only_keys(function, ("name",), "tool_choice.function")
            return {
                "type": "tool",
                "name": string_at(function.get("name"), "tool_choice.function.name"),
            }
        case {"type": other}:
            refuse("tool_choice.type", f"{other!r} has no Anthropic counterpart")
        case _:
            refuse("tool_choice", "must be 'auto', 'none', 'required' or a function choice")


def _response_format(response_format: Any) -> dict[str, Any] | None:
    """The forced tool that stands for ``response_format``, or None for plain text."""
    if response_format is None:
        return None
    response_format = object_at(response_format, "response_format")
    match response_format.get("type"):
        case "text":
            only_keys(response_format, ("type",), "response_format")
            return None
        case "json_object":
            only_keys(response_format, ("type",), "response_format")
            # Any object, said as Anthropic's own JSON-mode example says it.
            any_object = {"type": "object", "properties": {}, "additionalProperties": True}
            return {"name": JSON_OBJECT_TOOL, "input_schema": any_object}
        case "json_schema":
            only_keys(response_format, ("type", "json_schema"), "response_format")
            path = "response_format.json_schema"
            spec = object_at(response_format.get("json_schema"), path)
            only_keys(spec, ("name", "description", "schema", "strict"), path)
            tool: dict[str, Any] = {"name": string_at(spec.get("name"), f"{path}.name")}
            if spec.get("description") is not None:
                tool["description"] = spec["description"]
            schema = spec.get("schema")
            tool["input_schema"] = schema if schema is not None else {"type": "object"}
            if spec.get("strict") is not None:
                tool["strict"] = spec["strict"]
            return tool
        case other:
            refuse("response_format.type", f"{other!r} has no Anthropic counterpart")


def _user_id(body: dict[str, Any]) -> str | None:
    """The end user's id, from whichever of the fields that carry it are set."""
    candidates: list[tuple[str, Any]] = [
        ("user", body.get("user")),
        ("safety_identifier", body.get("safety_identifier")),
    ]
    if body.get("metadata") is not None:
        metadata = object_at(body["metadata"], "metadata")
        only_keys(metadata, ("user_id", "user"), "metadata")
        candidates += [
            ("metadata.user_id", metadata.get("user_id")),
            ("metadata.user", metadata.get("user")),
        ]
    found: str | None = None
    for path, value in candidates:
        if value is None:
            continue
        value = string_at(value, path)
        if found is not None and value != found:
            refuse(path, "names a different user than another field (Anthropic takes one user_id)")
        found = value
    return found


# -- messages -----------------------------------------------------------------------------


def _messages(
    messages: list[Any],
) -> tuple[str | list[dict[str, Any]] | None, list[dict[str, Any]]]:
    """The ``system`` value and the turns for Chat ``messages``."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    results_turn: dict[str, Any] | None = None  # the user turn that tool results go into
    for i, message in enumerate(messages):
        path = f"messages[{i}]"
        message = object_at(message, path)
        role = message.get("role")
        if role == "tool":
            block = _tool_result(message, path)
            cache_control(message, block, path)
            if results_turn is None:
                results_turn = {"role": "user", "content": []}
                turns.append(results_turn)
            results_turn["content"].append(block)
            continue
        if role == "user" and results_turn is not None:
            results_turn["content"] += _blocks(_marked(_user_content(message, path), message, path))
        elif role == "user":
            turns.append(
                {"role": "user", "content": _marked(_user_content(message, path), message, path)}
            )
        elif role == "assistant":
            content = _marked(_assistant_content(message, path), message, path)
            turns.append({"role": "assistant", "content": content})
        elif role in ("system", "developer"):
            system += _blocks(_marked(_system_content(message, path), message, path))
        else:
            refuse(f"{path}.role", f"{role!r} has no Anthropic counterpart")
        results_turn = None
    if not system:
        return None, turns
    if len(system) == 1 and "cache_control" not in system[0]:
        return system[0]["text"], turns
    return system, turns


def _marked(
    content: str | list[dict[str, Any]], message: dict[str, Any], path: str
) -> str | list[dict[str, Any]]:
    """``content`` with the message's ``cache_control`` on its last block (a string becomes
    one text block so that it can carry the mark)."""
    if message.get("cache_control") is None:
        return content
    blocks = _blocks(content)
    if not blocks:
        refuse(f"{path}.cache_control", "the message has no content to mark")
    blocks[-1] = dict(blocks[-1])
    cache_control(message, blocks[-1], path)
    return blocks


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _has_tool_blocks(turns: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(turn["content"], list)
        and any(block["type"] in ("tool_use", "tool_result") for block in turn["content"])
        for turn in turns
    )


def _system_content(message: dict[str, Any], path: str) -> str | list[dict[str, Any]]:
    only_keys(message, ("role", "content", "cache_control"), path)
    content = message.get("content")
    if isinstance(content, str):
        return content
    return [
        _text_part(part, f"{path}.content[{j}]")
        for j, part in enumerate(list_at(content, f"{path}.content"))
    ]


def _user_content(message: dict[str, Any], path: str) -> str | list[dict[str, Any]]:
    only_keys(message, ("role", "content", "cache_control"), path)
    content = message.get("content")
    if isinstance(content, str):
        return content
    blocks = []
    for j, part in enumerate(list_at(content, f"{path}.content")):
        part_path = f"{path}.content[{j}]"
        part = object_at(part, part_path)
        match part.get("type"):
            case "text":
                blocks.append(_text_part(part, part_path))
            case "image_url":
                blocks.append(media.messages_image(part, part_path))
            case "file":
                blocks.append(media.messages_document(part, part_path))
            case "input_audio":
                refuse(f"{part_path}.type", "Anthropic takes no audio input")
            case other:
                refuse(f"{part_path}.type", f"content part {other!r} has no Anthropic counterpart")
    return blocks


def _assistant_content(message: dict[str, Any], path: str) -> str | list[dict[str, Any]]:
    # annotations (url citations of OpenAI's web search) come back in SDK dumps of answers.
    only_keys(
        message, ("role", "content", "tool_calls", "refusal", "annotations", "cache_control"), path
    )
    content = message.get("content")
    tool_calls = message.get("tool_calls") or []
    refusal = message.get("refusal")
    if isinstance(content, str) and not tool_calls and refusal is None:
        return content
    blocks: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:  # Anthropic refuses empty text blocks; "" beside tool calls means none
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        for j, part in enumerate(list_at(content, f"{path}.content")):
            part_path = f"{path}.content[{j}]"
            part = object_at(part, part_path)
            if part.get("type") == "refusal":
                only_keys(part, ("type", "refusal"), part_path)
                blocks.append(
                    {"type": "text", "text": string_at(part.get("refusal"), f"{part_path}.refusal")}
                )
            else:
                blocks.append(_text_part(part, part_path))
    if refusal is not None:
        # A refusal the model wrote earlier is what it said: it goes back as text.
        blocks.append({"type": "text", "text": string_at(refusal, f"{path}.refusal")})
    for k, call in enumerate(list_at(tool_calls, f"{path}.tool_calls")):
        blocks.append(_tool_use(call, f"{path}.tool_calls[{k}]"))
    return blocks


def _tool_use(call: Any, path: str) -> dict[str, Any]:
    call = object_at(call, path)
    only_keys(call, ("id", "type", "function"), path)
    if call.get("type", "function") != "function":
        refuse(
            f"{path}.type", f"only function tool calls translate to Anthropic, not {call['type']!r}"
        )
    function = object_at(call.get("function"), f"{path}.function")
    only_keys(function, ("name", "arguments"), f"{path}.function")
    return {
        "type": "tool_use",
        "id": string_at(call.get("id"), f"{path}.id"),
        "name": string_at(function.get("name"), f"{path}.function.name"),
        "input": arguments_to_input(function.get("arguments"), f"{path}.function.arguments"),
    }


def _tool_result(message: dict[str, Any], path: str) -> dict[str, Any]:
    only_keys(message, ("role", "content", "tool_call_id", "cache_control"), path)
    content = message.get("content")
    if not isinstance(content, str):
        content = [
            _text_part(part, f"{path}.content[{j}]")
            for j, part in enumerate(list_at(content, f"{path}.content"))
        ]
    return {
        "type": "tool_result",
        "tool_use_id": string_at(message.get("tool_call_id"), f"{path}.tool_call_id"),
        "content": content,
    }


def _text_part(part: Any, path: str) -> dict[str, Any]:
    part = object_at(part, path)
    if part.get("type") != "text":
        refuse(f"{path}.type", f"only text parts are allowed here, not {part.get('type')!r}")
    only_keys(part, ("type", "text", "cache_control"), path)
    block = {"type": "text", "text": string_at(part.get("text"), f"{path}.text")}
    cache_control(part, block, path)
    return block


# -- answers -------------------------------------------------------------------------------


def chat_response_to_messages(resp: dict[str, Any], *, model: str) -> dict[str, Any]:
    """The Anthropic ``Message`` for a Chat Completions answer (its first choice).

    ``model`` is the model name the client asked for.  Text becomes one ``text`` block, a
    refusal a ``text`` block with ``stop_reason: refusal``, tool calls ``tool_use`` blocks (their
    ``arguments`` decoded: arguments that are not a JSON object are refused, since Anthropic's
    ``input`` is always one).  Raises :class:`UntranslatableError` for an answer without a
    choice or with a shape it cannot read.
    """
    resp = object_at(resp, "response")
    choices = list_at(resp.get("choices"), "choices")
    if not choices:
        refuse("choices", "the answer has no choice")
    choice = object_at(choices[0], "choices[0]")
    message = object_at(choice.get("message"), "choices[0].message")
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if text:
        content.append({"type": "text", "text": string_at(text, "choices[0].message.content")})
    finish = choice.get("finish_reason")
    if message.get("refusal"):
        content.append(
            {"type": "text", "text": string_at(message["refusal"], "choices[0].message.refusal")}
        )
        finish = "content_filter"
    for k, call in enumerate(
        list_at(message.get("tool_calls") or [], "choices[0].message.tool_calls")
    ):
        content.append(_tool_use(call, f"choices[0].message.tool_calls[{k}]"))
    usage = resp.get("usage")
    return {
        "id": string_at(resp.get("id"), "id"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(finish),
        "stop_sequence": None,
        "usage": messages_usage(object_at(usage, "usage"))
        if usage is not None
        else {"input_tokens": 0, "output_tokens": 0},
    }
