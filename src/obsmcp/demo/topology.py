"""The modelled web shop: its services, their routes, the calls between them and how they fail.

This module is pure description. ``generator.py`` walks it to produce timed spans, logs and metrics, and
``scenarios.py`` layers one incident on top. Templates (paths, log bodies, error messages, cache keys) are
``str.format`` strings over the per-request context the generator draws; ``CONTEXT_KEYS`` lists its keys.
"""

from __future__ import annotations

from dataclasses import dataclass

# Keys of the per-request context every template may use. ``ms`` (the span's own duration) and ``key``
# (the cache key) are filled in while a span is being written.
CONTEXT_KEYS = (
    "user_id",
    "session_id",
    "client_ip",
    "product_id",
    "sku",
    "query",
    "results",
    "quantity",
    "items",
    "order_id",
    "payment_id",
    "amount",
    "currency",
    "card_brand",
    "fraud_score",
    "ms",
    "key",
)


@dataclass(frozen=True)
class Language:
    """What differs between the SDKs: instrumentation scope names and severity spelling."""

    name: str  # telemetry.sdk.language
    server_scope: str
    client_scope: str
    db_scope: str
    cache_scope: str
    warn_text: str = "WARN"


PYTHON = Language(
    "python",
    "opentelemetry.instrumentation.fastapi",
    "opentelemetry.instrumentation.httpx",
    "opentelemetry.instrumentation.psycopg",
    "opentelemetry.instrumentation.redis",
    warn_text="WARNING",
)
JAVA = Language(
    "java",
    "io.opentelemetry.spring-webmvc-6.0",
    "io.opentelemetry.java-http-client",
    "io.opentelemetry.jdbc",
    "io.opentelemetry.lettuce-5.1",
)
GO = Language(
    "go",
    "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
    "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
    "github.com/XSAM/otelsql",
    "github.com/redis/go-redis/extra/redisotel",
)
NODEJS = Language(
    "nodejs",
    "@opentelemetry/instrumentation-http",
    "@opentelemetry/instrumentation-undici",
    "@opentelemetry/instrumentation-pg",
    "@opentelemetry/instrumentation-ioredis",
)


@dataclass(frozen=True)
class ServiceDef:
    name: str
    language: Language
    version: str
    replicas: int
    port: int
    memory_limit_mb: int
    base_memory_mb: int
    base_cpu: float  # utilization with no traffic
    cpu_per_rps: float  # added utilization per request/s served by one replica
    db_name: str = ""  # postgres database; empty = the service has no database pool
    db_pool_max: int = 0
    access_log: str = "spring"  # request log style: "morgan", "structured", "uvicorn" or "spring"
    gateway: bool = False  # answers upstream failures with 502/504 instead of 500


@dataclass(frozen=True)
class ErrorKind:
    """One way a request fails: the exception recorded on the span and the ERROR log written for it."""

    language: Language
    type: str
    message: str  # template
    log: str  # template of the ERROR log body
    frames: str  # stack frames as the runtime prints them (see render_stacktrace)
    status: int = 500
    # False: the failure happens before any downstream work (e.g. no connection could be acquired).
    after_work: bool = True


@dataclass(frozen=True)
class LogSpec:
    level: str  # DEBUG, INFO, WARN or ERROR
    template: str
    p: float = 1.0  # probability the log is written for a given span
    at: float = 0.5  # where in the span the log falls, as a fraction of its duration
    attrs: tuple[str, ...] = ()  # context keys attached as attributes (see LOG_ATTRIBUTE_NAMES)


# Attribute names for context values attached to logs.
LOG_ATTRIBUTE_NAMES = {
    "user_id": "enduser.id",
    "session_id": "session.id",
    "client_ip": "client.address",
    "product_id": "app.product.id",
    "sku": "app.sku",
    "query": "app.search.query",
    "order_id": "app.order.id",
    "payment_id": "app.payment.id",
    "amount": "app.payment.amount",
    "currency": "app.payment.currency",
    "items": "app.cart.items",
    "key": "db.redis.key",
}


@dataclass(frozen=True)
class Rejection:
    """A 4xx answer: not a server error, but a WARN/INFO log and a distinct status code."""

    status: int
    p: float
    log: LogSpec


@dataclass(frozen=True)
class Call:
    """An HTTP call to another service: a CLIENT span here, a SERVER span in the callee."""

    service: str
    route: str  # "<METHOD> <http.route>" of the callee
    timeout_ms: float = 10_000.0
    p: float = 1.0


@dataclass(frozen=True)
class Query:
    """A SQL statement against the service's postgres database."""

    operation: str
    table: str
    statement: str
    median_ms: float
    sigma: float = 0.5
    repeat: tuple[int, int] = (1, 1)  # executed sequentially a random number of times (N+1 fan-out)
    p: float = 1.0
    # What a version that loops over the items instead of batching runs in this query's place (the
    # n-plus-one incident): one statement per item, executed ``per_item.repeat`` times in sequence.
    per_item: Query | None = None


