"""``python -m service [--config PATH] [--host HOST] [--port PORT] [--log-level LEVEL]
[--log-format text|json] [--version]``: run breakerd.

``main`` is also the ``breakerd`` console script: it hands subcommands (``status``, ``watch``,
...) to :mod:`service.cli`, whose default ``serve`` comes back to :func:`serve` here.

Exit status: 0 after a graceful shutdown (SIGINT/SIGTERM), 2 for an invalid configuration or
command line (the message names the bad field), 1 when the port cannot be bound.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from importlib import metadata

import anyio
import msgspec

from service.config import (
    ENV_OVERRIDES,
    ConfigError,
    ServiceConfig,
    load_config,
    with_service_overrides,
)

CONFIG_ENV = "BREAKERD_CONFIG"

logger = logging.getLogger("service")


def _parser() -> argparse.ArgumentParser:
    # Imported here, like lifecycle in serve(): `breakerd status` and friends come through
    # this module and need neither aiohttp nor the service (about 0.6 s of imports).
    from service.http import ADMIN_TOKEN_ENV
    from service.logs import FORMATS, LEVELS

    overrides = ", ".join(ENV_OVERRIDES)
    parser = argparse.ArgumentParser(
        prog="breakerd serve",  # also `python -m service`: the same command
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
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LEVELS,
        help="lowest level logged (overrides logging.level; default INFO)",
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="text, or json: one object per line with stable keys (overrides logging.format)",
    )
    parser.add_argument("--version", action="version", version=f"breakerd {version()}")
    return parser


def version() -> str:
    """The installed distribution's version (``0+unknown`` when run from a bare checkout)."""
    try:
        return metadata.version("breakerd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _invalid(exc: ConfigError) -> int:
    print(f"breakerd: invalid configuration in {exc.source}: {exc}", file=sys.stderr)
    return 2


def configure(argv: list[str] | None = None) -> ServiceConfig:
    """Parse the command line and load the config.  Raises :class:`ConfigError`."""
    args = _parser().parse_args(argv)
    config = load_config(args.config)
    config = with_service_overrides(config, host=args.host, port=args.port)
    chosen = {"level": args.log_level, "format": args.log_format}
    chosen = {name: value for name, value in chosen.items() if value is not None}
    return msgspec.structs.replace(
        config, logging=msgspec.structs.replace(config.logging, **chosen)
    )


def main(argv: list[str] | None = None) -> int:
    """``breakerd`` and ``python -m service``: the subcommands of :mod:`service.cli`, where
    serving (:func:`serve`) is the default, so the bare command keeps serving."""
    from service.cli import main as cli_main

    return cli_main(argv)


def serve(argv: list[str] | None = None) -> int:
    """Run the service with these options until SIGINT/SIGTERM; returns the exit status."""
    from service.lifecycle import ListenError, Service
    from service.logs import configure_logging

    configure_logging()
    try:
        config = configure(argv)
        configure_logging(config.logging.level, config.logging.format)
        service = Service(config)
        anyio.run(lambda: service.run(handle_signals=True))
    except ConfigError as exc:  # from the file, the command line, or telemetry's OTEL_* setup
        return _invalid(exc)
    except ListenError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
