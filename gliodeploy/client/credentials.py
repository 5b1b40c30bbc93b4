"""Credentials for ``gliodeploy-client``: a bearer token kept out of argv, and no secret sent in clear text.

A token given as ``--header "Authorization: Bearer ..."`` shows in the process list and the shell
history; ``GLIODEPLOY_TOKEN`` or ``--token-file`` keep it out of both. Whatever its origin, a credential
(the token, or an Authorization/Cookie/API-key header) is only sent without TLS to a loopback host
(with a warning) or when the user says so (``--allow-insecure-credentials``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from gliodeploy.client.transport import Endpoint
from gliodeploy.errors import InputError

TOKEN_ENV = "GLIODEPLOY_TOKEN"

#: Header names that carry credentials whatever their value.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: ... and names that look like one (X-API-Key, api_key, X-Auth-Token, X-Secret...).
_SECRET_NAME = re.compile(r"api[-_]?key|token|secret|password|passwd", re.IGNORECASE)
#: One token, printable, no whitespace: anything else would corrupt (or inject into) the header.
_TOKEN = re.compile(r"[\x21-\x7e]+")


def _checked_token(token: str, origin: str) -> str:
    if not _TOKEN.fullmatch(token):
        hint = " (give the token alone, without 'Bearer ')" if token.lower().startswith("bearer ") else ""
        raise InputError(f"{origin}: expected one token of printable characters without spaces{hint}")
    return token


def read_token_file(path: Path) -> str:
    """The token in ``path`` (surrounding whitespace and a final newline removed).

    Refused (:class:`InputError`), as ssh refuses a private key, when group or others may read or write
    the file: a warning would scroll past in a batch job and leave the secret exposed.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        raise InputError(f"--token-file {path}: no such file") from None
    except OSError as exc:
        raise InputError(f"--token-file {path}: cannot read it ({exc.strerror or exc})") from exc
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"--token-file {path}: not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise InputError(
            f"--token-file {path}: group or others may access it (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"make it private with: chmod 600 {path}"
        )
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--token-file {path}: cannot read it ({exc})") from exc
    if not token:
        raise InputError(f"--token-file {path}: the file is empty")
    return _checked_token(token, f"--token-file {path}")


def resolve_token(token_file: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: ``--token-file`` first (explicit beats ambient), else ``GLIODEPLOY_TOKEN``."""
    if token_file is not None:
        return read_token_file(token_file)
    env = os.environ if environ is None else environ
    token = env.get(TOKEN_ENV, "").strip()
    return _checked_token(token, TOKEN_ENV) if token else None


def with_token(headers: Mapping[str, str], token: str | None) -> dict[str, str]:
    """``headers`` plus ``authorization: Bearer TOKEN``; a second Authorization header is ambiguous.

    The name is lower case: gRPC metadata keys must be, and HTTP header names are case-insensitive.
    """
    out = dict(headers)
    if token is None:
        return out
    if any(name.lower() == "authorization" for name in out):
        raise InputError(
            f"an Authorization --header and a token (--token-file or {TOKEN_ENV}) were both given; keep one"
        )
    out["authorization"] = f"Bearer {token}"
    return out


def credential_headers(headers: Mapping[str, str]) -> list[str]:
    """The names of the headers in ``headers`` that carry credentials."""
    return [n for n in headers if n.lower() in CREDENTIAL_HEADERS or _SECRET_NAME.search(n)]


def is_loopback(host_port: str) -> bool:
    """Whether ``host:port`` (``[v6]:port`` too) names this machine: ``localhost`` or a loopback address."""
    host = host_port.rsplit(":", 1)[0] if host_port.count(":") == 1 or "]" in host_port else host_port
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761: always the loopback
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_credential_transport(endpoint: Endpoint, allow_insecure: bool = False) -> str | None:
    """Refuse to send credentials in clear text; return a warning to print, or None.

    With TLS, or without credentials, nothing to say. Without TLS: to a loopback host a warning only (the
    bytes never leave the machine); elsewhere an :class:`InputError` unless ``allow_insecure``, then a
    warning.
    """
    names = credential_headers(endpoint.headers or {})
    if endpoint.ssl or not names:
        return None
    what = f"credentials ({', '.join(names)}) without TLS over plain {endpoint.protocol} to {endpoint.url}"
    if is_loopback(endpoint.url):
        return f"sending {what} (a loopback address: they do not leave this machine)"
    if not allow_insecure:
        raise InputError(
            f"refusing to send {what}: anyone on the network could read them; use TLS (--ssl, an https:// "
            "URL or --ca-file) or, on a network you trust, --allow-insecure-credentials"
        )
    return f"sending {what}, as --allow-insecure-credentials asks: anyone on the network can read them"
