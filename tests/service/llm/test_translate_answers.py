"""Answers (non-stream), both ways: one row per rule, every output validated by the official
SDK's own types (``openai.types.chat.ChatCompletion``, ``anthropic.types.Message``)."""

from __future__ import annotations

from typing import Any

import anthropic.types
import openai.types.chat
import pytest

from service.llm.translate import (
    UntranslatableError,
    chat_response_to_messages,
    messages_response_to_chat,
)

USAGE = {"input_tokens": 10, "output_tokens": 5}
CHAT_USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}


def anthropic_message(
    content: list[dict[str, Any]], stop: str | None, usage: dict[str, Any] = USAGE
) -> dict[str, Any]:
    return {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": usage,
    }


def chat_message(**fields: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "refusal": None, "annotations": []} | fields


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def tool_use(id_: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def chat_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


# (rule, Anthropic content, stop_reason, structured, expected message, expected finish_reason)
TO_CHAT: list[tuple[str, list[dict[str, Any]], str | None, bool, dict[str, Any], str]] = [
    (
        "text blocks are joined",
        [text("Hello"), text(", world")],
        "end_turn",
        False,
        chat_message(content="Hello, world"),
        "stop",
    ),
    (
        "stop_sequence -> stop",
        [text("a")],
        "stop_sequence",
        False,
        chat_message(content="a"),
        "stop",
    ),
    ("max_tokens -> length", [text("a")], "max_tokens", False, chat_message(content="a"), "length"),
    (
        "context window -> length",
        [text("a")],
        "model_context_window_exceeded",
        False,
        chat_message(content="a"),
        "length",
    ),
    (
        "refusal -> content_filter",
        [text("No.")],
        "refusal",
        False,
        chat_message(content="No."),
        "content_filter",
    ),
    ("no stop_reason -> stop", [text("a")], None, False, chat_message(content="a"), "stop"),
    (
        "tool_use -> tool_calls with compact JSON arguments",
        [
            text("Checking."),
            tool_use("toolu_1", "weather", {"city": "Paris"}),
            tool_use("toolu_2", "weather", {"city": "Rome"}),
        ],
        "tool_use",
        False,
        chat_message(
            content="Checking.",
            tool_calls=[
                chat_call("toolu_1", "weather", '{"city":"Paris"}'),
                chat_call("toolu_2", "weather", '{"city":"Rome"}'),
            ],
        ),
        "tool_calls",
    ),
    (
        "tool calls only: content None",
        [tool_use("toolu_1", "now", {})],
        "tool_use",
        False,
        chat_message(tool_calls=[chat_call("toolu_1", "now", "{}")]),
        "tool_calls",
    ),
    (
        "thinking blocks are left out",
        [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "redacted_thinking", "data": "x"},
            text("42"),
        ],
        "end_turn",
        False,
        chat_message(content="42"),
        "stop",
    ),
    (
        "structured: the forced tool's input is the content",
        [tool_use("toolu_1", "city", {"name": "Paris", "population": 2100000})],
        "tool_use",
        True,
        chat_message(content='{"name":"Paris","population":2100000}'),
        "stop",
    ),
    (
        "structured refusal -> refusal, no content",
        [text("I can't help with that.")],
        "refusal",
        True,
        chat_message(refusal="I can't help with that."),
        "content_filter",
    ),
    ("structured, cut short", [text("{")], "max_tokens", True, chat_message(content="{"), "length"),
]


@pytest.mark.parametrize(
    ("content", "stop", "structured", "message", "finish"),
    [r[1:] for r in TO_CHAT],
    ids=[r[0] for r in TO_CHAT],
)
def test_messages_answer_to_chat(
    content: list[dict[str, Any]],
    stop: str | None,
    structured: bool,
    message: dict[str, Any],
    finish: str,
) -> None:
    resp = anthropic_message(content, stop)
    anthropic.types.Message.model_validate(resp)  # the rows are real Anthropic answers
    out = messages_response_to_chat(
        resp, model="route-model", structured=structured, created=1_700_000_000
    )
    assert out == {
        "id": "msg_01",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "route-model",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": CHAT_USAGE,
    }
    parsed = openai.types.chat.ChatCompletion.model_validate(out)
    assert parsed.choices[0].finish_reason == finish


