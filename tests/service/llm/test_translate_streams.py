"""The two stream machines, fed recorded event sequences one event at a time.

Each sequence is compared with the expected output where the exact shape matters (text, one
tool call), and every output is checked by the official SDKs: each chunk or event validated by
the SDK's type, and the whole stream assembled by the SDK's own accumulator
(``openai``'s ``ChatCompletionStreamState``, ``anthropic``'s ``accumulate_event``), which is
what a client pointed at the gateway does with it.
"""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from service.llm.translate import (
    ChatStreamToMessages,
    MessagesStreamToChat,
    UntranslatableError,
    messages_response_to_chat,
)

Event = tuple[str, dict[str, Any]]
_stream_event = pydantic.TypeAdapter(RawMessageStreamEvent)


def validate_event(data: dict[str, Any]) -> None:
    """Check an Anthropic SSE event's data with the SDK's types (``ping`` and ``error`` are
    outside the SDK's event union)."""
    if data["type"] == "ping":
        assert data == {"type": "ping"}
    elif data["type"] == "error":
        ErrorResponse.model_validate(data)
    else:
        _stream_event.validate_python(data)


# -- recorded Anthropic streams ---------------------------------------------------------------


def a_start(input_tokens: int = 25) -> Event:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "content": [],
        "model": "claude-x",
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 1},
    }
    return ("message_start", {"type": "message_start", "message": message})


def a_block(index: int, block: dict[str, Any]) -> Event:
    return (
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def a_text(index: int, text: str) -> Event:
    return (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": index,
            "delta": {"type": "text_delta", "text": text},
        },
    )


def a_json(index: int, fragment: str) -> Event:
    delta = {"type": "input_json_delta", "partial_json": fragment}
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def a_stop(index: int) -> Event:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


def a_end(stop_reason: str, output_tokens: int) -> list[Event]:
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    return [("message_delta", delta), ("message_stop", {"type": "message_stop"})]


PING: Event = ("ping", {"type": "ping"})
TEXT_BLOCK = {"type": "text", "text": ""}


def a_tool(index: int, id_: str, name: str) -> Event:
    return a_block(index, {"type": "tool_use", "id": id_, "name": name, "input": {}})


ANTHROPIC_TEXT: list[Event] = [
    a_start(),
    a_block(0, TEXT_BLOCK),
    PING,
    a_text(0, "Hello"),
    a_text(0, "!"),
    a_stop(0),
    *a_end("end_turn", 15),
]

ANTHROPIC_ONE_TOOL: list[Event] = [
    a_start(),
    a_block(0, TEXT_BLOCK),
    a_text(0, "Checking."),
    a_stop(0),
    a_tool(1, "toolu_1", "weather"),
    a_json(1, ""),
    a_json(1, '{"city": '),
    a_json(1, '"Paris"}'),
    a_stop(1),
    *a_end("tool_use", 40),
]

ANTHROPIC_TWO_TOOLS: list[Event] = [
    a_start(),
    a_tool(0, "toolu_1", "weather"),
    a_json(0, '{"city": "Paris"}'),
    a_stop(0),
    a_tool(1, "toolu_2", "weather"),
    a_json(1, '{"city"'),
    a_json(1, ': "Rome"}'),
    a_stop(1),
    *a_end("tool_use", 60),
]

ANTHROPIC_STRUCTURED: list[Event] = [
    a_start(),
    a_tool(0, "toolu_1", "city"),
    a_json(0, ""),
    a_json(0, '{"name": "Paris", '),
    a_json(0, '"population": 2100000}'),
    a_stop(0),
    *a_end("tool_use", 20),
]

ANTHROPIC_THINKING: list[Event] = [
    a_start(),
    a_block(0, {"type": "thinking", "thinking": "", "signature": ""}),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "6 x 7"},
        },
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig"},
        },
    ),
    a_stop(0),
    a_block(1, TEXT_BLOCK),
    a_text(1, "42"),
    a_stop(1),
    *a_end("end_turn", 9),
]


