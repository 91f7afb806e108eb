"""create_app(): the composition root. The only place that wires backends together.

Embedded mode runs the Dramatiq worker as threads inside this process, so the app
declares the pipeline actors here; that is the one import of `workers` from `app`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

import dramatiq
from dramatiq.asyncio import get_event_loop_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route, WebSocketRoute

from app.bus import InProcessBus
from app.config import Settings
from app.deps import Deps, build_bus, build_deps
from app.graphql.http import GraphQLApp
from app.graphql.ide import GRAPHIQL_ASSETS
from app.graphql.limits import Limits
from app.graphql.streams import SUBSCRIPTION_PROTOCOLS
from app.graphql.ws import WS_SETUPS, LegacyWSHandler, Pinger, TransportWSHandler
from app.heap import tune_collector
from app.metrics import OperationNames
from app.migrate import upgrade_async
from app.observability import BodyLimit, RequestContext, register_secrets
from app.queue import WORKER_TIMEOUT_MS, DramatiqQueue, build_broker
from app.routes import routes
from app.schema import build_schema
from app.tables import utcnow
from app.uploads.routes import UPLOAD_FORM_OVERHEAD
from app.web.assets import Assets
from app.web.studio import STUDIO_ASSETS, studio_routes

log = logging.getLogger(__name__)


class EmbeddedWorker:
    """Dramatiq worker threads inside the API process (the embedded default)."""

    def __init__(self, broker: dramatiq.Broker, deps: Deps) -> None:
        from workers.actors import declare_actors
        from workers.poller import Poller
        from workers.runtime import WorkerRuntime
        from workers.sweeper import Sweeper
        from workers.webhooks import WebhookCourier

        # The in-process bus is shared with the API: that is how events reach it. A Redis
        # bus is not: its connections belong to the API's loop (used from the worker's,
        # they fail with "attached to a different loop"), so the worker opens its own.
        bus = deps.bus if isinstance(deps.bus, InProcessBus) else None
        self.runtime = WorkerRuntime(deps.settings, bus=bus, queue=deps.queue)
        declare_actors(broker, self.runtime)
        self.worker = dramatiq.Worker(
            broker, worker_threads=deps.settings.worker_threads, worker_timeout=WORKER_TIMEOUT_MS
        )
        # Whatever was running or queued before this process started was lost with the
        # process that held it: the first sweep picks it all up again.
        self.sweeper = Sweeper(self.runtime, orphaned_before=utcnow())
        self.poller = Poller(self.runtime)  # the 3D polls of this process
        self.webhooks = WebhookCourier(self.runtime)  # this process's webhook deliveries

    def start(self) -> None:
        self.worker.start()
        loop_thread = get_event_loop_thread()
        assert loop_thread is not None, "the AsyncIO middleware starts it with the worker"
        self.sweeper.start(loop_thread.loop)
        self.poller.start(loop_thread.loop)
        self.webhooks.start(loop_thread.loop)

    def stop(self) -> None:
        self.webhooks.stop()
        self.poller.stop()
        self.sweeper.stop()
        loop_thread = get_event_loop_thread()
        if loop_thread is not None:  # the runtime's engine belongs to the worker's loop
            loop_thread.run_coroutine(self.runtime.aclose(drain_seconds=5))
        self.worker.stop(timeout=5000)


def _cors(settings: Settings) -> list[Middleware]:
    origins = settings.cors_origin_list
    if not origins:
        return []  # same-origin only: browsers refuse cross-origin calls
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-Id", "Last-Event-ID"],
            expose_headers=["X-Request-Id"],
            max_age=600,
        )
    ]


def create_app(settings: Settings | None = None, *, freeze_heap: bool = False) -> Starlette:
    settings = settings or Settings()
    register_secrets(settings.secret_values())
    if problems := settings.production_problems():
        raise RuntimeError("unsafe production settings: " + "; ".join(problems))

    pinger = Pinger(settings.ws_ping_interval_seconds)  # pings quiet websockets

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.auto_migrate:
            await upgrade_async(settings.resolved_database_url)
        broker = build_broker(settings)
        deps = build_deps(
            settings,
            bus=build_bus(settings),
            queue=DramatiqQueue(broker),
        )
        if settings.storage_backend == "s3" and settings.s3_create_bucket:
            from providers.s3 import S3Storage  # only on S3 (app/deps.py build_storage)

            assert isinstance(deps.storage, S3Storage)
            await deps.storage.ensure_bucket()
        # With the Redis broker, `lumi worker` processes run the stages instead.
        embedded = settings.broker == "embedded" and settings.embedded_workers
        worker = EmbeddedWorker(broker, deps) if embedded else None
        if worker is not None:
            worker.start()
        app.state.deps = deps
        app.state.broker = broker
        app.state.queue = deps.queue
        if freeze_heap:  # a process of its own (`lumi serve`): see app/heap.py
            tune_collector()
        try:
            yield
        finally:
            if worker is not None:
                await asyncio.to_thread(worker.stop)
            broker.close()
            await pinger.aclose()
            if deps.views is not None:  # while the bus can still announce the new counts
                await deps.views.aclose()
            await deps.bus.close()
            await deps.aclose()

    graphql = GraphQLApp(
        build_schema(
            Limits.from_settings(settings),
            introspection=settings.introspection_enabled,
            operation_names=OperationNames(settings.metrics_operation_name_list),
        ),
        graphql_ide="graphiql" if settings.graphiql_enabled else None,
        allowed_origins=settings.cors_origin_list,
        allow_queries_via_get=True,  # never mutations: see app/graphql/http.py
        multipart_uploads_enabled=True,  # uploadImage (app/uploads/resolvers.py)
        subscription_protocols=SUBSCRIPTION_PROTOCOLS,  # websockets, SSE, multipart
        connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
        keep_alive=settings.ws_ping_interval_seconds > 0,  # legacy graphql-ws: "ka"
        keep_alive_interval=settings.ws_ping_interval_seconds or 1,
    )
    graphql.graphql_ws_handler_class = LegacyWSHandler
    # Admission before any work: under a burst a few operations at a time finish fast,
    # rather than hundreds each holding a pooled connection while they share the CPU,
    # until the pool's wait times out for all of them (seen under 1,000 subscriptions).
    graphql.admission = asyncio.Semaphore(settings.max_concurrent_operations)
    graphql.max_batch = settings.graphql_max_batch
    graphql.stream_heartbeat_seconds = settings.http_stream_heartbeat_seconds
    graphql.graphql_transport_ws_handler_class = type(
        "ConfiguredTransportWSHandler",
        (TransportWSHandler,),
        {"pinger": pinger, "setups": asyncio.Semaphore(WS_SETUPS)},
    )
    return Starlette(
        middleware=[
            Middleware(RequestContext),
            Middleware(
                BodyLimit,
                max_bytes=settings.max_body_bytes,
                # an uploaded image, and the form's other parts (app/uploads)
                multipart_max_bytes=settings.upload_max_bytes + UPLOAD_FORM_OVERHEAD,
            ),
            *_cors(settings),
        ],
        routes=[
            *routes,
            # The files of the pages that are on, and nothing else (app/web/assets.py).
            Assets(
                (GRAPHIQL_ASSETS if settings.graphiql_enabled else ())
                + (STUDIO_ASSETS if settings.studio_enabled else ())
            ).route(),
            *studio_routes(settings),  # GET /, when on
            # Every method reaches the view, which answers the others 405 as JSON.
            Route("/graphql", graphql),
            WebSocketRoute("/graphql", graphql),
        ],
        lifespan=lifespan,
    )
