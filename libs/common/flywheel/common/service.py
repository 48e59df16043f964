"""What every Flywheel service has: a FastAPI app whose lifespan runs the Kafka broker,
``/health`` over its connections, ``/metrics`` for Prometheus, OpenAPI and AsyncAPI docs."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, Literal

import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI, get_asyncapi_html
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from flywheel.common.kafka import declare_publishers
from flywheel.common.problems import declare_input_problems
from flywheel.common.settings import ServiceSettings
from flywheel.schemas import Topic

log = structlog.get_logger(__name__)

HealthCheck = Callable[[], Awaitable[bool]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

# A young collection every 10,000 allocations, not CPython's 700: the event path allocates a few objects per field of
# every message, and with 700 (a full collection every 70,000 allocations: a few hundred records) the collector
# walked the whole heap the service keeps (its view, its join, its dedup ids) again and again. Measured on
# ingestion's validation of 5,000 records in process: 68 µs a record at 700, 30 at 10,000.
GC_YOUNG_THRESHOLD = 10_000

HTTP_LATENCY = Histogram(
    "flywheel_http_request_duration_seconds",
    "HTTP request latency by route and status.",
    ["service", "route", "method", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)


class Health(BaseModel):
    """Whether the service is up (200) or degraded (503), per connection; services add their own facts."""

    model_config = ConfigDict(extra="allow")

    service: str
    status: Literal["ok", "degraded"]
    checks: dict[str, str]


def broker_check(broker: KafkaBroker, timeout: float = 2.0) -> HealthCheck:
    async def check() -> bool:
        return await broker.ping(timeout)

    return check


def stalled_consumers(broker: KafkaBroker) -> list[str]:
    """The topics of subscribers whose Kafka consumer has lost a task it cannot read without.

    aiokafka can end a consumer's group coordination for good on an error it does not expect
    (aio-libs/aiokafka#1038) while the connection still answers pings: the service then reads nothing
    more. aiokafka exposes no state for it, so its tasks are looked at directly (private attributes,
    read defensively: a consumer not started yet, or a newer aiokafka, counts as well).
    """
    stalled = []
    for subscriber in broker.subscribers:
        consumer = getattr(subscriber, "consumer", None)
        if consumer is None or getattr(consumer, "_closed", False):
            continue
        tasks = [
            getattr(getattr(consumer, "_coordinator", None), "_coordination_task", None),  # group membership
            getattr(getattr(consumer, "_fetcher", None), "_fetch_task", None),  # fetching at all
        ]
        if any(task is not None and task.done() for task in tasks):
            stalled.append(",".join(sorted(consumer.subscription())) or "assigned partitions")
    return stalled


def consumers_check(broker: KafkaBroker) -> HealthCheck:
    """Every consumer of the service still takes part in its group and fetches: a stalled one is a
    service that reads nothing, whatever its broker connection says, and /health must fail for it."""

    async def check() -> bool:
        if stalled := stalled_consumers(broker):
            log.error("kafka consumer stalled: restart the service", topics=stalled)
            return False
        return True

    return check


def blocking_check(probe: Callable[[], Any], timeout: float = 3.0) -> HealthCheck:
    """Run a blocking client call (MinIO, MLflow) off the event loop as a health check."""

    async def check() -> bool:
        return bool(await asyncio.wait_for(asyncio.to_thread(probe), timeout))

    return check


class ObserveLatency:
    """Each HTTP request's latency, by route, method and status (``flywheel_http_request_duration_seconds``).

    A plain ASGI middleware: Starlette's ``BaseHTTPMiddleware`` (``@app.middleware("http")``) runs every
    request's app in a task of its own and streams its response through memory, which costs a
    single-record ``/predict`` more than scoring it does.
    """

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless the app starts a response: an exception it let through

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")  # the router sets it in this very scope
            elapsed = time.perf_counter() - started
            HTTP_LATENCY.labels(self.service, path, scope["method"], str(status)).observe(elapsed)


def create_service_app(
    *,
    name: str,
    settings: ServiceSettings,
    broker: KafkaBroker,
    checks: Mapping[str, HealthCheck],
    routers: Sequence[APIRouter] = (),
    lifespans: Sequence[Lifespan] = (),
    description: str = "",
    registry: CollectorRegistry = REGISTRY,
    version: str = "0.1.0",
    status: Callable[[], dict[str, Any]] | None = None,
    publishes: Sequence[Topic] | None = None,
    reads: Mapping[Topic, str] | None = None,
) -> FastAPI:
    """Build a service's HTTP app; ``lifespans`` run inside the broker's, in order.

    ``status`` adds the service's own facts to ``/health`` without deciding its health.
    ``publishes`` are the topics the service publishes on (``publish_event`` then refuses any other;
    None, for an app assembled in a test, declares nothing and enforces nothing)
    and ``reads`` the topics it reads outside its subscribers (say, a log it folds on start),
    with why: both go into its AsyncAPI document beside the subscribers, where the topic graph in
    ``docs/architecture.md`` is drawn from.
    """
    log = structlog.get_logger(name)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            await broker.connect()
            stack.push_async_callback(broker.stop)
            for extra in lifespans:
                await stack.enter_async_context(extra(app))
            await broker.start()
            log.info("service started", port=settings.port, kafka=settings.kafka.bootstrap_servers)
            yield
            log.info("service stopping")

    # /docs and /redoc with Swagger UI's and ReDoc's assets served by the service itself (a
    # package ships them), not from a CDN: the docs load on a machine without internet.
    app = FastAPIOffline(
        title=f"flywheel-{name}",
        description=description,
        version=version,
        lifespan=lifespan,
    )
    app.state.broker = broker
    app.state.settings = settings
    if publishes is not None:
        app.state.publishers = declare_publishers(broker, name, publishes)

    app.add_middleware(ObserveLatency, service=name)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"] if p != "body")[:200], "message": e["msg"][:300]}
            for e in exc.errors()[:50]
        ]
        fields = ", ".join(e["field"] or "<body>" for e in errors[:10])
        return JSONResponse(status_code=422, content={"detail": f"invalid {fields}"[:1000], "errors": errors})

    @app.exception_handler(HTTPException)
    async def problem(request: Request, exc: HTTPException) -> JSONResponse:
        # a route may raise a whole Problem (detail and errors) as the detail: answer it flat
        content = exc.detail if isinstance(exc.detail, dict) else {"detail": str(exc.detail)}
        return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)

    @app.get("/health", tags=["operations"], responses={200: {"model": Health}, 503: {"model": Health}})
    async def health() -> JSONResponse:
        """Whether the service and each of its connections (broker, store, registry) are up."""
        results = {}
        for component, check in checks.items():
            try:
                results[component] = "ok" if await check() else "down"
            except Exception as exc:
                results[component] = f"down: {type(exc).__name__}: {exc}"[:200]
        healthy = all(v == "ok" for v in results.values())
        body = {"service": name, "status": "ok" if healthy else "degraded", "checks": results}
        if status is not None:  # what the service itself reports, e.g. which models it serves
            body.update(status())
        return JSONResponse(status_code=200 if healthy else 503, content=body)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics: FastStream's per-handler figures and the domain's own."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    spec = AsyncAPI(broker, title=f"flywheel-{name}", version=version, description=description)

    @app.get("/asyncapi.json", tags=["operations"])
    async def asyncapi_json() -> JSONResponse:
        """The AsyncAPI 3.0 document of the topics this service consumes and publishes."""
        return JSONResponse(with_reads(spec.to_specification().to_jsonable(), name, reads or {}))

    @app.get("/asyncapi", tags=["operations"], include_in_schema=False)
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(spec.to_specification()))

    for router in routers:
        app.include_router(router)
    declare_input_problems(app)
    return app


def with_reads(document: dict[str, Any], service: str, reads: Mapping[Topic, str]) -> dict[str, Any]:
    """An AsyncAPI document plus a ``receive`` operation for each topic read outside a subscriber.

    Such an operation is marked ``x-flywheel-read: direct``: a plain aiokafka consumer reads it
    (a log folded on start, or a consumer FastStream cannot express), not a FastStream subscriber.
    """
    channels = document.setdefault("channels", {})
    operations = document.setdefault("operations", {})
    for topic, why in reads.items():
        channel = f"{topic.name}:{service}:direct"
        channels[channel] = {"address": topic.name, "title": channel, "description": why, "messages": {}}
        operations[f"{channel}:read"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "description": why,
            "x-flywheel-read": "direct",
        }
    return document


def serve(app: FastAPI, settings: ServiceSettings) -> None:
    """Run a service's app with uvicorn: the entry point of ``python -m flywheel.<service>``."""
    import uvicorn

    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.freeze()  # what importing built (modules, classes, the app) is never scanned again
    # asyncio's own loop, not uvloop: uvloop raises RuntimeError on a write to a socket the broker closed,
    # which aiokafka does not catch (aio-libs/aiokafka#1038), so a consumer's group coordination died for
    # good when a broker restarted, and the service read nothing more while its /health said ok.
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, loop="asyncio")
