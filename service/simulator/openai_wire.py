"""The OpenAI side of the simulator: Chat Completions and Embeddings, read and written.

Requests are checked about as strictly as OpenAI checks them where a gateway's translation
could go wrong (roles, tool messages answering an earlier tool call, part types, ``n``), and
leniently elsewhere: fields the simulator does not read are accepted.  Errors name the field
(msgspec's ``at `$.path```).
"""

from __future__ import annotations

import base64
import time
from typing import Annotated, Any, Literal

import msgspec

from service.simulator.answers import (
    Answer,
    Ask,
    Tool,
    count_words,
    deltas,
    embedding,
    float32_bytes,
    fragments,
    next_id,
)
from service.simulator.errors import BadRequest

_encoder = msgspec.json.Encoder()


class _StreamOptions(msgspec.Struct, frozen=True):
    include_usage: bool = False


class _Function(msgspec.Struct, frozen=True):
    name: str
    parameters: dict[str, Any] = {}
    description: str | None = None
    strict: bool | None = None


class _Tool(msgspec.Struct, frozen=True):
    function: _Function
    type: Literal["function"] = "function"


class _Message(msgspec.Struct, frozen=True):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatBody(msgspec.Struct, frozen=True, kw_only=True):
    """The Chat Completions fields the simulator reads (others are accepted and ignored)."""

    messages: Annotated[list[_Message], msgspec.Meta(min_length=1)]
    model: str = "simulated-model"
    stream: bool = False
    stream_options: _StreamOptions | None = None
    tools: list[_Tool] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=16)] = 1
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


_chat_decoder = msgspec.json.Decoder(ChatBody)
_PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})


def read_chat(raw: bytes, *, echo: bool) -> tuple[ChatBody, Ask]:
    """The body and what it asks; raises :class:`BadRequest` naming the bad field."""
    try:
        body = _chat_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    said, words, called = "", 0, set[str]()
    tool_results: list[str] = []
    for index, message in enumerate(body.messages):
        text = _text(message.content, f"messages[{index}].content")
        words += count_words(text)
        if message.role == "user":
            said = text
        if message.role == "assistant":
            for call in message.tool_calls or ():
                called.add(str(call.get("id")))
        if message.role == "tool":
            if message.tool_call_id not in called:
                raise BadRequest(
                    f"messages[{index}]: a 'tool' message must answer a preceding assistant "
                    f"message's tool_calls (tool_call_id {message.tool_call_id!r} not found)"
                )
            tool_results.append(text)
        else:
            tool_results = []  # only the results at the end of the conversation count
    forced = None
    mode: Literal["auto", "none", "required"] = "auto"
    if isinstance(body.tool_choice, dict):
        forced = str((body.tool_choice.get("function") or {}).get("name"))
    elif body.tool_choice is not None:
        mode = body.tool_choice
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    response_format = body.response_format or {}
    schema = None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema") or {}
    ask = Ask(
        said=said,
        tool_results=tuple(tool_results),
        tools=tuple(Tool(t.function.name, t.function.parameters) for t in body.tools or ()),
        tool_mode=mode,
        forced_tool=forced,
        parallel=body.parallel_tool_calls is not False,
        json_schema=schema,
        json_object=response_format.get("type") == "json_object",
        stop=stop,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        seed=body.seed,
        prompt_tokens=words + 8,
        echo=raw.decode() if echo else None,
    )
    return body, ask


