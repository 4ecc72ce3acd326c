"""`obsmcp serve | demo | ingest | tool` — the command line.

Every flag has an OBSMCP_* environment variable; a --config TOML file gives the lowest-priority values.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from obsmcp import __version__
from obsmcp.config import ConfigError, Settings, default_data_dir, load_settings
from obsmcp.telemetry import configure_logging

app = typer.Typer(
    name="obsmcp",
    help="An MCP server that gives AI agents fast, safe, token-efficient access to logs, traces, metrics "
    "and errors. It receives OpenTelemetry (OTLP) into an embedded DuckDB store.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", envvar="OBSMCP_CONFIG", help="TOML config file")]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="store directory [env OBSMCP_DATA_DIR; default: user data dir]"),
]
HostOpt = Annotated[str | None, typer.Option("--host", help="bind address [env OBSMCP_HOST; default 127.0.0.1]")]
PortOpt = Annotated[int | None, typer.Option("--port", help="MCP HTTP port, MCP at /mcp [env OBSMCP_PORT; 8000]")]
OtlpPortOpt = Annotated[
    int | None, typer.Option("--otlp-port", help="OTLP/HTTP port, 0 = off [env OBSMCP_OTLP_PORT; 4318]")
]
GrpcPortOpt = Annotated[
    int | None,
    typer.Option("--otlp-grpc-port", help="OTLP/gRPC port, 0 = off [env OBSMCP_OTLP_GRPC_PORT; 0]"),
]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", envvar="OBSMCP_LOG_FORMAT", help="console or json (logs go to stderr)")
]


def _fail(msg: str, code: int = 2) -> typer.Exit:
    typer.echo(f"obsmcp: {msg}", err=True)
    return typer.Exit(code)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as e:
        raise _fail(str(e)) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"obsmcp {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version")
    ] = False,
) -> None:
    """obsmcp: telemetry for AI agents over MCP."""


@app.command()
def serve(
    http: Annotated[
        bool, typer.Option("--http", envvar="OBSMCP_HTTP", help="serve MCP over streamable HTTP instead of stdio")
    ] = False,
    host: HostOpt = None,
    port: PortOpt = None,
    otlp_port: OtlpPortOpt = None,
    otlp_grpc_port: GrpcPortOpt = None,
    data_dir: DataDirOpt = None,
    stateless: Annotated[bool | None, typer.Option("--stateless/--stateful", help="HTTP without sessions")] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="clickhouse://USER:PASS@HOST:8123/DB or chdb:///DIR instead of the DuckDB store [env OBSMCP_STORE]",
        ),
    ] = None,
    self_ingest: Annotated[
        bool | None,
        typer.Option(
            "--self-ingest/--no-self-ingest",
            help="store obsmcp's own traces and logs in its own store (service obsmcp) [env OBSMCP_SELF_INGEST]",
        ),
    ] = None,
    tools: Annotated[
        str | None,
        typer.Option(
            "--tools",
            help="tools to serve: names and categories (core, investigate, analysis, charts), 'default' or 'all', "
            "comma-separated [env OBSMCP_TOOLS; default: core,investigate]",
        ),
    ] = None,
    disable_tools: Annotated[
        str | None,
        typer.Option("--disable-tools", help="tool names or categories not to serve [env OBSMCP_DISABLE_TOOLS]"),
    ] = None,
    enable_writes: Annotated[
        bool | None,
        typer.Option(
            "--enable-writes/--read-only",
            help="also serve tools that change something [env OBSMCP_ENABLE_WRITES; default read-only]",
        ),
    ] = None,
    auth_token_file: Annotated[
        Path | None,
        typer.Option(
            "--auth-token-file",
            help="require a bearer token: a file with one token per line, 'token' or 'name:token' "
            "[env OBSMCP_AUTH_TOKEN_FILE; or OBSMCP_AUTH_TOKEN, or OAuth: OBSMCP_AUTH_JWKS_URL + OBSMCP_AUTH_ISSUER]",
        ),
    ] = None,
    config: ConfigOpt = None,
    log_format: LogFormatOpt = "console",
) -> None:
    """Run the MCP server (stdio by default, for MCP clients to spawn) and the OTLP receiver.

    The first obsmcp on a data directory owns the store and the OTLP ports; a later stdio `serve` on the same
    directory bridges to it, so several MCP clients can use one store at once.
    """
    configure_logging(log_format)
    settings = _settings(
        config,
        host=host,
        port=port,
        otlp_port=otlp_port,
        otlp_grpc_port=otlp_grpc_port,
        data_dir=data_dir,
        stateless_http=stateless,
        store=store,
        self_ingest=self_ingest,
        tools=tools,
        disable_tools=disable_tools,
        enable_writes=enable_writes,
        auth_token_file=auth_token_file,
    )
    from obsmcp import runtime
    from obsmcp.auth import require_auth_beyond_loopback

    require_auth_beyond_loopback(settings, mcp_http=http)
    try:
        rt = runtime.Runtime.open(settings, for_agents=True)
    except runtime.StoreLockedError:
        owner = runtime.read_owner(settings)
        if http or not owner or not owner.get("mcp_url"):
            raise _fail(runtime.data_dir_in_use_message(settings, owner)) from None
        asyncio.run(runtime.bridge_stdio(owner["mcp_url"], owner.get("token")))
        return
    except runtime.StoreError as e:  # a ClickHouse store that cannot be reached or lacks its tables
        raise _fail(str(e)) from None
    try:
        asyncio.run(_serve(rt, http))
    except runtime.PortInUseError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()


async def _serve(rt: Any, http: bool) -> None:
    from obsmcp import runtime
    from obsmcp.selftrace import self_telemetry

    async with (
        runtime.running(rt, mcp_http=http, strict_ports=http),
        self_telemetry(rt.receiver, self_ingest=rt.settings.self_ingest, own_endpoints=rt.endpoints.values()),
    ):
        with runtime.stop_signal() as stop:
            if http:
                _print_endpoints(rt.endpoints, sys.stderr)
                await stop.wait()
            else:
                stdio = asyncio.create_task(rt.mcp.run_stdio_async())
                stopper = asyncio.create_task(stop.wait())
                await asyncio.wait({stdio, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (stdio, stopper):
                    task.cancel()


def _print_endpoints(endpoints: dict[str, str], stream: Any) -> None:
    mcp_url = endpoints.get("mcp_url", "")
    print(f"MCP (streamable HTTP): {mcp_url}", file=stream)
    if "otlp_http" in endpoints:
        print(f"OTLP/HTTP receiver:    {endpoints['otlp_http']}  (OTEL_EXPORTER_OTLP_ENDPOINT)", file=stream)
    if "otlp_grpc" in endpoints:
        print(f"OTLP/gRPC receiver:    {endpoints['otlp_grpc']}", file=stream)
    print(f"Status page:           {mcp_url.removesuffix('/mcp')}/  (open in a browser)", file=stream)
    print(f"Health:                {mcp_url.removesuffix('/mcp')}/health", file=stream)
    print("\nClient configs (paste one):", file=stream)
    print(f"  Claude Code:  claude mcp add --transport http obsmcp {mcp_url}", file=stream)
    print(
        '  .mcp.json / Cursor (~/.cursor/mcp.json):  {"mcpServers": {"obsmcp": {"type": "http", "url": '
        f'"{mcp_url}"}}}}}}',
        file=stream,
    )
    print(
        f'  VS Code (.vscode/mcp.json):  {{"servers": {{"obsmcp": {{"type": "http", "url": "{mcp_url}"}}}}}}',
        file=stream,
    )
    print(
        '  Claude Desktop (stdio bridge):  {"mcpServers": {"obsmcp": {"command": "obsmcp", "args": ["serve"]}}}',
        file=stream,
    )


@app.command()
def demo(
    scenario: Annotated[
        str,
        typer.Option(
            help="incident to inject: dependency-latency, deploy-errors, resource-exhaustion, cache-collapse, "
            "n-plus-one, failing-downstream, none"
        ),
    ] = "dependency-latency",
    target: Annotated[
        str | None, typer.Option(help="root-cause service of the incident [default: the scenario's usual one]")
    ] = None,
    duration: Annotated[str, typer.Option(help="span of demo time, ending now")] = "2h",
    rate: Annotated[float, typer.Option(help="root requests per second")] = 4.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same data)")] = 42,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="keep serving after loading")] = True,
    live: Annotated[
        bool,
        typer.Option("--live/--no-live", help="while serving, keep sending new telemetry (the incident goes on)"),
    ] = True,
    keep: Annotated[bool, typer.Option("--keep", help="keep existing data in the demo store")] = False,
    host: HostOpt = None,
    port: PortOpt = None,
    otlp_port: OtlpPortOpt = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="demo store [default: <user data>/demo]")] = None,
    config: ConfigOpt = None,
    log_format: LogFormatOpt = "console",
) -> None:
    """Generate a realistic demo system's telemetry through the real OTLP/HTTP path, then serve it over HTTP.

    Prints the MCP URL, the OTLP endpoint and client configs to paste.
    """
    from obsmcp.demo import SCENARIO_NAMES, scenario_targets
    from obsmcp.timerange import TimeRangeError, parse_duration

    configure_logging(log_format)
    if scenario not in SCENARIO_NAMES:
        raise _fail(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIO_NAMES)}")
    if target is not None and target not in scenario_targets(scenario):
        valid = ", ".join(scenario_targets(scenario)) or "none (it injects no fault)"
        raise _fail(f"scenario {scenario} cannot target {target!r}: valid targets are {valid}")
    try:
        duration_s = parse_duration(duration) / 1e9
    except TimeRangeError as e:
        raise _fail(str(e)) from None
    if rate <= 0 or rate > 500:
        raise _fail("--rate must be within (0, 500] root requests per second")
    ddir = data_dir or (default_data_dir() / "demo")
    settings = _settings(config, host=host, port=port, otlp_port=otlp_port, data_dir=ddir)
    if not keep and settings.store_path.exists():
        from obsmcp import runtime

        if runtime.read_owner(settings):
            raise _fail(runtime.data_dir_in_use_message(settings, runtime.read_owner(settings)))
        for p in (settings.store_path, settings.store_path.with_name(settings.store_path.name + ".wal")):
            p.unlink(missing_ok=True)
    from obsmcp import runtime
    from obsmcp.auth import require_auth_beyond_loopback

    require_auth_beyond_loopback(settings, mcp_http=True)
    try:
        rt = runtime.Runtime.open(settings, for_agents=True)
    except runtime.StoreLockedError:
        raise _fail(runtime.data_dir_in_use_message(settings, runtime.read_owner(settings))) from None
    try:
        asyncio.run(_demo(rt, scenario, duration_s, rate, seed, serve_after, target, live))
    except runtime.PortInUseError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()


async def _demo(
    rt: Any,
    scenario: str,
    duration_s: float,
    rate: float,
    seed: int,
    serve_after: bool,
    target: str | None = None,
    live: bool = False,
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obsmcp import runtime
    from obsmcp.auth import bearer_headers
    from obsmcp.demo import DemoConfig, estimate_items, generate, scenario_truth, send

    cfg = DemoConfig(duration_s=duration_s, rate=rate, scenario=scenario, seed=seed, target=target)
    truth = scenario_truth(cfg)
    async with runtime.running(rt, mcp_http=True, strict_ports=True):
        endpoint = rt.endpoints.get("otlp_http") or rt.endpoints["mcp_url"].removesuffix("/mcp")
        est = estimate_items(cfg)
        total = sum(est.values())
        print(
            f"Loading demo telemetry into {rt.settings.data_dir} via OTLP/HTTP {endpoint} "
            f"(scenario {scenario}, {duration_s / 3600:g}h, seed {seed})",
            file=sys.stderr,
        )
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=None,
            transient=False,
            redirect_stdout=False,
        ) as progress:
            task = progress.add_task("spans+logs+points", total=total)
            stats = await send(
                generate(cfg),
                endpoint,
                on_sent=lambda req: progress.advance(task, req.items),
                headers=bearer_headers(rt.auth.local_token if rt.auth else None),
            )
            progress.update(task, completed=total)
        print(f"Loaded: {stats}", file=sys.stderr)
        print(f"Injected incident: {truth.description}", file=sys.stderr)
        if not serve_after:
            return
        # Explicit handlers, not KeyboardInterrupt: a demo started in the background by a script inherits
        # SIGINT as ignored, and SIGTERM would otherwise skip the clean shutdown.
        with runtime.stop_signal() as stop:
            print("", file=sys.stderr)
            _print_endpoints(rt.endpoints, sys.stderr)
            if live:
                print(
                    f"\nLive: {DEMO_LIVE_STEP_S:g} s of new telemetry every {DEMO_LIVE_STEP_S:g} s; the incident goes "
                    "on (--no-live: a fixed store)",
                    file=sys.stderr,
                )
            print(
                "\nTry: obsmcp tool investigate --data-dir " + str(rt.settings.data_dir) + "   (Ctrl-C to stop)",
                file=sys.stderr,
            )
            if live:
                headers = bearer_headers(rt.auth.local_token if rt.auth else None)
                await _demo_live(cfg, truth.start_ns, endpoint, headers, stop)
            else:
                await stop.wait()


DEMO_LIVE_STEP_S = 10.0


async def _demo_live(cfg: Any, incident_start_ns: int, endpoint: str, headers: Any, stop: asyncio.Event) -> None:
    """Keep the demo system running after the backfill: every DEMO_LIVE_STEP_S, the telemetry of the time since,
    from the same processes, with the incident still on, through the same OTLP/HTTP path."""
    import time

    import structlog

    from obsmcp.demo import DemoConfig, generate, send

    log = structlog.get_logger("obsmcp.demo")
    origin = cfg.end_ns - int(cfg.duration_s * 1e9)
    last, chunk = cfg.end_ns, 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), DEMO_LIVE_STEP_S)
        if stop.is_set():
            return
        now, chunk = time.time_ns(), chunk + 1
        window = DemoConfig(
            duration_s=(now - last) / 1e9,
            rate=cfg.rate,
            scenario=cfg.scenario,
            seed=cfg.seed,
            end_ns=now,
            target=cfg.target,
            incident_start_ns=incident_start_ns,
            origin_ns=origin,
            chunk=chunk,
        )
        try:
            await send(generate(window), endpoint, headers=headers)
        except Exception as e:  # the demo keeps serving what it has; the next window tries again
            log.warning("demo_live_send_failed", error=str(e))
            continue
        last = now


def _signal_of(path: Path, text_head: bytes, forced: str | None) -> str:
    if forced:
        return forced
    head = text_head.decode("utf-8", "ignore")
    for key, sig in (("resourceSpans", "traces"), ("resourceLogs", "logs"), ("resourceMetrics", "metrics")):
        if key in head:
            return sig
    name = path.name.lower()
    for key, sig in (("trace", "traces"), ("span", "traces"), ("log", "logs"), ("metric", "metrics")):
        if key in name:
            return sig
    raise _fail(f"cannot tell whether {path} holds traces, logs or metrics: pass --signal")


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="OTLP files: .json, .jsonl (one request per line), .pb; optionally .gz"),
    ],
    signal: Annotated[str | None, typer.Option(help="traces, logs or metrics (default: detect)")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Load OTLP export requests from files into the store (or into the running server that owns it)."""
    configure_logging("console")
    if signal is not None and signal not in ("traces", "logs", "metrics"):
        raise _fail("--signal must be traces, logs or metrics")
    settings = _settings(config, data_dir=data_dir)
    requests: list[tuple[Path, str, bytes, str]] = []
    for path in paths:
        if not path.is_file():
            raise _fail(f"{path} is not a file")
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as e:
                raise _fail(f"{path} is not valid gzip: {e}") from None
        stem = path.name.removesuffix(".gz")
        if stem.endswith(".jsonl"):
            for n, line in enumerate(raw.splitlines(), 1):
                if line.strip():
                    requests.append((path, _signal_of(path, line[:4096], signal), line, f"json line {n}"))
        elif stem.endswith(".json"):
            requests.append((path, _signal_of(path, raw[:4096], signal), raw, "json"))
        else:
            requests.append((path, _signal_of(path, b"", signal), raw, "protobuf"))
    asyncio.run(_ingest(settings, requests))