def to_chat(
    events: list[Event], *, include_usage: bool = True, structured: bool = False
) -> list[dict[str, Any]]:
    machine = MessagesStreamToChat(
        model="route-model",
        completion_id="chatcmpl-1",
        created=1_700_000_000,
        include_usage=include_usage,
        structured=structured,
    )
    chunks: list[dict[str, Any]] = []
    for name, data in events:
        validate_event(data)  # the recordings are real Anthropic events
        assert not machine.done
        chunks += machine.feed(name, data)
    assert machine.done
    return chunks


def chat_assembled(chunks: list[dict[str, Any]]) -> ChatCompletion:
    """The completion the openai SDK assembles from the chunks (validating each on the way)."""
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.get_final_completion()


def c(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": "route-model",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return c({}) | {"choices": [], "usage": usage}


def test_text_stream_becomes_openai_chunks() -> None:
    assert to_chat(ANTHROPIC_TEXT) == [
        c({"role": "assistant", "content": ""}),
        c({"content": "Hello"}),
        c({"content": "!"}),
        c({}, "stop"),
        usage_chunk(25, 15),
    ]
    final = chat_assembled(to_chat(ANTHROPIC_TEXT))
    assert final.choices[0].message.content == "Hello!"
    assert final.usage is not None and final.usage.total_tokens == 40


def test_without_include_usage_there_is_no_usage_at_all() -> None:
    chunks = to_chat(ANTHROPIC_TEXT, include_usage=False)
    assert [chunk["choices"][0]["delta"] for chunk in chunks] == [
        {"role": "assistant", "content": ""},
        {"content": "Hello"},
        {"content": "!"},
        {},
    ]
    assert all("usage" not in chunk for chunk in chunks)


def test_one_tool_call_streams_in_openai_shape() -> None:
    assert to_chat(ANTHROPIC_ONE_TOOL) == [
        c({"role": "assistant", "content": ""}),
        c({"content": "Checking."}),
        c(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "toolu_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": ""},
                    }
                ]
            }
        ),
        c({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        c({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        c({}, "tool_calls"),
        usage_chunk(25, 40),
    ]


def test_two_parallel_tool_calls_are_numbered_in_order() -> None:
    chunks = to_chat(ANTHROPIC_TWO_TOOLS)
    # As OpenAI: the role comes with the first call, and content is null rather than "".
    first = {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "weather", "arguments": ""},
    }
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [first],
    }
    final = chat_assembled(chunks)
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = [
        (call.id, call.function.name, call.function.arguments)
        for call in choice.message.tool_calls or []
    ]  # type: ignore[union-attr]
    assert calls == [
        ("toolu_1", "weather", '{"city": "Paris"}'),
        ("toolu_2", "weather", '{"city": "Rome"}'),
    ]


def test_structured_output_streams_the_forced_tool_input_as_content() -> None:
    chunks = to_chat(ANTHROPIC_STRUCTURED, structured=True)
    assert [chunk["choices"][0] for chunk in chunks[1:-1]] == [
        c({"content": '{"name": "Paris", '})["choices"][0],
        c({"content": '"population": 2100000}'})["choices"][0],
        c({}, "stop")["choices"][0],
    ]
    final = chat_assembled(chunks)
    assert final.choices[0].message.content == '{"name": "Paris", "population": 2100000}'
    assert final.choices[0].message.tool_calls is None


def test_thinking_is_left_out_of_the_chat_stream() -> None:
    final = chat_assembled(to_chat(ANTHROPIC_THINKING))
    assert final.choices[0].message.content == "42"


def test_an_empty_answer_still_sends_the_role_before_the_finish() -> None:
    chunks = to_chat([a_start(), *a_end("end_turn", 0)], include_usage=False)
    deltas = [
        (chunk["choices"][0]["delta"], chunk["choices"][0]["finish_reason"]) for chunk in chunks
    ]
    assert deltas == [({"role": "assistant", "content": ""}, None), ({}, "stop")]


def test_cached_input_tokens_count_in_the_prompt() -> None:
    start = a_start(5)
    start[1]["message"]["usage"]["cache_read_input_tokens"] = 100
    chunks = to_chat([start, *ANTHROPIC_TEXT[1:]])
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 105,
        "completion_tokens": 15,
        "total_tokens": 120,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_an_error_event_becomes_an_openai_error_chunk_and_ends_the_stream() -> None:
    machine = MessagesStreamToChat(model="m", completion_id="x", created=1, include_usage=False)
    machine.feed(*a_start())
    out = machine.feed(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    assert out == [
        {
            "error": {
                "message": "Overloaded",
                "type": "overloaded_error",
                "param": None,
                "code": None,
            }
        }
    ]
    assert machine.done


def test_unknown_events_produce_nothing() -> None:
    machine = MessagesStreamToChat(model="m", completion_id="x", created=1, include_usage=False)
    machine.feed(*a_start())
    assert machine.feed("brand_new_event", {"type": "brand_new_event"}) == []
    assert "blocks=0" in repr(machine) and "done=False" in repr(machine)


# -- recorded OpenAI streams ------------------------------------------------------------------


def o(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-9",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "system_fingerprint": "fp_1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }


def o_usage(prompt: int, completion: int) -> dict[str, Any]:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return o({}) | {"choices": [], "usage": usage}


def o_call(
    index: int, *, id_: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if id_ is not None:
        call |= {"id": id_, "type": "function"}
        call["function"]["name"] = name
    return o({"tool_calls": [call]})


OPENAI_TEXT = [
    o({"role": "assistant", "content": "", "refusal": None}),
    o({"content": "Hello"}),
    o({"content": "!"}),
    o({}, "stop"),
    o_usage(25, 15),
]

OPENAI_ONE_TOOL = [
    o({"role": "assistant", "content": None})
    | {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": ""},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": None,
            }
        ]
    },
    o_call(0, arguments='{"city"'),
    o_call(0, arguments=': "Paris"}'),
    o({}, "tool_calls"),
    o_usage(30, 12),
]

OPENAI_TEXT_THEN_TWO_TOOLS = [
    o({"role": "assistant", "content": "Checking."}),
    o_call(0, id_="call_1", name="weather"),
    o_call(0, arguments='{"city": "Paris"}'),
    o_call(1, id_="call_2", name="weather", arguments='{"city": '),
    o_call(1, arguments='"Rome"}'),
    o({}, "tool_calls"),
]


def to_messages(chunks: list[dict[str, Any]]) -> list[Event]:
    machine = ChatStreamToMessages(model="route-model", message_id="msg_9")
    events: list[Event] = []
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)  # the recordings are real OpenAI chunks
        events += machine.feed(chunk)
    assert not machine.done
    events += machine.finish()
    assert machine.done
    return events


