"""Security of the web service: bearer tokens, loopback binding, confined paths, body size.

* Mutating endpoints (launching studies, starting exports, cancelling jobs) need
  ``Authorization: Bearer <NAS_API_TOKEN>``; tokens are compared in constant time.
* :func:`check_bind` refuses to serve a non-loopback host without a token.
* :func:`confine` resolves a user-given relative path under a root directory and refuses
  anything that escapes it (``..``, absolute paths, symlinks pointing out).
"""

from __future__ import annotations

import ipaddress
import secrets
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import HTTPException, Request, status

from nas.errors import NasError

TOKEN_ENV = "NAS_API_TOKEN"
MAX_BODY_BYTES = 1 << 20  # 1 MiB: specs and pick/export requests are small


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve ``host`` to the network without an API token."""
    if not is_loopback(host) and not token:
        raise NasError(
            f"refusing to serve on {host} without an API token: set {TOKEN_ENV} to a long random "
            f"secret (e.g. `export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')`) "
            "or bind 127.0.0.1"
        )


def new_token() -> str:
    return secrets.token_urlsafe(24)


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless the request carries the app's bearer token."""
    expected: str = request.app.state.settings.token
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given or not secrets.compare_digest(given.strip().encode(), expected.encode()):
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail=f"this endpoint changes state: send 'Authorization: Bearer <token>' with the server's {TOKEN_ENV}",
            headers={"WWW-Authenticate": "Bearer"},
        )


_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class LimitsMiddleware:
    """Pure ASGI middleware: refuses bodies over ``max_body`` bytes (413, by Content-Length
    and while streaming) and adds security headers to every response."""

    def __init__(self, app: Any, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _too_large(send, self.max_body)
            return
        seen = 0

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise HTTPException(status_code=413, detail=f"request body larger than {self.max_body} bytes")
            return message

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, limited_receive, send_with_headers)


async def _too_large(send: Any, limit: int) -> None:
    body = ('{"detail":"request body larger than %d bytes"}' % limit).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *_SECURITY_HEADERS]})
    await send({"type": "http.response.body", "body": body})


def confine(root: Path, relative: str) -> Path:
    """``root / relative`` resolved, or HTTP 400 if it is absolute or leaves ``root``."""
    text = relative.strip()
    if not text or "\x00" in text:
        raise HTTPException(status_code=400, detail="path must be a non-empty relative path")
    pure = PurePosixPath(text.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (len(text) > 1 and text[1] == ":"):
        raise HTTPException(
            status_code=400,
            detail=f"path {relative!r} must be relative to {root} and stay inside it (no '..', no absolute paths)",
        )
    base = root.resolve()
    target = (base / Path(*pure.parts)).resolve()
    if target != base and base not in target.parents:
        raise HTTPException(status_code=400, detail=f"path {relative!r} resolves outside {base}")
    return target


__all__ = ["LimitsMiddleware", "MAX_BODY_BYTES", "TOKEN_ENV", "check_bind", "confine", "is_loopback", "new_token", "require_token"]
