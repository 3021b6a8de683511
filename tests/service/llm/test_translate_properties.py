"""Properties of the translation, over generated conversations and streams.

- A Chat conversation with tools (texts, parallel tool calls with their arguments, tool
  results, user messages after the results) comes back unchanged from Chat -> Messages -> Chat.
- An Anthropic answer streamed in arbitrary fragments, translated to Chat chunks and back to
  Anthropic events, is assembled by the Anthropic SDK into the same message as the original
  stream, and by the OpenAI SDK into the same completion as the non-stream translation.
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
