"""One structured lifecycle for the service: start in order, serve, stop in reverse order.

:meth:`Service.run` opens a single task group and, inside it, an exit stack that owns every
component it starts, in this order:

1. telemetry (when ``[telemetry] enabled``, or for ``GET /metrics``: ``[metrics]
   prometheus``): providers, exporters and readers, flushed on the way out; then the
   transition log (a bus subscriber, closed on the way out);
2. the process-wide actor system's binding to this loop (breakers, the bus, the health
   aggregator all run here from now on), and its Redis cluster link when ``[cluster]
   redis_url`` is set (detached on the way out, so breakers decide alone again);
3. the upstream simulator, when ``[simulator] mode`` asks for it (``auto``: no provider key);
4. the gateway's LLM clients (their HTTP sessions);
5. the HTTP server, with the access log outermost and the gateway keys check (when
   ``[gateway]`` names keys) inside the error mapping.

It reports readiness through ``task_status`` (so ``await task_group.start(service.run)``
returns only once the port is listening) and then waits for :meth:`Service.stop`.  Shutdown
unwinds the stack: the HTTP server stops accepting, ``/events`` streams end, in-flight requests
get ``shutdown_grace`` seconds to finish, the LLM sessions close, the simulator stops (after the
requests that used it), and telemetry flushes last so that it sees everything.  Each step is
bounded, so a stuck component cannot hold the process forever.

Requests still running at the end of the grace period (or at once, on a second SIGINT/SIGTERM)
are cut by ``service.server``: each answers a 503 JSON error, a stream already under way ends
with an SSE ``error`` event, and only then do the sessions they used close.  A third signal
abandons what is left of the shutdown.

Alternatives considered: aiohttp's ``web.run_app`` owns the loop and signals itself, which
leaves no place for the simulator and telemetry to live and die in order; separate tasks per
component would need their own shutdown choreography, which the exit stack gives for free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from actors.extras import missing_extra

try:
    from aiohttp import web
except ImportError as exc:  # the core install: no HTTP service
    raise missing_extra("aiohttp", "service", "breakerd's HTTP service") from exc

from actors.errors import ConfigurationError
from actors.system import default_system
from service.config import ConfigError, ServiceConfig, clean_secrets, config_warnings
from service.gateway import Gateway, ProviderTarget, resolve_providers
from service.gateway_auth import GatewayKeys, gateway_auth_middleware, warn_if_open
from service.http import ADMIN_TOKEN_ENV, Handler, create_app
from service.llm.settings import KINDS
from service.logs import access_middleware, log_transitions
from service.probes import RouteProbe
from service.server import Edge, GuardedRunner
from service.simulator import Simulator

if TYPE_CHECKING:  # the SDK is imported only when telemetry or /metrics is on
    from telemetry.setup import Telemetry

logger = logging.getLogger("service")

#: Seconds a cut request gets to write its 503 or error event before aiohttp cancels it.
CUT_WAIT = 2.0


class ListenError(OSError):
    """The HTTP server could not bind its address (in use, not permitted, no such host)."""


class Service:
    """The running service.  Create it with a validated config, then ``run`` it.

    ``environ`` (default ``os.environ``) is where API keys and the admin token are read, once,
    at start.  After start: ``url`` is where it listens, ``simulator`` the simulator it started
    (or None), ``gateway`` the gateway.  ``stop()`` may be called from the loop's thread.
    """

    def __init__(self, config: ServiceConfig, *, environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self._environ = os.environ if environ is None else environ
        self._stop = anyio.Event()
        self._cut = anyio.Event()
        self.url = ""
        self.port = 0
        self.simulator: Simulator | None = None
        self.gateway: Gateway | None = None
        self.edge: Edge | None = None

    def __repr__(self) -> str:
        return f"<Service {self.url or 'not listening'} simulator={self.simulator!r}>"

    def stop(self) -> None:
        """Begin the graceful shutdown (idempotent)."""
        self._stop.set()

    def cut(self) -> None:
        """End in-flight requests now (503, or an SSE error event) rather than after the grace
        period; begins the shutdown too if it had not begun (idempotent)."""
        self._stop.set()
        self._cut.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(
        self,
        *,
        handle_signals: bool = False,
        task_status: anyio.abc.TaskStatus[Service] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start everything, report ``self`` through ``task_status``, serve until
        :meth:`stop` (or SIGINT/SIGTERM with ``handle_signals``), then shut down in reverse
        order.  A second signal cuts in-flight requests at once (see :meth:`cut`); a third
        cancels what is left of the shutdown.  Raises
        :class:`ListenError` if the port cannot be bound (whatever had started is stopped
        again)."""
        try:
            async with anyio.create_task_group() as task_group:
                if handle_signals:
                    task_group.start_soon(self._watch_signals, task_group.cancel_scope)
                await self._serve(task_status)
                task_group.cancel_scope.cancel()  # only the signal watcher is left
        except BaseExceptionGroup as group:
            # The task group wraps even a lone error; callers want ListenError itself.
            if len(group.exceptions) == 1 and isinstance(group.exceptions[0], Exception):
                raise group.exceptions[0] from None
            raise
        logger.info("breakerd stopped")

    async def _watch_signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                name = signal.Signals(signum).name
                if not self.stopping:
                    logger.info("%s received: shutting down gracefully (repeat to force)", name)
                    self.stop()
                elif not self._cut.is_set():
                    logger.warning("%s received again: cutting in-flight requests now", name)
                    self.cut()
                else:
                    logger.warning("%s received a third time: abandoning the shutdown", name)
                    scope.cancel()

    async def _serve(self, task_status: anyio.abc.TaskStatus[Service]) -> None:
        config = self.config
        # Secrets are checked before anything starts: a bad key is a config error (exit 2).
        environ = clean_secrets(
            config,
            self._environ,
            admin_token_env=ADMIN_TOKEN_ENV,
            default_key_env={kind: spec.key_env for kind, spec in KINDS.items()},
        )
        for warning in config_warnings(config):
            logger.warning("%s", warning)
        keys = GatewayKeys.from_config(config, environ)
        warn_if_open(keys, config.service.host)
        async with contextlib.AsyncExitStack() as stack:
            telemetry = _start_telemetry(config)
            if telemetry is not None:
                # Pushed first, so popped last: it flushes what everything else did.
                stack.push_async_callback(_flush_and_shut_down, telemetry)
                _observe_cooldowns(telemetry)
            stack.callback(log_transitions().close)
            # Bind the process-wide actor system (the registry's breakers, the bus) to this
            # loop now, rather than to whichever request happens to touch it first.
            default_system().runtime.bind_for_caller()
            if config.cluster.redis_url is not None:
                stack.callback(_join_cluster(config))

            providers, simulated = resolve_providers(config, environ)
            if simulated:
                self.simulator = Simulator(
                    host=config.simulator.host,
                    port=config.simulator.port,
                    latency=config.simulator.latency,
                )
                await self.simulator.start()
                stack.push_async_callback(self.simulator.stop)
                for name in simulated:
                    providers[name] = providers[name].at_simulator(self.simulator)
                _announce_simulator(
                    self.simulator,
                    [providers[name] for name in simulated],
                    forced=config.simulator.mode == "on",
                )

            self.gateway = Gateway(config, providers)
            stack.push_async_callback(self.gateway.aclose)

            token = environ.get(ADMIN_TOKEN_ENV)
            app = create_app(
                config,
                admin_token=token,
                chat_completions=self.gateway.handle,
                readiness=RouteProbe(
                    config, self.gateway.providers, cooldown=self.gateway.cooldown_remaining
                ).check,
                metrics=_metrics_endpoint(telemetry),
                outer=[_access_log(config, telemetry)],
                inner=[gateway_auth_middleware(keys)] if keys else [],
            )
            self.gateway.add_routes(app)
            runner = GuardedRunner(
                app,
                config.service,
                access_log=None,
                # A client that leaves cancels its handler, and so its upstream call (which
                # the breaker then counts as ignored, freeing a half-open slot at once).
                handler_cancellation=True,
                # A backstop only: _stop_http cuts what still runs at the grace period itself.
                shutdown_timeout=config.service.shutdown_grace + CUT_WAIT,
            )
            self.edge = runner.edge
            await runner.setup()
            stack.push_async_callback(self._stop_http, runner)
            site = web.TCPSite(runner, config.service.host, config.service.port)
            try:
                await site.start()
            except OSError as exc:
                where = f"{config.service.host}:{config.service.port}"
                raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc
            host, self.port = runner.addresses[0][:2]
            self.url = f"http://{host if ':' not in host else f'[{host}]'}:{self.port}"
            logger.info(
                "breakerd listening on %s (admin endpoints %s; dashboard: %s/dashboard)",
                self.url,
                "enabled" if token else f"disabled: set {ADMIN_TOKEN_ENV} to enable",
                self.url,
            )
            task_status.started(self)
            await self._stop.wait()
            logger.info(
                "shutting down: no new connections; in-flight requests have %gs to finish",
                config.service.shutdown_grace,
            )

    async def _stop_http(self, runner: GuardedRunner) -> None:
        grace = self.config.service.shutdown_grace

        async def cut_at_grace() -> None:
            with anyio.move_on_after(grace):
                await self._cut.wait()
            if cut := runner.edge.cut_in_flight():
                logger.warning("shutdown: cut %d in-flight requests with a 503", cut)

        # runner.cleanup stops listening, ends /events and waits for in-flight handlers; the
        # cut ends those still running at the grace period, so that they answer before the
        # sessions they use close.  aiohttp's own cancellation (shutdown_timeout) and the
        # outer bound are backstops for handlers that ignore the cut.
        async with anyio.create_task_group() as cutter:
            cutter.start_soon(cut_at_grace)
            with anyio.move_on_after(grace + 2 * CUT_WAIT):
                await runner.cleanup()
            cutter.cancel_scope.cancel()


