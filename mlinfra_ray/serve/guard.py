"""The ingress' outermost layer (plain ASGI, no per-request task or thread): auth, body size, metrics.

Order matters: every request is counted and timed, including the ones refused here (401, 413) and
the ones FastAPI refuses (404, 422). The body is read here, up to `max_body_bytes`, before any
parsing: a larger body is refused with 413 whether or not it declares a Content-Length, and memory
per request stays bounded. The API key is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from mlinfra_ray.serve.metrics import ServeMetrics
from mlinfra_ray.settings import AuthSettings

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class AuthConfigError(RuntimeError):
    """Auth is enabled but no key could be read: the ingress refuses to start (fail closed)."""


def load_api_key(auth: AuthSettings) -> str | None:
    """The key from `api_key_file` or the `api_key_env` variable; None when auth is off."""
    if not auth.enabled:
        return None
    if auth.api_key_file:
        key = Path(auth.api_key_file).expanduser().read_text().strip()
    else:
        key = os.environ.get(auth.api_key_env, "").strip()
    if len(key) < 16:
        where = auth.api_key_file or f"${auth.api_key_env}"
        raise AuthConfigError(f"serve.auth.enabled but no API key of >= 16 characters in {where}")
    return key


class Guard:
    def __init__(self, app: Callable, metrics: ServeMetrics, max_body_bytes: int,
                 api_key: str | None, public_paths: Iterable[str], endpoints: Iterable[str]) -> None:
        self.app, self.metrics, self.max_body = app, metrics, max_body_bytes
        self.key = api_key.encode() if api_key else None
        self.public, self.endpoints = frozenset(public_paths), frozenset(endpoints)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        start, status = time.perf_counter(), [500]

        async def send_counted(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if self.key is not None and path not in self.public and not self._authorized(scope):
                return await _reply(send_counted, 401, "missing or invalid API key",
                                    [(b"www-authenticate", b"Bearer")])
            body = await self._read_body(scope, receive)
            if body is None:
                return await _reply(send_counted, 413, f"request body over {self.max_body} bytes")
            await self.app(scope, _replay(body, receive), send_counted)
        finally:
            endpoint = path if path in self.endpoints else "other"  # bounded label values
            self.metrics.observe_request(endpoint, status[0], time.perf_counter() - start)

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        given = headers.get(b"x-api-key") or b""
        auth = headers.get(b"authorization", b"")
        if not given and auth[:7].lower() == b"bearer ":
            given = auth[7:].strip()
        return hmac.compare_digest(given, self.key or b"")

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed the limit."""
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away; the app sees an empty body and the disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def _route_path(scope: Scope) -> str:
    """The path below the app's route prefix (Serve passes the prefix as root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root):] or "/"
    return path


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: wait for the disconnect, as servers do

    return replay


async def _reply(send: Send, status: int, detail: str, headers: list | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