def test_cached_tokens_count_in_the_prompt() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }
    out = messages_response_to_chat(
        anthropic_message([text("a")], "end_turn", usage), model="m", created=1
    )
    assert out["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    openai.types.chat.ChatCompletion.model_validate(out)


def test_created_defaults_to_now() -> None:
    out = messages_response_to_chat(anthropic_message([text("a")], "end_turn"), model="m")
    assert isinstance(out["created"], int) and out["created"] > 1_700_000_000


def chat_completion(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None = CHAT_USAGE
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


# (rule, Chat message, finish_reason, expected Anthropic content, expected stop_reason)
TO_MESSAGES: list[tuple[str, dict[str, Any], str, list[dict[str, Any]], str]] = [
    ("text -> one text block", chat_message(content="Hello"), "stop", [text("Hello")], "end_turn"),
    ("length -> max_tokens", chat_message(content="Hel"), "length", [text("Hel")], "max_tokens"),
    ("empty content -> no block", chat_message(content=""), "stop", [], "end_turn"),
    (
        "tool_calls -> tool_use blocks with decoded input",
        chat_message(
            content="Checking.",
            tool_calls=[
                chat_call("call_1", "weather", '{"city": "Paris"}'),
                chat_call("call_2", "now", ""),
            ],
        ),
        "tool_calls",
        [
            text("Checking."),
            tool_use("call_1", "weather", {"city": "Paris"}),
            tool_use("call_2", "now", {}),
        ],
        "tool_use",
    ),
    (
        "refusal -> text with stop_reason refusal",
        chat_message(refusal="I can't."),
        "stop",
        [text("I can't.")],
        "refusal",
    ),
    (
        "content_filter -> refusal",
        chat_message(content="..."),
        "content_filter",
        [text("...")],
        "refusal",
    ),
]


@pytest.mark.parametrize(
    ("message", "finish", "content", "stop"),
    [r[1:] for r in TO_MESSAGES],
    ids=[r[0] for r in TO_MESSAGES],
)
def test_chat_answer_to_messages(
    message: dict[str, Any], finish: str, content: list[dict[str, Any]], stop: str
) -> None:
    resp = chat_completion(message, finish)
    openai.types.chat.ChatCompletion.model_validate(resp)
    out = chat_response_to_messages(resp, model="route-model")
    assert out == {
        "id": "chatcmpl-1",
        "type": "message",
        "role": "assistant",
        "model": "route-model",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": USAGE,
    }
    anthropic.types.Message.model_validate(out)


def test_cached_prompt_tokens_are_reported_apart() -> None:
    usage = CHAT_USAGE | {
        "prompt_tokens": 110,
        "total_tokens": 115,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    out = chat_response_to_messages(
        chat_completion(chat_message(content="a"), "stop", usage), model="m"
    )
    assert out["usage"] == {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100}


def test_an_answer_without_usage_reports_zero() -> None:
    out = chat_response_to_messages(
        chat_completion(chat_message(content="a"), "stop", None), model="m"
    )
    assert out["usage"] == {"input_tokens": 0, "output_tokens": 0}
    anthropic.types.Message.model_validate(out)


@pytest.mark.parametrize(
    ("resp", "field"),
    [
        (
            chat_completion(chat_message(tool_calls=[chat_call("c", "w", "{oops")]), "tool_calls"),
            "choices[0].message.tool_calls[0].function.arguments",
        ),
        (
            chat_completion(chat_message(tool_calls=[chat_call("c", "w", '"x"')]), "tool_calls"),
            "choices[0].message.tool_calls[0].function.arguments",
        ),
        (chat_completion(chat_message(content="a"), "stop") | {"choices": []}, "choices"),
        ({"object": "chat.completion"}, "choices"),
    ],
    ids=["arguments not JSON", "arguments not an object", "no choice", "no choices at all"],
)
def test_chat_answers_that_cannot_become_a_message(resp: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableError) as caught:
        chat_response_to_messages(resp, model="m")
    assert caught.value.field == field
