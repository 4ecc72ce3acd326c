"""Benchmark datasets: demo-generator OTLP payloads, generated once and cached on disk.

A dataset lives in ``bench/data/<size>/``: one file per signal (``traces.bin``, ``logs.bin``,
``metrics.bin``) holding the gzip-compressed ``Export*ServiceRequest`` protobuf bodies exactly as they are
POSTed, each record framed as ``<items:u32><length:u32><body>``, and ``meta.json`` (written last, so a
dataset without it is incomplete). Files are streamed, never loaded whole.

The generator's ``rate`` is scaled so the span count lands near the size's target; logs come along at
whatever ratio the generator's topology produces (reported, not forced).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
DATA_DIR = ROOT / "data"
SIGNALS = ("traces", "logs", "metrics")
_FRAME = struct.Struct("<II")
GZIP_LEVEL = 6  # what the OpenTelemetry SDK exporters use (zlib default)
CACHE_FORMAT = 1


@dataclass(frozen=True)
class Size:
    name: str
    target_spans: int
    duration_s: float


SIZES: dict[str, Size] = {
    "quick": Size("quick", 100_000, 3600.0),
    "1M": Size("1M", 1_000_000, 7200.0),
    "10M": Size("10M", 10_000_000, 7200.0),
}
BATCH_SPANS = 5000  # spans per traces request (the generator's default)
SEED = 42
SCENARIO = "dependency-latency"


def parse_size(text: str) -> Size:
    key = text.strip()
    for name, size in SIZES.items():
        if name.lower() == key.lower():
            return size
    raise SystemExit(f"unknown size {text!r}: choose from {', '.join(SIZES)}")


def generator_fingerprint() -> str:
    """Hash of the demo generator's sources: a cache made by another generator version is stale."""
    import obsmcp.demo as demo_pkg

    h = hashlib.sha256()
    pkg_dir = Path(next(iter(demo_pkg.__path__)))
    for p in sorted(pkg_dir.glob("*.py")):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def demo_config(size: Size, end_ns: int) -> Any:
    from obsmcp.demo import DemoConfig, estimate_items

    probe = DemoConfig(duration_s=size.duration_s, rate=1.0, scenario=SCENARIO, seed=SEED, end_ns=end_ns)
    spans_at_rate_1 = estimate_items(probe)["traces"]
    rate = round(size.target_spans / max(1, spans_at_rate_1), 3)
    return DemoConfig(
        duration_s=size.duration_s,
        rate=rate,
        scenario=SCENARIO,
        seed=SEED,
        end_ns=end_ns,
    )


@dataclass
class Dataset:
    size: Size
    path: Path
    meta: dict[str, Any]

    @property
    def end_ns(self) -> int:
        return int(self.meta["config"]["end_ns"])

    @property
    def start_ns(self) -> int:
        return self.end_ns - int(float(self.meta["config"]["duration_s"]) * 1e9)

    @property
    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.meta["items"].items()}

    def file(self, signal: str) -> Path:
        return self.path / f"{signal}.bin"

    def records(self, signal: str) -> Iterator[tuple[int, bytes]]:
        """(items, gzip body) for each request of one signal, streamed from disk."""
        with open(self.file(signal), "rb") as f:
            while True:
                head = f.read(_FRAME.size)
                if not head:
                    return
                items, n = _FRAME.unpack(head)
                body = f.read(n)
                if len(body) != n:
                    raise RuntimeError(f"{self.file(signal)} is truncated: delete {self.path} and rerun")
                yield items, body