async def _ingest(settings: Settings, requests: list[tuple[Path, str, bytes, str]]) -> None:
    from obsmcp import runtime
    from obsmcp.ingest.receiver import IngestError

    try:
        rt = runtime.Runtime.open(settings)
    except runtime.StoreLockedError:
        owner = runtime.read_owner(settings)
        if not owner or not owner.get("otlp_http"):
            raise _fail(runtime.data_dir_in_use_message(settings, owner)) from None
        await _ingest_remote(owner["otlp_http"], requests, owner.get("token"))
        return
    failed = 0
    try:
        for path, sig, body, kind in requests:
            encoding = "protobuf" if kind == "protobuf" else "json"
            try:
                batch = await rt.receiver.ingest(sig, body, encoding)  # type: ignore[arg-type]
            except IngestError as e:
                failed += 1
                typer.echo(f"{path} ({kind}): rejected: {e.message}", err=True)
                continue
            extra = f", {batch.rejected} rejected: {batch.error_message}" if batch.rejected else ""
            typer.echo(f"{path} ({kind}): {batch.accepted} {sig} items stored{extra}")
            old = _older_than_retention(batch.tables, rt.settings.retention_days)
            if old:
                typer.echo(
                    f"  note: {old} of them are older than the {rt.settings.retention_days:g}-day retention and "
                    "will be deleted within a minute; set OBSMCP_RETENTION_DAYS to keep them",
                    err=True,
                )
    finally:
        rt.close()
    if failed:
        raise typer.Exit(1)


