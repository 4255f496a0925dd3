"""Who may use ``mescc serve`` and how much they may ask of it: the session token, the names
the server answers to, and the caps on what a client may send or request.

Plain Python (no trame, no aiohttp), so that the command line can check a ``--token`` before
loading the web stack and tests can check the rules directly; :mod:`.guard` applies them to
the running server. ``docs/security.md`` explains them to users.
"""

from __future__ import annotations

import ipaddress
import math
import re
import secrets
import socket
from urllib.parse import urlsplit

from ..errors import InputError, MESCCError

TOKEN_MIN_CHARS = 24
TOKEN_MAX_CHARS = 256
# trame's client lower-cases the websocket address it is given: a token must survive that.
TOKEN_PATTERN = re.compile(r"[a-z0-9_-]+")

MAX_FRAME_BYTES = 4 * 1024 * 1024  # one websocket frame (aiohttp refuses a longer one)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # wslink messages being reassembled, per connection
MAX_VIEW_PX = 4096  # a rendered view, per side, in device pixels
MIN_VIEW_PX = 10  # trame-rca's own floor
MAX_PIXEL_RATIO = 4.0

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
INTERNAL_ERROR = "internal error (the details are in the server's log)"


# -- the token ------------------------------------------------------------------------------------
def new_token() -> str:
    """A random session token: 48 hexadecimal digits (192 bits) from :mod:`secrets`."""
    while True:
        token = secrets.token_hex(24)
        if not _reads_as_number(token):
            return token


def check_token(token: str) -> str:
    """The token, refused (InputError) if short, of other characters or easy to guess."""
    hint = "leave out --token for a random one, or use e.g. the output of `openssl rand -hex 24`"
    if not TOKEN_MIN_CHARS <= len(token) <= TOKEN_MAX_CHARS:
        raise InputError(
            f"the token must have {TOKEN_MIN_CHARS}-{TOKEN_MAX_CHARS} characters, not {len(token)}",
            hint=hint,
        )
    if not TOKEN_PATTERN.fullmatch(token):
        raise InputError(
            "the token may hold only lower-case letters, digits, '-' and '_'", hint=hint
        )
    if len(set(token)) < 8 or _reads_as_number(token):
        raise InputError("the token is too easy to guess", hint=hint)
    return token


def _reads_as_number(text: str) -> bool:
    """True if trame's client would read the address parameter as a number (e.g. '12e3')."""
    for parse in (float, lambda t: int(t, 0)):
        try:
            parse(text)
        except ValueError:
            continue
        return True
    return False


# -- names and addresses ----------------------------------------------------------------------------
def _address(host: str):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    address = _address(host)
    return host.strip("[]").lower() == "localhost" or bool(address and address.is_loopback)


def is_wildcard(host: str) -> bool:
    """True for 0.0.0.0 and ::, which listen on every address of the machine."""
    address = _address(host)
    return bool(address and address.is_unspecified)


def page_urls(host: str, port: int, token: str) -> list[str]:
    """The addresses to open, token included: this machine's, and the network's if served."""

    def url(name):
        name = f"[{name}]" if ":" in name else name
        return f"http://{name}:{port}/?token={token}"

    if is_wildcard(host):
        return [url("127.0.0.1"), url(socket.gethostname())]
    return [url(host.strip("[]"))]


class HostRules:
    """The names a server listening on ``host`` answers to, in ``Host`` and ``Origin``.

    Loopback: localhost, 127.0.0.1 and ::1. A given address: that address and the machine's
    names. 0.0.0.0 or ::: all of these and any address literal (a DNS rebinding attack needs a
    name it controls, and names are checked). The port must be the one the request came in on.
    """

    def __init__(self, host: str):
        self.host = host.strip("[]").lower()
        names = set()
        if is_loopback(self.host) or is_wildcard(self.host):
            names.update(LOOPBACK_NAMES)
        if not is_loopback(self.host):
            machine = (socket.gethostname(), socket.getfqdn())  # getfqdn may say "localhost"
            names.update(n.lower() for n in machine if n and not is_loopback(n))
        if not is_wildcard(self.host):
            names.add(self.host)
        self.names = frozenset(names)

    def name_allowed(self, name: str) -> bool:
        name = name.strip("[]").rstrip(".").lower()
        if name in self.names:
            return True
        return is_wildcard(self.host) and _address(name) is not None

    def host_allowed(self, host_header: str | None, port: int | None) -> bool:
        """``Host: name[:port]`` names this server (no port means 80)."""
        match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]/@]+)(?::(\d{1,5}))?", host_header or "")
        if match is None:
            return False
        return self.name_allowed(match[1]) and int(match[2] or 80) == port

    def origin_allowed(self, origin: str, port: int | None) -> bool:
        """``Origin: scheme://name[:port]`` is this server's own page."""
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        return self.name_allowed(parts.hostname) and origin_port == port


# -- what a client may ask for ----------------------------------------------------------------------
def clamp_view_size(size) -> tuple[dict, bool]:
    """A view size a client requested (``{"w", "h", "p"}``: CSS pixels and pixel ratio), made
    safe: each side within [10, 4096] px, the ratio within [0.1, 4] and lowered so that neither
    rendered side exceeds :data:`MAX_VIEW_PX`. Returns the size and whether it was changed."""
    size = size if isinstance(size, dict) else {}
    width = _finite(size.get("w"), 300.0)
    height = _finite(size.get("h"), 300.0)
    ratio = _finite(size.get("p"), 1.0)
    safe_width = int(min(max(width, MIN_VIEW_PX), MAX_VIEW_PX))
    safe_height = int(min(max(height, MIN_VIEW_PX), MAX_VIEW_PX))
    safe_ratio = min(max(ratio, 0.1), MAX_PIXEL_RATIO, MAX_VIEW_PX / max(safe_width, safe_height))
    safe = {"w": safe_width, "h": safe_height, "p": safe_ratio}
    changed = (safe_width, safe_height, safe_ratio) != (int(width), int(height), ratio)
    return safe, changed


def _finite(value, default: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    return float(value) if math.isfinite(value) else default


def client_error_text(exc: BaseException | None) -> str:
    """What a page client is told when a call fails: the sentence of a :class:`MESCCError`,
    "internal error" for anything else (the traceback stays in the server's log)."""
    if isinstance(exc, MESCCError):
        return str(exc)
    return INTERNAL_ERROR