def messages_assembled(events: list[Event]) -> Message:
    """The message the anthropic SDK assembles from the events (validating each on the way)."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for name, data in events:
        if name == "ping":
            continue
        event = _stream_event.validate_python(data)
        assert event.type == name
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def m_start() -> Event:
    message = {
        "id": "msg_9",
        "type": "message",
        "role": "assistant",
        "model": "route-model",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }
    return ("message_start", {"type": "message_start", "message": message})


def m_end(stop_reason: str, input_tokens: int, output_tokens: int) -> list[Event]:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": usage,
    }
    return [("message_delta", delta), ("message_stop", {"type": "message_stop"})]


def test_text_chunks_become_anthropic_events() -> None:
    assert to_messages(OPENAI_TEXT) == [
        m_start(),
        a_block(0, TEXT_BLOCK),
        a_text(0, "Hello"),
        a_text(0, "!"),
        a_stop(0),
        *m_end("end_turn", 25, 15),
    ]
    final = messages_assembled(to_messages(OPENAI_TEXT))
    assert [block.model_dump(exclude_none=True) for block in final.content] == [
        {"type": "text", "text": "Hello!"}
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (25, 15)


def test_one_tool_call_streams_as_a_tool_use_block() -> None:
    assert to_messages(OPENAI_ONE_TOOL) == [
        m_start(),
        a_tool(0, "call_1", "weather"),
        a_json(0, '{"city"'),
        a_json(0, ': "Paris"}'),
        a_stop(0),
        *m_end("tool_use", 30, 12),
    ]


def test_text_then_two_tool_calls_are_three_blocks_in_order() -> None:
    final = messages_assembled(to_messages(OPENAI_TEXT_THEN_TWO_TOOLS))
    assert final.stop_reason == "tool_use"
    assert [block.model_dump(exclude_none=True) for block in final.content] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}},
    ]
    assert (final.usage.input_tokens, final.usage.output_tokens) == (0, 0)  # no usage chunk


def test_a_refusal_streams_as_text_with_stop_reason_refusal() -> None:
    final = messages_assembled(
        to_messages([o({"role": "assistant", "refusal": "I can't."}), o({}, "stop")])
    )
    assert final.stop_reason == "refusal"
    assert final.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "I can't."}


def test_an_empty_stream_still_opens_and_closes_the_message() -> None:
    events = to_messages([])
    assert events == [m_start(), *m_end("end_turn", 0, 0)]
    assert messages_assembled(events).content == []


def test_an_openai_error_chunk_becomes_an_error_event() -> None:
    machine = ChatStreamToMessages(model="m", message_id="msg")
    events = machine.feed({"error": {"message": "The server had an error", "type": "server_error"}})
    # OpenAI's server_error is Anthropic's api_error (the SDK knows only its own types).
    assert events[1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "The server had an error"}},
    )
    assert machine.done
    validate_event(events[1][1])


def test_arguments_for_a_closed_tool_call_are_refused() -> None:
    machine = ChatStreamToMessages(model="m", message_id="msg")
    machine.feed(o_call(0, id_="a", name="w"))
    machine.feed(o_call(1, id_="b", name="w"))
    with pytest.raises(UntranslatableError) as caught:
        machine.feed(o_call(0, arguments="{}"))
    assert caught.value.field == "tool_calls[0]"


def test_a_new_tool_call_without_its_name_is_refused() -> None:
    with pytest.raises(UntranslatableError) as caught:
        ChatStreamToMessages(model="m", message_id="msg").feed(o_call(0, arguments="{}"))
    assert caught.value.field == "tool_calls[0]"


# -- both machines in a row -------------------------------------------------------------------


@pytest.mark.parametrize(
    "events",
    [ANTHROPIC_TEXT, ANTHROPIC_ONE_TOOL, ANTHROPIC_TWO_TOOLS, ANTHROPIC_THINKING],
    ids=["text", "one tool", "two tools", "thinking"],
)
def test_anthropic_stream_through_chat_and_back_assembles_the_same_message(
    events: list[Event],
) -> None:
    back = to_messages(to_chat(events))
    original, round_tripped = messages_assembled(events), messages_assembled(back)
    keep = [block for block in original.content if block.type != "thinking"]
    assert round_tripped.content == keep
    assert round_tripped.stop_reason == original.stop_reason
    assert round_tripped.usage.output_tokens == original.usage.output_tokens


def test_whole_parallel_calls_in_one_chunk_become_two_blocks() -> None:
    # Servers that do not stream arguments send every call whole, in one delta.
    calls = [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        },
        {
            "index": 1,
            "id": "call_2",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
        },
    ]
    final = messages_assembled(
        to_messages([o({"role": "assistant", "tool_calls": calls}), o({}, "tool_calls")])
    )
    assert [(block.id, block.input) for block in final.content] == [  # type: ignore[union-attr]
        ("call_1", {"city": "Paris"}),
        ("call_2", {"city": "Rome"}),
    ]


def test_calls_without_index_are_told_apart_by_id() -> None:
    chunks = [
        o(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "w", "arguments": '{"a"'},
                    }
                ]
            }
        ),
        o({"tool_calls": [{"function": {"arguments": ": 1}"}}]}),  # continues call_1
        o({"tool_calls": [{"id": "call_1", "function": {"arguments": ""}}]}),  # the same id again
        o(
            {
                "tool_calls": [
                    {
                        "id": "call_2",
                        "type": "function",
                        "function": {"name": "w", "arguments": "{}"},
                    }
                ]
            }
        ),
        o({}, "tool_calls"),
    ]
    machine = ChatStreamToMessages(model="route-model", message_id="msg_9")
    events = [event for chunk in chunks for event in machine.feed(chunk)] + machine.finish()
    final = messages_assembled(events)  # (not to_messages: the SDK chunk type wants an index)
    assert [(block.id, block.input) for block in final.content] == [
        ("call_1", {"a": 1}),
        ("call_2", {}),
    ]  # type: ignore[union-attr]


def test_a_call_delta_with_nothing_to_attach_to_is_refused() -> None:
    with pytest.raises(UntranslatableError) as caught:
        ChatStreamToMessages(model="m", message_id="msg").feed(
            o({"tool_calls": [{"function": {"arguments": "{}"}}]})
        )
    assert caught.value.field == "tool_calls"


STRUCTURED_REFUSAL: list[Event] = [
    a_start(),
    a_block(0, TEXT_BLOCK),
    a_text(0, "I can't "),
    a_text(0, "help with that."),
    a_stop(0),
    *a_end("refusal", 7),
]
STRUCTURED_WITH_PREAMBLE: list[Event] = [
    a_start(),
    a_block(0, TEXT_BLOCK),
    a_text(0, "Here it is:"),
    a_stop(0),
    a_tool(1, "toolu_1", "city"),
    a_json(1, '{"name": "Paris", '),
    a_json(1, '"population": 2100000}'),
    a_stop(1),
    *a_end("tool_use", 20),
]
STRUCTURED_CUT_SHORT: list[Event] = [
    a_start(),
    a_block(0, TEXT_BLOCK),
    a_text(0, "Let me think"),
    a_stop(0),
    *a_end("max_tokens", 3),
]


@pytest.mark.parametrize(
    ("events", "content", "refusal", "finish"),
    [
        (ANTHROPIC_STRUCTURED, '{"name": "Paris", "population": 2100000}', None, "stop"),
        (STRUCTURED_REFUSAL, None, "I can't help with that.", "content_filter"),
        (STRUCTURED_WITH_PREAMBLE, '{"name": "Paris", "population": 2100000}', None, "stop"),
        (STRUCTURED_CUT_SHORT, "Let me think", None, "length"),
    ],
    ids=["the tool's input", "a refusal", "text beside the input is dropped", "cut short"],
)
def test_a_structured_stream_says_what_the_structured_answer_says(
    events: list[Event], content: str | None, refusal: str | None, finish: str
) -> None:
    # Assembled by hand: the SDK's assembler raises on content_filter and length, by design.
    chunks = [ChatCompletionChunk.model_validate(c) for c in to_chat(events, structured=True)]
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    streamed_content = "".join(d.content for d in deltas if d.content is not None) or None
    streamed_refusal = "".join(d.refusal for d in deltas if d.refusal is not None) or None
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert (streamed_content, streamed_refusal, finishes) == (content, refusal, [finish])
    # The same answer, not streamed (the input as compact JSON: the stream keeps Anthropic's text).
    answer = messages_assembled(events).model_dump(exclude_none=True)
    whole = messages_response_to_chat(answer, model="m", structured=True, created=1)["choices"][0]
    compact = (
        None
        if content is None or not content.startswith("{")
        else '{"name":"Paris","population":2100000}'
    )
    assert (whole["message"]["content"], whole["message"]["refusal"], whole["finish_reason"]) == (
        compact or content,
        refusal,
        finish,
    )