def _text(content: str | list[dict[str, Any]] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    pieces = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind not in _PART_TYPES:
            raise BadRequest(f"{where}[{index}].type: unknown content part type {kind!r}")
        if kind == "text":
            pieces.append(str(part.get("text", "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url")
            if not isinstance(url, str) or not url:
                raise BadRequest(f"{where}[{index}].image_url.url: required")
            pieces.append("[image]")
        else:
            pieces.append(f"[{kind}]")
    return " ".join(pieces)


# -- answers ---------------------------------------------------------------------------------


def _usage(answers: list[Answer]) -> dict[str, int]:
    prompt = answers[0].prompt_tokens
    completion = sum(answer.completion_tokens for answer in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in answer.tool_calls
    ]


def completion(model: str, answers: list[Answer]) -> dict[str, Any]:
    """A ``chat.completion`` with one choice per answer."""
    choices = []
    for index, answer in enumerate(answers):
        message: dict[str, Any] = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.tool_calls:
            message["tool_calls"] = _tool_calls(answer)
        choices.append(
            {"index": index, "message": message, "logprobs": None, "finish_reason": answer.finish}
        )
    return {
        "id": next_id("chatcmpl-sim"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_sim",
        "choices": choices,
        "usage": _usage(answers),
    }


def _choice_deltas(answer: Answer) -> list[tuple[dict[str, Any], str | None]]:
    """One choice's (delta, finish_reason) sequence, in OpenAI's order and shape."""
    if answer.tool_calls:
        out: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": answer.text, "refusal": None}, None)
        ]
        for index, call in enumerate(answer.tool_calls):
            start = {
                "index": index,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            out.append(({"tool_calls": [start]}, None))
            out += [
                ({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}, None)
                for piece in fragments(call.arguments)
            ]
    else:
        out = [({"role": "assistant", "content": "", "refusal": None}, None)]
        out += [({"content": piece}, None) for piece in deltas(answer.text or "")]
    out.append(({}, answer.finish))
    return out


def events(model: str, answers: list[Answer], *, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed completion: the choices' chunks interleaved, the finish
    chunks, a usage chunk with no choices when asked for, then ``[DONE]``."""
    ident, created = next_id("chatcmpl-sim"), int(time.time())
    extra: dict[str, Any] = {"usage": None} if include_usage else {}

    def chunk(choices: list[dict[str, Any]], **fields: Any) -> bytes:
        body = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_sim",
            "choices": choices,
            **(fields or extra),
        }
        return b"data: " + _encoder.encode(body) + b"\n\n"

    sequences = [_choice_deltas(answer) for answer in answers]
    out = []
    for step in range(max(len(sequence) for sequence in sequences)):
        for index, sequence in enumerate(sequences):
            if step < len(sequence):
                delta, finish = sequence[step]
                choice = {"index": index, "delta": delta, "logprobs": None}
                out.append(chunk([{**choice, "finish_reason": finish}]))
    if include_usage:
        out.append(chunk([], usage=_usage(answers)))
    out.append(b"data: [DONE]\n\n")
    return out


# -- embeddings ------------------------------------------------------------------------------


class EmbeddingsBody(msgspec.Struct, frozen=True, kw_only=True):
    input: str | list[Any]  # strings, or token ids (a list, or a list of lists)
    model: str = "simulated-embedding"
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=4096)] = 16


_embeddings_decoder = msgspec.json.Decoder(EmbeddingsBody)


def embeddings(raw: bytes) -> dict[str, Any]:
    """The answer to ``POST /v1/embeddings``: one deterministic unit vector per input."""
    try:
        body = _embeddings_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid request body: {exc}") from None
    inputs: list[Any] = [body.input] if isinstance(body.input, str) else list(body.input)
    if not inputs or inputs == [""]:
        raise BadRequest("input: must not be empty")
    if all(isinstance(item, int) for item in inputs):
        inputs = [inputs]  # one input given as token ids
    for index, item in enumerate(inputs):
        tokens_ok = isinstance(item, list) and all(isinstance(t, int) for t in item)
        if not isinstance(item, str) and not tokens_ok:
            raise BadRequest(f"input[{index}]: expected a string or a list of token ids")
    data = []
    tokens = 0
    for index, item in enumerate(inputs):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += count_words(text) if isinstance(item, str) else len(item)
        vector = embedding(text, body.dimensions)
        value: Any = vector
        if body.encoding_format == "base64":
            value = base64.b64encode(float32_bytes(vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {
        "object": "list",
        "data": data,
        "model": body.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
