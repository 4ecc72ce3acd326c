"""The incidents the demo can inject, and the ground truth evaluations check answers against.

A scenario changes only its root-cause service; everything the other services show (slower calls, 502s,
timeouts) follows from the call graph, as it would in a real outage.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from random import Random
from typing import TYPE_CHECKING, ClassVar

from obsmcp.demo.topology import JAVA, PYTHON, SERVICE_BY_NAME, ErrorKind, java_frames, py_frames

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


class Incident:
    """What the fault does to the root-cause service while it is active. The base class does nothing."""

    # Version the root-cause service runs during the incident (a rollout), if it changes.
    new_version: str | None = None

    def __init__(self, truth: Scenario) -> None:
        self.truth = truth
        self.service = truth.root_cause_service
        self.start_ns = truth.start_ns
        self.end_ns = truth.end_ns

    def progress(self, t_ns: int) -> float:
        """0 at the start of the incident, 1 at its end."""
        return (t_ns - self.start_ns) / max(1, self.end_ns - self.start_ns)

    def route_effect(self, route_key: str, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        """Extra time a request spends in the service before its work, and the failure it meets, if any."""
        return 0, None

    def db_duration(self, duration_ns: int, t_ns: int, rng: Random) -> int:
        """Duration of one of the service's database calls."""
        return duration_ns

    def pressure(self, t_ns: int) -> Pressure:
        return _NO_PRESSURE


class DependencyLatency(Incident):
    """payment-service's database slows down (lock contention on ``payments``)."""

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


# The bug shipped by the deploy-errors rollout.
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


