"""What the simulator answers, decided from a request already read into an :class:`Ask`.

Pure and deterministic (no I/O, no clock, no randomness beyond hashes of the input), shared by
both wire formats, so that an OpenAI route and an Anthropic route given the same conversation
answer the same thing and a test can compare them after translation.

The rules, in order:

1. The request offers tools (and does not say ``none``) and the conversation does not end with
   tool results: call a tool.  The forced one when a name is forced, every tool when the last
   user message says "parallel" (and parallel calls are allowed), else the first one.  The
   arguments are built from the tool's JSON schema by :func:`example`: valid for it, the same
   every time.
2. Otherwise answer text: the request body itself when echo is on; a reply to the tool results
   when the conversation ends with them; else a reply repeating the last user message.  A
   ``json_schema`` response format answers ``example(schema)`` as JSON, ``json_object`` a small
   JSON object.  A ``seed`` is mentioned in the text (so a test can see it arrived).
3. ``stop`` sequences cut the text before the first one found; a token limit (words, here) cuts
   it after that many words with finish reason ``length``.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import struct
from typing import Any, Literal

import msgspec

Finish = Literal["stop", "length", "tool_calls"]
ToolMode = Literal["auto", "none", "required"]

_ids = itertools.count(1)
_encoder = msgspec.json.Encoder()


def next_id(prefix: str) -> str:
    """A short unique id (a counter: the simulator needs no uuid4 per answer)."""
    return f"{prefix}{next(_ids)}"


class Tool(msgspec.Struct, frozen=True):
    name: str
    schema: dict[str, Any]


class Ask(msgspec.Struct, frozen=True, kw_only=True):
    """A request, read from either wire format into what the answer depends on."""

    said: str = ""
    tool_results: tuple[str, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_mode: ToolMode = "auto"
    forced_tool: str | None = None
    parallel: bool = True
    json_schema: dict[str, Any] | None = None
    json_object: bool = False
    stop: tuple[str, ...] = ()
    max_tokens: int | None = None
    seed: int | None = None
    prompt_tokens: int = 0
    echo: str | None = None


class ToolCall(msgspec.Struct, frozen=True):
    id: str
    name: str
    arguments: str  # a JSON object, as text (both wire formats stream it as text)


class Answer(msgspec.Struct, frozen=True, kw_only=True):
    text: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    finish: Finish = "stop"
    stop_sequence: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def answer(api: str, ask: Ask, *, preamble: bool = False) -> Answer:
    """The answer to ``ask`` (rules in the module docstring).  ``preamble``: a tool call is
    preceded by a short text, as Claude does when it chooses a tool by itself."""
    if ask.tools and ask.tool_mode != "none" and not ask.tool_results:
        return _call_tools(ask, preamble, "toolu_sim" if api == "anthropic" else "call_sim")
    if ask.echo is not None:
        return Answer(text=ask.echo, prompt_tokens=ask.prompt_tokens, completion_tokens=1)
    if ask.tool_results:
        text = f"Simulated {api} reply to tool results: {' | '.join(ask.tool_results)[:200]}"
    else:
        text = f"Simulated {api} reply to: {ask.said[:200]}"
    if ask.seed is not None:
        text += f" (seed {ask.seed})"
    if ask.json_schema is not None:
        text = _encoder.encode(example(ask.json_schema)).decode()
    elif ask.json_object:
        text = _encoder.encode({"reply": text}).decode()
    finish: Finish = "stop"
    stop_sequence = None
    cut = min(((text.find(stop), stop) for stop in ask.stop if stop and stop in text), default=None)
    if cut is not None:
        text, stop_sequence = text[: cut[0]], cut[1]
    words = deltas(text)
    if ask.max_tokens is not None and len(words) > ask.max_tokens:
        text, finish, stop_sequence = "".join(words[: ask.max_tokens]), "length", None
        words = words[: ask.max_tokens]
    return Answer(
        text=text,
        finish=finish,
        stop_sequence=stop_sequence,
        prompt_tokens=ask.prompt_tokens,
        completion_tokens=len(words),
    )


def _call_tools(ask: Ask, preamble: bool, prefix: str) -> Answer:
    by_name = {tool.name: tool for tool in ask.tools}
    if ask.forced_tool is not None and ask.forced_tool in by_name:
        chosen = [by_name[ask.forced_tool]]
    elif ask.parallel and "parallel" in ask.said.lower():
        chosen = list(ask.tools)
    else:
        chosen = [ask.tools[0]]
    calls = tuple(
        ToolCall(
            id=next_id(prefix),
            name=tool.name,
            arguments=_encoder.encode(example(tool.schema)).decode(),
        )
        for tool in chosen
    )
    text = None
    if preamble and ask.forced_tool is None and ask.tool_mode == "auto":
        text = f"Calling {', '.join(tool.name for tool in chosen)}."
    completion = sum(len(call.arguments) // 4 + 1 for call in calls)
    return Answer(
        text=text,
        tool_calls=calls,
        finish="tool_calls",
        prompt_tokens=ask.prompt_tokens,
        completion_tokens=completion,
    )


def deltas(text: str) -> list[str]:
    """``text`` in stream-sized pieces: one word each, with the space before it."""
    if not text:
        return []
    words = text.split(" ")
    return [word if index == 0 else " " + word for index, word in enumerate(words)]


def fragments(arguments: str, parts: int = 3) -> list[str]:
    """A tool call's argument text in ``parts`` pieces, as providers stream it."""
    size = max(1, math.ceil(len(arguments) / parts))
    return [arguments[start : start + size] for start in range(0, len(arguments), size)] or [""]


