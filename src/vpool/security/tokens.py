"""API bearer tokens. Only digests are stored; the admin token is also written to a 0600 file
so the CLI on the same machine finds it without being told."""

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from sqlalchemy import select

from vpool.model.errors import Unauthorized
from vpool.store.tables import ApiToken


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def ensure_admin_token(store, token_file: Path) -> str:
    """The admin token survives restarts: reuse the file's token if the store knows it."""
    if token_file.exists():
        token = token_file.read_text().strip()
        with store.session() as s:
            if s.scalar(select(ApiToken.id).where(ApiToken.digest == digest(token))):
                return token
    token = secrets.token_urlsafe(32)
    with store.session() as s:
        row = s.scalar(select(ApiToken).where(ApiToken.name == "admin")) or ApiToken(name="admin", role="admin")
        row.digest = digest(token)
        s.add(row)
        s.commit()
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(token + "\n")
    return token


def bearer_digest(header: str | None) -> str:
    """The digest of the request's bearer token; a request without one is refused here."""
    if not header or not header.lower().startswith("bearer "):
        raise Unauthorized("this API needs a bearer token: send 'Authorization: Bearer <token>' "
                           "(the admin token is in the control plane's data directory, admin.token)")
    return digest(header[7:].strip())


def known_name(cache: dict, d: str) -> str | None:
    """The name of a token already seen; `cache` maps digests to names (tokens are few)."""
    for known, name in cache.items():
        if hmac.compare_digest(known, d):
            return name
    return None


def look_up(store, d: str, cache: dict) -> str:
    """The store's answer for a token not seen before, remembered in `cache`."""
    with store.session() as s:
        name = s.scalar(select(ApiToken.name).where(ApiToken.digest == d))
    if name is None:
        raise Unauthorized("the bearer token is not valid")
    cache[d] = name
    return name