def _older_than_retention(tables: dict[str, Any], retention_days: float) -> int:
    import time

    import pyarrow as pa
    import pyarrow.compute as pc

    from obsmcp.store.schema import TABLES

    cutoff = pa.scalar(time.time_ns() - int(retention_days * 86400e9), pa.timestamp("ns"))
    total = 0
    for name, tbl in tables.items():
        column = tbl.column(TABLES[name].time_column)
        total += int(pc.sum(pc.less(column, cutoff)).as_py() or 0)
    return total


async def _ingest_remote(endpoint: str, requests: list[tuple[Path, str, bytes, str]], token: str | None) -> None:
    import httpx

    from obsmcp.auth import bearer_headers

    failed = 0
    async with httpx.AsyncClient(timeout=60, headers=bearer_headers(token)) as client:
        for path, sig, body, kind in requests:
            ctype = "application/x-protobuf" if kind == "protobuf" else "application/json"
            r = await client.post(f"{endpoint}/v1/{sig}", content=body, headers={"Content-Type": ctype})
            if r.status_code != 200:
                failed += 1
                typer.echo(
                    f"{path} ({kind}): rejected by the running server: {r.status_code} {r.text[:300]}",
                    err=True,
                )
            else:
                typer.echo(f"{path} ({kind}): sent to the running server at {endpoint}")
    if failed:
        raise typer.Exit(1)