def load_or_generate(size: Size, *, regenerate: bool = False, log: Any = print) -> Dataset:
    path = DATA_DIR / size.name
    meta_file = path / "meta.json"
    fp = generator_fingerprint()
    if meta_file.exists() and not regenerate:
        meta = json.loads(meta_file.read_text())
        stale = []
        if meta.get("cache_format") != CACHE_FORMAT:
            stale.append("cache format")
        if meta.get("generator_fingerprint") != fp:
            stale.append("demo generator sources")
        if meta.get("target_spans") != size.target_spans or meta.get("batch_spans") != BATCH_SPANS:
            stale.append("size definition")
        if not stale:
            log(f"[{size.name}] using cached dataset {path} ({_fmt_counts(meta['items'])})")
            return Dataset(size, path, meta)
        log(f"[{size.name}] cached dataset is stale ({', '.join(stale)}): regenerating")
    return _generate(size, path, fp, log)


def _fmt_counts(items: dict[str, int]) -> str:
    return ", ".join(f"{v:,} {k}" for k, v in items.items())


def _generate(size: Size, path: Path, fp: str, log: Any) -> Dataset:
    from obsmcp.demo import estimate_items, generate

    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    end_ns = (time.time_ns() // 1_000_000_000) * 1_000_000_000
    cfg = demo_config(size, end_ns)
    est = estimate_items(cfg)
    log(f"[{size.name}] generating: rate={cfg.rate}/s over {cfg.duration_s:.0f}s, estimate {_fmt_counts(est)}")
    files = {s: open(path / f"{s}.bin", "wb") for s in SIGNALS}  # noqa: SIM115 - closed below
    items = dict.fromkeys(SIGNALS, 0)
    requests = dict.fromkeys(SIGNALS, 0)
    raw_bytes = dict.fromkeys(SIGNALS, 0)
    gz_bytes = dict.fromkeys(SIGNALS, 0)
    gen_s = 0.0
    t_wall = time.perf_counter()
    next_report = t_wall + 15
    pending: deque[tuple[str, int, int, Future[bytes]]] = deque()

    def write_one() -> None:
        signal, n_items, n_raw, fut = pending.popleft()
        body = fut.result()
        files[signal].write(_FRAME.pack(n_items, len(body)))
        files[signal].write(body)
        items[signal] += n_items
        requests[signal] += 1
        raw_bytes[signal] += n_raw
        gz_bytes[signal] += len(body)

    # Compression runs in a thread (zlib releases the GIL) so it overlaps with generation on the 2nd core.
    try:
        with ThreadPoolExecutor(1) as pool:
            it = generate(cfg, batch_spans=BATCH_SPANS)
            while True:
                t0 = time.perf_counter()
                req = next(it, None)
                gen_s += time.perf_counter() - t0
                if req is None:
                    break
                fut = pool.submit(gzip.compress, req.payload, GZIP_LEVEL, mtime=0)
                pending.append((req.signal, req.items, len(req.payload), fut))
                while pending and (len(pending) > 16 or pending[0][3].done()):
                    write_one()
                if time.perf_counter() > next_report:
                    next_report += 15
                    log(f"[{size.name}]   ... {_fmt_counts(items)} ({time.perf_counter() - t_wall:.0f}s)")
            while pending:
                write_one()
    finally:
        for f in files.values():
            f.close()
    wall_s = time.perf_counter() - t_wall
    meta = {
        "cache_format": CACHE_FORMAT,
        "size": size.name,
        "target_spans": size.target_spans,
        "batch_spans": BATCH_SPANS,
        "generator_fingerprint": fp,
        "config": asdict(cfg),
        "estimate": est,
        "items": items,
        "requests": requests,
        "raw_bytes": raw_bytes,
        "gzip_bytes": gz_bytes,
        "gzip_level": GZIP_LEVEL,
        "generation": {
            "generator_s": round(gen_s, 2),
            "wall_s": round(wall_s, 2),
            "spans_per_s": round(items["traces"] / gen_s) if gen_s else None,
            "note": "generator_s = time inside the generator; wall_s also includes gzip and disk writes",
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (path / "meta.json").write_text(json.dumps(meta, indent=2))
    log(f"[{size.name}] generated {_fmt_counts(items)} in {wall_s:.0f}s (generator {gen_s:.0f}s)")
    return Dataset(size, path, meta)
