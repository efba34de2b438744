"""Secrets for the annotation store: API tokens, passwords, CSRF values.

* API tokens and session ids are 256-bit random values (``secrets.token_urlsafe``); only
  their SHA-256 is stored, so a copy of the database does not let anyone log in. A plain
  hash is enough for them (unlike passwords) because they carry full entropy.
* Passwords, if used at all, are hashed with argon2id (``argon2-cffi``, memory-hard).
* Comparisons of secrets are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["new_token", "hash_token", "hash_password", "verify_password", "tokens_equal"]

#: Prefix of API tokens, so that a leaked one is recognisable in logs and scanners.
TOKEN_PREFIX = "fsac_"


def new_token() -> str:
    """A fresh random API token (43 url-safe characters after the prefix)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token or session id: what the database stores."""
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, got {type(token).__name__}")
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def tokens_equal(a: str, b: str) -> bool:
    """Constant-time string comparison (CSRF tokens, hashes)."""
    return hmac.compare_digest(str(a).encode("utf-8"), str(b).encode("utf-8"))


def _hasher():
    from argon2 import PasswordHasher

    # argon2-cffi's defaults (RFC 9106 low-memory profile: argon2id, 64 MiB, t=3, p=4).
    return PasswordHasher()


def hash_password(password: str) -> str:
    """argon2id hash of a password (a self-describing ``$argon2id$...`` string)."""
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty str")
    return _hasher().hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches ``stored_hash``; False for any mismatch or no hash."""
    from argon2.exceptions import InvalidHashError, VerificationError

    if not stored_hash or not isinstance(password, str):
        return False
    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False
