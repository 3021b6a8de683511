"""The bare upstream of the gateway bench: an aiohttp server answering canned completions.

``python -m tests.bench.gateway_upstream --port P``.  It does what any upstream must (read the
request, write the answer) and nothing else, so its CPU per request is the floor a gateway in
front of it is compared with: the gateway's own server exchange costs about as much, plus a
client exchange to this server, plus its own code.  A stream is 12 events written one by one,
as a model producing tokens would.
"""

from __future__ import annotations

import argparse
import time

import msgspec
from aiohttp import web

MODEL = "bench-model"
_CREATED = int(time.time())


def _completion() -> bytes:
    return msgspec.json.encode(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": _CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "The bench answer, ten words long.",
                    },
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 10, "total_tokens": 19},
        }
    )


def _events() -> list[bytes]:
    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + msgspec.json.encode(body) + b"\n\n"

    words = ["The", " bench", " answer,", " streamed", " in", " ten", " small", " pieces", "!", ""]
    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"content": word}) for word in words[:-1]]
    out.append(chunk({}, "stop"))
    out.append(b"data: [DONE]\n\n")
    return out


COMPLETION = _completion()
EVENTS = _events()


class _Ask(msgspec.Struct):
    stream: bool = False


_ask = msgspec.json.Decoder(_Ask)


async def chat(request: web.Request) -> web.StreamResponse:
    if _ask.decode(await request.read()).stream:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in EVENTS:
            await response.write(event)
        await response.write_eof()
        return response
    return web.Response(body=COMPLETION, content_type="application/json")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.gateway_upstream")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
