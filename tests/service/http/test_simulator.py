"""The upstream simulator speaks both wire formats and injects the faults it is told to."""

from __future__ import annotations

import array
import base64
import json
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import msgspec
import openai
import pytest
from anthropic.types import Message
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from service.simulator import Simulator

pytestmark = pytest.mark.anyio

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
MESSAGES: dict[str, Any] = {**CHAT, "max_tokens": 64}  # the Messages format requires max_tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:  # shadows the ManualClock fixture: the simulator takes a plain callable
    return Clock()


@pytest.fixture
async def simulator(clock: Clock) -> AsyncIterator[Simulator]:
    async with Simulator(clock=clock, seed=1) as simulator:
        yield simulator


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any, Any]:
    async with http.post(url, json=body) as response:
        return response.status, await response.json(), response.headers


async def events(http: aiohttp.ClientSession, url: str, body: Any) -> list[bytes]:
    async with http.post(url, json={**body, "stream": True}) as response:
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        return [line async for line in response.content if line.startswith(b"data: ")]


async def test_openai_format(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    assert status == 200
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Simulated openai reply to: hello there"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] > 0


async def test_anthropic_format(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{simulator.anthropic_base_url}/v1/messages", MESSAGES)
    assert status == 200
    assert body["type"] == "message"
    assert body["content"] == [
        {"type": "text", "text": "Simulated anthropic reply to: hello there"}
    ]
    assert body["stop_reason"] == "end_turn"


async def test_openai_stream(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    lines = await events(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    assert lines[-1].strip() == b"data: [DONE]"
    chunks = [msgspec.json.decode(line[6:]) for line in lines[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "Simulated openai reply to: hello there"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_anthropic_stream(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    lines = await events(http, f"{simulator.url}/v1/messages", MESSAGES)
    payloads = [msgspec.json.decode(line[6:]) for line in lines]
    assert payloads[0]["type"] == "message_start"
    assert payloads[-1]["type"] == "message_stop"
    text = "".join(p["delta"]["text"] for p in payloads if p["type"] == "content_block_delta")
    assert text == "Simulated anthropic reply to: hello there"


async def test_an_outage_with_a_duration_ends_by_itself(
    simulator: Simulator, http: aiohttp.ClientSession, clock: Clock
) -> None:
    status, state, _ = await post(
        http, f"{simulator.url}/_control", {"api": "openai", "outage": True, "duration": 20}
    )
    assert status == 200
    assert state["openai"]["outage"] is True
    assert state["openai"]["temporary_for"] == 20
    assert state["anthropic"]["outage"] is False

    url = f"{simulator.openai_base_url}/chat/completions"
    status, body, _ = await post(http, url, CHAT)
    assert status == 503
    assert body["error"]["type"] == "server_error"
    status, _, _ = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert status == 200  # the other wire format is untouched

    clock.now += 20
    status, _, _ = await post(http, url, CHAT)
    assert status == 200
    assert simulator.describe()["openai"]["outage"] is False
    assert (simulator.apis["openai"].requests, simulator.apis["openai"].failed) == (2, 1)


async def test_rate_limits_carry_retry_after(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.control(api="anthropic", error_rate=1.0, status=429, retry_after=7)
    status, body, headers = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "simulated upstream error (HTTP 429)"},
    }
    simulator.control(api="anthropic", status=529)
    status, body, _ = await post(http, f"{simulator.url}/v1/messages", MESSAGES)
    assert (status, body["error"]["type"]) == (529, "overloaded_error")


async def test_error_rate_fails_a_share_of_calls(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    simulator.control(error_rate=0.5)
    url = f"{simulator.openai_base_url}/chat/completions"
    statuses = [(await post(http, url, CHAT))[0] for _ in range(40)]
    assert set(statuses) == {200, 503}
    assert simulator.apis["openai"].failed == statuses.count(503)


async def test_reset_clears_faults(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    simulator.control(outage=True, latency=3)
    status, state, _ = await post(http, f"{simulator.url}/_control", {"reset": True})
    assert status == 200
    assert state["openai"]["outage"] is False
    assert state["openai"]["latency"] == 0


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"outage": "yes"}, "Expected `bool`, got `str` - at `$.outage`"),
        ({"error_rate": 2}, "Expected `float` <= 1"),
        ({"status": 200}, "Expected `int` >= 400"),
        ({"api": "azure"}, "Invalid enum value 'azure'"),
        ({"outgae": True}, "unknown field `outgae`"),
    ],
)
async def test_bad_control_requests_are_refused(
    simulator: Simulator, http: aiohttp.ClientSession, body: Any, fragment: str
) -> None:
    status, answer, _ = await post(http, f"{simulator.url}/_control", body)
    assert status == 400
    assert fragment in answer["error"]
    assert simulator.describe()["openai"]["outage"] is False


async def test_get_control_reports_counts(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    await post(http, f"{simulator.openai_base_url}/chat/completions", CHAT)
    async with http.get(f"{simulator.url}/_control") as response:
        state = await response.json()
    assert state["openai"]["requests"] == 1
    assert state["openai"]["in_flight"] == 0


async def test_a_bad_request_body_gets_the_providers_400(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, f"{simulator.url}/v1/messages", {"messages": 3})
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error"


# -- what it answers -------------------------------------------------------------------------

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 3},
        "when": {"$ref": "#/$defs/When"},
    },
    "required": ["city", "unit", "days", "when"],
    "additionalProperties": False,
    "$defs": {"When": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}},
}
WEATHER_ARGS = {"city": "sim-city", "unit": "celsius", "days": 3, "when": "2024-01-02"}
OPENAI_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ANTHROPIC_TOOLS: list[Any] = [
    {"name": "get_weather", "input_schema": WEATHER},
    {"name": "get_time", "input_schema": {"type": "object"}},
]


def chat_url(simulator: Simulator) -> str:
    return f"{simulator.openai_base_url}/chat/completions"


def messages_url(simulator: Simulator) -> str:
    return f"{simulator.url}/v1/messages"


async def test_openai_answers_a_tool_call_valid_for_the_schema(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(http, chat_url(simulator), {**CHAT, "tools": OPENAI_TOOLS})
    assert status == 200
    ChatCompletion.model_validate(body)
    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert (call["type"], call["function"]["name"]) == ("function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == WEATHER_ARGS


async def test_openai_tool_choice_names_the_tool_and_parallel_calls_every_tool(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    forced = {"type": "function", "function": {"name": "get_time"}}
    _, body, _ = await post(
        http, chat_url(simulator), {**CHAT, "tools": OPENAI_TOOLS, "tool_choice": forced}
    )
    assert [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]] == [
        "get_time"
    ]
    parallel = {**CHAT, "messages": [{"role": "user", "content": "both, in parallel"}]}
    _, body, _ = await post(http, chat_url(simulator), {**parallel, "tools": OPENAI_TOOLS})
    assert len(body["choices"][0]["message"]["tool_calls"]) == 2
    _, body, _ = await post(
        http,
        chat_url(simulator),
        {**parallel, "tools": OPENAI_TOOLS, "parallel_tool_calls": False},
    )
    assert len(body["choices"][0]["message"]["tool_calls"]) == 1
    _, body, _ = await post(
        http, chat_url(simulator), {**CHAT, "tools": OPENAI_TOOLS, "tool_choice": "none"}
    )
    assert body["choices"][0]["message"]["content"].startswith("Simulated openai reply")


async def test_openai_answers_text_after_a_tool_result(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"},
    ]
    _, body, _ = await post(
        http, chat_url(simulator), {"model": "m", "messages": messages, "tools": OPENAI_TOOLS}
    )
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "Simulated openai reply to tool results: sunny, 21 C"
    bad = [*messages[:1], {"role": "tool", "tool_call_id": "call_9", "content": "x"}]
    status, body, _ = await post(http, chat_url(simulator), {"model": "m", "messages": bad})
    assert status == 400
    assert "messages[1]" in body["error"]["message"]


async def test_openai_streams_tool_call_deltas_in_openais_shape(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    parallel = {"model": "m", "messages": [{"role": "user", "content": "parallel please"}]}
    lines = await events(http, chat_url(simulator), {**parallel, "tools": OPENAI_TOOLS})
    chunks = [ChatCompletionChunk.model_validate_json(line[6:]) for line in lines[:-1]]
    assert chunks[0].choices[0].delta.role == "assistant"
    calls: dict[int, dict[str, str]] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or ():
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            assert delta.function is not None
            if delta.id:  # the first delta of a call carries its id, type and name
                assert not call["id"] and delta.type == "function"
                call.update(id=delta.id, name=delta.function.name or "")
            call["arguments"] += delta.function.arguments or ""
    assert [call["name"] for call in calls.values()] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["arguments"]) == WEATHER_ARGS
    assert json.loads(calls[1]["arguments"]) == {}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "json_object"}, {"reply": "Simulated openai reply to: hello there"}),
        (
            {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}},
            WEATHER_ARGS,
        ),
    ],
)
async def test_openai_response_format_answers_json(
    simulator: Simulator, http: aiohttp.ClientSession, response_format: Any, expected: Any
) -> None:
    _, body, _ = await post(http, chat_url(simulator), {**CHAT, "response_format": response_format})
    assert json.loads(body["choices"][0]["message"]["content"]) == expected