def _parse_tool_args(pairs: list[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise _fail(f"argument {pair!r} is not key=value (e.g. service=checkout start=2h)")
        key, value = pair.split("=", 1)
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
        if isinstance(args[key], float | int) and key in ("query", "service", "trace_id", "error_id", "sql"):
            args[key] = value
    return args


@app.command()
def tool(
    name: Annotated[str | None, typer.Argument(help="tool name (see --list)")] = None,
    arguments: Annotated[list[str] | None, typer.Argument(help="key=value pairs; values may be JSON")] = None,
    list_tools: Annotated[bool, typer.Option("--list", help="list the tools and exit")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the structured content")] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Call an MCP tool in-process and print exactly the text an agent gets (or --json structured content).

    Example: obsmcp tool search_logs query=timeout service=checkout start=2h
    """
    configure_logging("console", level="warning")
    settings = _settings(config, data_dir=data_dir)
    result = asyncio.run(_call_tool(settings, name, _parse_tool_args(arguments or []), list_tools))
    if result is None:
        return
    text, structured, is_error = result
    if as_json and structured is not None:
        typer.echo(json.dumps(structured, indent=2))
    else:
        typer.echo(text)
    if is_error:
        raise typer.Exit(1)


@contextlib.contextmanager
def _mcp_target(settings: Settings) -> Iterator[Any]:
    """What an MCP client should talk to: this process's server on the store, or the server that owns it."""
    from obsmcp import runtime

    try:
        rt = runtime.Runtime.open(settings)
    except runtime.StoreLockedError:
        owner = runtime.read_owner(settings)
        if not owner or not owner.get("mcp_url"):
            raise _fail(runtime.data_dir_in_use_message(settings, owner)) from None
        from obsmcp.auth import mcp_client_streams

        yield mcp_client_streams(owner["mcp_url"], owner.get("token"))
        return
    try:
        yield rt.mcp
    finally:
        rt.close()


async def _call_tool(
    settings: Settings, name: str | None, args: dict[str, Any], list_tools: bool
) -> tuple[str, Any, bool] | None:
    from mcp import Client

    # Exits are raised after the client closes: raised inside it, they surface as an ExceptionGroup traceback.
    failure: typer.Exit | None = None
    with _mcp_target(settings) as target:
        async with Client(target) as client:
            tools = await client.list_tools()
            names = [t.name for t in tools.tools]
            if list_tools or not name:
                for t in tools.tools:
                    first = (t.description or "").strip().splitlines()[0] if t.description else ""
                    typer.echo(f"{t.name:<18} {first}")
                return None
            if name not in names:
                import difflib

                close = difflib.get_close_matches(name, names, n=1)
                hint = f" — did you mean {close[0]}?" if close else ""
                failure = _fail(f"no tool named {name!r}{hint} (obsmcp tool --list)")
            else:
                r = await client.call_tool(name, args)
                text = "\n".join(getattr(c, "text", "") for c in r.content)
                return text, r.structured_content, bool(r.is_error)
    if failure is not None:
        raise failure
    return None


@app.command()
def validate(
    service: Annotated[
        str | None, typer.Option("--service", help="pass this service to the tools that take one (partial resolves)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show the start of each answer")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help='print [{"tool", "backend", "status", "duration_ms", "error"}, ...]')
    ] = False,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Call every tool against the store and every configured backend: one PASS/FAIL/SKIP line per tool and
    backend, with its duration. Exit 0 when nothing failed, 1 when a check failed, 2 on bad configuration.

    Example (CI, or "does my setup work?"): obsmcp validate --config obsmcp.toml --service checkout
    """
    from obsmcp import runtime
    from obsmcp import validate as validation

    configure_logging("console", level="warning")
    settings = _settings(config, data_dir=data_dir)
    try:
        report = asyncio.run(_validate(settings, service))
    except (ConfigError, runtime.StoreError) as e:  # backends are built, and the store opened, here
        raise _fail(str(e)) from None
    if as_json:
        typer.echo(json.dumps([c.to_json() for c in report.checks], indent=2))
    else:
        typer.echo(validation.render(report, verbose=verbose))
    if report.failed:
        raise typer.Exit(1)


async def _validate(settings: Settings, service: str | None) -> Any:
    from mcp import Client

    from obsmcp import runtime
    from obsmcp import validate as validation

    every = validation.targets(settings)
    checks = []
    # The store: this process's, or the running server's that owns the data directory.
    with _mcp_target(settings) as target:
        async with Client(target) as client:
            listed = await client.list_tools()
            tools = {t.name: t.input_schema for t in listed.tools}
            report = await validation.validate(client, tools, [t for t in every if not t.remote], service)
            checks += report.checks
    remote = [t for t in every if t.remote]
    if remote:
        # The backends of *this* configuration, in-process (with an empty in-memory store beside them): a running
        # server on the data directory may have been started with other backends, or none.
        rt = runtime.Runtime.open(settings.model_copy(update={"store": None}), in_memory=True)
        try:
            async with Client(rt.mcp) as client:
                listed = await client.list_tools()
                tools = {t.name: t.input_schema for t in listed.tools}
                checks += (await validation.validate(client, tools, remote, service)).checks
        finally:
            rt.close()
    return validation.Report(checks)


@app.command()
def patterns(
    file: Annotated[str, typer.Argument(help="log file, one message per line; - reads stdin")],
    csv_out: Annotated[
        bool, typer.Option("--csv", help="one CSV row per input line: line,template_id,template")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", help="templates in the summary")] = 50,
) -> None:
    """Mine log messages into templates (<*> marks the variable parts): a summary by count, or --csv."""
    from obsmcp.tools.patterns import PatternsInputError, run_patterns

    try:
        run_patterns(file, csv_out=csv_out, limit=limit, out=sys.stdout)
    except PatternsInputError as e:
        raise _fail(str(e)) from None


eval_app = typer.Typer(
    name="eval",
    help="Measure the quality of obsmcp's analysis on labelled data (results committed in bench/results/).",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(eval_app, name="eval")


@eval_app.command("patterns")
def eval_patterns(
    dirs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="folders of Loghub datasets (<DS>/<DS>_2k.log_structured[_corrected].csv); each is reported "
            "separately (default: $OBSMCP_SHARED_DATA/loghub, else ../shared/data/loghub)",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON to this file")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="write the report as Markdown")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", help="a heading per folder, in order (default: the path)")
    ] = None,
    note: Annotated[list[str] | None, typer.Option("--note", help="a caveat to print with the results")] = None,
    repeat: Annotated[int, typer.Option(min=1, help="runs per dataset; msgs/s is the best run")] = 3,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="also run drain3 (default config) as the baseline")
    ] = True,
    ground_truth: Annotated[
        str, typer.Option(help="corrected (Loghub-2.0, falls back to original when absent) or original")
    ] = "corrected",
) -> None:
    """Score the log template miner: GA, FGA, PA, FTA per dataset and on average, against drain3.

    Messages are the `Content` column; the baseline is drain3 (pip install drain3, pinned in the dev extras)
    with its default configuration. Prints a table per folder and the issue's goals with PASS/MISS.
    """
    from obsmcp.evaluation import patterns as ev

    if ground_truth not in ("corrected", "original"):
        raise _fail("--ground-truth must be corrected or original")
    truth: ev.GroundTruth = "original" if ground_truth == "original" else "corrected"
    folders = dirs or [ev.default_loghub_dir()]
    if label and len(label) != len(folders):
        raise _fail(f"{len(label)} --label values for {len(folders)} folders: give one per folder or none")
    try:
        parsers = {"obsmcp": ev.obsmcp_parser()}
        if baseline:
            parsers["drain3"] = ev.drain3_parser()
        suites = [
            ev.evaluate_suite(
                folder,
                parsers,
                repeat=repeat,
                ground_truth=truth,
                label=label[i] if label else None,
                progress=lambda line: typer.echo(line, err=True),
            )
            for i, folder in enumerate(folders)
        ]
    except ev.EvalError as e:
        raise _fail(str(e)) from None
    report = ev.EvalReport(suites, repeat, truth, ev.command_line(), notes=list(note or []))
    text = ev.render_report(report)
    typer.echo(text)
    for path, content in ((json_out, json.dumps(report.to_dict(), indent=2) + "\n"), (markdown, text + "\n")):
        if path is not None:
            try:
                path.write_text(content, encoding="utf-8")
            except OSError as e:
                raise _fail(f"cannot write {path}: {e.strerror}") from None


@eval_app.command("investigate")
def eval_investigate(
    scenarios: Annotated[int, typer.Option(min=1, help="incident scenarios to generate (six fault types cycle)")] = 36,
    healthy: Annotated[int, typer.Option(min=0, help="no-incident controls, which should be called healthy")] = 2,
    fault: Annotated[list[str] | None, typer.Option("--fault", help="only these fault types (repeatable)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON to this file")] = None,
    markdown: Annotated[Path | None, typer.Option("--markdown", help="write the report as Markdown")] = None,
) -> None:
    """Score `investigate`: generate incident scenarios with a known root cause (dependency latency, error
    burst after a deploy, resource exhaustion, cache collapse, N+1 regression, failing downstream) across
    services and seeds, call investigate on each with no arguments, and report AC@1, AC@3 and answer size."""
    from obsmcp.evaluation import investigate as ev

    configure_logging("console", level="warning")
    faults = tuple(fault) if fault else ev.FAULT_TYPES
    unknown = [f for f in faults if f not in ev.FAULT_TYPES]
    if unknown:
        raise _fail(f"unknown fault type(s) {', '.join(unknown)}: choose from {', '.join(ev.FAULT_TYPES)}")
    cases = ev.scenarios(scenarios, faults, healthy)

    def progress(r: ev.CaseResult) -> None:
        if r.case.fault == "none":
            mark = {"healthy": "ok", "degraded": "degraded"}.get(r.status, f"FALSE ALARM ({r.summary})")
        else:
            mark = {1: "rank 1"}.get(r.rank or 0, f"rank {r.rank}" if r.rank else "MISSED")
        typer.echo(f"{r.case.name:45s} {mark:7s} {', '.join(r.ranked[:3])}  ({r.seconds:.2f} s)", err=True)

    report = ev.run(cases, progress)
    text = ev.markdown(report, _git_commit())
    typer.echo(text)
    for path, content in ((json_out, json.dumps(report.to_json(), indent=2) + "\n"), (markdown, text)):
        if path is not None:
            try:
                path.write_text(content, encoding="utf-8")
            except OSError as e:
                raise _fail(f"cannot write {path}: {e.strerror}") from None


def _git_commit() -> str:
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


@app.command()
def chart(
    output: Annotated[Path, typer.Option("-o", "--output", help="PNG file to write")],
    metric: Annotated[str | None, typer.Option("--metric", help="metric to draw (kind series)")] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="service to draw (kinds red, latency_histogram)")
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(help="series | red | latency_histogram [default: series with --metric, else red]"),
    ] = None,
    start: Annotated[str | None, typer.Option(help='range start: "2h", "now-2h" or ISO-8601 [1h ago]')] = None,
    end: Annotated[str | None, typer.Option(help='range end: "now" or ISO-8601 [now]')] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Draw a chart into a PNG file: a metric's series, or a service's RED panel or latency histogram, with
    anomalies shaded and SLO thresholds drawn (the render_chart tool). Prints where it wrote and what it shows.

    Example: obsmcp chart --service checkout --kind red -o checkout.png
    """
    configure_logging("console", level="warning")
    if not metric and not service:
        raise _fail("say what to draw: --metric NAME (a series) or --service NAME (--kind red or latency_histogram)")
    if output.suffix.lower() != ".png":
        raise _fail(f"{output} does not end in .png: the chart is a PNG image")
    if not output.parent.is_dir():
        raise _fail(f"{output.parent} is not a directory: create it or write elsewhere")
    args: dict[str, Any] = {"kind": kind or ("series" if metric else "red")}
    for key, value in (("metric", metric), ("service", service), ("start", start), ("end", end)):
        if value:
            args[key] = value
    settings = _settings(config, data_dir=data_dir)
    text, png = asyncio.run(_draw_chart(settings, args))
    if png is None:
        raise _fail(text, 1)
    output.write_bytes(png)
    typer.echo(f"wrote {output} ({len(png) / 1024:.0f} KB PNG)")
    typer.echo(text)


async def _draw_chart(settings: Settings, args: dict[str, Any]) -> tuple[str, bytes | None]:
    """(text, PNG) from render_chart, in-process or through the server that owns the store; PNG None on error."""
    import base64

    from mcp import Client
    from mcp.types import ImageContent, TextContent

    with _mcp_target(settings) as target:
        async with Client(target) as client:
            r = await client.call_tool("render_chart", args)
    text = "\n".join(c.text for c in r.content if isinstance(c, TextContent))
    images = [c for c in r.content if isinstance(c, ImageContent)]
    if r.is_error or not images:
        return text or "render_chart returned no image", None
    return text, base64.b64decode(images[0].data)


def _add_subapps() -> None:
    """`obsmcp fleet ...` and `obsmcp alerts ...` live in their packages."""
    from obsmcp.alerting.cli import alerts_app
    from obsmcp.fleet.cli import fleet_app, load

    load()
    app.add_typer(fleet_app, name="fleet")
    app.add_typer(alerts_app, name="alerts")
    from obsmcp.dashboards.cli import dashboard_app

    app.add_typer(dashboard_app, name="dashboard")


def main() -> None:
    from obsmcp.fleet.model import FleetError
    from obsmcp.store.database import StoreError

    try:
        app()
    except FleetError as e:
        typer.echo(f"obsmcp fleet: {e.kind} error: {e}", err=True)
        sys.exit(2)
    except (ConfigError, StoreError) as e:
        typer.echo(f"obsmcp: {e}", err=True)
        sys.exit(2)


_add_subapps()
