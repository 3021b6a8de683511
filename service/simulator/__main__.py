"""``python -m service.simulator``: run the simulator on its own until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from service.simulator.server import Simulator

logger = logging.getLogger("service.simulator")


async def _main(args: argparse.Namespace) -> None:
    simulator = Simulator(host=args.host, port=args.port, latency=args.latency, seed=args.seed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with simulator:
        logger.info(
            "upstream simulator listening: OpenAI base URL %s, Anthropic base URL %s; "
            'faults: curl -X POST %s/_control -d \'{"outage": true, "duration": 20}\'',
            simulator.openai_base_url,
            simulator.anthropic_base_url,
            simulator.url,
        )
        await stop.wait()
    logger.info("upstream simulator stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m service.simulator",
        description="A fake OpenAI/Anthropic upstream with fault injection (POST /_control).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081, help="port (default 8081; 0 = any)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds per response")
    parser.add_argument("--seed", type=int, default=None, help="seed for error_rate draws")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
