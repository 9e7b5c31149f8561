"""A scripted HTTP server on 127.0.0.1 that records every request: the other side of the wire for behaviours our
stand-in EHR does not have (files on another host, manifests without counts, redirects, links elsewhere)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes | dict | list = b""
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Seen], Reply]


class ScriptedServer:
    def __init__(self, routes: dict[tuple[str, str], Route] | None = None) -> None:
        self.routes: dict[tuple[str, str], Route] = routes or {}
        self.seen: list[Seen] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(
                    self.command,
                    parts.path,
                    parse_qs(parts.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length) if length else b"",
                )
                server.seen.append(seen)
                route = server.routes.get((self.command, parts.path))
                reply = route(seen) if route else Reply(404, {"resourceType": "OperationOutcome", "issue": []})
                body = reply.body
                if isinstance(body, dict | list):
                    body = json.dumps(body).encode()
                self.send_response(reply.status)
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = _serve

            def log_message(self, *args) -> None:  # quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def route(self, method: str, path: str, reply: Route | Reply) -> None:
        self.routes[(method, path)] = reply if callable(reply) else (lambda _seen, r=reply: r)

    def authorized(self) -> list[Seen]:
        """Requests that carried an Authorization header."""
        return [s for s in self.seen if "authorization" in s.headers]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
