"""Translation between the two LLM wire formats, OpenAI Chat Completions and Anthropic Messages.

Pure functions over plain dicts (decoded JSON), plus two small stream state machines fed one
event at a time: no I/O, no clock (except ``messages_response_to_chat``'s default
``created``), no breakers.  The library and the gateway call them only when the serving
provider speaks the other format; otherwise bodies pass through untranslated.

Two directions, each a request, an answer and a stream:

- a Chat client (or the library) served by an Anthropic provider:
  :func:`chat_request_to_messages`, :func:`messages_response_to_chat`,
  :class:`MessagesStreamToChat`;
- an Anthropic client (``/v1/messages``) served by an OpenAI-wire provider:
  :func:`messages_request_to_chat`, :func:`chat_response_to_messages`,
  :class:`ChatStreamToMessages`.

Modules are named by what they turn into what: ``chat_to_messages`` (requests and answers in
the Chat format become Messages), ``messages_to_chat``, ``stream_to_chat``,
``stream_to_messages``; ``vocab`` maps the shared words (stop reasons, usage, tool arguments),
``media`` images and documents, ``fields`` reads dicts with paths, ``errors`` holds
:class:`UntranslatableError`.  Each module's docstring lists the choices made where the two
formats differ.  Anything without a counterpart is refused with the field's path, never
dropped; the few things left out on purpose (``image_url.detail``, thinking blocks of earlier
turns, ``cache_control``, ``is_error``) are listed with the reason.
"""

from __future__ import annotations

from service.llm.translate.chat_to_messages import (
    chat_request_to_messages,
    chat_response_to_messages,
    structured_output_requested,
)
from service.llm.translate.errors import UntranslatableError
from service.llm.translate.messages_to_chat import (
    messages_request_to_chat,
    messages_response_to_chat,
)
from service.llm.translate.stream_to_chat import MessagesStreamToChat
from service.llm.translate.stream_to_messages import ChatStreamToMessages

__all__ = [
    "ChatStreamToMessages",
    "MessagesStreamToChat",
    "UntranslatableError",
    "chat_request_to_messages",
    "chat_response_to_messages",
    "messages_request_to_chat",
    "messages_response_to_chat",
    "structured_output_requested",
]