@dataclass(frozen=True)
class CacheOp:
    """A redis command; ``key`` is a template."""

    command: str
    key: str
    median_ms: float = 0.6


@dataclass(frozen=True)
class CacheGet:
    """A redis lookup; on a miss the ``on_miss`` steps run and the value is written back."""

    key: str
    cache: str  # cache.name on the hit/miss counters
    hit_ratio: float
    on_miss: tuple[Step, ...] = ()
    command: str = "GET"
    fill_command: str = "SETEX"


@dataclass(frozen=True)
class Work:
    """In-process work worth its own INTERNAL span."""

    name: str
    median_ms: float
    sigma: float = 0.3
    logs: tuple[LogSpec, ...] = ()


@dataclass(frozen=True)
class External:
    """An HTTP call to a third party: a CLIENT span with no server span behind it."""

    host: str
    method: str
    path: str
    median_ms: float
    sigma: float = 0.4
    timeout_ms: float = 10_000.0
    rejections: tuple[Rejection, ...] = ()
    failure_p: float = 0.0  # the provider answers 503


Step = Call | Query | CacheOp | CacheGet | Work | External


@dataclass(frozen=True)
class Route:
    service: str
    method: str
    route: str  # http.route
    path: str  # url.path template
    median_ms: float  # the route's own processing time, downstream calls excluded
    sigma: float = 0.4
    steps: tuple[Step, ...] = ()
    logs: tuple[LogSpec, ...] = ()
    errors: tuple[tuple[ErrorKind, float], ...] = ()  # baseline failures and their probabilities
    rejections: tuple[Rejection, ...] = ()
    ok_status: int = 200

    @property
    def key(self) -> str:
        return f"{self.service} {self.method} {self.route}"


# --- stack traces ---------------------------------------------------------------------------------------


def py_frames(*frames: tuple[str, int, str, str]) -> str:
    return "\n".join(f'  File "{file}", line {line}, in {func}\n    {code}' for file, line, func, code in frames)


def java_frames(*frames: str, cause: str = "", more: int = 0) -> str:
    text = "\n".join(f"\tat {f}" for f in frames)
    if cause:
        text += f"\nCaused by: {cause}"
    if more:
        text += f"\n\t... {more} more"
    return text


def go_frames(goroutine: int, *frames: tuple[str, str]) -> str:
    lines = [f"goroutine {goroutine} [running]:"]
    for func, where in frames:
        lines += [func, f"\t{where}"]
    return "\n".join(lines)


def node_frames(*frames: str) -> str:
    return "\n".join(f"    at {f}" for f in frames)


def render_stacktrace(kind: ErrorKind, message: str) -> str:
    """The stack trace exactly as each runtime prints it, with the exception message in place."""
    lang = kind.language.name
    if lang == "python":
        return f"Traceback (most recent call last):\n{kind.frames}\n{kind.type}: {message}"
    if lang == "go":
        return f"{message}\n\n{kind.frames}"
    return f"{kind.type}: {message}\n{kind.frames}"


_STARLETTE = (
    "/usr/local/lib/python3.12/site-packages/starlette/routing.py",
    74,
    "app",
    "response = await f(request)",
)
_FASTAPI = (
    "/usr/local/lib/python3.12/site-packages/fastapi/routing.py",
    301,
    "app",
    "raw_response = await run_endpoint_function(",
)
_SPRING = (
    "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
    "org.springframework.web.servlet.FrameworkServlet.doPost(FrameworkServlet.java:914)",
    "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:590)",
    "org.apache.catalina.core.ApplicationFilterChain.doFilter(ApplicationFilterChain.java:138)",
)