class DeployErrors(Incident):
    """catalog-service 2.15.0 rolls out with a price-formatting bug for products priced in other currencies."""

    new_version = "2.15.0"
    _ERROR_P: ClassVar[dict[str, float]] = {
        "catalog-service GET /products/{product_id}": 0.22,
        "catalog-service GET /products": 0.06,
    }

    def route_effect(self, route_key: str, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        p = self._ERROR_P.get(route_key, 0.0)
        if p and rng.random() < p:
            return 0, PRICE_FORMAT_ERROR
        return 0, None


_POOL_TIMEOUT_MS = 2_500
_INVENTORY_POOL = SERVICE_BY_NAME["inventory-service"].db_pool_max

POOL_TIMEOUT_ERROR = ErrorKind(
    JAVA,
    "org.springframework.jdbc.CannotGetJdbcConnectionException",
    "Failed to obtain JDBC Connection",
    f"Connection pool exhausted (active={_INVENTORY_POOL}, max={_INVENTORY_POOL}); request for {{sku}} rejected",
    java_frames(
        "org.springframework.jdbc.datasource.DataSourceUtils.getConnection(DataSourceUtils.java:84)",
        "org.springframework.jdbc.core.JdbcTemplate.execute(JdbcTemplate.java:653)",
        "com.shop.inventory.repository.StockRepository.find(StockRepository.java:41)",
        "com.shop.inventory.api.InventoryController.get(InventoryController.java:35)",
        "org.springframework.web.servlet.FrameworkServlet.processRequest(FrameworkServlet.java:1014)",
        "jakarta.servlet.http.HttpServlet.service(HttpServlet.java:564)",
        cause="java.sql.SQLTransientConnectionException: HikariPool-1 - Connection is not available, "
        f"request timed out after {_POOL_TIMEOUT_MS}ms (total={_INVENTORY_POOL}, active={_INVENTORY_POOL}, "
        "idle=0, waiting=37)\n"
        "\tat com.zaxxer.hikari.pool.HikariPool.createTimeoutException(HikariPool.java:686)\n"
        "\tat com.zaxxer.hikari.pool.HikariPool.getConnection(HikariPool.java:179)",
        more=64,
    ),
    status=503,
    after_work=False,
)


class ResourceExhaustion(Incident):
    """inventory-service leaks database connections and heap until the pool is exhausted."""

    _SATURATES_AT = 0.35  # incident progress at which the leak has taken the whole pool
    _MEMORY_FULL_AT = 0.85
    _TIMEOUT_P = 0.45

    def _leak(self, t_ns: int) -> float:
        return min(1.0, max(0.0, self.progress(t_ns)) / self._SATURATES_AT)

    def pressure(self, t_ns: int) -> Pressure:
        grown = min(1.0, max(0.0, self.progress(t_ns)) / self._MEMORY_FULL_AT)
        return Pressure(memory=0.93 * grown, cpu=0.1 + 0.5 * grown, pool_leak=self._leak(t_ns))

    def route_effect(self, route_key: str, t_ns: int, rng: Random) -> tuple[int, ErrorKind | None]:
        leak = self._leak(t_ns)
        if leak < 0.8:
            # Growing heap: the occasional long GC pause.
            if rng.random() < 0.3 * leak:
                return int(rng.uniform(20, 150) * _MS), None
            return 0, None
        if leak < 1.0:
            return int(rng.uniform(0, 400) * (leak - 0.8) / 0.2 * _MS), None
        if rng.random() < self._TIMEOUT_P:
            return _POOL_TIMEOUT_MS * _MS, POOL_TIMEOUT_ERROR
        return int(rng.uniform(200, _POOL_TIMEOUT_MS) * _MS), None


@dataclass(frozen=True)
class _Definition:
    root_cause_service: str
    description: str
    affected_services: tuple[str, ...]
    incident: type[Incident]


_DEFINITIONS: dict[str, _Definition] = {
    "none": _Definition("", "No incident: baseline traffic with its usual rare errors.", (), Incident),
    "dependency-latency": _Definition(
        "payment-service",
        "payment-service's queries against its postgres database (payments table) slow down about 100x from "
        "lock contention, with occasional multi-second lock waits. POST /payments latency rises; "
        "checkout-service and everything upstream of it get slower, and some checkouts time out after 5 s "
        "(504s at checkout-service, api-gateway and frontend) while payment-service itself reports no new errors.",
        ("payment-service", "checkout-service", "api-gateway", "frontend"),
        DependencyLatency,
    ),
    "deploy-errors": _Definition(
        "catalog-service",
        "catalog-service 2.15.0 (previously 2.14.0) is deployed at the start time. Its new price formatter "
        "raises AttributeError ('NoneType' object has no attribute 'quantize') on about a fifth of "
        "GET /products/{product_id} requests, which return 500; api-gateway and frontend show 502s and "
        "cart-service's add-to-cart calls fail.",
        ("catalog-service", "api-gateway", "frontend", "cart-service"),
        DeployErrors,
    ),
    "resource-exhaustion": _Definition(
        "inventory-service",
        "inventory-service leaks JDBC connections and heap: memory and CPU climb, db.client.connections.usage "
        "reaches db.client.connections.max, then requests wait for a connection and many fail after 2.5 s "
        "with CannotGetJdbcConnectionException (503), slowing and failing catalog-service product pages and "
        "checkout-service reservations.",
        ("inventory-service", "catalog-service", "checkout-service", "api-gateway", "frontend"),
        ResourceExhaustion,
    ),
}

SCENARIO_NAMES: tuple[str, ...] = tuple(_DEFINITIONS)


def check_scenario_name(name: str) -> None:
    if name not in _DEFINITIONS:
        raise ValueError(f"unknown scenario {name!r}; valid scenarios: {', '.join(SCENARIO_NAMES)}")


def scenario_truth(cfg: DemoConfig) -> Scenario:
    """The incident injected into the data ``generate(cfg)`` produces.

    Pass the same config object to ``generate``: a ``DemoConfig`` pins "now" when it is created.
    """
    check_scenario_name(cfg.scenario)
    definition = _DEFINITIONS[cfg.scenario]
    end = cfg.end_ns if cfg.end_ns is not None else time.time_ns()
    window_start = end - int(cfg.duration_s * _NS)
    if not definition.root_cause_service:
        return Scenario(cfg.scenario, "", end, end, definition.description)
    start = max(window_start, end - int(cfg.incident_start_before_end_s * _NS))
    stop = end if cfg.incident_duration_s is None else min(end, start + int(cfg.incident_duration_s * _NS))
    return Scenario(
        cfg.scenario,
        definition.root_cause_service,
        start,
        stop,
        definition.description,
        definition.affected_services,
    )


def make_incident(truth: Scenario) -> Incident:
    return _DEFINITIONS[truth.name].incident(truth)
