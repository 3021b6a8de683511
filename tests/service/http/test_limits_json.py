"""The JSON depth check: agrees with a plain reference on any JSON, and stays fast."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.jsonlimits import JSONTooDeepError, check_depth, json_depth, json_depth_exceeds


def reference_depth(raw: bytes) -> int:
    """How deep a recursive decoder goes: the most brackets open at once outside strings, up
    to the first byte it cannot parse (a backslash outside a string), one byte at a time."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        char = chr(byte)
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "\\":
            break
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


tricky_text = st.text(alphabet=st.sampled_from(list('[]{}"\\ax\n')), max_size=8)
documents = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(tricky_text, inner, max_size=3),
    max_leaves=40,
)


@given(documents, st.integers(min_value=1, max_value=12))
def test_agrees_with_the_reference_on_any_json(document: Any, max_depth: int) -> None:
    raw = json.dumps(document).encode()
    assert json_depth_exceeds(raw, max_depth) == (reference_depth(raw) > max_depth)


@given(
    st.lists(st.sampled_from(b'[]{}"\\ a'), max_size=60).map(bytes),
    st.integers(min_value=1, max_value=8),
)
def test_malformed_input_never_hides_deeper_open_brackets(raw: bytes, max_depth: int) -> None:
    # Whatever is let through, a recursive decoder never goes deeper than the limit on it.
    if not json_depth_exceeds(raw, max_depth):
        assert reference_depth(raw) <= max_depth


@pytest.mark.parametrize(
    ("raw", "deep"),
    [
        (b"[]", False),
        (b"[[]]", True),
        (b'{"a": {"b": 1}}', True),
        (b'["[[[[[[", "]]]]"]', False),  # brackets inside strings do not count
        (b'["\\"[[[[", 1]', False),  # nor after an escaped quote
        (b"[[[", True),  # unclosed brackets count
        (b"]]]][", False),
    ],
)
def test_examples_at_depth_limit_one(raw: bytes, deep: bool) -> None:
    assert json_depth_exceeds(raw, 1) == deep


@given(documents)
def test_depth_is_the_reference_depth(document: Any) -> None:
    raw = json.dumps(document).encode()
    assert json_depth(raw) == reference_depth(raw)


def test_check_depth_raises_with_the_limit() -> None:
    check_depth(b"[" * 5 + b"]" * 5, 5)
    with pytest.raises(JSONTooDeepError) as caught:
        check_depth(b"[" * 2000 + b"]" * 2000, 128)
    assert caught.value.max_depth == 128
    assert str(caught.value) == "JSON nested deeper than 128 levels"


def test_a_large_multimodal_body_is_checked_quickly() -> None:
    image = "A" * (20 * 1024 * 1024 - 200)
    body = json.dumps(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{image}"},
                        }
                    ],
                }
            ],
        }
    ).encode()
    start = time.perf_counter()
    assert not json_depth_exceeds(body, 128)
    assert time.perf_counter() - start < 1.0  # about 20 ms on one core; generous for CI
