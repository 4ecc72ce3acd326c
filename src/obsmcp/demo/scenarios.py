"""The incidents the demo can inject, and the ground truth evaluations check answers against.

A scenario changes only its root-cause service (``DemoConfig.target``, or the scenario's default service);
everything the other services show (slower calls, 502s, timeouts, retries) follows from the call graph, as it
would in a real outage. ``scenario_targets(name)`` lists the services each fault can hit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING

from obsmcp.demo.topology import (
    GO,
    JAVA,
    JOURNEYS,
    NODEJS,
    PYTHON,
    ROUTES,
    SERVICE_BY_NAME,
    SERVICES,
    CacheGet,
    Call,
    ErrorKind,
    Language,
    Query,
    Route,
    Step,
    go_frames,
    java_frames,
    node_frames,
    py_frames,
)

if TYPE_CHECKING:
    from obsmcp.demo.generator import DemoConfig

_NS = 1_000_000_000
_MS = 1_000_000


@dataclass(frozen=True)
class Scenario:
    """Ground truth of one generated dataset."""

    name: str
    root_cause_service: str  # empty for "none"
    start_ns: int
    end_ns: int
    description: str
    affected_services: tuple[str, ...] = ()

    def is_active(self, t_ns: int) -> bool:
        return self.start_ns <= t_ns < self.end_ns


@dataclass(frozen=True)
class Pressure:
    """How far the incident has pushed a service's resources, on top of its normal load."""

    memory: float = 0.0  # fraction of the headroom between normal usage and the memory limit
    cpu: float = 0.0  # added utilization
    pool_leak: float = 0.0  # fraction of the connection pool held by leaked connections


_NO_PRESSURE = Pressure()


@dataclass(frozen=True)
class ProcessEvent:
    """Something a replica of the root-cause service does outside any request: a log line, and whether
    the process (re)started at that moment (its cumulative metrics start over)."""

    t_ns: int
    level: str
    text: str
    started: bool = False


# --- service facts the incidents draw on ----------------------------------------------------------------------


def _steps(steps: tuple[Step, ...]) -> Iterator[Step]:
    for step in steps:
        yield step
        if isinstance(step, CacheGet):
            yield from _steps(step.on_miss)


def _service_steps(service: str) -> Iterator[tuple[Route, Step]]:
    for route in ROUTES:
        if route.service == service:
            for step in _steps(route.steps):
                yield route, step


def _db_routes(service: str) -> frozenset[str]:
    """Routes of ``service`` that need a database connection on some path."""
    return frozenset(r.key for r, step in _service_steps(service) if isinstance(step, Query))


def _main_table(service: str) -> str:
    tables = [step.table for _, step in _service_steps(service) if isinstance(step, Query)]
    return max(set(tables), key=tables.count) if tables else ""


def _affected(service: str) -> tuple[str, ...]:
    """``service`` and every service whose requests reach it through the call graph, nearest first."""
    reached = {r.key for r in ROUTES if r.service == service}
    order = [service]
    while True:
        callers = {
            r.key
            for r in ROUTES
            if r.key not in reached
            and any(isinstance(s, Call) and f"{s.service} {s.route}" in reached for s in _steps(r.steps))
        }
        if not callers:
            break
        reached |= callers
        for r in ROUTES:
            if r.key in callers and r.service not in order:
                order.append(r.service)
    return tuple(order)


def _bump(version: str) -> str:
    """The next minor release: what a rollout of ``version``'s successor is called."""
    major, minor, *_ = version.split(".")
    return f"{major}.{int(minor) + 1}.0"


_ENTRY_SERVICES = frozenset(key.split(" ", 1)[0] for key, _ in JOURNEYS)


# --- incidents ------------------------------------------------------------------------------------------------


