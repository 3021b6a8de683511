"""``breakerd``: the command line.  Serving is the default subcommand; the others talk to a
running service over its HTTP API (or run the simulator, the demo, or check a config).

::

    breakerd [serve] [--config PATH] [--host H] [--port P] ...   run the service (the default)
    breakerd status [--url URL] [--json]                         a table of every breaker
    breakerd watch [--url URL]                                   the table, live, from /events
    breakerd open|close|reset NAME [--url URL] [--token-file F]  admin: force open/close, reset
    breakerd reset --all                                         admin: reset every breaker
    breakerd simulate [--port P] ...                             the upstream simulator alone
    breakerd demo [--quick]                                      an outage cycle, live
    breakerd config check FILE                                   validate a config file
    breakerd config show [--config PATH]                         the effective config

Exit status: 0 success; 1 the service is unreachable (the message names the URL) or answered
with a server error; 2 usage, configuration or token errors; 3 no breaker of that name.

The admin token comes from ``BREAKERD_ADMIN_TOKEN`` or ``--token-file`` (never from the command
line, where other users could read it in the process list), and is sent as a bearer header.
The service's URL comes from ``--url``, else ``BREAKERD_URL``, else ``http://127.0.0.1:8080``.

The client side is the standard library's ``urllib`` (blocking calls suit a command), and the
tables are drawn by ``rich``: coloured on a terminal, plain text when piped.  ``rich`` and the
service's own modules are imported only by the subcommands that need them, so that ``breakerd
status`` starts quickly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from service.config import ServiceConfig

URL_ENV = "BREAKERD_URL"
TOKEN_ENV = "BREAKERD_ADMIN_TOKEN"
DEFAULT_URL = "http://127.0.0.1:8080"
#: Seconds a request (or a silent /events stream) may take before the service counts as
#: unreachable; the stream sends a snapshot every ``events_interval`` (5 s by default).
TIMEOUT = 30.0

EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, EXIT_UNKNOWN_BREAKER = 0, 1, 2, 3

#: The key under which the live view keeps when a snapshot arrived (``time.monotonic()``).
RECEIVED = "_received"

SUBCOMMANDS = ("serve", "status", "watch", "open", "close", "reset", "simulate", "demo", "config")

STATE_TEXT = {"closed": "CLOSED", "open": "OPEN", "half_open": "HALF-OPEN"}
STATE_STYLE = {"closed": "green", "open": "bold red", "half_open": "yellow"}


# -- errors: one exception per exit status ------------------------------------------------------


class CommandError(Exception):
    """A failure the command reports in one line on stderr, exiting with ``exit_code``."""

    exit_code = EXIT_USAGE


class Unreachable(CommandError):
    """The service did not answer (refused, timed out, not HTTP) or answered a 5xx."""

    exit_code = EXIT_UNREACHABLE


class UnknownBreaker(CommandError):
    """The service has no breaker of the name given."""

    exit_code = EXIT_UNKNOWN_BREAKER


# -- the HTTP API -----------------------------------------------------------------------------


class Api:
    """The service's HTTP API at ``url``, as blocking calls.  ``token``: the admin token."""

    def __init__(self, url: str, token: str | None = None, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:  # never the token itself
        return f"<Api {self.url} token={'set' if self._token else 'unset'}>"

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str) -> Any:
        if not self._token:
            raise CommandError(
                f"this needs the admin token: set {TOKEN_ENV} or pass --token-file FILE"
            )
        return self._call("POST", path)

    def _request(self, method: str, path: str) -> urllib.request.Request:
        headers = {"Accept": "application/json"}
        if self._token and method == "POST":
            headers["Authorization"] = f"Bearer {self._token}"
        return urllib.request.Request(self.url + path, method=method, headers=headers)

    def _call(self, method: str, path: str) -> Any:
        try:
            with urllib.request.urlopen(self._request(method, path), timeout=self.timeout) as r:
                return json.load(r)
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, self.url + path) from None
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, not JSON
            raise Unreachable(f"cannot reach breakerd at {self.url}: {_reason(exc)}") from None

    def events(self) -> Iterator[tuple[str, Any]]:
        """``(kind, data)`` from ``GET /events`` until the stream ends.  Raises
        :class:`Unreachable` if it cannot be opened or goes silent for ``timeout``."""
        request = urllib.request.Request(
            self.url + "/events", headers={"Accept": "text/event-stream"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                kind, data = "message", ""
                for raw in response:
                    line = raw.decode("utf-8").rstrip("\r\n")
                    if not line:
                        if data:
                            yield kind, json.loads(data)
                        kind, data = "message", ""
                    elif line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data += line[5:].strip()
        except urllib.error.HTTPError as exc:
            raise _http_error(exc, self.url + "/events") from None
        except (OSError, ValueError) as exc:
            raise Unreachable(f"lost breakerd at {self.url}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def _http_error(exc: urllib.error.HTTPError, url: str) -> CommandError:
    try:
        message = json.load(exc)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = exc.reason
    text = f"{url} answered {exc.code}: {message}"
    if exc.code == 404 and "no circuit breaker named" in str(message):
        return UnknownBreaker(message)
    if exc.code >= 500:
        return Unreachable(text)
    return CommandError(text)


# -- the table (pure: snapshots in, rich Table out) ---------------------------------------------

COLUMNS = ("name", "state", "forced", "failure rate", "calls", "rejections", "p99", "retry in")


def row(snapshot: Mapping[str, Any], now: float | None = None) -> tuple[str, ...]:
    """One breaker's line of the table, as text.  ``now`` (``time.monotonic()``) counts
    ``retry_after`` down from when the snapshot arrived (``RECEIVED``, set by the live view)."""
    state = snapshot.get("state", "")
    p99 = snapshot.get("duration_p99")
    retry = snapshot.get("retry_after")
    if state == "open" and snapshot.get("forced"):
        retry_in = "never"  # forced open: until someone closes or resets it
    elif retry is None or (isinstance(retry, float) and math.isinf(retry)):
        retry_in = "-"
    else:
        if now is not None and RECEIVED in snapshot:
            retry = max(retry - (now - snapshot[RECEIVED]), 0.0)
        retry_in = f"{retry:.1f}s"
    return (
        str(snapshot.get("name", "")),
        STATE_TEXT.get(state, str(state)),
        "yes" if snapshot.get("forced") else "no",
        f"{snapshot.get('failure_rate', 0.0):.1%}",
        str(snapshot.get("total_calls", 0)),
        str(snapshot.get("rejected_calls", 0)),
        "-" if p99 is None else f"{p99 * 1000:.0f} ms",
        retry_in,
    )


def table(
    breakers: Mapping[str, Mapping[str, Any]],
    title: str | None = None,
    *,
    plain: bool = False,
    limit: int | None = None,
    now: float | None = None,
) -> Table:
    """The status table for ``breakers`` (name -> snapshot), open ones first.  ``plain``: no
    lines at all, only aligned columns (for pipes); ``limit``: at most that many rows, then
    one saying how many more (the live view must fit the terminal)."""
    from rich import box
    from rich.table import Table

    grid = Table(title=title, box=None if plain else box.SIMPLE_HEAD, title_justify="left")
    for column in COLUMNS:
        numeric = column in ("failure rate", "calls", "rejections", "p99", "retry in")
        grid.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    order = {"open": 0, "half_open": 1}
    names = sorted(breakers, key=lambda n: (order.get(str(breakers[n].get("state")), 2), n))
    shown = names if limit is None or len(names) <= limit else names[: max(limit - 1, 0)]
    for name in shown:
        snapshot = breakers[name]
        grid.add_row(*row(snapshot, now), style=STATE_STYLE.get(snapshot.get("state", "")))
    if len(shown) < len(names):
        grid.add_row(f"... {len(names) - len(shown)} more", style="dim")
    return grid


def _console(file: Any = None) -> Console:
    """Colour on a terminal; plain and unwrapped when piped (so scripts can cut columns)."""
    from rich.console import Console

    stream = file or sys.stdout
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, no_color=True, width=10_000, highlight=False, emoji=False)


# -- subcommands --------------------------------------------------------------------------------


def _api(args: argparse.Namespace, *, admin: bool = False) -> Api:
    token = None
    if admin:
        if args.token_file:
            try:
                with open(args.token_file, encoding="utf-8") as file:
                    token = file.read().strip()
            except OSError as exc:
                raise CommandError(f"cannot read --token-file {args.token_file}: {exc}") from None
            if not token:
                raise CommandError(f"--token-file {args.token_file} is empty")
        else:
            token = os.environ.get(TOKEN_ENV, "").strip() or None
    return Api(args.url, token)


def cmd_status(args: argparse.Namespace) -> int:
    body = _api(args).get("/breakers")
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
        return EXIT_OK
    breakers = body.get("breakers", {})
    console = _console()
    title = f"breakerd at {args.url}: {len(breakers)} breakers"
    grid = table(breakers, title, plain=not console.is_terminal)
    if console.is_terminal:
        console.print(grid)
    else:  # rich pads every line to the table's width: trim that for scripts
        with console.capture() as captured:
            console.print(grid)
        print("\n".join(line.rstrip() for line in captured.get().splitlines()))
    return EXIT_OK


def transition_line(event: Mapping[str, Any]) -> str:
    """One line per state change: time, breaker, from -> to, reason."""
    at = time.strftime("%H:%M:%S", time.localtime(event["at"]))
    move = f"{STATE_TEXT.get(event['from_state'])} -> {STATE_TEXT.get(event['to_state'])}"
    forced = " [forced]" if event.get("forced") else ""
    return f"{at}  {event['breaker']}  {move}  ({event['reason']}){forced}"


def apply_event(
    breakers: dict[str, dict[str, Any]], kind: str, data: Any, now: float = 0.0
) -> str | None:
    """Fold one ``/events`` event, received at ``now``, into ``breakers``; returns a line to
    print, if any."""
    if kind == "metrics":
        breakers.clear()
        breakers.update(data.get("breakers", {}))
        for snapshot in breakers.values():
            snapshot[RECEIVED] = now
    elif kind == "state_changed":
        snapshot = breakers.setdefault(data["breaker"], {"name": data["breaker"]})
        snapshot.update(
            state=data["to_state"],
            forced=data["forced"],
            consecutive_failures=data["consecutive_failures"],
            total_calls=data["total_calls"],
            # The next metrics event brings the exact rest of the break.
            retry_after=None,
        )
        return transition_line(data)
    elif kind == "error":
        return f"the service says: {data.get('message', data)}"
    return None


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.live import Live

    api = _api(args)
    breakers: dict[str, dict[str, Any]] = {}
    console = _console()
    connected_once = False
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    threading.Thread(target=_follow, args=(api, events), name="events", daemon=True).start()

    def view() -> Table:
        if not connected_once:
            return table(breakers, f"connecting to breakerd at {api.url} ...")
        title = f"breakerd at {api.url}: {len(breakers)} breakers (live; Ctrl-C to quit)"
        # Title, blank line, header and rule take four lines; keep one for the cursor.
        limit = max(console.size.height - 5, 3) if console.is_terminal else None
        return table(breakers, title, limit=limit, now=time.monotonic())

    try:
        with Live(view(), console=console, auto_refresh=False) as live:
            while True:
                try:
                    kind, data = events.get(timeout=1.0)
                except queue.Empty:  # no news: redraw anyway, so that "retry in" counts down
                    live.update(view(), refresh=True)
                    continue
                if kind == _UNREACHABLE:
                    raise data
                if kind == _LOST:
                    live.console.print(f"{data}; reconnecting", markup=False)
                    continue
                connected_once = True
                line = apply_event(breakers, kind, data, time.monotonic())
                if line:
                    live.console.print(line, markup=False, highlight=False)
                live.update(view(), refresh=True)
    except KeyboardInterrupt:
        return EXIT_OK


_UNREACHABLE, _LOST = "(unreachable)", "(lost)"


def _follow(api: Api, events: queue.Queue[tuple[str, Any]]) -> None:
    """The reader thread of ``watch``: every event of ``/events`` into ``events``, reconnecting
    when the stream ends or breaks (the snapshot sent on connect resyncs the view).  If the
    first connection fails, it reports that and stops: the command exits 1."""
    connected = False
    while True:
        try:
            for kind, data in api.events():
                connected = True
                events.put((kind, data))
        except Unreachable as exc:
            if not connected:
                events.put((_UNREACHABLE, exc))
                return
            events.put((_LOST, exc))
        time.sleep(1.0)


def cmd_manage(args: argparse.Namespace) -> int:
    api = _api(args, admin=True)
    if args.command == "reset" and args.all:
        if args.name:
            raise CommandError("give a breaker NAME or --all, not both")
        body = api.post("/breakers/reset")
        print(f"reset {len(body.get('reset', []))} breakers")
        return EXIT_OK
    if not args.name:
        alternative = " or --all" if args.command == "reset" else ""
        raise CommandError(f"{args.command} needs a breaker NAME{alternative}")
    name = urllib.parse.quote(args.name, safe="")
    snapshot = api.post(f"/breakers/{name}/{args.command}")
    state = STATE_TEXT.get(str(snapshot.get("state")), snapshot.get("state"))
    forced = " (forced)" if snapshot.get("forced") else ""
    print(f"{args.name}: {state}{forced}")
    return EXIT_OK


def cmd_config(args: argparse.Namespace) -> int:
    from service.config import ConfigError, load_config

    path = args.file if args.action == "check" else args.config
    try:
        config = load_config(path)
    except ConfigError as exc:
        # str(exc) starts with the dotted path of the bad field.
        print(
            f"breakerd: invalid configuration in {exc.source or path}: {exc}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.action == "check":
        print(
            f"{path}: ok ({len(config.providers)} providers, {len(config.routes)} routes, "
            f"{len(config.breakers)} breaker tables)"
        )
        return EXIT_OK
    print(json.dumps(effective_config(config, os.environ), indent=2))
    return EXIT_OK


def effective_config(config: ServiceConfig, environ: Mapping[str, str]) -> dict[str, Any]:
    """The config as JSON-ready data, and which secrets are set: only ``set``/``unset``, and
    a password inside ``cluster.redis_url`` replaced."""
    import msgspec

    data: dict[str, Any] = msgspec.to_builtins(config)
    redis = data.get("cluster", {}).get("redis_url")
    if redis:
        parts = urllib.parse.urlsplit(redis)
        if parts.password:
            netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
                f":{parts.port}" if parts.port else ""
            )
            data["cluster"]["redis_url"] = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    from service.llm.settings import KINDS

    variables = {TOKEN_ENV}
    variables.update(p.api_key_env or KINDS[p.kind].key_env for p in config.providers.values())
    gateway_keys = getattr(getattr(config, "gateway", None), "api_keys_env", None)
    if gateway_keys:
        variables.add(gateway_keys)
    data["secrets"] = {
        name: "set" if environ.get(name, "").strip() else "unset" for name in sorted(variables)
    }
    return data


def _serve(argv: list[str]) -> int:
    from service.__main__ import serve

    return serve(argv)


def _simulate(argv: list[str]) -> None:
    from service.simulator.__main__ import main

    main(argv)


def _demo(argv: list[str]) -> None:
    from service.demo import main

    main(argv)


# -- the parser ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="breakerd",
        description="breakerd: circuit breakers as a service.  With no subcommand it serves "
        "(`breakerd serve --help` lists the service's options).",
        epilog="Exit status: 0 ok, 1 service unreachable, 2 usage or config error, "
        "3 no such breaker.",
    )
    sub = top.add_subparsers(dest="command", metavar="COMMAND")

    def client(name: str, help: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help, description=help)
        command.add_argument(
            "--url",
            default=os.environ.get(URL_ENV) or DEFAULT_URL,
            help=f"the service (default ${URL_ENV}, else {DEFAULT_URL})",
        )
        return command

    sub.add_parser("serve", help="run the service (the default command)", add_help=False)
    status = client("status", "a table of every breaker")
    status.add_argument("--json", action="store_true", help="the raw GET /breakers JSON")
    status.set_defaults(run=cmd_status)
    client("watch", "the table, redrawn live from /events, and a line per transition").set_defaults(
        run=cmd_watch
    )
    for name, help in (
        ("open", "force a breaker OPEN (admin)"),
        ("close", "force a breaker CLOSED (admin)"),
        ("reset", "reset a breaker, or every breaker with --all (admin)"),
    ):
        manage = client(name, help)
        manage.add_argument("name", metavar="NAME", nargs="?", help="the breaker")
        if name == "reset":
            manage.add_argument("--all", action="store_true", help="reset every breaker")
        manage.add_argument(
            "--token-file", metavar="FILE", help=f"read the admin token here (default ${TOKEN_ENV})"
        )
        manage.set_defaults(run=cmd_manage, all=False)
    sub.add_parser("simulate", help="run the upstream simulator alone", add_help=False)
    sub.add_parser("demo", help="an outage cycle against the simulator, live", add_help=False)
    config = sub.add_parser("config", help="check a config file, or show the effective config")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate FILE; exit 2 naming the bad field")
    check.add_argument("file", metavar="FILE")
    show = actions.add_parser("show", help="the effective config; secrets only as set/unset")
    show.add_argument(
        "--config",
        metavar="PATH",
        default=os.environ.get("BREAKERD_CONFIG") or None,
        help="TOML config file (default $BREAKERD_CONFIG, else the bundled defaults)",
    )
    config.set_defaults(run=cmd_config)
    return top


#: Subcommands whose arguments belong to another program's parser.
PASSTHROUGH: dict[str, Callable[[list[str]], Any]] = {
    "serve": _serve,
    "simulate": _simulate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``breakerd`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        return _serve(args_list)  # the bare command and `breakerd --port 9000` serve
    if args_list[0] in PASSTHROUGH:
        result = PASSTHROUGH[args_list[0]](args_list[1:])
        return result if isinstance(result, int) else EXIT_OK
    try:
        args = parser().parse_args(args_list)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        status: int = args.run(args)
    except CommandError as exc:
        print(f"breakerd: {exc}", file=sys.stderr)
        return exc.exit_code
    return status
