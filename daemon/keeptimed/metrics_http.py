"""The HTTP endpoint Prometheus scrapes: GET /metrics, nothing else."""
import http.server
import logging
import socket
import threading
from typing import Callable

from .config import split_host_port
from .metrics import CONTENT_TYPE

log = logging.getLogger("keeptimed.metrics")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class MetricsServer:
    """Serves render() as /metrics on address ("HOST:PORT") in a background thread."""

    def __init__(self, address: str, render: Callable[[], str]):
        host, port = split_host_port(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Handler(http.server.BaseHTTPRequestHandler):
            server_version = "keeptimed"

            def do_GET(self):  # noqa: N802 (http.server's naming)
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics is served here")
                    return
                body = render().encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("metrics %s %s", self.address_string(), fmt % args)

        server_class = type("Server", (_Server,), {"address_family": family})
        self._server = server_class((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="keeptimed-metrics", daemon=True)

    @property
    def address(self) -> str:
        """The address actually bound, as HOST:PORT (the real port when 0 was asked)."""
        host, port = self._server.server_address[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
