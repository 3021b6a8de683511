"""The ``openai`` SDK pointed at the gateway, as a user would: every call on an OpenAI route,
once served by its OpenAI primary and once by its Anthropic fallback (the ``path`` fixture),
which the gateway must translate both ways or refuse with a 400 naming the parameter."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import openai
import pydantic
import pytest

from service.simulator.answers import embedding
from tests.service.http.conftest import Harness
from tests.service.sdk.conftest import (
    API_KEY,
    CLOCK_ARGS,
    OPENAI_CLOCK,
    OPENAI_TOOLS,
    PARALLEL,
    WEATHER_ARGS,
    Path,
)

pytestmark = pytest.mark.anyio

HELLO: list[Any] = [{"role": "user", "content": "hello there"}]


class Weather(pydantic.BaseModel):
    city: str
    unit: Literal["celsius", "fahrenheit"]


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    """No retries: the gateway does the falling back, and a failing test fails at once."""
    async with openai.AsyncOpenAI(
        base_url=f"{base_url}/v1", api_key=API_KEY, max_retries=0, timeout=10
    ) as client:
        yield client


def refused(error: openai.BadRequestError, parameter: str) -> None:
    """A clear 400 that names the parameter with no Anthropic counterpart."""
    assert error.status_code == 400
    assert parameter in str(error.message), error.message


async def test_chat(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    completion = await client.chat.completions.create(model="gpt", messages=HELLO)
    choice = completion.choices[0]
    assert choice.message.content == f"Simulated {served} reply to: hello there"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0
    if served == "openai":  # the answer as the provider sent it, fields the gateway never reads
        assert completion.system_fingerprint == "fp_sim"
        assert completion.id.startswith("chatcmpl-sim")


async def test_chat_stream_with_usage(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    stream = await client.chat.completions.create(
        model="gpt", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Simulated {served} reply to: hello there"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


async def test_models(client: openai.AsyncOpenAI) -> None:
    listed = [model.id async for model in client.models.list()]
    assert {"gpt", "claude", "solo"} <= set(listed)
    model = await client.models.retrieve("claude")
    assert (model.id, model.object) == ("claude", "model")
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no-such-route")


async def test_tool_call_round_trip(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    first = await client.chat.completions.create(model="gpt", messages=HELLO, tools=OPENAI_TOOLS)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    if served == "anthropic":  # the tools arrived as Anthropic tools
        assert path.forwarded("anthropic")["tools"][0]["input_schema"]["required"] == [
            "city",
            "unit",
        ]
    history = [
        *HELLO,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    second = await client.chat.completions.create(model="gpt", messages=history, tools=OPENAI_TOOLS)
    assert second.choices[0].message.content == f"Simulated {served} reply to tool results: sunny"
    assert second.choices[0].finish_reason == "stop"


async def test_tool_call_round_trip_streamed(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    async with client.chat.completions.stream(
        model="gpt", messages=HELLO, tools=OPENAI_TOOLS
    ) as stream:
        first = await stream.get_final_completion()  # the SDK assembles the deltas
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    history = [
        *HELLO,
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [call.model_dump(include={"id", "type", "function"})],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    async with client.chat.completions.stream(
        model="gpt", messages=history, tools=OPENAI_TOOLS
    ) as stream:
        second = await stream.get_final_completion()
    assert second.choices[0].message.content == f"Simulated {served} reply to tool results: sunny"


async def test_parallel_tool_calls_streamed(client: openai.AsyncOpenAI, path: Path) -> None:
    """Two tool calls in one streamed answer keep their own indexes, ids and arguments (from
    an Anthropic fallback too, whose blocks start after a text block)."""
    path.served("gpt")
    async with client.chat.completions.stream(
        model="gpt",
        messages=[{"role": "user", "content": PARALLEL}],
        tools=[*OPENAI_TOOLS, OPENAI_CLOCK],
    ) as stream:
        final = await stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", CLOCK_ARGS),
    ]
    assert len({call.id for call in calls}) == 2
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "get_time"}}}, ["get_time"]),
        ({"tool_choice": "required"}, ["get_weather", "get_time"]),
        ({"tool_choice": "none"}, []),
        ({}, ["get_weather", "get_time"]),  # the prompt asks for both, in parallel
        ({"parallel_tool_calls": False}, ["get_weather"]),
    ],
    ids=["named", "required", "none", "parallel", "not-parallel"],
)
async def test_tool_choice_and_parallel_tool_calls(
    client: openai.AsyncOpenAI, path: Path, fields: dict[str, Any], expected: list[str]
) -> None:
    served = path.served("gpt")
    completion = await client.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": PARALLEL}],
        tools=[*OPENAI_TOOLS, OPENAI_CLOCK],
        **fields,
    )
    message = completion.choices[0].message
    assert [call.function.name for call in message.tool_calls or ()] == expected
    if not expected:
        assert message.content == f"Simulated {served} reply to: {PARALLEL}"


async def test_response_format_json_object(client: openai.AsyncOpenAI, path: Path) -> None:
    path.served("gpt")
    completion = await client.chat.completions.create(
        model="gpt", messages=HELLO, response_format={"type": "json_object"}
    )
    answer = json.loads(completion.choices[0].message.content or "")
    assert isinstance(answer, dict)
    assert completion.choices[0].finish_reason == "stop"


async def test_response_format_json_schema_parses_into_the_model(
    client: openai.AsyncOpenAI, path: Path
) -> None:
    path.served("gpt")
    completion = await client.chat.completions.parse(
        model="gpt", messages=HELLO, response_format=Weather
    )
    message = completion.choices[0].message
    assert message.parsed == Weather(**WEATHER_ARGS)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason == "stop"


async def test_stop(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    completion = await client.chat.completions.create(model="gpt", messages=HELLO, stop=["there"])
    assert completion.choices[0].message.content == f"Simulated {served} reply to: hello "
    assert completion.choices[0].finish_reason == "stop"


async def test_seed(client: openai.AsyncOpenAI, path: Path) -> None:
    if path.served("gpt") == "anthropic":
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt", messages=HELLO, seed=7)
        refused(caught.value, "seed")
        return
    completion = await client.chat.completions.create(model="gpt", messages=HELLO, seed=7)
    assert (
        completion.choices[0].message.content == "Simulated openai reply to: hello there (seed 7)"
    )


async def test_n_choices(client: openai.AsyncOpenAI, path: Path) -> None:
    if path.served("gpt") == "anthropic":
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt", messages=HELLO, n=2)
        refused(caught.value, "n")
        return
    completion = await client.chat.completions.create(model="gpt", messages=HELLO, n=2)
    assert [choice.index for choice in completion.choices] == [0, 1]


async def test_image_parts(client: openai.AsyncOpenAI, path: Path) -> None:
    served = path.served("gpt")
    content: Any = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
    ]
    completion = await client.chat.completions.create(
        model="gpt", messages=[{"role": "user", "content": content}]
    )
    expected = f"Simulated {served} reply to: what is this? [image] [image]"
    assert completion.choices[0].message.content == expected
    if served == "anthropic":
        blocks = path.forwarded("anthropic")["messages"][0]["content"]
        assert [block["source"]["type"] for block in blocks[1:]] == ["base64", "url"]
        assert blocks[1]["source"]["media_type"] == "image/png"


async def test_embeddings(client: openai.AsyncOpenAI, path: Path) -> None:
    if path.served("gpt") == "anthropic":  # the fallback has no embeddings: a clear error
        with pytest.raises(openai.APIStatusError) as caught:
            await client.embeddings.create(model="gpt", input="hello")
        assert caught.value.status_code in (400, 502, 503), caught.value.message
        return
    answer = await client.embeddings.create(model="gpt", input=["hello", "world"])
    assert path.forwarded("openai")["encoding_format"] == "base64"  # the SDK's default
    assert [item.embedding for item in answer.data] == [
        pytest.approx(embedding("hello", 16)),
        pytest.approx(embedding("world", 16)),
    ]


async def test_embeddings_go_to_the_openai_wire_providers_of_a_route(
    client: openai.AsyncOpenAI, gateway: Harness
) -> None:
    answer = await client.embeddings.create(model="claude", input="hello")  # its fallback, a
    assert answer.data[0].embedding == pytest.approx(embedding("hello", 16))
    assert gateway.simulator.apis["anthropic"].requests == 0
    with pytest.raises(openai.BadRequestError) as caught:  # b alone: nobody to ask
        await client.embeddings.create(model="haiku", input="hello")
    assert "embeddings" in str(caught.value.message)


async def test_unknown_parameters_pass_through_or_are_refused_by_name(
    client: openai.AsyncOpenAI, path: Path
) -> None:
    extra = {"future_parameter": {"nested": [1, 2.5, None]}}
    if path.served("gpt") == "anthropic":
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="gpt", messages=HELLO, extra_body=extra)
        refused(caught.value, "future_parameter")
        return
    await client.chat.completions.create(
        model="gpt", messages=HELLO, max_completion_tokens=50, extra_body=extra
    )
    forwarded = path.forwarded("openai")
    assert forwarded["future_parameter"] == extra["future_parameter"]
    assert forwarded["max_completion_tokens"] == 50
    assert forwarded["model"] == "gpt-upstream"  # the route's upstream model


async def test_a_rate_limited_primary_cools_down_and_its_fallback_serves(
    client: openai.AsyncOpenAI, gateway: Harness
) -> None:
    simulator = gateway.simulator
    simulator.control(api="openai", status=429, error_rate=1.0, retry_after=30)
    for _ in range(3):
        completion = await client.chat.completions.create(model="gpt", messages=HELLO)
        assert completion.choices[0].message.content == "Simulated anthropic reply to: hello there"
    assert simulator.apis["openai"].requests == 1  # cooling down: not called again
    with pytest.raises(openai.RateLimitError) as caught:  # nowhere else to go
        await client.chat.completions.create(model="solo", messages=HELLO)
    retry_after = float(caught.value.response.headers["retry-after"])
    assert 25 <= retry_after <= 30
    assert simulator.apis["openai"].requests == 1
    breaker = await gateway.breaker(gateway.a)
    assert breaker["state"] == "closed"  # a 429 is not a failure of the provider


async def test_an_open_breaker_fails_fast_through_the_sdks_default_retries(
    client: openai.AsyncOpenAI, gateway: Harness, base_url: str
) -> None:
    gateway.simulator.control(api="openai", outage=True)
    for _ in range(2):  # failure_threshold = 2
        with pytest.raises(openai.APIStatusError):
            await client.chat.completions.create(model="solo", messages=HELLO)
    assert (await gateway.breaker(gateway.a))["state"] == "open"
    async with openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key=API_KEY) as default:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as caught:
            await default.chat.completions.create(model="solo", messages=HELLO)
        elapsed = time.monotonic() - started
    assert caught.value.status_code == 503
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert 0 < float(caught.value.response.headers["retry-after"]) <= 30
    assert elapsed < 1.0
    assert gateway.simulator.apis["openai"].requests == 2  # the rejected one never left