# Baseline failures: rare, each with a realistic exception.
CATALOG_STATEMENT_TIMEOUT = ErrorKind(
    PYTHON,
    "psycopg.errors.QueryCanceled",
    "canceling statement due to statement timeout",
    "Failed to load product {product_id}: canceling statement due to statement timeout",
    py_frames(
        _STARLETTE,
        _FASTAPI,
        ("/app/catalog_service/api/products.py", 88, "get_product", "product = await repo.get_product(pid)"),
        ("/app/catalog_service/repository.py", 142, "get_product", "await cur.execute(PRODUCT_SQL, (pid,))"),
        (
            "/usr/local/lib/python3.12/site-packages/psycopg/cursor_async.py",
            97,
            "execute",
            "raise ex.with_traceback(None)",
        ),
    ),
)
CATALOG_SEARCH_ERROR = ErrorKind(
    PYTHON,
    "psycopg.errors.SyntaxError",
    'syntax error in tsquery: "{query}&"',
    "Search failed for query {query!r}",
    py_frames(
        _STARLETTE,
        _FASTAPI,
        ("/app/catalog_service/api/search.py", 41, "search", "hits = await repo.search(q, limit=50)"),
        ("/app/catalog_service/repository.py", 203, "search", "await cur.execute(SEARCH_SQL, (to_tsquery(q),))"),
        (
            "/usr/local/lib/python3.12/site-packages/psycopg/cursor_async.py",
            97,
            "execute",
            "raise ex.with_traceback(None)",
        ),
    ),
)
CART_REDIS_RESET = ErrorKind(
    PYTHON,
    "redis.exceptions.ConnectionError",
    "Error 104 while writing to socket. Connection reset by peer.",
    "Could not load cart for user {user_id}: redis connection reset",
    py_frames(
        _STARLETTE,
        _FASTAPI,
        ("/app/cart_service/api.py", 57, "get_cart", "items = await store.load(user_id)"),
        ("/app/cart_service/store.py", 33, "load", "raw = await self.redis.hgetall(f'cart:{user_id}')"),
        (
            "/usr/local/lib/python3.12/site-packages/redis/asyncio/connection.py",
            527,
            "send_packed_command",
            "raise ConnectionError(f'Error {err_no} while writing to socket. {errmsg}.') from e",
        ),
    ),
)
INVENTORY_DEADLOCK = ErrorKind(
    JAVA,
    "org.springframework.dao.CannotAcquireLockException",
    "PreparedStatementCallback; SQL [UPDATE stock SET reserved = reserved + ? WHERE sku = ?]; ERROR: deadlock detected",
    "Reservation failed for {sku}: deadlock detected",
    java_frames(
        "org.springframework.jdbc.support.SQLStateSQLExceptionTranslator.doTranslate"
        "(SQLStateSQLExceptionTranslator.java:120)",
        "org.springframework.jdbc.core.JdbcTemplate.update(JdbcTemplate.java:1011)",
        "com.shop.inventory.repository.StockRepository.reserve(StockRepository.java:87)",
        "com.shop.inventory.service.ReservationService.reserveAll(ReservationService.java:52)",
        "com.shop.inventory.api.InventoryController.reserve(InventoryController.java:61)",
        *_SPRING,
        cause="org.postgresql.util.PSQLException: ERROR: deadlock detected\n"
        "  Detail: Process 48211 waits for ShareLock on transaction 9921734; blocked by process 48190.\n"
        "\tat org.postgresql.core.v3.QueryExecutorImpl.receiveErrorResponse(QueryExecutorImpl.java:2725)\n"
        "\tat org.postgresql.jdbc.PgPreparedStatement.executeUpdate(PgPreparedStatement.java:152)",
        more=58,
    ),
)
CHECKOUT_OPTIMISTIC_LOCK = ErrorKind(
    JAVA,
    "org.hibernate.StaleObjectStateException",
    "Row was updated or deleted by another transaction (or unsaved-value mapping was incorrect) : "
    "[com.shop.checkout.domain.Order#{order_id}]",
    "Checkout failed for order {order_id}: concurrent modification",
    java_frames(
        "org.hibernate.persister.entity.AbstractEntityPersister.check(AbstractEntityPersister.java:2512)",
        "org.hibernate.engine.jdbc.batch.internal.BatchImpl.execute(BatchImpl.java:131)",
        "com.shop.checkout.service.CheckoutService.placeOrder(CheckoutService.java:143)",
        "com.shop.checkout.api.CheckoutController.checkout(CheckoutController.java:48)",
        *_SPRING,
        more=0,
    ),
)
PAYMENT_PROVIDER_IO = ErrorKind(
    JAVA,
    "com.stripe.exception.ApiConnectionException",
    "IOException during API request to Stripe (https://api.stripe.com): Connection reset",
    "Payment {payment_id} for order {order_id} failed: provider unreachable",
    java_frames(
        "com.stripe.net.HttpURLConnectionClient.request(HttpURLConnectionClient.java:98)",
        "com.stripe.net.LiveStripeResponseGetter.request(LiveStripeResponseGetter.java:78)",
        "com.stripe.model.PaymentIntent.create(PaymentIntent.java:1052)",
        "com.shop.payment.provider.StripeGateway.authorize(StripeGateway.java:66)",
        "com.shop.payment.service.PaymentService.charge(PaymentService.java:91)",
        "com.shop.payment.api.PaymentController.create(PaymentController.java:40)",
        *_SPRING,
        cause="java.net.SocketException: Connection reset\n"
        "\tat java.base/sun.nio.ch.NioSocketImpl.implRead(NioSocketImpl.java:318)",
        more=71,
    ),
    status=502,
)
AUTH_SESSION_DECODE = ErrorKind(
    GO,
    "*json.SyntaxError",
    "invalid character '\\x00' looking for beginning of value",
    "failed to decode session {session_id}",
    go_frames(
        7841,
        ("encoding/json.(*decodeState).unmarshal(...)", "/usr/local/go/src/encoding/json/decode.go:181 +0x1bd"),
        (
            "github.com/shop/auth-service/internal/session.(*Store).Get(0xc0001a2f00, {0x10c8a20, 0xc00041e0c0})",
            "/src/internal/session/store.go:58 +0x1a5",
        ),
        (
            "github.com/shop/auth-service/internal/api.(*Handler).Validate(0xc000132000, {0x10c9b40, 0xc0002a81c0})",
            "/src/internal/api/validate.go:34 +0x9c",
        ),
        ("net/http.HandlerFunc.ServeHTTP(...)", "/usr/local/go/src/net/http/server.go:2220 +0x29"),
    ),
)
GATEWAY_CONN_REFUSED = ErrorKind(
    GO,
    "*net.OpError",
    "dial tcp 10.0.4.23:8080: connect: connection refused",
    "proxy error: upstream connection refused",
    go_frames(
        913,
        ("net.(*Dialer).DialContext(...)", "/usr/local/go/src/net/dial.go:586 +0x6e5"),
        (
            "net/http/httputil.(*ReverseProxy).ServeHTTP(0xc0000f6a00, {0x10d2f80, 0xc0003c2000}, 0xc0004b6000)",
            "/usr/local/go/src/net/http/httputil/reverseproxy.go:472 +0x13c5",
        ),
        (
            "github.com/shop/api-gateway/internal/proxy.(*Router).ServeHTTP(0xc000118000, {0x10d2f80, 0xc0003c2000})",
            "/src/internal/proxy/router.go:112 +0x2f1",
        ),
    ),
    status=502,
)
FRONTEND_RENDER_ERROR = ErrorKind(
    NODEJS,
    "TypeError",
    "Cannot read properties of undefined (reading 'images')",
    "Error rendering /product/{product_id}",
    node_frames(
        "ProductGallery (/app/.next/server/chunks/812.js:1:4312)",
        "renderWithHooks (/app/node_modules/react-dom/cjs/react-dom-server.node.production.js:4179:18)",
        "renderElement (/app/node_modules/react-dom/cjs/react-dom-server.node.production.js:4317:14)",
        "async renderToHTMLImpl (/app/node_modules/next/dist/server/render.js:1021:28)",
    ),
)

