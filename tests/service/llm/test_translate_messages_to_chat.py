"""Anthropic Messages requests (``/v1/messages``) for an OpenAI-wire provider: one table row
per field rule, refusals naming the field, and round trips through both directions."""

from __future__ import annotations

from typing import Any

import pytest

from service.llm.translate import (
    UntranslatableError,
    chat_request_to_messages,
    messages_request_to_chat,
)

HI = [{"role": "user", "content": "hi"}]
BASE_IN: dict[str, Any] = {"model": "claude-route", "max_tokens": 256, "messages": HI}
BASE_OUT: dict[str, Any] = {"model": "gpt-x", "messages": HI, "max_tokens": 256}

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {"name": "weather", "description": "Weather in a city", "input_schema": WEATHER}
WEATHER_CHAT = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather in a city", "parameters": WEATHER},
}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return messages_request_to_chat(body, model="gpt-x")


def tool_use(id_: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": id_, "name": name, "input": input_}


def chat_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


PARAMETER_RULES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("model is the provider's; max_tokens stays max_tokens", {}, {}),
    (
        "temperature and top_p",
        {"temperature": 0.3, "top_p": 0.8},
        {"temperature": 0.3, "top_p": 0.8},
    ),
    ("stop_sequences -> stop", {"stop_sequences": ["END"]}, {"stop": ["END"]}),
    (
        "stream asks for usage",
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
    ),
    ("stream false", {"stream": False}, {"stream": False}),
    ("metadata.user_id -> user", {"metadata": {"user_id": "u-1"}}, {"user": "u-1"}),
    (
        "tools -> function tools with parameters",
        {"tools": [WEATHER_TOOL]},
        {"tools": [WEATHER_CHAT]},
    ),
    (
        "custom type, strict and cache_control on a tool",
        {
            "tools": [
                WEATHER_TOOL
                | {"type": "custom", "strict": True, "cache_control": {"type": "ephemeral"}}
            ]
        },
        {"tools": [{"type": "function", "function": WEATHER_CHAT["function"] | {"strict": True}}]},
    ),
    ("tool_choice auto", {"tool_choice": {"type": "auto"}}, {"tool_choice": "auto"}),
    ("tool_choice any -> required", {"tool_choice": {"type": "any"}}, {"tool_choice": "required"}),
    ("tool_choice none", {"tool_choice": {"type": "none"}}, {"tool_choice": "none"}),
    (
        "tool_choice tool -> a named function",
        {"tool_choice": {"type": "tool", "name": "weather"}},
        {"tool_choice": {"type": "function", "function": {"name": "weather"}}},
    ),
    (
        "disable_parallel_tool_use -> parallel_tool_calls false",
        {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        {"tool_choice": "required", "parallel_tool_calls": False},
    ),
    (
        "output_config.format -> response_format json_schema",
        {"output_config": {"format": {"type": "json_schema", "schema": WEATHER}}},
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": WEATHER},
            }
        },
    ),
    ("thinking disabled asks nothing", {"thinking": {"type": "disabled"}}, {}),
    (
        "top-level cache_control is a hint for Anthropic only",
        {"cache_control": {"type": "ephemeral"}},
        {},
    ),
    ("null fields", {"top_k": None, "system": None, "brand_new": None}, {}),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [r[1:] for r in PARAMETER_RULES], ids=[r[0] for r in PARAMETER_RULES]
)
def test_parameter_rules(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    assert translate(BASE_IN | extra) == BASE_OUT | expected


MESSAGE_RULES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("a string turn passes", {}, HI),
    (
        "system string -> a system message first",
        {"system": "Be brief."},
        [{"role": "system", "content": "Be brief."}, *HI],
    ),
    (
        "one system block -> a system string",
        {"system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
        [{"role": "system", "content": "Be brief."}, *HI],
    ),
    (
        "system blocks -> text parts",
        {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]},
        [
            {
                "role": "system",
                "content": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
            },
            *HI,
        ],
    ),
    (
        "text and image blocks -> parts",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "AAA"},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
            }
        ],
    ),
    (
        "a PDF document -> a file part",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "title": "a.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBER",
                            },
                        }
                    ],
                }
            ]
        },
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "file_data": "data:application/pdf;base64,JVBER",
                            "filename": "a.pdf",
                        },
                    }
                ],
            }
        ],
    ),
    (
        "assistant tool_use -> tool_calls with JSON arguments; text joined",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Looking"},
                        {"type": "text", "text": " it up."},
                        tool_use("t1", "weather", {"city": "Paris"}),
                    ],
                },
                *HI,
            ]
        },
        [
            *HI,
            {
                "role": "assistant",
                "content": "Looking it up.",
                "tool_calls": [chat_call("t1", "weather", '{"city":"Paris"}')],
            },
            *HI,
        ],
    ),
    (
        "thinking blocks of earlier turns are left out",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "redacted_thinking", "data": "x"},
                        tool_use("t1", "now", {}),
                    ],
                },
                *HI,
            ]
        },
        [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [chat_call("t1", "now", "{}")]},
            *HI,
        ],
    ),
    (
        "tool_result blocks -> tool messages, before the rest of the turn",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [tool_use("t1", "w", {}), tool_use("t2", "w", {})],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "t2",
                            "content": [{"type": "text", "text": "rain"}],
                            "is_error": True,
                        },
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ]
        },
        [
            *HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [chat_call("t1", "w", "{}"), chat_call("t2", "w", "{}")],
            },
            {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "t2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "and tomorrow?"},  # one text block is a string
        ],
    ),
    (
        "a tool_result without content is an empty string",
        {
            "messages": [
                *HI,
                {"role": "assistant", "content": [tool_use("t1", "w", {})]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
            ]
        },
        [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [chat_call("t1", "w", "{}")]},
            {"role": "tool", "tool_call_id": "t1", "content": ""},
        ],
    ),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [r[1:] for r in MESSAGE_RULES], ids=[r[0] for r in MESSAGE_RULES]
)
def test_message_rules(extra: dict[str, Any], expected: list[dict[str, Any]]) -> None:
    assert translate(BASE_IN | extra)["messages"] == expected


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("top_k", {"top_k": 5}, "top_k"),
    ("thinking enabled", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking"),
    ("container", {"container": "c-1"}, "container"),
    (
        "mcp_servers",
        {"mcp_servers": [{"type": "url", "url": "https://x", "name": "m"}]},
        "mcp_servers",
    ),
    ("service_tier", {"service_tier": "auto"}, "service_tier"),
    ("an unknown field", {"brand_new": 1}, "brand_new"),
    ("metadata other than user_id", {"metadata": {"trace": "t"}}, "metadata.trace"),
    (
        "a server tool",
        {"tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        "tools[0].type",
    ),
    ("a tool without input_schema", {"tools": [{"name": "w"}]}, "tools[0].input_schema"),
    (
        "input_examples on a tool",
        {"tools": [WEATHER_TOOL | {"input_examples": [{"city": "x"}]}]},
        "tools[0].input_examples",
    ),
    ("an unknown tool_choice", {"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ("output_config effort", {"output_config": {"effort": "high"}}, "output_config.effort"),
    ("a system role turn", {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    (
        "a server tool block",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}
                    ],
                },
            ]
        },
        "messages[1].content[0].type",
    ),
    (
        "a search_result block",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "search_result", "source": "s", "title": "t", "content": []}
                    ],
                }
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        "an image in a tool result",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [
                                {"type": "image", "source": {"type": "url", "url": "https://x"}}
                            ],
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].content[0].type",
    ),
    (
        "an image by file id",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ]
        },
        "messages[0].content[0].source.type",
    ),
    (
        "a text document",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        }
                    ],
                }
            ]
        },
        "messages[0].content[0].source",
    ),
    (
        "citations on a text block",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "x", "citations": [{"type": "char_location"}]}
                    ],
                }
            ]
        },
        "messages[0].content[0].citations",
    ),
    (
        "tool_use input not an object",
        {
            "messages": [
                *HI,
                {"role": "assistant", "content": [tool_use("t", "w", {}) | {"input": "x"}]},
            ]
        },
        "messages[1].content[0].input",
    ),
    ("messages missing", {"messages": None}, "messages"),
    (
        "a last assistant turn (prefill)",
        {"messages": [*HI, {"role": "assistant", "content": "The answer is"}]},
        "messages[1].role",
    ),
]


