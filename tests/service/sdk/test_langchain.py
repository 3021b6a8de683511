"""LangChain's ``ChatOpenAI`` pointed at the gateway: ``bind_tools`` and
``with_structured_output``, served by the OpenAI primary and by the Anthropic fallback."""

from __future__ import annotations

from typing import Any, Literal

import pydantic
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.service.sdk.conftest import API_KEY, WEATHER_ARGS, Path

pytestmark = pytest.mark.anyio


class Weather(pydantic.BaseModel):
    """The weather in a city."""

    city: str
    unit: Literal["celsius", "fahrenheit"]


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
    """The current weather in ``city``."""
    return f"sunny in {city}"


def chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt",
        base_url=f"{base_url}/v1",
        api_key=SecretStr(API_KEY),
        max_retries=0,
        timeout=10,
    )


async def test_bind_tools_round_trip(base_url: str, path: Path) -> None:
    served = path.served("gpt")
    model = chat(base_url).bind_tools([get_weather])
    question = HumanMessage("hello there")
    first = await model.ainvoke([question])
    assert isinstance(first, AIMessage)
    [call] = first.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", WEATHER_ARGS)
    result = ToolMessage(content=get_weather.invoke(call["args"]), tool_call_id=call["id"])
    second = await model.ainvoke([question, first, result])
    expected = f"Simulated {served} reply to tool results: sunny in sim-city"
    assert second.content == expected


async def test_with_structured_output(base_url: str, path: Path) -> None:
    path.served("gpt")
    structured = chat(base_url).with_structured_output(Weather)
    answer = await structured.ainvoke("what is the weather?")
    assert answer == Weather(**WEATHER_ARGS)  # type: ignore[arg-type]


async def test_streaming_tool_calls(base_url: str, path: Path) -> None:
    path.served("gpt")
    model = chat(base_url).bind_tools([get_weather])
    merged: Any = None
    async for chunk in model.astream("hello there"):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    [call] = merged.tool_calls
    assert (call["name"], call["args"]) == ("get_weather", WEATHER_ARGS)