# --- upstream failures: what a caller records when a call it made fails or times out -------------------

_UPSTREAM_FRAMES = {
    "python": py_frames(
        _STARLETTE,
        _FASTAPI,
        ("/app/shop_common/http.py", 61, "call", "response.raise_for_status()"),
        (
            "/usr/local/lib/python3.12/site-packages/httpx/_models.py",
            829,
            "raise_for_status",
            "raise HTTPStatusError(message, request=request, response=self)",
        ),
    ),
    "java": java_frames(
        "org.springframework.web.client.DefaultResponseErrorHandler.handleError(DefaultResponseErrorHandler.java:168)",
        "org.springframework.web.client.RestClient$DefaultResponseSpec.toEntity(RestClient.java:788)",
        "com.shop.common.http.ServiceClient.exchange(ServiceClient.java:74)",
        *_SPRING,
    ),
    "go": go_frames(
        2291,
        (
            "github.com/shop/platform/httpclient.(*Client).Do(0xc0000c8120, 0xc0004a2100)",
            "/src/httpclient/client.go:88 +0x3b2",
        ),
        (
            "github.com/shop/platform/proxy.Forward({0x10d2f80, 0xc0003c2000}, 0xc0004a2000)",
            "/src/proxy/forward.go:41 +0x1d5",
        ),
    ),
    "nodejs": node_frames(
        "settle (/app/node_modules/axios/dist/node/axios.cjs:2019:12)",
        "IncomingMessage.handleStreamEnd (/app/node_modules/axios/dist/node/axios.cjs:3135:11)",
        "async getServerSideProps (/app/.next/server/pages/[[...slug]].js:1:9120)",
    ),
}
_UPSTREAM_TYPES = {
    "python": ("httpx.HTTPStatusError", "httpx.ReadTimeout"),
    "java": ("org.springframework.web.client.HttpServerErrorException", "java.net.http.HttpTimeoutException"),
    "go": ("*url.Error", "*url.Error"),
    "nodejs": ("AxiosError", "AxiosError"),
}


def upstream_error(language: Language, timeout: bool) -> ErrorKind:
    """The exception a service of ``language`` records when a downstream call fails (or times out).

    The message is filled in by the caller from the callee's address, path and status code.
    """
    error_type, timeout_type = _UPSTREAM_TYPES[language.name]
    return ErrorKind(
        language,
        timeout_type if timeout else error_type,
        "",
        "",
        _UPSTREAM_FRAMES[language.name],
        status=504 if timeout else 502,
    )


_CONNECT_TYPES = {
    "python": "httpx.ConnectError",
    "java": "java.net.ConnectException",
    "go": "*url.Error",
    "nodejs": "Error",
}


def connect_error(language: Language) -> ErrorKind:
    """The exception a service of ``language`` records when nothing listens at the callee's address."""
    return ErrorKind(language, _CONNECT_TYPES[language.name], "", "", _UPSTREAM_FRAMES[language.name], status=502)


def pod_address(service: str) -> str:
    """A stable pod IP for ``service``, for connection errors (which name the address, not the host)."""
    n = sum(service.encode())
    return f"10.0.{n % 7}.{n % 250 + 3}"