@pytest.mark.parametrize(
    ("extra", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableError) as caught:
        translate(BASE_IN | extra)
    assert caught.value.field == field


# -- round trips -----------------------------------------------------------------------------

TOOL_CONVERSATION: dict[str, Any] = {
    "model": "m",
    "max_tokens": 100,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                chat_call("c1", "weather", '{"city":"Paris"}'),
                chat_call("c2", "weather", '{"city":"Rome"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {"role": "assistant", "content": "Paris: sunny. Rome: rain."},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [WEATHER_CHAT],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "parallel_tool_calls": False,
    "stop": ["END"],
    "temperature": 0.5,
    "stream": True,
    "user": "u-1",
}


def test_a_chat_tool_conversation_survives_chat_to_messages_to_chat() -> None:
    there = chat_request_to_messages(TOOL_CONVERSATION, model="m", default_max_tokens=1)
    back = messages_request_to_chat(there, model="m")
    # Everything comes back; only the forms Anthropic has no other way to say differ:
    # stop as a list, max_tokens, and usage asked for on a stream.
    assert back == TOOL_CONVERSATION | {"stream_options": {"include_usage": True}}


def test_an_anthropic_tool_conversation_survives_messages_to_chat_to_messages() -> None:
    body = {
        "model": "m",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    tool_use("t1", "weather", {"city": "Paris"}),
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }
    there = messages_request_to_chat(body, model="m")
    assert chat_request_to_messages(there, model="m", default_max_tokens=1) == body
