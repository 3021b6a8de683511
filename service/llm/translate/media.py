"""Images and documents, both ways.

Chat Completions carries an image as an ``image_url`` part whose URL is either an ``https``
address or a ``data:`` URL holding base64; Anthropic carries it as an ``image`` block whose
``source`` is ``{"type": "url"}`` or ``{"type": "base64", "media_type", "data"}``.  Files are
``file`` parts (``file_data`` as a data URL) on one side and ``document`` blocks on the other;
only PDFs as base64 have a counterpart on both, so only they are translated.

``image_url.detail`` (``low`` / ``high``) is accepted and not forwarded: it tells OpenAI at
which resolution to look, a cost hint with no counterpart that does not change what the image
shows.  Every other field without a counterpart is refused.
"""

from __future__ import annotations

import re
from typing import Any

from service.llm.translate.errors import refuse
from service.llm.translate.fields import cache_control, object_at, only_keys, string_at

__all__ = ["chat_file", "chat_image", "messages_document", "messages_image"]

#: The image types Anthropic accepts (anything else it refuses with a 400, so we refuse first).
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)


def messages_image(part: dict[str, Any], path: str) -> dict[str, Any]:
    """A Chat Completions ``image_url`` part as an Anthropic ``image`` block."""
    only_keys(part, ("type", "image_url", "cache_control"), path)
    image = object_at(part.get("image_url"), f"{path}.image_url")
    only_keys(image, ("url", "detail"), f"{path}.image_url")
    url = string_at(image.get("url"), f"{path}.image_url.url")
    if url.startswith(("https://", "http://")):
        block = {"type": "image", "source": {"type": "url", "url": url}}
        cache_control(part, block, path)
        return block
    media_type, data = _data_url(url, f"{path}.image_url.url")
    if media_type not in _IMAGE_TYPES:
        refuse(
            f"{path}.image_url.url",
            f"image type {media_type!r} is not one Anthropic takes "
            f"({', '.join(sorted(_IMAGE_TYPES))})",
        )
    block = {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    cache_control(part, block, path)
    return block


def messages_document(part: dict[str, Any], path: str) -> dict[str, Any]:
    """A Chat Completions ``file`` part (a PDF as a data URL) as an Anthropic ``document``
    block; ``filename`` becomes the document's ``title``."""
    only_keys(part, ("type", "file", "cache_control"), path)
    file = object_at(part.get("file"), f"{path}.file")
    only_keys(file, ("file_data", "filename"), f"{path}.file")
    if "file_data" not in file:
        refuse(f"{path}.file", "only inline file_data (a PDF) has an Anthropic counterpart")
    media_type, data = _data_url(
        string_at(file["file_data"], f"{path}.file.file_data"), f"{path}.file.file_data"
    )
    if media_type != "application/pdf":
        refuse(f"{path}.file.file_data", f"only PDFs translate to Anthropic, not {media_type!r}")
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if file.get("filename") is not None:
        block["title"] = string_at(file["filename"], f"{path}.file.filename")
    cache_control(part, block, path)
    return block


def chat_image(block: dict[str, Any], path: str) -> dict[str, Any]:
    """An Anthropic ``image`` block as a Chat Completions ``image_url`` part."""
    only_keys(block, ("type", "source", "cache_control"), path)
    source = object_at(block.get("source"), f"{path}.source")
    match source.get("type"):
        case "url":
            only_keys(source, ("type", "url"), f"{path}.source")
            url = string_at(source.get("url"), f"{path}.source.url")
        case "base64":
            only_keys(source, ("type", "media_type", "data"), f"{path}.source")
            media_type = string_at(source.get("media_type"), f"{path}.source.media_type")
            data = string_at(source.get("data"), f"{path}.source.data")
            url = f"data:{media_type};base64,{data}"
        case other:
            refuse(f"{path}.source.type", f"image source {other!r} has no Chat counterpart")
    return {"type": "image_url", "image_url": {"url": url}}


def chat_file(block: dict[str, Any], path: str) -> dict[str, Any]:
    """An Anthropic ``document`` block (a PDF as base64) as a Chat Completions ``file`` part;
    ``title`` becomes ``filename``."""
    only_keys(block, ("type", "source", "title", "cache_control"), path)
    source = object_at(block.get("source"), f"{path}.source")
    if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
        refuse(f"{path}.source", "only base64 PDF documents have a Chat counterpart")
    only_keys(source, ("type", "media_type", "data"), f"{path}.source")
    data = string_at(source.get("data"), f"{path}.source.data")
    file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{data}"}
    if block.get("title") is not None:
        file["filename"] = string_at(block["title"], f"{path}.title")
    return {"type": "file", "file": file}


def _data_url(url: str, path: str) -> tuple[str, str]:
    match = _DATA_URL.fullmatch(url)
    if match is None:
        refuse(path, "must be an http(s) URL or a base64 data URL (data:<type>;base64,...)")
    return match.group(1), match.group(2)
