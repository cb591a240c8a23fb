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


__all__ = ["MAX_BODY_BYTES", "TOKEN_ENV", "check_bind", "confine", "is_loopback", "new_token", "require_token"]
