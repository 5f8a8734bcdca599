"""The comparison server: prometheus_client's make_asgi_app over the same families.

It runs the same sampler on the same simulated node, but renders the exposition inside the
request, the way an exporter built on `make_asgi_app` does. Started by metrics_throughput.py.
"""

from __future__ import annotations

import sys

import uvicorn
from prometheus_client import CollectorRegistry, make_asgi_app

from exporter.backends import open_backends
from exporter.config import load_settings
from exporter.daemon import Daemon
from exporter.exposition import build_metrics
from exporter.publisher import gpu_rows
from exporter.selfmetrics import exporter_rows


class RenderPerScrape:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def collect(self):
        view = self.daemon.sampler.view
        rows = [r for g in (view.gpus if view else ()) for r in gpu_rows(g)]
        rows += exporter_rows(view, self.daemon.backend_statuses())
        return build_metrics(rows)[0]


def main() -> None:
    port, gpus = int(sys.argv[1]), sys.argv[2]
    settings = load_settings(overrides={"collection": {"backend": "sim"}, "sim": {"gpus": gpus}})
    daemon = Daemon(settings, open_backends(settings))
    daemon.start()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RenderPerScrape(daemon))
    app = make_asgi_app(registry)

    async def router(scope, receive, send):  # /readyz for the bench's start-up poll
        if scope["type"] == "http" and scope["path"] == "/readyz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ready"})
            return
        await app(scope, receive, send)

    uvicorn.run(router, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