class Incident:
    """What the fault does to the root-cause service while it is active. The base class does nothing."""

    # Version the root-cause service runs during the incident (a rollout), if it changes.
    new_version: str | None = None
    # The new version loops over items where the old one batched (queries with a ``per_item`` variant).
    per_item_queries = False

    def __init__(self, truth: Scenario, seed: int = 0) -> None:
        self.truth = truth
        self.service = truth.root_cause_service
        self.start_ns = truth.start_ns
        self.end_ns = truth.end_ns

    def progress(self, t_ns: int) -> float:
        """0 at the start of the incident, 1 at its end."""
        return (t_ns - self.start_ns) / max(1, self.end_ns - self.start_ns)

    def route_effect(self, route_key: str, replica: int, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        """Extra time a request spends in the service before its work, and the failure it meets, if any."""
        return 0, None

    def db_duration(self, duration_ns: int, t_ns: int, rng: Random) -> int:
        """Duration of one of the service's database calls."""
        return duration_ns

    def cache_hit_ratio(self, ratio: float, t_ns: int) -> float:
        """Probability that one of the service's cache lookups hits."""
        return ratio

    def route_to(self, replica: int, t_ns: int) -> int | None:
        """The replica that takes a request sent to ``replica`` at ``t_ns``; None: connection refused."""
        return replica

    def is_down(self, replica: int, t_ns: int) -> bool:
        """True while ``replica``'s process is not running (it reports no metrics)."""
        return False

    def pressure(self, t_ns: int, replica: int = 0) -> Pressure:
        return _NO_PRESSURE

    def process_events(self, replica: int, after_ns: int, until_ns: int) -> list[ProcessEvent]:
        """What ``replica`` logs about itself in (after_ns, until_ns], in time order."""
        return []


class DependencyLatency(Incident):
    """The service's database slows down (lock contention on its busiest table)."""

    _RAMP_NS = 180 * _NS  # contention builds up over a few minutes rather than at once
    _FACTOR_MU = math.log(120.0)
    _FACTOR_SIGMA = 0.9
    _LOCK_WAIT_P = 0.08

    def db_duration(self, duration_ns: int, t_ns: int, rng: Random) -> int:
        ramp = min(1.0, (t_ns - self.start_ns) / self._RAMP_NS)
        factor = 1.0 + (rng.lognormvariate(self._FACTOR_MU, self._FACTOR_SIGMA) - 1.0) * ramp
        slowed = int(duration_ns * factor)
        if rng.random() < self._LOCK_WAIT_P * ramp:
            slowed += int(rng.uniform(1.5, 7.0) * _NS)
        return slowed


# The bug shipped by each service's deploy-errors rollout, and the routes where it bites (with probability).
PRICE_FORMAT_ERROR = ErrorKind(
    PYTHON,
    "AttributeError",
    "'NoneType' object has no attribute 'quantize'",
    "Failed to render price for product {product_id}: 'NoneType' object has no attribute 'quantize'",
    py_frames(
        (
            "/usr/local/lib/python3.12/site-packages/starlette/routing.py",
            74,
            "app",
            "response = await f(request)",
        ),
        ("/app/catalog_service/api/products.py", 96, "get_product", "return ProductOut.from_row(row, locale)"),
        ("/app/catalog_service/schemas.py", 58, "from_row", "price=format_price(row.price, row.currency, locale),"),
        (
            "/app/catalog_service/pricing/formatter.py",
            23,
            "format_price",
            "amount = convert(price, currency, locale.currency).quantize(CENTS)",
        ),
    ),
)
_FRONTEND_PRICE_BUG = ErrorKind(
    NODEJS,
    "TypeError",
    "Cannot read properties of null (reading 'amount')",
    "Error rendering /product/{product_id}: Cannot read properties of null (reading 'amount')",
    node_frames(
        "formatPrice (/app/.next/server/chunks/344.js:1:2210)",
        "PriceTag (/app/.next/server/chunks/812.js:1:5120)",
        "renderWithHooks (/app/node_modules/react-dom/cjs/react-dom-server.node.production.js:4179:18)",
        "async renderToHTMLImpl (/app/node_modules/next/dist/server/render.js:1021:28)",
    ),
)
_GATEWAY_ROUTING_BUG = ErrorKind(
    GO,
    "runtime.boundsError",
    "runtime error: index out of range [1] with length 1",
    "panic recovered in handler: runtime error: index out of range [1] with length 1",
    go_frames(
        1187,
        (
            "github.com/shop/api-gateway/internal/auth.bearerToken(...)",
            "/src/internal/auth/header.go:27 +0x1c5",
        ),
        (
            "github.com/shop/api-gateway/internal/auth.(*Middleware).ServeHTTP(0xc00012e0a0, {0x10d2f80, 0xc0003c2})",
            "/src/internal/auth/middleware.go:48 +0x9a",
        ),
        ("net/http.HandlerFunc.ServeHTTP(...)", "/usr/local/go/src/net/http/server.go:2220 +0x29"),
    ),
)
_AUTH_CLAIMS_BUG = ErrorKind(
    GO,
    "*json.UnmarshalTypeError",
    "json: cannot unmarshal number into Go struct field Claims.exp of type string",
    "failed to decode claims of session {session_id}",
    go_frames(
        5120,
        ("encoding/json.(*decodeState).unmarshal(...)", "/usr/local/go/src/encoding/json/decode.go:181 +0x1bd"),
        (
            "github.com/shop/auth-service/internal/session.decodeClaims({0xc0004a2000, 0x8f, 0x90})",
            "/src/internal/session/claims.go:41 +0x7e",
        ),
        (
            "github.com/shop/auth-service/internal/api.(*Handler).Validate(0xc000132000, {0x10c9b40, 0xc0002a81c0})",
            "/src/internal/api/validate.go:39 +0x11c",
        ),
    ),
)
_INVENTORY_NPE = ErrorKind(
    JAVA,
    "java.lang.NullPointerException",
    'Cannot invoke "java.lang.Integer.intValue()" because the return value of '
    '"com.shop.inventory.domain.Stock.getSafetyStock()" is null',
    "Stock lookup failed for {sku}",
    java_frames(
        "com.shop.inventory.domain.Stock.sellable(Stock.java:58)",
        "com.shop.inventory.api.StockView.of(StockView.java:22)",
        "com.shop.inventory.api.InventoryController.get(InventoryController.java:37)",
        "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
        "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:564)",
    ),
)
_CART_SERIALIZE_BUG = ErrorKind(
    PYTHON,
    "KeyError",
    "'unit_price_cents'",
    "Failed to serialize cart for user {user_id}: KeyError 'unit_price_cents'",
    py_frames(
        ("/usr/local/lib/python3.12/site-packages/starlette/routing.py", 74, "app", "response = await f(request)"),
        ("/app/cart_service/api.py", 61, "get_cart", "return CartOut.from_items(items)"),
        (
            "/app/cart_service/schemas.py",
            33,
            "from_items",
            "total = sum(i['unit_price_cents'] * i['qty'] for i in items)",
        ),
    ),
)
_CHECKOUT_DUPLICATE_BUG = ErrorKind(
    JAVA,
    "java.lang.IllegalStateException",
    "Duplicate key {sku} (attempted merging values 1 and 1)",
    "Checkout failed for order {order_id}: Duplicate key {sku}",
    java_frames(
        "java.base/java.util.stream.Collectors.duplicateKeyException(Collectors.java:135)",
        "java.base/java.util.stream.Collectors.lambda$uniqKeysMapAccumulator$1(Collectors.java:182)",
        "com.shop.checkout.service.CheckoutService.linesBySku(CheckoutService.java:211)",
        "com.shop.checkout.service.CheckoutService.placeOrder(CheckoutService.java:118)",
        "com.shop.checkout.api.CheckoutController.checkout(CheckoutController.java:48)",
    ),
)
_PAYMENT_ROUNDING_BUG = ErrorKind(
    JAVA,
    "java.lang.ArithmeticException",
    "Rounding necessary",
    "Payment {payment_id} for order {order_id} failed: Rounding necessary",
    java_frames(
        "java.base/java.math.BigDecimal.commonNeedIncrement(BigDecimal.java:5270)",
        "java.base/java.math.BigDecimal.setScale(BigDecimal.java:3010)",
        "com.shop.payment.money.Amounts.toMinorUnits(Amounts.java:31)",
        "com.shop.payment.service.PaymentService.charge(PaymentService.java:84)",
        "com.shop.payment.api.PaymentController.create(PaymentController.java:40)",
    ),
)
_DEPLOY_BUGS: dict[str, tuple[ErrorKind, dict[str, float]]] = {
    "frontend": (_FRONTEND_PRICE_BUG, {"frontend GET /product/:id": 0.2, "frontend GET /": 0.05}),
    "api-gateway": (
        _GATEWAY_ROUTING_BUG,
        {
            "api-gateway GET /api/cart": 0.25,
            "api-gateway POST /api/cart/items": 0.25,
            "api-gateway POST /api/checkout": 0.2,
        },
    ),
    "auth-service": (_AUTH_CLAIMS_BUG, {"auth-service GET /auth/validate": 0.2}),
    "catalog-service": (
        PRICE_FORMAT_ERROR,
        {"catalog-service GET /products/{product_id}": 0.22, "catalog-service GET /products": 0.06},
    ),
    "inventory-service": (_INVENTORY_NPE, {"inventory-service GET /inventory/{sku}": 0.2}),
    "cart-service": (_CART_SERIALIZE_BUG, {"cart-service GET /cart": 0.25}),
    "checkout-service": (_CHECKOUT_DUPLICATE_BUG, {"checkout-service POST /checkout": 0.25}),
    "payment-service": (_PAYMENT_ROUNDING_BUG, {"payment-service POST /payments": 0.25}),
}


class DeployErrors(Incident):
    """A new version rolls out with a bug that fails a share of some routes' requests."""

    def __init__(self, truth: Scenario, seed: int = 0) -> None:
        super().__init__(truth, seed)
        self.new_version = _bump(SERVICE_BY_NAME[self.service].version)
        self.kind, self.error_p = _DEPLOY_BUGS[self.service]

    def route_effect(self, route_key: str, replica: int, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        p = self.error_p.get(route_key, 0.0)
        if p and rng.random() < p:
            return 0, self.kind
        return 0, None


_POOL_TIMEOUT_MS = 2_500
_POOL_JAVA_CLASSES = {
    "inventory-service": ("inventory", "StockRepository.find", "InventoryController.get"),
    "checkout-service": ("checkout", "OrderRepository.save", "CheckoutController.checkout"),
    "payment-service": ("payment", "PaymentRepository.insert", "PaymentController.create"),
}


def _pool_timeout_error(service: str) -> ErrorKind:
    """What a request that cannot get a database connection within the pool timeout fails with."""
    defn = SERVICE_BY_NAME[service]
    size = defn.db_pool_max
    lang = defn.language
    if lang is JAVA:
        pkg, repo, controller = _POOL_JAVA_CLASSES.get(service, (defn.name.split("-")[0], "Repository.find", "Api.get"))
        repo_class, repo_method = repo.split(".")
        ctl_class, ctl_method = controller.split(".")
        return ErrorKind(
            JAVA,
            "org.springframework.jdbc.CannotGetJdbcConnectionException",
            "Failed to obtain JDBC Connection",
            f"Connection pool exhausted (active={size}, max={size}); request for {{sku}} rejected"
            if service == "inventory-service"
            else f"Connection pool exhausted (active={size}, max={size}); request rejected",
            java_frames(
                "org.springframework.jdbc.datasource.DataSourceUtils.getConnection(DataSourceUtils.java:84)",
                "org.springframework.jdbc.core.JdbcTemplate.execute(JdbcTemplate.java:653)",
                f"com.shop.{pkg}.repository.{repo_class}.{repo_method}({repo_class}.java:41)",
                f"com.shop.{pkg}.api.{ctl_class}.{ctl_method}({ctl_class}.java:35)",
                "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
                "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:564)",
                cause="java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, "
                f"request timed out after {_POOL_TIMEOUT_MS}ms (total={size}, active={size}, "
                "idle=0, waiting=37)\n"
                "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:686)\n"
                "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:179)",
                more=64,
            ),
            status=503,
            after_work=False,
        )
    module = defn.name.replace("-", "_")
    if lang is PYTHON:
        return ErrorKind(
            PYTHON,
            "psycopg_pool.PoolTimeout",
            f"couldn't get a connection after {_POOL_TIMEOUT_MS / 1000:.2f} sec",
            f"Connection pool exhausted (size={size}, max={size}); request rejected",
            py_frames(
                (
                    "/usr/local/lib/python3.12/site-packages/starlette/routing.py",
                    74,
                    "app",
                    "response = await f(request)",
                ),
                (f"/app/{module}/db.py", 28, "connection", "async with pool.connection() as conn:"),
                (
                    "/usr/local/lib/python3.12/site-packages/psycopg_pool/pool_async.py",
                    211,
                    "getconn",
                    'raise PoolTimeout(f"couldn\'t get a connection after {timeout:.2f} sec")',
                ),
            ),
            status=503,
            after_work=False,
        )
    return ErrorKind(
        lang,
        "*fmt.wrapError",
        "acquire connection: context deadline exceeded",
        f"connection pool exhausted (acquired={size}, max={size}): context deadline exceeded",
        go_frames(
            3391,
            (
                "github.com/jackc/pgx/v5/pgxpool.(*Pool).Acquire(...)",
                "/go/pkg/mod/github.com/jackc/pgx/v5/pgxpool/pool.go:512",
            ),
            (
                f"github.com/shop/{defn.name}/internal/store.(*Store).conn(0xc000160000)",
                "/src/internal/store/store.go:44 +0x8d",
            ),
        ),
        status=503,
        after_work=False,
    )


POOL_TIMEOUT_ERROR = _pool_timeout_error("inventory-service")


class ResourceExhaustion(Incident):
    """The service leaks database connections and heap until the pool is exhausted."""

    _SATURATES_AT = 0.35  # incident progress at which the leak has taken the whole pool
    _MEMORY_FULL_AT = 0.85
    _TIMEOUT_P = 0.45

    def __init__(self, truth: Scenario, seed: int = 0) -> None:
        super().__init__(truth, seed)
        self.timeout_error = _pool_timeout_error(self.service)
        self.db_routes = _db_routes(self.service)

    def _leak(self, t_ns: int) -> float:
        return min(1.0, max(0.0, self.progress(t_ns)) / self._SATURATES_AT)

    def pressure(self, t_ns: int, replica: int = 0) -> Pressure:
        grown = min(1.0, max(0.0, self.progress(t_ns)) / self._MEMORY_FULL_AT)
        return Pressure(memory=0.93 * grown, cpu=0.1 + 0.5 * grown, pool_leak=self._leak(t_ns))

    def route_effect(self, route_key: str, replica: int, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        leak = self._leak(t_ns)
        if leak < 0.8 or route_key not in self.db_routes:
            # Growing heap: the occasional long GC pause, on every route.
            if rng.random() < 0.3 * leak:
                return int(rng.uniform(20, 150) * _MS), None
            return 0, None
        if leak < 1.0:
            return int(rng.uniform(0, 400) * (leak - 0.8) / 0.2 * _MS), None
        if rng.random() < self._TIMEOUT_P:
            return _POOL_TIMEOUT_MS * _MS, self.timeout_error
        return int(rng.uniform(200, _POOL_TIMEOUT_MS) * _MS), None


class CacheCollapse(Incident):
    """The service's redis restarts with a far too small maxmemory: keys are evicted as soon as they are
    written, nearly every lookup misses and goes to postgres, which slows down under the load."""

    _HIT_SHARE = 0.06  # of the usual hit ratio
    _RAMP_NS = 60 * _NS  # the database queue builds up within a minute
    _SLOW_P = 0.03

    def cache_hit_ratio(self, ratio: float, t_ns: int) -> float:
        return ratio * self._HIT_SHARE

    def db_duration(self, duration_ns: int, t_ns: int, rng: Random) -> int:
        ramp = min(1.0, (t_ns - self.start_ns) / self._RAMP_NS)
        slowed = int(duration_ns * (1.0 + (rng.lognormvariate(math.log(3.0), 0.6) - 1.0) * ramp))
        if rng.random() < self._SLOW_P * ramp:
            slowed += int(rng.uniform(0.2, 1.2) * _NS)  # waiting for a connection behind the miss storm
        return slowed

    def pressure(self, t_ns: int, replica: int = 0) -> Pressure:
        return Pressure(cpu=0.12)

    def process_events(self, replica: int, after_ns: int, until_ns: int) -> list[ProcessEvent]:
        if not after_ns < self.start_ns <= until_ns:
            return []
        t = self.start_ns + (replica + 1) * 40 * _MS
        return [
            ProcessEvent(t, "WARN", "Lost connection to redis:6379 (Connection reset by peer); reconnecting"),
            ProcessEvent(t + 2 * _NS, "INFO", "Reconnected to redis:6379"),
        ]


class NPlusOne(Incident):
    """A new version loads related rows one query per item instead of in one batched query."""

    per_item_queries = True

    def __init__(self, truth: Scenario, seed: int = 0) -> None:
        super().__init__(truth, seed)
        self.new_version = _bump(SERVICE_BY_NAME[self.service].version)


def _oom(lang: Language) -> tuple[ErrorKind, str]:
    """The out-of-memory failure of a request in a process about to die, and the line it dies with."""
    if lang is JAVA:
        kind = ErrorKind(
            JAVA,
            "java.lang.OutOfMemoryError",
            "Java heap space",
            "Request failed: java.lang.OutOfMemoryError: Java heap space",
            java_frames(
                "java.base/java.util.Arrays.copyOf(Arrays.java:3541)",
                "java.base/java.lang.AbstractStringBuilder.ensureCapacityInternal(AbstractStringBuilder.java:242)",
                "com.fasterxml.jackson.core.util.TextBuffer.expand(TextBuffer.java:1020)",
            ),
        )
        return kind, "Terminating due to java.lang.OutOfMemoryError: Java heap space"
    if lang is PYTHON:
        kind = ErrorKind(
            PYTHON,
            "MemoryError",
            "",
            "Request failed: MemoryError",
            py_frames(
                (
                    "/usr/local/lib/python3.12/site-packages/starlette/routing.py",
                    74,
                    "app",
                    "response = await f(request)",
                ),
                ("/usr/local/lib/python3.12/json/decoder.py", 353, "raw_decode", "obj, end = self.scan_once(s, idx)"),
            ),
        )
        return kind, "Worker (pid:7) was sent SIGKILL! Perhaps out of memory?"
    if lang is GO:
        kind = ErrorKind(
            GO,
            "*errors.errorString",
            "http: Server closed",
            "request aborted: server shutting down",
            go_frames(
                77, ("net/http.(*Server).Shutdown(0xc0001c2000)", "/usr/local/go/src/net/http/server.go:3003 +0x1a5")
            ),
            status=503,
        )
        return kind, "fatal error: runtime: out of memory"
    kind = ErrorKind(
        NODEJS,
        "RangeError",
        "Array buffer allocation failed",
        "Request failed: Array buffer allocation failed",
        node_frames("new ArrayBuffer (<anonymous>)", "Buffer.allocUnsafe (node:buffer:378:3)"),
    )
    return kind, "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory"


class FailingDownstream(Incident):
    """The service's replicas crash-loop: each runs out of memory within a minute of starting, is killed
    and restarted with a backoff. While down, callers get connection refused (and retry); shortly before
    each crash, requests fail with out-of-memory errors or stall in GC."""

    _BACKOFFS_S = (10.0, 20.0, 40.0)  # restart backoff, doubling, capped
    _BOOT_S = (3.0, 8.0)
    _UP_S = (25.0, 55.0)
    _THRASH = 0.6  # share of an up phase after which GC thrashing starts
    _STALE_ENDPOINT_P = 0.25  # a caller still picks a dead pod before its endpoint is removed

    def __init__(self, truth: Scenario, seed: int = 0) -> None:
        super().__init__(truth, seed)
        defn = SERVICE_BY_NAME[self.service]
        self.oom, self.fatal = _oom(defn.language)
        self.name = defn.name
        self.version = defn.version
        # Independent of the request stream, so a schedule does not depend on the traffic drawn.
        rng = Random(seed * 1_000_003 + sum(self.service.encode()))
        self.up: list[list[tuple[int, int]]] = []  # per replica: (listening from, crash at)
        for _ in range(defn.replicas):
            phases = []
            crash = self.start_ns + int(rng.uniform(5.0, 30.0) * _NS)  # the running process goes first
            phases.append((self.start_ns - 86_400 * _NS, crash))
            restarts = 0
            while crash < self.end_ns:
                backoff = self._BACKOFFS_S[min(restarts, len(self._BACKOFFS_S) - 1)]
                listening = crash + int((backoff * rng.uniform(0.9, 1.1) + rng.uniform(*self._BOOT_S)) * _NS)
                crash = listening + int(rng.uniform(*self._UP_S) * _NS)
                phases.append((listening, crash))
                restarts += 1
            self.up.append(phases)

    def _phase(self, replica: int, t_ns: int) -> tuple[int, int] | None:
        for listening, crash in self.up[replica % len(self.up)]:
            if listening <= t_ns < crash:
                return listening, crash
        return None

    def route_to(self, replica: int, t_ns: int) -> int | None:
        if self._phase(replica, t_ns) is not None:
            return replica
        alive = [i for i in range(len(self.up)) if self._phase(i, t_ns) is not None]
        # With another pod up, the service routes there, except in the moments before a dead pod's endpoint
        # is removed (a deterministic share of instants, so the choice costs no random draw).
        if not alive or (t_ns // _MS) % 100 < self._STALE_ENDPOINT_P * 100:
            return None
        return alive[0]

    def route_effect(self, route_key: str, replica: int, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        phase = self._phase(replica, t_ns)
        if phase is None:
            return 0, None
        listening, crash = phase
        f = (t_ns - listening) / max(1, crash - listening)
        if f < self._THRASH:
            return 0, None
        thrash = (f - self._THRASH) / (1.0 - self._THRASH)
        if rng.random() < 0.6 * thrash:
            return int(rng.uniform(50, 900) * thrash * _MS), self.oom
        return int(rng.uniform(0, 400) * thrash * _MS), None

    def pressure(self, t_ns: int, replica: int = 0) -> Pressure:
        phase = self._phase(replica, t_ns)
        if phase is None:
            return _NO_PRESSURE
        listening, crash = phase
        f = max(0.0, (t_ns - listening) / max(1, crash - listening))
        return Pressure(memory=0.97 * f, cpu=0.5 * f)

    def is_down(self, replica: int, t_ns: int) -> bool:
        return self._phase(replica, t_ns) is None

    def process_events(self, replica: int, after_ns: int, until_ns: int) -> list[ProcessEvent]:
        events: list[ProcessEvent] = []
        phases = self.up[replica % len(self.up)]
        for i, (listening, crash) in enumerate(phases):
            if after_ns < crash <= until_ns and crash < self.end_ns:
                events.append(ProcessEvent(crash, "ERROR", self.fatal))
            if i and after_ns < listening <= until_ns:
                boot = int(self._BOOT_S[0] * _NS)
                events.append(ProcessEvent(listening - boot, "INFO", f"Starting {self.name} {self.version}"))
                events.append(
                    ProcessEvent(listening, "INFO", f"Started {self.name} in {boot / _NS:.1f} seconds", started=True)
                )
        return sorted(events, key=lambda e: e.t_ns)


# --- the catalogue --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Definition:
    default_target: str
    incident: type[Incident]
    # Description for any target; {service}, {table}, {callers} and {version}/{new_version} are filled in.
    description: str
    # The original, more specific story of the default target.
    default_description: str = ""


def _cache_targets() -> tuple[str, ...]:
    return tuple(
        s.name
        for s in SERVICES
        if any(isinstance(step, CacheGet) and step.on_miss for _, step in _service_steps(s.name))
    )


def _per_item_targets() -> tuple[str, ...]:
    return tuple(
        s.name for s in SERVICES if any(isinstance(step, Query) and step.per_item for _, step in _service_steps(s.name))
    )


_DEFINITIONS: dict[str, _Definition] = {
    "none": _Definition("", Incident, "No incident: baseline traffic with its usual rare errors."),
    "dependency-latency": _Definition(
        "payment-service",
        DependencyLatency,
        "{service}'s queries against its postgres database ({table} table) slow down about 100x from lock "
        "contention, with occasional multi-second lock waits. Its latency rises and {callers} get slower, with "
        "some calls timing out, while {service} itself reports no new errors.",
        "payment-service's queries against its postgres database (payments table) slow down about 100x from "
        "lock contention, with occasional multi-second lock waits. POST /payments latency rises; "
        "checkout-service and everything upstream of it get slower, and some checkouts time out after 5 s "
        "(504s at checkout-service, api-gateway and frontend) while payment-service itself reports no new errors.",
    ),
    "deploy-errors": _Definition(
        "catalog-service",
        DeployErrors,
        "{service} {new_version} (previously {version}) is deployed at the start time with a bug: {error} on a "
        "share of its requests, which fail with 500; {callers} see the failures.",
        "catalog-service 2.15.0 (previously 2.14.0) is deployed at the start time. Its new price formatter "
        "raises AttributeError ('NoneType' object has no attribute 'quantize') on about a fifth of "
        "GET /products/{product_id} requests, which return 500; api-gateway and frontend show 502s and "
        "cart-service's add-to-cart calls fail.",
    ),
    "resource-exhaustion": _Definition(
        "inventory-service",
        ResourceExhaustion,
        "{service} leaks database connections and heap: memory and CPU climb, db.client.connections.usage "
        "reaches db.client.connections.max, then requests wait for a connection and many fail after 2.5 s "
        "with {error} (503), slowing and failing {callers}.",
        "inventory-service leaks JDBC connections and heap: memory and CPU climb, db.client.connections.usage "
        "reaches db.client.connections.max, then requests wait for a connection and many fail after 2.5 s "
        "with CannotGetJdbcConnectionException (503), slowing and failing catalog-service product pages and "
        "checkout-service reservations.",
    ),
    "cache-collapse": _Definition(
        "catalog-service",
        CacheCollapse,
        "{service}'s redis restarts with a far too small maxmemory: the cache hit ratio (cache.hits / "
        "cache.misses) collapses to a few percent, nearly every request misses and queries postgres, the "
        "database calls slow down about 3x under the load and {service} gets slower, and so do {callers}. "
        "No deploy, no new exception types.",
    ),
    "n-plus-one": _Definition(
        "inventory-service",
        NPlusOne,
        "{service} {new_version} (previously {version}) is deployed at the start time. It loads related rows "
        "one query per item instead of one batched query: requests issue tens of identical sequential "
        "SELECTs on {table}, database calls per request and latency jump, and {callers} get slower. "
        "No new errors.",
    ),
    "failing-downstream": _Definition(
        "cart-service",
        FailingDownstream,
        "{service}'s replicas crash-loop from the start time: each runs out of memory within a minute of "
        "starting ('{fatal}'), is killed and restarted with a backoff. While it is down its callers "
        "({callers}) get connection refused, retry and fail; before each crash its own requests fail with "
        "{error} or stall. No deploy.",
    ),
}

SCENARIO_NAMES: tuple[str, ...] = tuple(_DEFINITIONS)

_TARGETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "dependency-latency": tuple(s.name for s in SERVICES if s.db_name),
    "deploy-errors": tuple(s.name for s in SERVICES if s.name in _DEPLOY_BUGS),
    "resource-exhaustion": tuple(s.name for s in SERVICES if s.db_pool_max),
    "cache-collapse": _cache_targets(),
    "n-plus-one": _per_item_targets(),
    "failing-downstream": tuple(s.name for s in SERVICES if s.name not in _ENTRY_SERVICES),
}


def check_scenario_name(name: str) -> None:
    if name not in _DEFINITIONS:
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIO_NAMES)}")


def scenario_targets(name: str) -> tuple[str, ...]:
    """The services scenario ``name`` can take down (its possible root causes); empty for "none"."""
    check_scenario_name(name)
    return _TARGETS[name]


def default_target(name: str) -> str:
    """The root cause when no target is given: the same service as before targets existed."""
    check_scenario_name(name)
    return _DEFINITIONS[name].default_target


def check_target(name: str, target: str | None) -> None:
    check_scenario_name(name)
    if target is None:
        return
    valid = _TARGETS[name]
    if not valid:
        raise ValueError(f"scenario {name!r} injects no fault, so it takes no target (got {target!r})")
    if target not in valid:
        raise ValueError(f"scenario {name!r} cannot target {target!r}; valid targets: {', '.join(valid)}")


def _describe(name: str, service: str) -> str:
    definition = _DEFINITIONS[name]
    if service == definition.default_target and definition.default_description:
        return definition.default_description
    defn = SERVICE_BY_NAME[service]
    callers = [s for s in _affected(service) if s != service]
    error = ""
    fatal = ""
    if name == "deploy-errors":
        kind = _DEPLOY_BUGS[service][0]
        error = f"{kind.type} ({kind.message})"
    elif name == "resource-exhaustion":
        error = _pool_timeout_error(service).type
    elif name == "failing-downstream":
        kind, fatal = _oom(defn.language)
        error = kind.type
    return definition.description.format(
        service=service,
        table=_main_table(service),
        callers=", ".join(callers) or "no other services",
        version=defn.version,
        new_version=_bump(defn.version),
        error=error,
        fatal=fatal,
    )


def scenario_truth(cfg: DemoConfig) -> Scenario:
    """The incident injected into the data ``generate(cfg)`` produces.

    Pass the same config object to ``generate``: a ``DemoConfig`` pins "now" when it is created.
    """
    check_target(cfg.scenario, cfg.target)
    definition = _DEFINITIONS[cfg.scenario]
    end = cfg.end_ns if cfg.end_ns is not None else time.time_ns()
    window_start = end - int(cfg.duration_s * _NS)
    service = cfg.target or definition.default_target
    if not service:
        return Scenario(cfg.scenario, "", end, end, definition.description)
    if cfg.incident_start_ns is not None:  # a live continuation: the incident began in an earlier window
        start = cfg.incident_start_ns
    else:
        start = max(window_start, end - int(cfg.incident_start_before_end_s * _NS))
    stop = end if cfg.incident_duration_s is None else min(end, start + int(cfg.incident_duration_s * _NS))
    return Scenario(cfg.scenario, service, start, stop, _describe(cfg.scenario, service), _affected(service))


def make_incident(truth: Scenario, seed: int = 0) -> Incident:
    return _DEFINITIONS[truth.name].incident(truth, seed)
