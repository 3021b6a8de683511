"""The wire formats and the SSE decoder, as plain functions (no server, no loop)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from service.llm.errors import (
    APIError,
    InvalidRequestError,
    MalformedResponseError,
    ServiceUnavailableError,
)
from service.llm.schema import (
    FunctionCall,
    StreamResult,
    ToolCall,
    ToolCallDelta,
    Usage,
    build_request,
)
from service.llm.wire.anthropic import AnthropicMessages
from service.llm.wire.openai import ChatCompletions
from service.llm.wire.sse import SSEDecoder, SSEEvent

OPENAI = ChatCompletions(include_usage=True)
ANTHROPIC = AnthropicMessages()
HI = [{"role": "user", "content": "hi"}]
REQUEST = build_request(HI, {}, provider="test")


def feed(lines: list[str]) -> list[SSEEvent]:
    decoder = SSEDecoder()
    return [event for line in lines if (event := decoder.feed(line)) is not None]


def test_sse_joins_data_lines_skips_comments_and_strips_one_space() -> None:
    lines = [": keep-alive\n", "event: delta\r\n", "data:  two\n", "data:x\n", "\n"]
    assert feed(lines) == [SSEEvent("delta", " two\nx")]


def test_sse_drops_an_event_without_its_blank_line_and_resets_the_type() -> None:
    assert feed(["event: a\n", "\n", "data: 1\n", "\n", "data: cut"]) == [SSEEvent("", "1")]


def test_openai_body_and_stream_options() -> None:
    request = build_request(
        [{"role": "user", "content": "hi", "name": "ann"}], {"n": 1}, provider="openai"
    )
    body = json.loads(OPENAI.body(request, "m", stream=True, default_max_tokens=9))
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi", "name": "ann"}],
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    plain = ChatCompletions(include_usage=False)
    assert "stream_options" not in json.loads(
        plain.body(request, "m", stream=True, default_max_tokens=9)
    )


def test_openai_parse_tolerates_unknown_fields_and_null_content() -> None:
    body = msgspec.json.encode(
        {
            "choices": [{"index": 0, "message": {"content": None}, "finish_reason": "tool_calls"}],
            "system_fingerprint": "new-field",
        }
    )
    answer = OPENAI.parse(body, REQUEST, provider="openai", model="asked", secret=None)
    assert (answer.content, answer.model, answer.finish_reason) == (None, "asked", "tool_calls")
    assert answer.usage is None


def test_openai_parse_keeps_tool_calls_and_refusal() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    body = msgspec.json.encode(
        {
            "choices": [
                {
                    "index": 0,
                    "message": {"content": None, "tool_calls": [call], "refusal": "no"},
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    answer = OPENAI.parse(body, REQUEST, provider="openai", model="m", secret=None)
    assert answer.tool_calls == (
        ToolCall(id="call_1", function=FunctionCall(name="f", arguments='{"a":1}')),
    )
    assert answer.refusal == "no"


def test_openai_decoder_yields_tool_call_deltas_and_assembles_them() -> None:
    result = StreamResult()
    decoder = OPENAI.decoder(REQUEST, provider="openai", secret=None, into=result)

    def call(index: int, **fields: Any) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": index, **fields}]}}]}

    chunks = [
        call(0, id="c0", type="function", function={"name": "f", "arguments": ""}),
        call(1, id="c1", type="function", function={"name": "g", "arguments": '{"b"'}),
        call(0, function={"arguments": '{"a":'}),
        call(0, function={"arguments": "1}"}),
        call(1, function={"arguments": ":2}"}),
    ]
    deltas = [list(decoder.feed(SSEEvent("", json.dumps(chunk)))) for chunk in chunks]
    assert deltas == [
        [ToolCallDelta(index=0, id="c0", type="function", name="f")],
        [ToolCallDelta(index=1, id="c1", type="function", name="g", arguments='{"b"')],
        [ToolCallDelta(index=0, arguments='{"a":')],
        [ToolCallDelta(index=0, arguments="1}")],
        [ToolCallDelta(index=1, arguments=":2}")],
    ]
    assert result.tool_calls == (
        ToolCall(id="c0", function=FunctionCall(name="f", arguments='{"a":1}')),
        ToolCall(id="c1", function=FunctionCall(name="g", arguments='{"b":2}')),
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"choices": []}', MalformedResponseError),
        (b'{"choices": [{"message": 3}]}', MalformedResponseError),
        (b"[1, 2]", MalformedResponseError),
        (b'{"error": {"message": "busy", "type": "server_error"}}', ServiceUnavailableError),
    ],
)
def test_openai_parse_failures(body: bytes, error: type[APIError]) -> None:
    with pytest.raises(APIError) as caught:
        OPENAI.parse(body, REQUEST, provider="openai", model="m", secret=None)
    assert type(caught.value) is error


def test_openai_decoder_follows_choice_zero_and_needs_done() -> None:
    result = StreamResult()
    decoder = OPENAI.decoder(REQUEST, provider="openai", secret=None, into=result)
    chunks = [
        {"model": "gpt", "choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"choices": [{"index": 1, "delta": {"content": "other choice"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]},
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3}},
    ]
    texts = [list(decoder.feed(SSEEvent("", json.dumps(chunk)))) for chunk in chunks]
    assert texts == [["a"], [], [], []]
    assert not decoder.done
    decoder.feed(SSEEvent("", "[DONE]"))
    assert decoder.done
    assert (result.model, result.finish_reason) == ("gpt", "length")
    assert result.usage == Usage(prompt_tokens=2, completion_tokens=3, total_tokens=5)


def test_openai_decoder_rejects_a_broken_chunk() -> None:
    decoder = OPENAI.decoder(REQUEST, provider="openai", secret=None, into=StreamResult())
    with pytest.raises(MalformedResponseError):
        decoder.feed(SSEEvent("", '{"choices": ['))


def test_anthropic_body_moves_system_and_developer_messages() -> None:
    request = build_request(
        [
            {"role": "system", "content": "one"},
            {"role": "developer", "content": [{"type": "text", "text": "two"}]},
            {"role": "user", "content": "hi"},
        ],
        {"max_tokens": 5, "temperature": 0},
        provider="anthropic",
    )
    body = json.loads(ANTHROPIC.body(request, "claude", stream=False, default_max_tokens=1024))
    assert body == {
        "model": "claude",
        "max_tokens": 5,  # the caller's value wins over the default
        "system": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0,
    }


def test_anthropic_parse_joins_text_blocks_and_keeps_tool_use_as_tool_calls() -> None:
    body = msgspec.json.encode(
        {
            "id": "msg_1",
            "type": "message",
            "content": [
                {"type": "text", "text": "a"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {"x": 1}},
                {"type": "text", "text": "b"},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 2},
        }
    )
    answer = ANTHROPIC.parse(body, REQUEST, provider="anthropic", model="asked", secret=None)
    assert (answer.content, answer.model, answer.finish_reason) == ("ab", "asked", "tool_calls")
    assert answer.tool_calls == (
        ToolCall(id="t", function=FunctionCall(name="f", arguments='{"x":1}')),
    )
    assert answer.usage == Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)


def test_anthropic_body_refuses_a_field_without_counterpart_by_name() -> None:
    request = build_request(HI, {"logprobs": True}, provider="anthropic")
    with pytest.raises(InvalidRequestError, match="logprobs"):
        ANTHROPIC.body(request, "claude", stream=False, default_max_tokens=1024)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"type": "message"}', MalformedResponseError),
        (b'{"content": "text"}', MalformedResponseError),
        (b'{"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}', None),
    ],
)
def test_anthropic_parse_failures(body: bytes, error: type[APIError] | None) -> None:
    with pytest.raises(APIError) as caught:
        ANTHROPIC.parse(body, REQUEST, provider="anthropic", model="m", secret=None)
    assert type(caught.value) is (error or ServiceUnavailableError)


def test_anthropic_decoder_events() -> None:
    result = StreamResult()
    decoder = ANTHROPIC.decoder(REQUEST, provider="anthropic", secret=None, into=result)
    tool = {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"model": "claude", "content": [],
                                              "usage": {"input_tokens": 4}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": tool},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 1,
         "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        {"type": "ping"},
        {"type": "some_future_event"},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 6}},
    ]  # fmt: skip
    deltas = [list(decoder.feed(SSEEvent(event["type"], json.dumps(event)))) for event in events]
    assert deltas == [
        [],
        [],
        ["hi"],
        [],
        [ToolCallDelta(index=0, id="t1", type="function", name="f")],
        [ToolCallDelta(index=0, arguments='{"a"')],
        [ToolCallDelta(index=0, arguments=": 1}")],
        [],
        [],
        [],
    ]
    assert not decoder.done
    decoder.feed(SSEEvent("message_stop", '{"type": "message_stop"}'))
    assert decoder.done
    assert (result.model, result.finish_reason) == ("claude", "tool_calls")
    assert result.usage == Usage(prompt_tokens=4, completion_tokens=6, total_tokens=10)
    assert result.tool_calls == (
        ToolCall(id="t1", function=FunctionCall(name="f", arguments='{"a": 1}')),
    )


def test_anthropic_decoder_raises_the_error_event() -> None:
    decoder = ANTHROPIC.decoder(REQUEST, provider="anthropic", secret=None, into=StreamResult())
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}
    with pytest.raises(InvalidRequestError, match="bad"):
        decoder.feed(SSEEvent("error", json.dumps(error)))


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"role": "tool", "content": "x"}, "tool_call_id: required for a tool message"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "tool_call_id: only tool"),
        ({"role": "user"}, "content: required for a user message"),
        ({"role": "assistant"}, "content: an assistant message needs content or tool_calls"),
        ({"role": "user", "content": "x", "tool_calls": []}, "tool_calls: only assistant"),
        ({"role": "system", "content": [{"type": "image_url"}]}, "content[0].type: expected"),
        ({"role": "function", "content": "x"}, "Invalid enum value 'function'"),
        ({"role": "user", "content": "x", "colour": "red"}, "unknown field `colour`"),
    ],
)
def test_messages_are_validated_with_the_path_of_the_bad_field(
    message: dict[str, Any], error: str
) -> None:
    with pytest.raises(InvalidRequestError, match="messages\\[1\\]") as caught:
        build_request([*HI, message], {}, provider="openai")
    assert error in str(caught.value)


@pytest.mark.parametrize(
    "message",
    [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "assistant", "content": None, "refusal": "I can't"},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "ok"}]},
        {"role": "developer", "content": "Be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "see"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
            {"type": "file", "file": {"file_id": "file-1"}},
        ]},
    ],
)  # fmt: skip
def test_every_chat_completions_message_form_is_accepted_and_sent_as_given(
    message: dict[str, Any],
) -> None:
    request = build_request([*HI, message], {}, provider="openai")
    body = json.loads(OPENAI.body(request, "m", stream=False, default_max_tokens=9))
    assert body["messages"][1] == {
        key: value for key, value in message.items() if value is not None
    }
