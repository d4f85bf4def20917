"""GET /metrics for Prometheus, and the API latency histogram it includes.

/metrics needs the bearer token like every other route: it names every VM and host, which
is not for anyone who can reach the port. Prometheus sends the token with
`authorization: {credentials_file: ...}` (see deploy/prometheus/prometheus.yml).
Each app has its own registry, so several control planes in one process (the tests) do
not share series.
"""

import time

from fastapi import Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest

from vpool.api.deps import caller

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


def install(app) -> None:
    registry = CollectorRegistry()  # the API's own series; the pool's come from the collection loop
    latency = Histogram("vpool_api_request_duration_seconds", "API request latency by route template",
                        ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry)

    app.add_middleware(_Timed, latency=latency)

    @app.get("/metrics", tags=["metrics"], dependencies=[Depends(caller)], include_in_schema=True)
    def metrics():
        """Prometheus text exposition: host, VM, pool and control-plane series."""
        pool = app.state.cp.telemetry.exposition()
        return Response(pool + generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Timed:
    """Times each HTTP request into the latency histogram. A plain ASGI middleware: Starlette's
    BaseHTTPMiddleware (what @app.middleware gives) runs every request through an extra task
    and a wrapped response stream, which cost a tenth of the API process's CPU on creates."""

    def __init__(self, app, latency: Histogram):
        self.app, self.latency = app, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sent(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            # The template (/vms/{ref}), never the raw path: one series per route, not per VM name.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], route, str(status[0])).observe(time.perf_counter() - start)