def count_words(text: str) -> int:
    return len(text.split())


# -- values from JSON schemas ---------------------------------------------------------------

_STRING_FORMATS = {
    "date": "2024-01-02",
    "date-time": "2024-01-02T03:04:05Z",
    "time": "03:04:05",
    "email": "sim@example.com",
    "uri": "https://example.com/sim",
    "uuid": "00000000-0000-4000-8000-000000000001",
}


def example(schema: Any, *, root: Any = None, name: str = "value", depth: int = 0) -> Any:
    """A value valid for the JSON ``schema`` (the subset tools and structured outputs use:
    types, properties, items, enum, const, anyOf/oneOf/allOf, $ref to $defs, numeric bounds,
    string formats and lengths), the same for the same schema.  Every property is filled in,
    required or not, so that ``additionalProperties: false`` and strict schemas hold."""
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > 12:
        return None
    if isinstance(schema.get("$ref"), str):
        return example(_resolve(root, schema["$ref"]), root=root, name=name, depth=depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            return example((usable or options)[0], root=root, name=name, depth=depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else None
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            key: example(value, root=root, name=key, depth=depth + 1)
            for key, value in properties.items()
        }
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        item = example(schema.get("items", {}), root=root, name=name, depth=depth + 1)
        return [item] * count
    if kind == "string":
        return _string(schema, name)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return f"sim-{name}"  # no type: any JSON value is valid


def _string(schema: dict[str, Any], name: str) -> str:
    value = _STRING_FORMATS.get(str(schema.get("format")), f"sim-{name}")
    minimum, maximum = int(schema.get("minLength", 0)), schema.get("maxLength")
    value = value.ljust(minimum, "x")
    return value[: int(maximum)] if maximum is not None else value


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    value: float = 1 if integer else 1.5
    if "minimum" in schema:
        value = max(value, schema["minimum"])
    if "exclusiveMinimum" in schema:
        value = max(value, schema["exclusiveMinimum"] + 1)
    if "maximum" in schema:
        value = min(value, schema["maximum"])
    if "exclusiveMaximum" in schema:
        value = min(value, schema["exclusiveMaximum"] - 1)
    return math.ceil(value) if integer else value


def _resolve(root: Any, reference: str) -> Any:
    """``#/$defs/Name`` (or ``#/definitions/Name``) inside ``root``; anything else: ``{}``."""
    if not reference.startswith("#/"):
        return {}
    node = root
    for part in reference[2:].split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
    return node


# -- embeddings ----------------------------------------------------------------------------


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector of ``dimensions`` float32-representable numbers, a function of ``text``
    alone (seeded by its SHA-256), so equal inputs embed equally."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
    draw = random.Random(seed)
    vector = [draw.uniform(-1.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(value * value for value in vector)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(value / norm for value in vector))
    return list(struct.unpack(f"<{dimensions}f", packed))


def float32_bytes(vector: list[float]) -> bytes:
    """``vector`` as little-endian float32: what ``encoding_format: base64`` encodes."""
    return struct.pack(f"<{len(vector)}f", *vector)
