"""``python -m service [--config PATH] [--host HOST] [--port PORT]``: run breakerd.

Exit status: 0 after a graceful shutdown (SIGINT/SIGTERM), 2 for an invalid configuration or
command line (the message names the bad field), 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import anyio

from service.config import (
    ENV_OVERRIDES,
    ConfigError,
    ServiceConfig,
    load_config,
    with_service_overrides,
)
from service.http import ADMIN_TOKEN_ENV
from service.lifecycle import ListenError, Service

CONFIG_ENV = "BREAKERD_CONFIG"

logger = logging.getLogger("service")


def _parser() -> argparse.ArgumentParser:
    overrides = ", ".join(ENV_OVERRIDES)
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description=(
            "breakerd: circuit breakers as a service, with an OpenAI-compatible LLM gateway "
            "and an HTTP admin API.  With no provider API key set it serves from a built-in "
            "upstream simulator."
        ),
        epilog=(
            f"Environment: {CONFIG_ENV} (config path), {overrides} (override config keys), "
            f"{ADMIN_TOKEN_ENV} (enables the admin endpoints), OPENAI_API_KEY / "
            "ANTHROPIC_API_KEY (or the variables named in the config), OTEL_* (telemetry)."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get(CONFIG_ENV) or None,
        help=f"TOML config file (default: ${CONFIG_ENV}, else the bundled defaults)",
    )
    parser.add_argument("--host", help="address to listen on (overrides service.host)")
    parser.add_argument("--port", type=int, help="port to listen on, 0 for any free one")
    return parser


def _invalid(exc: ConfigError) -> int:
    print(f"breakerd: invalid configuration in {exc.source}: {exc}", file=sys.stderr)
    return 2


def configure(argv: list[str] | None = None) -> ServiceConfig:
    """Parse the command line and load the config.  Raises :class:`ConfigError`."""
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    return with_service_overrides(config, host=args.host, port=args.port)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    try:
        service = Service(configure(argv))
        anyio.run(lambda: service.run(handle_signals=True))
    except ConfigError as exc:  # from the file, the command line, or telemetry's OTEL_* setup
        return _invalid(exc)
    except ListenError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
