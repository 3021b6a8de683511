"""A fake LLM upstream for rehearsing outages and testing clients: OpenAI- and
Anthropic-compatible, deterministic, with faults on demand.

``python -m service.simulator [--host H] [--port P] [--latency S]`` runs it on its own; the
service starts one in-process when no provider key is set, and the tests and the demo use the
:class:`Simulator` class directly.

Endpoints (enough of each format for the LLM client, the gateway and the official SDKs):

- OpenAI (base URL ``<url>/v1``): ``POST /v1/chat/completions``, JSON or SSE
  (``chat.completion.chunk`` events, a usage chunk when ``stream_options.include_usage``, then
  ``data: [DONE]``); ``POST /v1/embeddings`` (float or ``base64`` vectors).
- Anthropic (base URL ``<url>``): ``POST /v1/messages``, JSON or SSE (``message_start``,
  ``ping``, content blocks, ``message_delta``, ``message_stop``);
  ``POST /v1/messages/count_tokens``.

What it answers (``answers.py`` has the rules): a tool call when tools are offered (arguments
valid for the tool's schema), text after tool results, JSON for ``response_format``
(``json_object``, ``json_schema``), else a reply repeating the last user message.  ``stop`` /
``stop_sequences``, ``max_tokens``, ``n`` and ``seed`` are honoured; usage is counted in words.
Any API key is accepted.

Seeing what a client sent: every request is kept (the last 100, keys redacted) and listed by
``GET /_received`` (``?api=openai``), cleared by ``DELETE /_received``, and in process by
:meth:`Simulator.bodies`.  With echo on (``x-sim-echo: 1`` on a request, or ``{"echo": true}``
through ``/_control``) the answer's text is the request body as received.

Behaviour per wire format (``api``: ``openai``, ``anthropic`` or ``all``), set with
``POST /_control`` (or :meth:`Simulator.control`), read with ``GET /_control``::

    {"api": "openai", "outage": true, "duration": 20}     # every call fails for 20 s
    {"error_rate": 0.3, "status": 529}                     # 30 % of calls fail with 529
    {"status": 429, "error_rate": 1, "retry_after": 7}     # rate limited, Retry-After: 7
    {"latency": 2.5}                                       # 2.5 s more per response
    {"truncate_streams": true}                             # streams stop halfway
    {"echo": true}                                         # answer with the request body
    {"reset": true}                                        # back to the defaults

A change with ``duration`` holds for that many seconds and then the previous settings return
by themselves (checked at each request: no timer to cancel).  Errors use each provider's error
JSON.  Nothing here is meant to be reachable from other hosts: it binds 127.0.0.1 by default.
"""

from __future__ import annotations

from service.simulator.server import (
    APIS,
    RECEIVED_LIMIT,
    Api,
    ApiState,
    Behaviour,
    ControlRequest,
    Received,
    Simulator,
)

__all__ = [
    "APIS",
    "RECEIVED_LIMIT",
    "Api",
    "ApiState",
    "Behaviour",
    "ControlRequest",
    "Received",
    "Simulator",
]
