"""Security of the web service: bearer tokens, loopback binding, confined paths, body size.

* Mutating endpoints (launching studies, starting exports, cancelling jobs) need
  ``Authorization: Bearer <NAS_API_TOKEN>``; tokens are compared in constant time.
* :func:`check_bind` refuses to serve a non-loopback host without a token.
* :func:`confine` resolves a user-given relative path under a root directory and refuses
  anything that escapes it (``..``, absolute paths, symlinks pointing out).
* :func:`export_target_problem` says why a directory must not receive an export (the
  exports root itself, a directory holding other exports, a directory that is not an
  export); :func:`outside_roots` checks the paths of a submitted study spec.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import HTTPException, Request, status

from nas.errors import NasError

TOKEN_ENV = "NAS_API_TOKEN"
#: The shortest token accepted when serving a non-loopback address.
MIN_TOKEN_CHARS = 16
#: The file every export directory holds (``nas.export.format.META_FILE``; reports cannot
#: import nas.export, which loads torch).
EXPORT_MARKER = "nas_export.json"
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
    """Refuse to serve ``host`` to the network without an API token of at least
    :data:`MIN_TOKEN_CHARS` characters."""
    if is_loopback(host):
        return
    how = (f"set {TOKEN_ENV} to a long random secret (e.g. `export {TOKEN_ENV}=$(python -c 'import secrets; "
           "print(secrets.token_urlsafe(32))')`) or bind 127.0.0.1")
    if not token:
        raise NasError(f"refusing to serve on {host} without an API token: {how}")
    if len(token) < MIN_TOKEN_CHARS:
        raise NasError(
            f"refusing to serve on {host} with a {len(token)}-character {TOKEN_ENV}: a token that guards the "
            f"network needs at least {MIN_TOKEN_CHARS} characters; {how}"
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


def export_target_problem(target: Path, *, overwrite: bool, root: Path | None = None) -> str | None:
    """Why ``target`` must not receive an export, or None when it may.

    Refused: the exports ``root`` itself (or a directory above it); a directory inside an
    existing export; a directory that holds other exports; and, without ``overwrite``, a
    non-empty directory. With ``overwrite`` only an existing *export* is replaced (never
    an arbitrary directory). ``nas export`` and ``POST /api/exports`` both ask this.
    """
    target = target.expanduser().resolve()
    if root is not None:
        base = root.expanduser().resolve()
        if target == base or target in base.parents:
            return f"{target} is the exports directory itself; name a new directory inside it, e.g. STUDY-trialN"
        above = [p for p in target.parents if p == base or base in p.parents]
    else:
        above = list(target.parents)
    inside = next((p for p in above if (p / EXPORT_MARKER).is_file()), None)
    if inside is not None:
        return f"{target} is inside the export {inside}; choose a directory outside every export"
    if target.exists() and not target.is_dir():
        return f"{target} is a file; give a directory"
    if not target.is_dir() or not any(target.iterdir()):
        return None
    nested = _nested_exports(target)
    if nested:
        shown = ", ".join(str(p.relative_to(target)) for p in nested[:3]) + (" ..." if len(nested) > 3 else "")
        return f"{target} holds other exports ({shown}); choose a new directory name, it will not be replaced"
    if not overwrite:
        return f"{target} already exists and is not empty; choose a new directory or pass overwrite"
    if not (target / EXPORT_MARKER).is_file():
        return f"{target} is not an export (no {EXPORT_MARKER}); only an earlier export is replaced, so choose a new directory"
    return None


def _nested_exports(directory: Path, max_depth: int = 4, max_entries: int = 5_000) -> list[Path]:
    """Export directories strictly below ``directory`` (a bounded walk: a huge tree such as
    a home directory is not searched to the bottom; it is refused as "not an export" anyway)."""
    found: list[Path] = []
    seen = 0
    for top, dirs, files in os.walk(directory):
        depth = len(Path(top).relative_to(directory).parts)
        if depth and EXPORT_MARKER in files:
            found.append(Path(top))
            dirs[:] = []  # an export's own subdirectories are its business
        seen += len(dirs) + len(files)
        if depth >= max_depth:
            dirs[:] = []
        if seen > max_entries:
            break
    return sorted(found)


def outside_roots(path: str | Path, roots: Sequence[Path]) -> bool:
    """True when ``path`` (symlinks resolved) is in none of ``roots``."""
    target = Path(path).expanduser().resolve()
    for root in roots:
        base = root.expanduser().resolve()
        if target == base or base in target.parents:
            return False
    return True


__all__ = [
    "EXPORT_MARKER", "LimitsMiddleware", "MAX_BODY_BYTES", "MIN_TOKEN_CHARS", "TOKEN_ENV", "check_bind", "confine",
    "export_target_problem", "is_loopback", "new_token", "outside_roots", "require_token",
]
