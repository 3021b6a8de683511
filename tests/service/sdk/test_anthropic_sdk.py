"""The ``anthropic`` SDK pointed at the gateway's ``/v1/messages``: on the Anthropic route
(passed through, or translated to its OpenAI fallback) and on the OpenAI route (translated,
or passed through to its Anthropic fallback), with a tool, plain and streamed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest

from tests.service.sdk.conftest import (
    ANTHROPIC_CLOCK,
    ANTHROPIC_TOOLS,
    API_KEY,
    CLOCK_ARGS,
    PARALLEL,
    WEATHER_ARGS,
    Path,
)

pytestmark = pytest.mark.anyio

HELLO: list[Any] = [{"role": "user", "content": "hello there"}]
ROUTES = pytest.mark.parametrize("route", ["claude", "gpt"])


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=base_url, api_key=API_KEY, max_retries=0, timeout=10
    ) as client:
        yield client


def tool_use(message: anthropic.types.Message) -> anthropic.types.ToolUseBlock:
    [block] = [block for block in message.content if block.type == "tool_use"]
    assert isinstance(block, anthropic.types.ToolUseBlock)
    return block


def text(message: anthropic.types.Message) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


@ROUTES
async def test_messages_create_with_a_tool_round_trip(
    client: anthropic.AsyncAnthropic, path: Path, route: str
) -> None:
    served = path.served(route)
    first = await client.messages.create(
        model=route, max_tokens=256, messages=HELLO, tools=ANTHROPIC_TOOLS
    )
    assert first.stop_reason == "tool_use"
    if served == "anthropic":  # the message as the provider sent it
        assert first.id.startswith("msg_sim")
    call = tool_use(first)
    assert (call.name, call.input) == ("get_weather", WEATHER_ARGS)
    if served == "openai":  # the tool arrived as an OpenAI function
        assert path.forwarded("openai")["tools"][0]["function"]["name"] == "get_weather"
    history = [
        *HELLO,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
        },
    ]
    second = await client.messages.create(
        model=route, max_tokens=256, messages=history, tools=ANTHROPIC_TOOLS
    )
    assert text(second) == f"Simulated {served} reply to tool results: sunny"
    assert second.stop_reason == "end_turn"
    assert second.usage.input_tokens > 0 and second.usage.output_tokens > 0


@ROUTES
async def test_messages_stream_with_a_tool(
    client: anthropic.AsyncAnthropic, path: Path, route: str
) -> None:
    path.served(route)
    async with client.messages.stream(
        model=route, max_tokens=256, messages=HELLO, tools=ANTHROPIC_TOOLS
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "input_json" in kinds
    assert final.stop_reason == "tool_use"
    call = tool_use(final)
    assert (call.name, call.input) == ("get_weather", WEATHER_ARGS)


@ROUTES
async def test_messages_stream_with_parallel_tools(
    client: anthropic.AsyncAnthropic, path: Path, route: str
) -> None:
    path.served(route)
    async with client.messages.stream(
        model=route,
        max_tokens=256,
        messages=[{"role": "user", "content": PARALLEL}],
        tools=[*ANTHROPIC_TOOLS, ANTHROPIC_CLOCK],
    ) as stream:
        final = await stream.get_final_message()
    uses = [block for block in final.content if block.type == "tool_use"]
    assert [(use.name, use.input) for use in uses] == [
        ("get_weather", WEATHER_ARGS),
        ("get_time", CLOCK_ARGS),
    ]
    assert final.stop_reason == "tool_use"


@ROUTES
@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "tool", "name": "get_time"}, ["get_time"]),
        ({"type": "any", "disable_parallel_tool_use": True}, ["get_weather"]),
        ({"type": "none"}, []),
    ],
    ids=["named", "any-not-parallel", "none"],
)
async def test_tool_choice(
    client: anthropic.AsyncAnthropic,
    path: Path,
    route: str,
    choice: Any,
    expected: list[str],
) -> None:
    path.served(route)
    answer = await client.messages.create(
        model=route,
        max_tokens=256,
        messages=[{"role": "user", "content": PARALLEL}],
        tools=[*ANTHROPIC_TOOLS, ANTHROPIC_CLOCK],
        tool_choice=choice,
    )
    assert [block.name for block in answer.content if block.type == "tool_use"] == expected
    assert answer.stop_reason == ("tool_use" if expected else "end_turn")


@ROUTES
async def test_messages_with_an_image(
    client: anthropic.AsyncAnthropic, path: Path, route: str
) -> None:
    served = path.served(route)
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    content: Any = [{"type": "text", "text": "what is this?"}, {"type": "image", "source": image}]
    answer = await client.messages.create(
        model=route, max_tokens=256, messages=[{"role": "user", "content": content}]
    )
    assert text(answer) == f"Simulated {served} reply to: what is this? [image]"
    if served == "openai":
        parts = path.forwarded("openai")["messages"][0]["content"]
        assert parts[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgo="


@ROUTES
async def test_messages_stream_text(
    client: anthropic.AsyncAnthropic, path: Path, route: str
) -> None:
    served = path.served(route)
    async with client.messages.stream(
        model=route,
        max_tokens=256,
        system="be brief",
        messages=HELLO,
        stop_sequences=["there"],
    ) as stream:
        pieces = [piece async for piece in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(pieces) == f"Simulated {served} reply to: hello "
    assert final.stop_reason in ("stop_sequence", "end_turn")  # OpenAI does not say which


@pytest.mark.parametrize(("route", "counted"), [("claude", True), ("gpt", False), ("solo", False)])
async def test_count_tokens_on_anthropic_routes_only(
    client: anthropic.AsyncAnthropic, route: str, counted: bool
) -> None:
    if counted:
        answer = await client.messages.count_tokens(model=route, messages=HELLO)
        assert answer.input_tokens == 10
        return
    with pytest.raises(anthropic.BadRequestError) as caught:
        await client.messages.count_tokens(model=route, messages=HELLO)
    assert "count_tokens" in str(caught.value.message)