def connect_message(language: Language, url: str, method: str, address: str) -> str:
    lang = language.name
    if lang == "python":
        return "[Errno 111] Connection refused"
    if lang == "java":
        return f"Connection refused: {address}"
    if lang == "go":
        return f'{method.title()} "{url}": dial tcp {address}: connect: connection refused'
    return f"connect ECONNREFUSED {address}"


def upstream_message(language: Language, url: str, method: str, status: int, timeout_ms: float) -> str:
    lang = language.name
    if status == 0:
        if lang == "python":
            return "timed out"
        if lang == "java":
            return "request timed out"
        if lang == "go":
            return (
                f'{method.title()} "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
            )
        return f"timeout of {int(timeout_ms)}ms exceeded"
    if lang == "python":
        reason = "Server error" if status >= 500 else "Client error"
        return f"{reason} '{status}' for url '{url}'"
    if lang == "java":
        return f'{status} on {method} request for "{url}"'
    if lang == "go":
        return f'{method.title()} "{url}": upstream responded {status}'
    return f"Request failed with status code {status}"


# --- services ----------------------------------------------------------------------------------------------

SERVICES: tuple[ServiceDef, ...] = (
    # name, language, version, replicas, port, memory limit and usual footprint (MiB), idle CPU, CPU per req/s
    ServiceDef("frontend", NODEJS, "3.12.0", 2, 3000, 1024, 310, 0.04, 0.012, access_log="morgan", gateway=True),
    ServiceDef("api-gateway", GO, "1.21.4", 2, 8080, 512, 72, 0.02, 0.006, access_log="structured", gateway=True),
    ServiceDef("auth-service", GO, "2.3.1", 1, 8080, 256, 48, 0.02, 0.008, "auth", 10, access_log="structured"),
    ServiceDef("catalog-service", PYTHON, "2.14.0", 2, 8080, 1024, 280, 0.05, 0.03, "catalog", 20, "uvicorn"),
    ServiceDef("inventory-service", JAVA, "4.2.0", 1, 8080, 2048, 760, 0.06, 0.012, "inventory", 20),
    ServiceDef("cart-service", PYTHON, "1.8.3", 1, 8080, 512, 190, 0.03, 0.02, "carts", 10, "uvicorn"),
    ServiceDef("checkout-service", JAVA, "3.6.2", 1, 8080, 2048, 820, 0.06, 0.05, "orders", 20),
    ServiceDef("payment-service", JAVA, "5.0.7", 1, 8080, 1536, 640, 0.05, 0.05, "payments", 10),
)
SERVICE_BY_NAME = {s.name: s for s in SERVICES}

POSTGRES_HOST = "postgres"
POSTGRES_PORT = 5432
REDIS_HOST = "redis"
REDIS_PORT = 6379

# --- routes ------------------------------------------------------------------------------------------------

_VALIDATE = Call("auth-service", "GET /auth/validate", timeout_ms=2_000)
_AUTHENTICATED = LogSpec("DEBUG", "authenticated request for {user_id}", 0.8, 0.3, ("user_id",))

_PRODUCT_MISS = (
    Query(
        "SELECT",
        "products",
        "SELECT id, sku, name, description, price_cents, currency FROM products WHERE id = %s",
        2.5,
    ),
    Query(
        "SELECT",
        "product_images",
        "SELECT url, width, height FROM product_images WHERE product_id = %s ORDER BY position",
        1.8,
    ),
    Query(
        "SELECT",
        "reviews",
        "SELECT rating, count(*) FROM reviews WHERE product_id = %s GROUP BY rating",
        6.0,
        0.7,
    ),
)

