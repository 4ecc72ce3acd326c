"""`obsmcp serve | demo | ingest | tool` — the command line.

Every flag has an OBSMCP_* environment variable; a --config TOML file gives the lowest-priority values.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sys
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
    )
    from obsmcp import runtime

    try:
        rt = runtime.Runtime.open(settings)
    except runtime.StoreLockedError:
        owner = runtime.read_owner(settings)
        if http or not owner or not owner.get("mcp_url"):
            raise _fail(runtime.data_dir_in_use_message(settings, owner)) from None
        asyncio.run(runtime.bridge_stdio(owner["mcp_url"]))
        return
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

    async with runtime.running(rt, mcp_http=http, strict_ports=http):
        if http:
            _print_endpoints(rt.endpoints, sys.stderr)
            await runtime.wait_for_stop_signal()
        else:
            stdio = asyncio.create_task(rt.mcp.run_stdio_async())
            stopper = asyncio.create_task(runtime.wait_for_stop_signal())
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
        typer.Option(help="incident to inject: dependency-latency, deploy-errors, resource-exhaustion, none"),
    ] = "dependency-latency",
    duration: Annotated[str, typer.Option(help="span of demo time, ending now")] = "2h",
    rate: Annotated[float, typer.Option(help="root requests per second")] = 4.0,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same data)")] = 42,
    serve_after: Annotated[bool, typer.Option("--serve/--no-serve", help="keep serving after loading")] = True,
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
    from obsmcp.demo import SCENARIO_NAMES
    from obsmcp.timerange import TimeRangeError, parse_duration

    configure_logging(log_format)
    if scenario not in SCENARIO_NAMES:
        raise _fail(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIO_NAMES)}")
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

    try:
        rt = runtime.Runtime.open(settings)
    except runtime.StoreLockedError:
        raise _fail(runtime.data_dir_in_use_message(settings, runtime.read_owner(settings))) from None
    try:
        asyncio.run(_demo(rt, scenario, duration_s, rate, seed, serve_after))
    except runtime.PortInUseError as e:
        raise _fail(str(e)) from None
    except KeyboardInterrupt:
        pass
    finally:
        rt.close()


async def _demo(rt: Any, scenario: str, duration_s: float, rate: float, seed: int, serve_after: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from obsmcp import runtime
    from obsmcp.demo import DemoConfig, estimate_items, generate, scenario_truth, send

    cfg = DemoConfig(duration_s=duration_s, rate=rate, scenario=scenario, seed=seed)
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
            stats = await send(generate(cfg), endpoint, on_sent=lambda req: progress.advance(task, req.items))
            progress.update(task, completed=total)
        print(f"Loaded: {stats}", file=sys.stderr)
        print(f"Injected incident: {truth.description}", file=sys.stderr)
        if not serve_after:
            return
        print("", file=sys.stderr)
        _print_endpoints(rt.endpoints, sys.stderr)
        print(
            "\nTry: obsmcp tool list_services --data-dir " + str(rt.settings.data_dir) + "   (Ctrl-C to stop)",
            file=sys.stderr,
        )
        await asyncio.Event().wait()


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
        await _ingest_remote(owner["otlp_http"], requests)
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


async def _ingest_remote(endpoint: str, requests: list[tuple[Path, str, bytes, str]]) -> None:
    import httpx

    failed = 0
    async with httpx.AsyncClient(timeout=60) as client:
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


async def _call_tool(
    settings: Settings, name: str | None, args: dict[str, Any], list_tools: bool
) -> tuple[str, Any, bool] | None:
    from mcp import Client

    from obsmcp import runtime

    rt = None
    try:
        rt = runtime.Runtime.open(settings)
        target: Any = rt.mcp
    except runtime.StoreLockedError:
        owner = runtime.read_owner(settings)
        if not owner or not owner.get("mcp_url"):
            raise _fail(runtime.data_dir_in_use_message(settings, owner)) from None
        target = owner["mcp_url"]
    # Exits are raised after the client closes: raised inside it, they surface as an ExceptionGroup traceback.
    failure: typer.Exit | None = None
    try:
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
    finally:
        if rt is not None:
            rt.close()
    if failure is not None:
        raise failure
    return None


def main() -> None:
    from obsmcp.store.database import StoreError

    try:
        app()
    except (ConfigError, StoreError) as e:
        typer.echo(f"obsmcp: {e}", err=True)
        sys.exit(2)
