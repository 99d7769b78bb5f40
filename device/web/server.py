"""The page's server: uvicorn in one thread of the daemon, started and stopped with it.

uvicorn installs no signal handlers outside the main thread, so SIGTERM / SIGINT stay the
daemon's. The socket is bound here, before the thread starts, so a port in use is a clear log
line (the daemon goes on without its page, as with ``metrics_port``) rather than uvicorn
exiting a thread. Stopping ends every live connection (MJPEG, server-sent events) at once.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from device.web.app import DaemonView, WebApp, build_app
from device.web.auth import TokenGate
from device.web.hub import WebHub
from device.web.stream import CameraStream, state_caption

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 64  # open connections and requests in progress, viewers included


class WebServer:
    """``web:`` of the config. ``hub`` goes into the daemon's sinks before the cameras start;
    ``start`` (after the cameras' slots exist) binds and serves; ``stop`` within ``timeout``."""

    def __init__(self, daemon: DaemonView) -> None:
        self.daemon = daemon
        self.config = daemon.config.web
        self.hub = WebHub(
            daemon.config.device_id, [c.name for c in daemon.config.cameras], self.config.events
        )
        self.app: WebApp | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def start(self, slots: dict[str, Any]) -> None:
        """Serve on ``web.host:web.port``; ``slots``: each camera's latest-frame slot."""
        import uvicorn

        host, port = self.config.host, self.config.port
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.create_server((host, port), family=family, backlog=64)
        except OSError as exc:
            log.warning(
                "web: cannot listen on %s:%d (%s); running without the page", host, port, exc
            )
            return
        self.port = sock.getsockname()[1]
        streams = {
            name: CameraStream(name, slot, self._caption(name), self.config)
            for name, slot in slots.items()
        }
        self.app = WebApp(self.daemon, self.hub, streams)
        token = self.config.token.get_secret_value() if self.config.token else None
        asgi = TokenGate(build_app(self.app), token)
        # No uvicorn logging set-up (the daemon's applies), no access log (``?token=`` would
        # be in it), no lifespan, no websockets: a page, JSON and two kinds of stream.
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        config = uvicorn.Config(
            asgi,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            loop="asyncio",
            server_header=False,
            timeout_graceful_shutdown=0.2,
            limit_concurrency=MAX_CONNECTIONS,  # beyond: 503, not a Pi out of memory
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="web", daemon=True
        )
        self._thread.start()
        shown = f"[{host}]" if ":" in host else host
        access = "token required" if token else "no token: this machine only"
        log.info("web page on http://%s:%d/ (%s)", shown, self.port, access)

    def _caption(self, camera: str) -> Any:
        return lambda: state_caption(self.hub.state(camera))

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 0.5) -> None:
        """Close the live connections and the listener; wait up to ``timeout`` s."""
        if self._server is None:
            return
        assert self.app is not None and self._thread is not None
        self.app.close()
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for MJPEG viewers to hang up
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("web: server still stopping after %.1f s", timeout)