def _join_cluster(config: ServiceConfig) -> Callable[[], None]:
    """Attach a Redis cluster link to the process-wide system; returns its detach."""
    # Imported here: redis is only loaded in cluster mode.
    from service.cluster import RedisCluster

    section = config.cluster
    assert section.redis_url is not None
    try:
        link = RedisCluster(
            url=section.redis_url,
            namespace=section.namespace,
            cluster_counting=section.cluster_counting,
        )
    except ValueError as exc:
        raise ConfigError("cluster", str(exc), config.source) from None
    system = default_system()
    system.attach_cluster(link)
    logger.info("cluster mode: %r", link)
    return system.detach_cluster


def _start_telemetry(config: ServiceConfig) -> Telemetry | None:
    """Install telemetry on the process-wide system: the exporters ``[telemetry]`` asks for,
    and the Prometheus reader behind ``GET /metrics`` (``[metrics] prometheus``).  None when
    neither is on, or when only ``/metrics`` was (by default) and the ``otel`` extra is missing.

    Raises :class:`ConfigError` for an exporter setting it cannot use (``OTEL_*`` variables).
    """
    enabled, prometheus = config.telemetry.enabled, config.metrics.prometheus
    if not (enabled or prometheus):
        return None
    try:
        # Imported here: the OpenTelemetry SDK is only loaded when telemetry is on.
        from telemetry.setup import setup
    except ImportError as exc:
        if enabled:
            raise
        logger.info("GET /metrics is off: %s", exc)
        return None
    section = config.telemetry
    try:
        if enabled:
            telemetry = setup(
                service_name=section.service_name,
                protocol=section.protocol,
                endpoint=section.endpoint,
                call_span_ratio=section.call_span_ratio,
                prometheus=prometheus,
            )
        else:  # /metrics alone: no exporter from OTEL_*, nothing installed globally
            telemetry = setup(
                service_name=section.service_name,
                prometheus=True,
                from_env=False,
                set_global=False,
            )
    except ConfigurationError as exc:
        raise ConfigError("telemetry", str(exc), config.source) from None
    logger.info("telemetry: %r", telemetry)
    return telemetry