ROUTES: tuple[Route, ...] = (
    # frontend: server-rendered pages; every page calls the gateway once.
    Route(
        "frontend",
        "GET",
        "/",
        "/",
        22,
        steps=(Call("api-gateway", "GET /api/products"),),
        logs=(LogSpec("DEBUG", "Rendering home page with 24 featured products", 0.6, 0.9),),
    ),
    Route(
        "frontend",
        "GET",
        "/product/:id",
        "/product/{product_id}",
        28,
        steps=(Call("api-gateway", "GET /api/products/{id}"),),
        logs=(LogSpec("DEBUG", "Rendering product page for {product_id}", 0.5, 0.9, ("product_id",)),),
        errors=((FRONTEND_RENDER_ERROR, 0.0015),),
    ),
    Route(
        "frontend",
        "GET",
        "/search",
        "/search",
        18,
        steps=(Call("api-gateway", "GET /api/search"),),
        logs=(LogSpec("INFO", "Search page requested for {query!r}", 0.8, 0.05, ("query",)),),
    ),
    Route(
        "frontend",
        "GET",
        "/cart",
        "/cart",
        15,
        steps=(Call("api-gateway", "GET /api/cart"),),
        logs=(LogSpec("DEBUG", "Rendering cart with {items} items", 0.7, 0.9),),
    ),
    Route(
        "frontend",
        "POST",
        "/cart/items",
        "/cart/items",
        9,
        steps=(Call("api-gateway", "POST /api/cart/items"),),
        logs=(LogSpec("INFO", "Add to cart: product {product_id} x{quantity}", 1.0, 0.05, ("product_id",)),),
    ),
    Route(
        "frontend",
        "POST",
        "/checkout",
        "/checkout",
        14,
        steps=(Call("api-gateway", "POST /api/checkout", timeout_ms=15_000),),
        logs=(LogSpec("INFO", "Checkout submitted by {user_id} with {items} items", 1.0, 0.0, ("user_id",)),),
    ),
    Route(
        "frontend",
        "POST",
        "/login",
        "/login",
        8,
        steps=(Call("api-gateway", "POST /api/auth/login"),),
        logs=(LogSpec("INFO", "Login attempt for {user_id}", 1.0, 0.0, ("user_id",)),),
    ),
    # api-gateway: authenticates (except public catalog routes) and proxies.
    Route(
        "api-gateway", "GET", "/api/products", "/api/products", 1.2, steps=(Call("catalog-service", "GET /products"),)
    ),
    Route(
        "api-gateway",
        "GET",
        "/api/products/{id}",
        "/api/products/{product_id}",
        1.2,
        steps=(Call("catalog-service", "GET /products/{product_id}"),),
        errors=((GATEWAY_CONN_REFUSED, 0.001),),
    ),
    Route("api-gateway", "GET", "/api/search", "/api/search", 1.3, steps=(Call("catalog-service", "GET /search"),)),
    Route(
        "api-gateway",
        "GET",
        "/api/cart",
        "/api/cart",
        1.1,
        steps=(_VALIDATE, Call("cart-service", "GET /cart")),
        logs=(_AUTHENTICATED,),
    ),
    Route(
        "api-gateway",
        "POST",
        "/api/cart/items",
        "/api/cart/items",
        1.2,
        steps=(_VALIDATE, Call("cart-service", "POST /cart/items")),
        ok_status=201,
        logs=(_AUTHENTICATED,),
    ),
    Route(
        "api-gateway",
        "POST",
        "/api/checkout",
        "/api/checkout",
        1.4,
        steps=(_VALIDATE, Call("checkout-service", "POST /checkout", timeout_ms=12_000)),
        ok_status=201,
        logs=(_AUTHENTICATED,),
    ),
    Route(
        "api-gateway",
        "POST",
        "/api/auth/login",
        "/api/auth/login",
        1.1,
        steps=(Call("auth-service", "POST /auth/login"),),
    ),
    # auth-service
    Route(
        "auth-service",
        "GET",
        "/auth/validate",
        "/auth/validate",
        0.8,
        0.3,
        steps=(
            # Sessions live in postgres; redis holds the hot ones.
            CacheGet(
                "session:{session_id}",
                "sessions",
                0.9,
                (Query("SELECT", "sessions", "SELECT user_id, expires_at FROM sessions WHERE id = $1", 1.2),),
            ),
        ),
        logs=(LogSpec("DEBUG", "Session {session_id} valid for {user_id}", 0.4, 0.9, ("user_id",)),),
        errors=((AUTH_SESSION_DECODE, 0.002),),
        rejections=(Rejection(401, 0.004, LogSpec("WARN", "Session {session_id} expired", at=0.9)),),
    ),
    Route(
        "auth-service",
        "POST",
        "/auth/login",
        "/auth/login",
        3,
        steps=(
            Query("SELECT", "users", "SELECT id, password_hash, locked FROM users WHERE email = $1", 1.6),
            Work("bcrypt.verify", 62, 0.12),
            Query(
                "SELECT",
                "permissions",
                "SELECT p.name FROM permissions p JOIN user_roles ur ON ur.role_id = p.role_id WHERE ur.user_id = $1",
                1.9,
                per_item=Query(
                    "SELECT", "permissions", "SELECT name FROM permissions WHERE role_id = $1", 0.7, 0.4, (12, 36)
                ),
            ),
            CacheOp("SETEX", "session:{session_id}", 0.5),
            Query("UPDATE", "users", "UPDATE users SET last_login_at = now() WHERE id = $1", 2.1),
        ),
        logs=(LogSpec("INFO", "User {user_id} logged in from {client_ip}", 1.0, 1.0, ("user_id", "client_ip")),),
        rejections=(
            Rejection(401, 0.03, LogSpec("WARN", "Login failed for {user_id} from {client_ip}: invalid password")),
        ),
    ),
    # catalog-service: cache first, postgres on a miss.
    Route(
        "catalog-service",
        "GET",
        "/products",
        "/products",
        3.5,
        steps=(
            CacheGet(
                "products:featured",
                "products",
                0.92,
                (
                    Query(
                        "SELECT",
                        "products",
                        "SELECT id, sku, name, price_cents FROM products WHERE featured ORDER BY rank LIMIT 24",
                        11,
                    ),
                    Query("SELECT", "prices", "SELECT product_id, amount FROM prices WHERE product_id = ANY(%s)", 4),
                ),
            ),
        ),
        logs=(LogSpec("INFO", "Listed 24 featured products", 0.5, 1.0),),
    ),
    Route(
        "catalog-service",
        "GET",
        "/products/{product_id}",
        "/products/{product_id}",
        4,
        steps=(
            CacheGet("product:{product_id}", "product", 0.78, _PRODUCT_MISS),
            Call("inventory-service", "GET /inventory/{sku}", timeout_ms=3_000),
        ),
        logs=(
            LogSpec("DEBUG", "Fetching product {product_id}", 0.5, 0.0, ("product_id",)),
            LogSpec("INFO", "Served product {product_id} ({sku})", 0.8, 1.0, ("product_id", "sku")),
        ),
        errors=((CATALOG_STATEMENT_TIMEOUT, 0.004),),
        rejections=(Rejection(404, 0.008, LogSpec("INFO", "Product {product_id} not found", attrs=("product_id",))),),
    ),
    Route(
        "catalog-service",
        "GET",
        "/search",
        "/search",
        6,
        0.5,
        steps=(
            Query(
                "SELECT",
                "products",
                "SELECT id, ts_rank(search_vector, q) AS rank FROM products, to_tsquery(%s) q "
                "WHERE search_vector @@ q ORDER BY rank DESC LIMIT 50",
                24,
                0.8,
            ),
            Query(
                "SELECT",
                "products",
                "SELECT id, sku, name, price_cents, currency FROM products WHERE id = ANY(%s)",
                3.2,
                per_item=Query(
                    "SELECT",
                    "products",
                    "SELECT id, sku, name, price_cents, currency FROM products WHERE id = %s",
                    0.9,
                    0.4,
                    (20, 50),
                ),
            ),
            Query("SELECT", "prices", "SELECT amount, currency FROM prices WHERE product_id = %s", 1.4, 0.4, (3, 9)),
            Work("rank_results", 3.5, 0.4),
        ),
        logs=(LogSpec("INFO", "Search {query!r} returned {results} results", 1.0, 1.0, ("query",)),),
        errors=((CATALOG_SEARCH_ERROR, 0.004),),
    ),
    # inventory-service
    Route(
        "inventory-service",
        "GET",
        "/inventory/{sku}",
        "/inventory/{sku}",
        2.2,
        steps=(
            Query(
                "SELECT",
                "stock",
                "SELECT sum(available), sum(reserved) FROM stock WHERE sku = ?",
                1.5,
                per_item=Query(
                    "SELECT",
                    "stock",
                    "SELECT available, reserved FROM stock WHERE sku = ? AND warehouse_id = ?",
                    0.6,
                    0.4,
                    (10, 24),
                ),
            ),
        ),
        logs=(LogSpec("DEBUG", "Stock level for {sku}: {quantity} available", 0.7, 1.0, ("sku",)),),
    ),
    Route(
        "inventory-service",
        "POST",
        "/inventory/reserve",
        "/inventory/reserve",
        3,
        steps=(
            Query(
                "UPDATE",
                "stock",
                "UPDATE stock SET reserved = reserved + ? WHERE sku = ? AND available >= ?",
                3.2,
                0.5,
                (1, 4),
            ),
            Query("INSERT", "reservations", "INSERT INTO reservations (order_id, sku, quantity) VALUES (?, ?, ?)", 2.4),
        ),
        logs=(LogSpec("INFO", "Reserved {items} items for order {order_id}", 1.0, 1.0, ("order_id",)),),
        errors=((INVENTORY_DEADLOCK, 0.005),),
        rejections=(Rejection(409, 0.01, LogSpec("WARN", "Insufficient stock for {sku}", attrs=("sku",))),),
    ),
    # cart-service: everything lives in redis.
    Route(
        "cart-service",
        "GET",
        "/cart",
        "/cart",
        1.5,
        steps=(
            CacheGet(
                "cart:{user_id}",
                "cart",
                0.85,
                (
                    Query(
                        "SELECT",
                        "cart_items",
                        "SELECT sku, quantity, unit_price_cents FROM cart_items WHERE user_id = %s",
                        1.8,
                    ),
                ),
                command="HGETALL",
                fill_command="HSET",
            ),
        ),
        logs=(LogSpec("DEBUG", "Loaded cart for {user_id}: {items} items", 0.6, 1.0, ("user_id",)),),
        errors=((CART_REDIS_RESET, 0.004),),
    ),
    Route(
        "cart-service",
        "POST",
        "/cart/items",
        "/cart/items",
        2,
        steps=(
            Call("catalog-service", "GET /products/{product_id}", timeout_ms=3_000),
            Query(
                "INSERT",
                "cart_items",
                "INSERT INTO cart_items (user_id, sku, quantity) VALUES (%s, %s, %s) "
                "ON CONFLICT (user_id, sku) DO UPDATE SET quantity = cart_items.quantity + EXCLUDED.quantity",
                2.1,
            ),
            CacheOp("HINCRBY", "cart:{user_id}", 0.5),
            CacheOp("EXPIRE", "cart:{user_id}", 0.4),
        ),
        logs=(
            LogSpec(
                "INFO", "Added {quantity} x {product_id} to cart of {user_id}", 1.0, 1.0, ("user_id", "product_id")
            ),
        ),
        ok_status=201,
    ),
    Route(
        "cart-service",
        "DELETE",
        "/cart",
        "/cart",
        1,
        steps=(CacheOp("DEL", "cart:{user_id}", 0.5),),
        logs=(LogSpec("DEBUG", "Cleared cart of {user_id}", 0.5, 1.0, ("user_id",)),),
        ok_status=204,
    ),
    # checkout-service: the longest chain.
    Route(
        "checkout-service",
        "POST",
        "/checkout",
        "/checkout",
        6,
        steps=(
            Call("cart-service", "GET /cart", timeout_ms=2_000),
            Call("inventory-service", "POST /inventory/reserve", timeout_ms=3_000),
            Query(
                "SELECT",
                "orders",
                "SELECT count(*), coalesce(sum(total_cents), 0) FROM orders WHERE user_id = ? AND status = 'PAID'",
                2.4,
                per_item=Query(
                    "SELECT", "orders", "SELECT total_cents, status FROM orders WHERE id = ?", 1.4, 0.4, (25, 60)
                ),
            ),
            Call("payment-service", "POST /payments", timeout_ms=5_000),
            Query(
                "INSERT",
                "orders",
                "INSERT INTO orders (id, user_id, total_cents, currency, status) VALUES (?, ?, ?, ?, 'PAID')",
                3.1,
            ),
            Query(
                "INSERT",
                "order_items",
                "INSERT INTO order_items (order_id, sku, quantity, price_cents) VALUES (?, ?, ?, ?)",
                1.9,
                0.4,
                (1, 4),
            ),
            Call("cart-service", "DELETE /cart", timeout_ms=2_000),
        ),
        logs=(
            LogSpec("INFO", "Starting checkout for {user_id} ({items} items)", 1.0, 0.0, ("user_id",)),
            LogSpec(
                "INFO",
                "Order {order_id} placed: {items} items, total={amount} {currency}",
                1.0,
                1.0,
                ("order_id", "amount", "currency"),
            ),
        ),
        errors=((CHECKOUT_OPTIMISTIC_LOCK, 0.006),),
        ok_status=201,
    ),
    # payment-service: fraud check, then the card network through Stripe.
    Route(
        "payment-service",
        "POST",
        "/payments",
        "/payments",
        5,
        steps=(
            CacheGet(
                "fx:{currency}",
                "fx-rates",
                0.95,
                (Query("SELECT", "fx_rates", "SELECT rate, updated_at FROM fx_rates WHERE currency = ?", 1.3),),
            ),
            Query(
                "SELECT",
                "payments",
                "SELECT amount_cents, status, created_at FROM payments WHERE user_id = ? "
                "ORDER BY created_at DESC LIMIT 50",
                2.6,
                per_item=Query(
                    "SELECT",
                    "payments",
                    "SELECT amount_cents, status, created_at FROM payments WHERE id = ?",
                    1.4,
                    0.4,
                    (25, 60),
                ),
            ),
            Work(
                "fraud.score",
                14,
                0.35,
                (LogSpec("DEBUG", "Fraud score for order {order_id}: {fraud_score}", 0.8, 1.0, ("order_id",)),),
            ),
            Query(
                "INSERT",
                "payments",
                "INSERT INTO payments (id, order_id, amount_cents, currency, status) VALUES (?, ?, ?, ?, 'PENDING')",
                2.8,
            ),
            External(
                "api.stripe.com",
                "POST",
                "/v1/payment_intents",
                190,
                0.35,
                timeout_ms=4_000,
                rejections=(
                    Rejection(
                        402,
                        0.02,
                        LogSpec("WARN", "Card declined for order {order_id} ({card_brand})", attrs=("order_id",)),
                    ),
                ),
                failure_p=0.001,
            ),
            Query(
                "UPDATE", "payments", "UPDATE payments SET status = 'AUTHORIZED', provider_ref = ? WHERE id = ?", 2.2
            ),
        ),
        logs=(
            LogSpec(
                "INFO",
                "Charging {amount} {currency} to {card_brand} card for order {order_id}",
                1.0,
                0.3,
                ("order_id",),
            ),
            LogSpec(
                "INFO",
                "Payment authorized for order {order_id} amount={amount} {currency}",
                1.0,
                1.0,
                ("order_id", "payment_id", "amount", "currency"),
            ),
        ),
        errors=((PAYMENT_PROVIDER_IO, 0.006),),
        ok_status=201,
    ),
)
ROUTE_BY_KEY = {r.key: r for r in ROUTES}

# Entry points: the frontend page a user request hits, and how often.
JOURNEYS: tuple[tuple[str, float], ...] = (
    ("frontend GET /", 18),
    ("frontend GET /product/:id", 35),
    ("frontend GET /search", 12),
    ("frontend GET /cart", 12),
    ("frontend POST /cart/items", 10),
    ("frontend POST /checkout", 5),
    ("frontend POST /login", 5),
)
