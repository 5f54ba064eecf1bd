"""Server URLs that may need a secret (a proxy's `user:password@`, an `?api_key=` query value) without storing it.

An experiment names a secret as `${NAME}` (`https://me:${PROXY_PASSWORD}@host/v1`); it is read from the environment
only when a request is made, so the run directory, its manifests and cache keys hold the reference, never the value.
A literal secret is refused when the experiment is read. Credentials in the URL are sent as HTTP Basic auth.
"""

from __future__ import annotations

import base64
import os
import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from emwb.errors import EmwbError

SECRET_QUERY = re.compile(r"(api[-_]?key|key|token|access[-_]?token|secret|password|passwd|pwd|sig|signature|auth)",
                          re.IGNORECASE)
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _literal(value: str) -> bool:
    return bool(value) and not REFERENCE.fullmatch(value)


def literal_secrets(url: str) -> list[str]:
    """What in `url` is a secret written out instead of named as ${NAME}: 'a password', "the query value of 'x'"."""
    parts = urlsplit(url)
    found = ["a password (user:password@)"] if parts.password is not None and _literal(parts.password) else []
    found += [f"the query value of {k!r}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
              if SECRET_QUERY.fullmatch(k) and _literal(v)]
    return found


def display(url: str) -> str:
    """`url` safe to print: a password and secret query values replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = f"{parts.username or ''}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
    query = "&".join(f"{k}={'***' if SECRET_QUERY.fullmatch(k) else quote(v, safe='')}"
                     for k, v in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def expand(url: str) -> str:
    """`url` with every ${NAME} replaced by the environment's NAME (one line when it is not set)."""
    def value(m: re.Match) -> str:
        if m.group(1) not in os.environ:
            raise EmwbError(f"{display(url)} names ${{{m.group(1)}}}: set {m.group(1)} in the environment")
        return os.environ[m.group(1)]

    return REFERENCE.sub(value, url)


def connect(url: str) -> tuple[str, str | None]:
    """(the URL to request, without credentials; the Basic Authorization header its credentials make, else None)."""
    parts = urlsplit(expand(url))
    if parts.username is None and parts.password is None:
        return urlunsplit(parts), None
    name = parts.hostname or ""
    host = (f"[{name}]" if ":" in name else name) + (f":{parts.port}" if parts.port else "")
    pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
    clean = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return clean, "Basic " + base64.b64encode(pair).decode()