async def _flush_and_shut_down(telemetry: Telemetry) -> None:
    # Flush first: shutting down detaches the instruments, and with them whatever the
    # breakers counted since the last export.
    await telemetry.force_flush_async()
    await telemetry.shutdown_async()


def _metrics_endpoint(telemetry: Telemetry | None) -> Handler | None:
    """``GET /metrics`` over ``telemetry``'s Prometheus reader, if it has one."""
    if telemetry is None:
        return None
    from telemetry.setup import prometheus_registry

    if prometheus_registry(telemetry) is None:
        return None
    from service.prometheus import MetricsEndpoint

    return MetricsEndpoint(telemetry).handle


def _observe_cooldowns(telemetry: Telemetry) -> None:
    """Export the LLM chain's rate-limit counts and cooldowns (``service.llm.cooldown_metrics``)
    through telemetry's meter provider, read at collection, when it has one."""
    if telemetry.meter_provider is not None:
        from service.llm.cooldown_metrics import CooldownMetrics

        CooldownMetrics(telemetry.meter_provider, default_system())


def _access_log(config: ServiceConfig, telemetry: Telemetry | None) -> Any:
    """The access-log middleware, feeding the gateway's request metrics when telemetry has
    a meter provider."""
    observe = None
    if telemetry is not None and telemetry.meter_provider is not None:
        from telemetry.gateway import GatewayMetrics

        observe = GatewayMetrics(telemetry.meter_provider).record
    routes = config.routes
    return access_middleware(
        enabled=config.logging.access_log,
        probes=config.logging.probe_access_log,
        primary_of=lambda route: routes[route].provider if route in routes else None,
        observe=observe,
    )


def _announce_simulator(simulator: Simulator, served: list[ProviderTarget], forced: bool) -> None:
    if forced:
        reason = "simulator.mode is 'on'"
    else:
        keys = ", ".join(sorted({target.key_env for target in served}))
        reason = f"no provider API key is set ({keys})"
    logger.warning(
        "%s: providers %s are served by the built-in upstream simulator at %s. Answers are "
        "simulated, not from real models. Set a key (or simulator.mode = 'off') to use the real "
        "providers. Rehearse an outage with: "
        'curl -X POST %s/_control -d \'{"outage": true, "duration": 20}\'',
        reason,
        ", ".join(target.name for target in served),
        simulator.url,
        simulator.url,
    )
