"""Other services on this machine where psaq expects Prefect or MLflow (the tests and the failure probe)."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer


class NotAService(BaseHTTPRequestHandler):
    """A web page on every path."""

    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>hello</html>")

    def log_message(self, *args):
        pass


class HealthOnly(BaseHTTPRequestHandler):
    """A service that happens to answer /health with `true`, as Prefect does, and 404 elsewhere."""

    def do_GET(self):
        ok = self.path.rstrip("/").endswith("/health")
        self.send_response(200 if ok else 404)
        self.end_headers()
        self.wfile.write(b"true" if ok else b"not found")

    def log_message(self, *args):
        pass


def serve(handler) -> HTTPServer:
    """``handler`` on 127.0.0.1 at a free port, in a daemon thread; ``.shutdown()`` stops it."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
