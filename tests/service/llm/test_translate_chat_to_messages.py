"""Chat Completions requests for an Anthropic provider: one table row per field rule.

Each row is a Chat request (a base request plus the fields of the rule) and the Anthropic
request it must become (the base translation plus the fields the rule produces).  Refusals are
a table too: the field path each error must name.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from service.llm.translate import (
    UntranslatableError,
    chat_request_to_messages,
    structured_output_requested,
)

HI = [{"role": "user", "content": "hi"}]
BASE_IN: dict[str, Any] = {"model": "gpt-route", "messages": HI}
BASE_OUT: dict[str, Any] = {"model": "claude-x", "max_tokens": 512, "messages": HI}

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather in a city", "parameters": WEATHER},
}
WEATHER_ANTHROPIC = {"name": "weather", "description": "Weather in a city", "input_schema": WEATHER}
PNG = "iVBORw0KGgo="
EPHEMERAL = {"type": "ephemeral"}


def call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return chat_request_to_messages(body, model="claude-x", default_max_tokens=512)


# (rule, Chat fields added to BASE_IN, Anthropic fields expected beside BASE_OUT's)
PARAMETER_RULES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("model is the provider's, max_tokens defaults", {}, {}),
    ("max_tokens", {"max_tokens": 99}, {"max_tokens": 99}),
    ("max_completion_tokens", {"max_completion_tokens": 77}, {"max_tokens": 77}),
    (
        "both max token fields agreeing",
        {"max_tokens": 5, "max_completion_tokens": 5},
        {"max_tokens": 5},
    ),
    (
        "temperature and top_p",
        {"temperature": 0.2, "top_p": 0.9},
        {"temperature": 0.2, "top_p": 0.9},
    ),
    ("temperature above Anthropic's 1 passes", {"temperature": 1.5}, {"temperature": 1.5}),
    ("stop as a string", {"stop": "END"}, {"stop_sequences": ["END"]}),
    ("stop as a list", {"stop": ["a", "b"]}, {"stop_sequences": ["a", "b"]}),
    ("stream", {"stream": True}, {"stream": True}),
    (
        "stream_options is consumed",
        {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": True},
    ),
    ("user -> metadata.user_id", {"user": "u-1"}, {"metadata": {"user_id": "u-1"}}),
    (
        "safety_identifier -> metadata.user_id",
        {"safety_identifier": "u-2"},
        {"metadata": {"user_id": "u-2"}},
    ),
    ("metadata.user_id", {"metadata": {"user_id": "u-3"}}, {"metadata": {"user_id": "u-3"}}),
    ("metadata.user", {"metadata": {"user": "u-4"}}, {"metadata": {"user_id": "u-4"}}),
    (
        "user and metadata agreeing",
        {"user": "u", "metadata": {"user_id": "u"}},
        {"metadata": {"user_id": "u"}},
    ),
    ("tools -> input_schema", {"tools": [WEATHER_TOOL]}, {"tools": [WEATHER_ANTHROPIC]}),
    (
        "a tool without parameters takes no input",
        {"tools": [{"type": "function", "function": {"name": "now"}}]},
        {"tools": [{"name": "now", "input_schema": {"type": "object", "properties": {}}}]},
    ),
    (
        "a strict tool stays strict",
        {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "w", "parameters": WEATHER, "strict": True},
                }
            ]
        },
        {"tools": [{"name": "w", "input_schema": WEATHER, "strict": True}]},
    ),
    (
        "cache_control on a tool",
        {"tools": [WEATHER_TOOL | {"cache_control": EPHEMERAL}]},
        {"tools": [WEATHER_ANTHROPIC | {"cache_control": EPHEMERAL}]},
    ),
    (
        "tool_choice auto",
        {"tools": [WEATHER_TOOL], "tool_choice": "auto"},
        {"tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "auto"}},
    ),
    (
        "tool_choice none",
        {"tools": [WEATHER_TOOL], "tool_choice": "none"},
        {"tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "none"}},
    ),
    (
        "tool_choice required -> any",
        {"tools": [WEATHER_TOOL], "tool_choice": "required"},
        {"tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "any"}},
    ),
    (
        "tool_choice a named function -> tool",
        {
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        },
        {"tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "tool", "name": "weather"}},
    ),
    (
        "parallel_tool_calls false -> disable_parallel_tool_use",
        {"tools": [WEATHER_TOOL], "parallel_tool_calls": False},
        {
            "tools": [WEATHER_ANTHROPIC],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        },
    ),
    (
        "parallel_tool_calls false on a forced choice",
        {"tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
        {
            "tools": [WEATHER_ANTHROPIC],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
    ),
    (
        "parallel_tool_calls false with tool_choice none says nothing more",
        {"tools": [WEATHER_TOOL], "tool_choice": "none", "parallel_tool_calls": False},
        {"tools": [WEATHER_ANTHROPIC], "tool_choice": {"type": "none"}},
    ),
    (
        "parallel_tool_calls true is the default",
        {"tools": [WEATHER_TOOL], "parallel_tool_calls": True},
        {"tools": [WEATHER_ANTHROPIC]},
    ),
    ("parallel_tool_calls without tools asks nothing", {"parallel_tool_calls": False}, {}),
    ("response_format text", {"response_format": {"type": "text"}}, {}),
    (
        "response_format json_schema -> a forced tool named after the schema",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": WEATHER, "strict": True},
            }
        },
        {
            "tools": [{"name": "city", "input_schema": WEATHER, "strict": True}],
            "tool_choice": {"type": "tool", "name": "city"},
        },
    ),
    (
        "json_schema description goes to the tool",
        {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "c", "description": "A city", "schema": WEATHER},
            }
        },
        {
            "tools": [{"name": "c", "description": "A city", "input_schema": WEATHER}],
            "tool_choice": {"type": "tool", "name": "c"},
        },
    ),
    (
        "response_format json_object -> a forced tool with an open object schema",
        {"response_format": {"type": "json_object"}},
        {
            "tools": [
                {
                    "name": "json_object",
                    "input_schema": {
                        "type": "object",
                        "properties": {},
                        "additionalProperties": True,
                    },
                }
            ],
            "tool_choice": {"type": "tool", "name": "json_object"},
        },
    ),
    # Neutral values of fields without a counterpart ask for nothing.
    ("n 1", {"n": 1}, {}),
    ("logprobs false", {"logprobs": False}, {}),
    ("penalties 0", {"presence_penalty": 0, "frequency_penalty": 0.0}, {}),
    ("modalities text", {"modalities": ["text"]}, {}),
    ("store false", {"store": False}, {}),
    (
        "null fields",
        {"seed": None, "logit_bias": None, "tools": None, "stop": None, "brand_new_field": None},
        {},
    ),
    ("empty logit_bias", {"logit_bias": {}}, {}),
]


@pytest.mark.parametrize(
    ("extra", "expected"), [r[1:] for r in PARAMETER_RULES], ids=[r[0] for r in PARAMETER_RULES]
)
def test_parameter_rules(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    assert translate(BASE_IN | extra) == BASE_OUT | expected


# (rule, Chat messages, Anthropic fields expected: system and messages)
MESSAGE_RULES: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = [
    ("a string passes as it is", HI, {"messages": HI}),
    (
        "cache_control on a part -> on its block",
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "long", "cache_control": EPHEMERAL}],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "long", "cache_control": EPHEMERAL}],
                }
            ]
        },
    ),
    (
        "cache_control on a message -> on its last block",
        [
            {"role": "system", "content": "rules", "cache_control": EPHEMERAL},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "a"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                ],
                "cache_control": EPHEMERAL,
            },
        ],
        {
            "system": [{"type": "text", "text": "rules", "cache_control": EPHEMERAL}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "a"},
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x.test/a.png"},
                            "cache_control": EPHEMERAL,
                        },
                    ],
                }
            ],
        },
    ),
    (
        "cache_control on a tool message -> on its tool_result",
        [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "w", "{}")]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny", "cache_control": EPHEMERAL},
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "c1",
                            "content": "sunny",
                            "cache_control": EPHEMERAL,
                        }
                    ],
                },
            ]
        },
    ),
    (
        "one system message -> system string",
        [{"role": "system", "content": "Be brief."}, *HI],
        {"system": "Be brief.", "messages": HI},
    ),
    (
        "developer -> system",
        [{"role": "developer", "content": "Be brief."}, *HI],
        {"system": "Be brief.", "messages": HI},
    ),
    (
        "several system messages, wherever they are -> text blocks in order",
        [
            {"role": "system", "content": "A"},
            *HI,
            {"role": "developer", "content": [{"type": "text", "text": "B"}]},
        ],
        {"system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], "messages": HI},
    ),
    (
        "text parts -> text blocks",
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                }
            ]
        },
    ),
    (
        "an https image -> url source (detail is a resolution hint, not forwarded)",
        [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://x.test/a.png", "detail": "high"},
                    }
                ],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
                    ],
                }
            ]
        },
    ),
    (
        "a data URL image -> base64 source with its media type",
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
                ],
            }
        ],
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        }
                    ],
                }
            ]
        },
    ),
    (
        "a PDF file -> a document",
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
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBER",
                            },
                            "title": "a.pdf",
                        }
                    ],
                }
            ]
        },
    ),
    (
        "assistant text passes",
        [*HI, {"role": "assistant", "content": "hello"}],
        {"messages": [*HI, {"role": "assistant", "content": "hello"}]},
    ),
    (
        "assistant tool_calls -> tool_use blocks, arguments decoded",
        [
            *HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("c1", "weather", '{"city": "Paris"}')],
            },
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "c1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
            ]
        },
    ),
    (
        "assistant text beside tool calls comes first; empty arguments are {}",
        [
            *HI,
            {"role": "assistant", "content": "Let me look.", "tool_calls": [call("c1", "now", "")]},
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "c1", "name": "now", "input": {}},
                    ],
                },
            ]
        },
    ),
    (
        "an SDK dump of an answer (nulls, empty annotations, empty content) replays",
        [
            *HI,
            {
                "role": "assistant",
                "content": "",
                "refusal": None,
                "annotations": [],
                "audio": None,
                "function_call": None,
                "tool_calls": [call("c1", "now", "{}")],
            },
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c1", "name": "now", "input": {}}],
                },
            ]
        },
    ),
    (
        "an earlier refusal goes back as text",
        [*HI, {"role": "assistant", "content": None, "refusal": "I can't."}],
        {
            "messages": [
                *HI,
                {"role": "assistant", "content": [{"type": "text", "text": "I can't."}]},
            ]
        },
    ),
    (
        "consecutive tool messages -> tool_result blocks of one user turn",
        [
            *HI,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call("c1", "w", "{}"), call("c2", "w", "{}")],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [
                        {"type": "tool_use", "id": "c1", "name": "w", "input": {}},
                        {"type": "tool_use", "id": "c2", "name": "w", "input": {}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                        {
                            "type": "tool_result",
                            "tool_use_id": "c2",
                            "content": [{"type": "text", "text": "rain"}],
                        },
                    ],
                },
            ]
        },
    ),
    (
        "a user message after tool results joins their turn",
        [
            *HI,
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "w", "{}")]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "user", "content": "and tomorrow?"},
            {"role": "user", "content": "thanks"},
        ],
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "c1", "name": "w", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
                {"role": "user", "content": "thanks"},
            ]
        },
    ),
]


@pytest.mark.parametrize(
    ("messages", "expected"), [r[1:] for r in MESSAGE_RULES], ids=[r[0] for r in MESSAGE_RULES]
)
def test_message_rules(messages: list[dict[str, Any]], expected: dict[str, Any]) -> None:
    # (with tools declared: Anthropic wants them wherever the conversation has tool calls)
    out = translate(BASE_IN | {"messages": messages, "tools": [WEATHER_TOOL]})
    assert {k: v for k, v in out.items() if k in ("system", "messages")} == expected


def test_text_passes_as_the_same_objects_and_the_input_is_left_alone() -> None:
    text = "x" * 1000
    body = BASE_IN | {"messages": [{"role": "user", "content": text}], "tools": [WEATHER_TOOL]}
    snapshot = pickle.dumps(body)
    out = translate(body)
    assert out["messages"][0]["content"] is text
    assert out["tools"][0]["input_schema"] is WEATHER
    assert pickle.dumps(body) == snapshot


# (rule, Chat fields added to BASE_IN, the field path the error must name)
REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("n > 1", {"n": 2}, "n"),
    ("logprobs", {"logprobs": True}, "logprobs"),
    ("top_logprobs", {"top_logprobs": 3}, "top_logprobs"),
    ("seed", {"seed": 7}, "seed"),
    ("presence_penalty", {"presence_penalty": 0.5}, "presence_penalty"),
    ("frequency_penalty", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("logit_bias", {"logit_bias": {"50256": -100}}, "logit_bias"),
    ("modalities with audio", {"modalities": ["text", "audio"]}, "modalities"),
    ("audio output", {"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("prediction", {"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ("store", {"store": True}, "store"),
    ("reasoning_effort", {"reasoning_effort": "high"}, "reasoning_effort"),
    (
        "web_search_options",
        {"web_search_options": {"search_context_size": "low"}},
        "web_search_options",
    ),
    ("the deprecated functions", {"functions": [{"name": "f"}]}, "functions"),
    ("an unknown field", {"brand_new_field": 1}, "brand_new_field"),
    ("max token fields disagreeing", {"max_tokens": 5, "max_completion_tokens": 6}, "max_tokens"),
    ("max_tokens not an integer", {"max_tokens": "many"}, "max_tokens"),
    ("stop with a non-string", {"stop": ["a", 3]}, "stop[1]"),
    ("a whitespace stop sequence", {"stop": ["END", "\n"]}, "stop[1]"),
    ("a whitespace stop string", {"stop": " "}, "stop"),
    (
        "tool calls in the conversation without tools",
        {
            "messages": [
                *HI,
                {"role": "assistant", "tool_calls": [call("c", "w", "{}")]},
                {"role": "tool", "tool_call_id": "c", "content": "x"},
            ]
        },
        "tools",
    ),
    (
        "cache_control not an object",
        {"messages": [{"role": "user", "content": "x", "cache_control": "yes"}]},
        "messages[0].cache_control",
    ),
    (
        "cache_control on an empty message",
        {"messages": [{"role": "user", "content": [], "cache_control": {"type": "ephemeral"}}]},
        "messages[0].cache_control",
    ),
    ("two different users", {"user": "a", "metadata": {"user_id": "b"}}, "metadata.user_id"),
    ("other metadata", {"metadata": {"trace": "t"}}, "metadata.trace"),
    ("stream_options unknown", {"stream_options": {"chunk_size": 3}}, "stream_options.chunk_size"),
    ("a custom tool", {"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type"),
    (
        "a tool with an unknown key",
        {"tools": [{"type": "function", "function": {"name": "x", "cache": 1}}]},
        "tools[0].function.cache",
    ),
    (
        "tool_choice allowed_tools",
        {"tools": [WEATHER_TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
        "tool_choice.type",
    ),
    ("tool_choice nonsense", {"tool_choice": "sometimes"}, "tool_choice"),
    ("parallel_tool_calls not a bool", {"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    (
        "json_schema beside tools",
        {
            "tools": [WEATHER_TOOL],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "c", "schema": WEATHER},
            },
        },
        "response_format",
    ),
    (
        "json_object beside tool_choice",
        {"tool_choice": "none", "response_format": {"type": "json_object"}},
        "response_format",
    ),
    (
        "json_schema without a name",
        {"response_format": {"type": "json_schema", "json_schema": {"schema": WEATHER}}},
        "response_format.json_schema.name",
    ),
    (
        "an unknown response_format",
        {"response_format": {"type": "grammar"}},
        "response_format.type",
    ),
    ("messages not a list", {"messages": "hi"}, "messages"),
    ("a message not an object", {"messages": ["hi"]}, "messages[0]"),
    ("an unknown role", {"messages": [{"role": "narrator", "content": "x"}]}, "messages[0].role"),
    (
        "the function role",
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        "messages[0].role",
    ),
    (
        "a name on a message",
        {"messages": [{"role": "user", "name": "bob", "content": "x"}]},
        "messages[0].name",
    ),
    (
        "audio input",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        "an unknown part",
        {"messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]},
        "messages[0].content[0].type",
    ),
    (
        "an image in a system message",
        {
            "messages": [
                {
                    "role": "system",
                    "content": [{"type": "image_url", "image_url": {"url": "https://x"}}],
                },
                *HI,
            ]
        },
        "messages[0].content[0].type",
    ),
    (
        "an image of a type Anthropic refuses",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AA"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "an image URL of another scheme",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "ftp://x/a.png"}}],
                }
            ]
        },
        "messages[0].content[0].image_url.url",
    ),
    (
        "a file by id",
        {
            "messages": [
                {"role": "user", "content": [{"type": "file", "file": {"file_id": "file-1"}}]}
            ]
        },
        "messages[0].content[0].file.file_id",
    ),
    (
        "a file that is not a PDF",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "file", "file": {"file_data": "data:text/csv;base64,AA"}}],
                }
            ]
        },
        "messages[0].content[0].file.file_data",
    ),
    (
        "tool arguments not JSON",
        {"messages": [*HI, {"role": "assistant", "tool_calls": [call("c", "w", "{city:")]}]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "tool arguments not an object",
        {"messages": [*HI, {"role": "assistant", "tool_calls": [call("c", "w", "[1, 2]")]}]},
        "messages[1].tool_calls[0].function.arguments",
    ),
    (
        "a tool call without an id",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"type": "function", "function": {"name": "w", "arguments": "{}"}}
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].id",
    ),
    (
        "a custom tool call",
        {
            "messages": [
                *HI,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "type": "custom", "custom": {"name": "w", "input": "x"}}
                    ],
                },
            ]
        },
        "messages[1].tool_calls[0].custom",
    ),
    (
        "audio in an assistant message",
        {"messages": [*HI, {"role": "assistant", "content": "x", "audio": {"id": "a1"}}]},
        "messages[1].audio",
    ),
    (
        "a tool message without tool_call_id",
        {"messages": [*HI, {"role": "tool", "content": "x"}]},
        "messages[1].tool_call_id",
    ),
]


@pytest.mark.parametrize(
    ("extra", "field"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_field(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(UntranslatableError) as caught:
        translate(BASE_IN | extra)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert caught.value.reason


def test_untranslatable_error_is_a_value_error_and_pickles() -> None:
    error = UntranslatableError("seed", "Anthropic has no seeded sampling")
    assert isinstance(error, ValueError)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.field, copy.reason) == ("seed", "Anthropic has no seeded sampling")
    assert (
        repr(copy) == "UntranslatableError(field='seed', reason='Anthropic has no seeded sampling')"
    )


@pytest.mark.parametrize(
    ("response_format", "structured"),
    [
        (None, False),
        ({"type": "text"}, False),
        ({"type": "json_object"}, True),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, True),
    ],
)
def test_structured_output_requested(response_format: Any, structured: bool) -> None:
    assert structured_output_requested(BASE_IN | {"response_format": response_format}) is structured