@pytest.mark.parametrize(
    ("fields", "content", "finish"),
    [
        ({"stop": "there"}, "Simulated openai reply to: hello ", "stop"),
        ({"stop": ["zzz", "reply"]}, "Simulated openai ", "stop"),
        ({"max_tokens": 2}, "Simulated openai", "length"),
        ({"max_completion_tokens": 3}, "Simulated openai reply", "length"),
        ({"seed": 7}, "Simulated openai reply to: hello there (seed 7)", "stop"),
    ],
)
async def test_openai_parameters_are_honoured(
    simulator: Simulator, http: aiohttp.ClientSession, fields: Any, content: str, finish: str
) -> None:
    _, body, _ = await post(http, chat_url(simulator), {**CHAT, **fields})
    choice = body["choices"][0]
    assert (choice["message"]["content"], choice["finish_reason"]) == (content, finish)


async def test_openai_n_answers_n_choices_streamed_or_not(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    _, body, _ = await post(http, chat_url(simulator), {**CHAT, "n": 3})
    assert [choice["index"] for choice in body["choices"]] == [0, 1, 2]
    lines = await events(
        http,
        chat_url(simulator),
        {**CHAT, "n": 2, "stream_options": {"include_usage": True}},
    )
    chunks = [msgspec.json.decode(line[6:]) for line in lines[:-1]]
    texts = {0: "", 1: ""}
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
    assert texts == {i: "Simulated openai reply to: hello there" for i in (0, 1)}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 12
    status, body, _ = await post(http, chat_url(simulator), {**CHAT, "n": 0})
    assert status == 400 and "$.n" in body["error"]["message"]


async def test_openai_image_parts_are_read(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    parts = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
    message = {"role": "user", "content": parts}
    _, body, _ = await post(http, chat_url(simulator), {"model": "m", "messages": [message]})
    assert body["choices"][0]["message"]["content"].endswith("what is this? [image]")
    parts[1] = {"type": "image", "source": {}}
    status, body, _ = await post(http, chat_url(simulator), {"model": "m", "messages": [message]})
    assert status == 400
    assert "messages[0].content[1].type" in body["error"]["message"]


async def test_embeddings_are_deterministic_unit_vectors_in_float_or_base64(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    url = f"{simulator.openai_base_url}/embeddings"
    request = {"model": "e", "input": ["alpha", "beta", "alpha"], "dimensions": 8}
    status, body, _ = await post(http, url, request)
    assert status == 200
    CreateEmbeddingResponse.model_validate(body)
    vectors = [item["embedding"] for item in body["data"]]
    assert vectors[0] == vectors[2] != vectors[1]
    assert len(vectors[0]) == 8 and math.isclose(sum(v * v for v in vectors[0]), 1, rel_tol=1e-5)
    _, packed, _ = await post(http, url, {**request, "encoding_format": "base64"})
    decoded = array.array("f", base64.b64decode(packed["data"][0]["embedding"]))
    assert list(decoded) == vectors[0]
    status, body, _ = await post(http, url, {"model": "e", "input": [{"x": 1}]})
    assert status == 400 and "input[0]" in body["error"]["message"]


async def test_anthropic_answers_tool_use_after_a_preamble_and_text_after_results(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    status, body, _ = await post(
        http, messages_url(simulator), {**MESSAGES, "tools": ANTHROPIC_TOOLS}
    )
    assert status == 200
    Message.model_validate(body)
    text, tool_use = body["content"]
    assert text == {"type": "text", "text": "Calling get_weather."}
    assert (tool_use["type"], tool_use["name"], tool_use["input"]) == (
        "tool_use",
        "get_weather",
        WEATHER_ARGS,
    )
    assert body["stop_reason"] == "tool_use"

    forced = {
        **MESSAGES,
        "tools": ANTHROPIC_TOOLS,
        "tool_choice": {"type": "tool", "name": "get_time"},
    }
    _, body, _ = await post(http, messages_url(simulator), forced)
    assert [block["type"] for block in body["content"]] == ["tool_use"]  # forced: no preamble

    result = {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "sunny"}
    history = [
        *MESSAGES["messages"],
        {"role": "assistant", "content": [text, tool_use]},
        {"role": "user", "content": [result]},
    ]
    _, body, _ = await post(
        http, messages_url(simulator), {**MESSAGES, "messages": history, "tools": ANTHROPIC_TOOLS}
    )
    assert body["content"] == [
        {"type": "text", "text": "Simulated anthropic reply to tool results: sunny"}
    ]
    assert body["stop_reason"] == "end_turn"


async def test_anthropic_streams_tool_use_as_input_json_deltas(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    lines = await events(http, messages_url(simulator), {**MESSAGES, "tools": ANTHROPIC_TOOLS})
    payloads = [msgspec.json.decode(line[6:]) for line in lines]
    kinds = [p["type"] for p in payloads]
    assert kinds[:3] == ["message_start", "ping", "content_block_start"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    starts = [p for p in payloads if p["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]
    assert starts[1]["content_block"]["input"] == {} and starts[1]["index"] == 1
    partial = "".join(
        p["delta"]["partial_json"]
        for p in payloads
        if p["type"] == "content_block_delta" and p["delta"]["type"] == "input_json_delta"
    )
    assert json.loads(partial) == WEATHER_ARGS
    assert payloads[-2]["delta"]["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("fields", "content", "stop_reason", "stop_sequence"),
    [
        (
            {"stop_sequences": ["there"]},
            "Simulated anthropic reply to: hello ",
            "stop_sequence",
            "there",
        ),
        ({"max_tokens": 2}, "Simulated anthropic", "max_tokens", None),
    ],
)
async def test_anthropic_stop_sequences_and_max_tokens(
    simulator: Simulator,
    http: aiohttp.ClientSession,
    fields: Any,
    content: str,
    stop_reason: str,
    stop_sequence: str | None,
) -> None:
    _, body, _ = await post(http, messages_url(simulator), {**MESSAGES, **fields})
    assert body["content"] == [{"type": "text", "text": content}]
    assert (body["stop_reason"], body["stop_sequence"]) == (stop_reason, stop_sequence)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"messages": [{"role": "system", "content": "x"}]}, "$.messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}],
                    }
                ]
            },
            "messages[0].content[0].tool_use_id",
        ),
        ({"tool_choice": {"type": "required"}}, "$.tool_choice.type"),
    ],
)
async def test_anthropic_refuses_what_anthropic_refuses_naming_the_field(
    simulator: Simulator, http: aiohttp.ClientSession, change: Any, fragment: str
) -> None:
    body = {**MESSAGES, **change}
    body = {key: value for key, value in body.items() if value is not None}
    status, answer, _ = await post(http, messages_url(simulator), body)
    assert status == 400
    assert answer["error"]["type"] == "invalid_request_error"
    assert fragment in answer["error"]["message"]


async def test_anthropic_count_tokens(simulator: Simulator, http: aiohttp.ClientSession) -> None:
    status, body, _ = await post(http, f"{messages_url(simulator)}/count_tokens", CHAT)
    assert (status, body) == (200, {"input_tokens": 10})


async def test_received_requests_are_listed_with_keys_redacted_and_echoed_on_demand(
    simulator: Simulator, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": "Bearer sk-secret", "x-sim-echo": "1"}
    async with http.post(chat_url(simulator), json=CHAT, headers=headers) as response:
        echoed = await response.json()
    assert json.loads(echoed["choices"][0]["message"]["content"]) == CHAT
    simulator.control(api="anthropic", echo=True)
    _, body, _ = await post(http, messages_url(simulator), MESSAGES)
    assert json.loads(body["content"][0]["text"]) == MESSAGES

    async with http.get(f"{simulator.url}/_received", params={"api": "openai"}) as response:
        listed = await response.json()
    [entry] = listed["received"]
    assert (entry["api"], entry["path"], entry["body"]) == ("openai", "/v1/chat/completions", CHAT)
    assert entry["headers"]["authorization"] == "<redacted>"
    assert "sk-secret" not in json.dumps(listed)
    assert simulator.bodies("anthropic") == [MESSAGES]
    async with http.delete(f"{simulator.url}/_received") as response:
        assert response.status == 200
    assert simulator.bodies() == []


async def test_the_official_sdks_read_its_answers(simulator: Simulator) -> None:
    openai_client = openai.AsyncOpenAI(base_url=simulator.openai_base_url, api_key="k")
    anthropic_client = anthropic.AsyncAnthropic(base_url=simulator.url, api_key="k")
    async with openai_client, anthropic_client:
        completion = await openai_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], tools=OPENAI_TOOLS
        )
        [call] = completion.choices[0].message.tool_calls or []
        assert call.type == "function" and json.loads(call.function.arguments) == WEATHER_ARGS
        vectors = await openai_client.embeddings.create(model="e", input="hi")  # base64
        assert len(vectors.data[0].embedding) == 16
        async with anthropic_client.messages.stream(
            model="m",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            tools=ANTHROPIC_TOOLS,
        ) as stream:
            final = await stream.get_final_message()
        assert [block.type for block in final.content] == ["text", "tool_use"]
        assert final.content[1].input == WEATHER_ARGS  # type: ignore[union-attr]
