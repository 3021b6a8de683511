"""Properties of the translation, over generated conversations and streams.

- A Chat conversation with tools (texts, parallel tool calls with their arguments, tool
  results, user messages after the results) comes back unchanged from Chat -> Messages -> Chat.
- An Anthropic answer streamed in arbitrary fragments, translated to Chat chunks and back to
  Anthropic events, is assembled by the Anthropic SDK into the same message as the original
  stream, and by the OpenAI SDK into the same completion as the non-stream translation.
- Any request, however malformed, is translated or refused with an error naming a field: never
  a KeyError or TypeError (a bare 500).  (Searched with 3,000 examples per direction once; the
  suite runs 100.)
"""

from __future__ import annotations

import itertools
import string
from typing import Any

import msgspec
import pydantic
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from service.llm.translate import (
    ChatStreamToMessages,
    MessagesStreamToChat,
    UntranslatableError,
    chat_request_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)

Event = tuple[str, dict[str, Any]]
_events = pydantic.TypeAdapter(RawMessageStreamEvent)

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("weather", "now")
]

texts = st.text(min_size=1, max_size=12)
tool_inputs = st.dictionaries(
    st.text(string.ascii_letters, min_size=1, max_size=5),
    st.integers(-100, 100) | st.text(max_size=6) | st.booleans() | st.none(),
    max_size=3,
)


@st.composite
def tool_exchange(draw: st.DrawFn, number: int) -> list[dict[str, Any]]:
    """An assistant message with 1-3 tool calls, their results, and maybe a user message."""
    calls = [
        {
            "id": f"call_{number}_{k}",
            "type": "function",
            "function": {
                "name": draw(st.sampled_from(["weather", "now"])),
                "arguments": msgspec.json.encode(draw(tool_inputs)).decode(),
            },
        }
        for k in range(draw(st.integers(1, 3)))
    ]
    messages: list[dict[str, Any]] = [
        {"role": "assistant", "content": draw(st.none() | texts), "tool_calls": calls}
    ]
    messages += [
        {"role": "tool", "tool_call_id": call["id"], "content": draw(texts)} for call in calls
    ]
    if draw(st.booleans()):
        messages.append({"role": "user", "content": draw(texts)})
    return messages


@st.composite
def chat_conversations(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts)})
    messages.append({"role": "user", "content": draw(texts)})
    for number in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            messages += draw(tool_exchange(number))
        else:
            messages += [
                {"role": "assistant", "content": draw(texts)},
                {"role": "user", "content": draw(texts)},
            ]
    return {"model": "m", "max_tokens": 64, "messages": messages, "tools": TOOLS}


@settings(max_examples=50, deadline=None)
@given(chat_conversations())
def test_chat_tool_conversations_survive_a_round_trip(body: dict[str, Any]) -> None:
    there = chat_request_to_messages(body, model="m", default_max_tokens=1)
    assert messages_request_to_chat(there, model="m") == body


# -- streams ----------------------------------------------------------------------------------


@st.composite
def anthropic_answers(draw: st.DrawFn) -> dict[str, Any]:
    """A final message: maybe text, then 0-3 tool calls."""
    content: list[dict[str, Any]] = []
    if draw(st.booleans()):
        content.append({"type": "text", "text": draw(texts)})
    for k in range(draw(st.integers(0 if content else 1, 3))):
        content.append(
            {"type": "tool_use", "id": f"toolu_{k}", "name": "weather", "input": draw(tool_inputs)}
        )
    stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": draw(st.integers(0, 999)),
            "output_tokens": draw(st.integers(0, 999)),
        },
    }


def pieces(draw: st.DrawFn, whole: str) -> list[str]:
    """``whole`` cut at arbitrary places (never into empty pieces)."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(whole) - 1)), max_size=4)))
    bounds = [0, *(cut for cut in cuts if cut < len(whole)), len(whole)]
    return [whole[a:b] for a, b in itertools.pairwise(bounds) if whole[a:b]]


@st.composite
def streamed(draw: st.DrawFn) -> tuple[dict[str, Any], list[Event]]:
    """An answer, and the event sequence Anthropic would stream for it."""
    answer = draw(anthropic_answers())
    start = answer | {
        "content": [],
        "stop_reason": None,
        "usage": answer["usage"] | {"output_tokens": 1},
    }
    events: list[Event] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            opened = {"type": "text", "text": ""}
            deltas = [
                {"type": "text_delta", "text": piece} for piece in pieces(draw, block["text"])
            ]
        else:
            opened = block | {"input": {}}
            arguments = msgspec.json.encode(block["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": ""}]
            deltas += [
                {"type": "input_json_delta", "partial_json": p} for p in pieces(draw, arguments)
            ]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
        )
        if draw(st.booleans()):
            events.append(("ping", {"type": "ping"}))
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": answer["stop_reason"], "stop_sequence": None}
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": delta,
                "usage": {"output_tokens": answer["usage"]["output_tokens"]},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return answer, events


def assemble_anthropic(events: list[Event]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        if name != "ping":
            snapshot = accumulate_event(
                event=_events.validate_python(data), current_snapshot=snapshot, json_bufs=json_bufs
            )
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


@settings(max_examples=50, deadline=None)
@given(streamed())
def test_a_stream_in_any_fragments_assembles_like_the_answer(
    case: tuple[dict[str, Any], list[Event]],
) -> None:
    answer, events = case
    assert assemble_anthropic(events) == Message.model_validate(answer)  # the generator is right

    to_chat = MessagesStreamToChat(
        model="m", completion_id="chatcmpl-1", created=1, include_usage=True
    )
    chunks = [chunk for name, data in events for chunk in to_chat.feed(name, data)]
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    streamed_completion = state.get_final_completion().model_dump(exclude_none=True)
    expected = messages_response_to_chat(answer, model="m", created=1)
    got_message = streamed_completion["choices"][0]["message"]
    want_message = expected["choices"][0]["message"]
    assert got_message.get("content") == want_message["content"]
    got_calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in got_message.get("tool_calls", [])
    ]
    want_calls = [
        (c["id"], c["function"]["name"], c["function"]["arguments"])
        for c in want_message.get("tool_calls", [])
    ]
    assert got_calls == want_calls
    assert (
        streamed_completion["choices"][0]["finish_reason"]
        == expected["choices"][0]["finish_reason"]
    )
    assert streamed_completion["usage"] == expected["usage"]

    to_messages = ChatStreamToMessages(model="claude-x", message_id="msg_1")
    back = [event for chunk in chunks for event in to_messages.feed(chunk)] + to_messages.finish()
    assert assemble_anthropic(back) == Message.model_validate(answer)


# -- any input: a translation or an error naming a field, never a crash ------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
# Plausible shapes, so that the search reaches deep into messages, parts and tools.
chat_parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "file", "refusal", "input_audio"])},
    optional={
        "text": json_values,
        "image_url": st.fixed_dictionaries(
            {},
            optional={
                "url": st.sampled_from(
                    ["https://x", "data:image/png;base64,AA", "data:x", "ftp://"]
                )
                | json_values
            },
        ),
        "file": json_values,
        "refusal": json_values,
        "cache_control": json_values,
    },
)
chat_messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["system", "developer", "user", "assistant", "tool", "function"])
        | json_values
    },
    optional={
        "content": st.none() | st.text(max_size=4) | st.lists(chat_parts | json_values, max_size=3),
        "tool_calls": st.lists(
            st.fixed_dictionaries(
                {
                    "id": json_values,
                    "type": json_values,
                    "function": st.fixed_dictionaries(
                        {},
                        optional={
                            "name": json_values,
                            "arguments": st.sampled_from(["{}", "", "[", '{"a": 1}', "1"])
                            | json_values,
                        },
                    ),
                }
            ),
            max_size=2,
        )
        | json_values,
        "tool_call_id": json_values,
        "cache_control": json_values,
        "refusal": json_values,
    },
)
chat_bodies = st.fixed_dictionaries(
    {"model": st.just("m"), "messages": st.lists(chat_messages, max_size=4) | json_values},
    optional={
        key: json_values
        for key in (
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "stop",
            "max_tokens",
            "max_completion_tokens",
            "metadata",
            "user",
            "n",
            "logprobs",
            "stream_options",
            "seed",
            "whatever",
        )
    },
)
anthropic_blocks = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["text", "image", "document", "tool_use", "tool_result", "thinking", "server_tool_use"]
        )
    },
    optional={
        "text": json_values,
        "source": json_values,
        "id": json_values,
        "name": json_values,
        "input": json_values,
        "tool_use_id": json_values,
        "content": json_values | st.lists(json_values, max_size=2),
        "is_error": json_values,
    },
)
anthropic_bodies = st.fixed_dictionaries(
    {
        "model": st.just("m"),
        "max_tokens": st.just(5),
        "messages": st.lists(
            st.fixed_dictionaries(
                {"role": st.sampled_from(["user", "assistant"]) | json_values},
                optional={
                    "content": st.text(max_size=3)
                    | st.lists(anthropic_blocks | json_values, max_size=3)
                    | json_values
                },
            ),
            max_size=4,
        )
        | json_values,
    },
    optional={
        key: json_values
        for key in (
            "system",
            "tools",
            "tool_choice",
            "stop_sequences",
            "metadata",
            "output_config",
            "thinking",
            "top_k",
            "whatever",
        )
    },
)


@settings(max_examples=100, deadline=None)
@given(chat_bodies)
def test_any_chat_request_is_translated_or_refused_by_field(body: dict[str, Any]) -> None:
    try:
        chat_request_to_messages(body, model="m", default_max_tokens=1)
    except UntranslatableError as exc:
        assert exc.field and exc.reason


@settings(max_examples=100, deadline=None)
@given(anthropic_bodies)
def test_any_messages_request_is_translated_or_refused_by_field(body: dict[str, Any]) -> None:
    try:
        messages_request_to_chat(body, model="m")
    except UntranslatableError as exc:
        assert exc.field and exc.reason
