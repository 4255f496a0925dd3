"""The checks of :mod:`.access`, hooked into the running trame server.

trame serves the page with wslink's aiohttp backend. :meth:`ServerGuard.install` runs from
trame's ``on_server_bind`` hook, after wslink has built its aiohttp application and before the
server listens, and adds:

- a middleware that refuses a foreign ``Host`` (DNS rebinding) or ``Origin`` (another web
  site's script) on every request, and a missing or wrong ``?token=`` on the page and on the
  websocket upgrade;
- the page itself: trame's ``index.html`` with a small script that hands the token from the
  page's address to trame's client (for the websocket address and as the wslink secret, which
  is set to the token too);
- security headers on every response (Content-Security-Policy, X-Frame-Options, ...);
- on wslink's websocket handler: a cap on what a client may announce, a cap on the view size
  it may request, no client changes to trame's own state (the page's templates), and errors
  that reach the client as one sentence.

If wslink no longer has what these hooks need, the server refuses to start (fails closed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import struct
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from wslink.chunking import UnChunker
from wslink.protocol import EXCEPTION_ERROR, WslinkHandler

from .access import MAX_MESSAGE_BYTES, HostRules, check_token, clamp_view_size, client_error_text

logger = logging.getLogger(__name__)

PAGE_PATHS = ("/", "/index.html")
CONNECT_SCRIPT = "/mescc_connect.js"
VIEW_SIZE_CALL = "trame.rca.size"  # trame-rca: a view's size as the browser lays it out
STATE_CALL = "trame.state.update"  # trame: state changes a client sends (and trame relays)
SERVER_KEYS = "trame__"  # trame's own state: the page's templates, scripts, title

# Runs before trame's client (a module script, so deferred) and hands it the token from the
# page's address: trame's client reads its settings from the address, so the token goes into
# the websocket address (checked on the upgrade) and becomes the wslink secret (checked on the
# first message). The client then removes secret and sessionURL from the address bar; the
# token stays, so a reload reconnects.
CONNECT_JS = """\
(function () {
  const page = new URL(window.location.href);
  const token = page.searchParams.get("token");
  if (!token) {
    return;
  }
  const socket = new URL("ws", page);
  socket.protocol = page.protocol === "https:" ? "wss:" : "ws:";
  socket.search = "?token=" + encodeURIComponent(token);
  socket.hash = "";
  page.searchParams.set("secret", token);
  page.searchParams.set("sessionURL", socket.toString());
  window.history.replaceState(window.history.state, "", page.toString());
})();
"""


class MessageTooLarge(ValueError):
    """A client announced more than the connection may have pending."""


class CappedUnChunker(UnChunker):
    """wslink's message reassembler, with a ceiling on what a client can make it allocate.

    wslink allocates a message's whole announced size on its first chunk (a 12-byte header:
    message id, offset, total size) and lets an authenticated client announce up to 4 GB;
    here the announced sizes of a connection's pending messages together stay within
    ``limit`` (and within wslink's 512 bytes before the client has authenticated).
    """

    HEADER = struct.Struct("<III")  # wslink.chunking's header: id, offset, total size

    def __init__(self, limit: int = MAX_MESSAGE_BYTES):
        super().__init__()
        self.limit = limit
        self.max_message_size = min(self.max_message_size, limit)

    def set_max_message_size(self, size):
        super().set_max_message_size(min(size, self.limit))

    def process_chunk(self, chunk: bytes) -> bytes | None:
        if len(chunk) < self.HEADER.size:
            raise MessageTooLarge(f"a chunk of {len(chunk)} bytes, shorter than its header")
        message_id, _offset, total = self.HEADER.unpack_from(chunk)
        if message_id not in self.pending_messages:
            pending = sum(len(m["content"]) for m in self.pending_messages.values())
            if total + pending > self.max_message_size:
                raise MessageTooLarge(
                    f"a message of {total} bytes announced with {pending} bytes pending "
                    f"(limit {self.max_message_size})"
                )
        return super().process_chunk(chunk)


class ServerGuard:
    """The checks of one ``mescc serve``; :meth:`install` is trame's ``on_server_bind``."""

    def __init__(self, *, token: str, host: str):
        self.token = check_token(token)
        self.rules = HostRules(host)
        self.page = ""  # trame's index.html with the connect script, read by install()
        self.script_hashes: list[str] = []
        self.ws_paths: set[str] = set()

    # -- aiohttp ------------------------------------------------------------------------------------
    def token_given(self, request: web.Request) -> bool:
        given = request.query.get("token", "")
        return hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = sockname[1] if sockname else None
        host = request.headers.get("Host")
        if not self.rules.host_allowed(host, port):
            logger.warning("refused %s %s: Host %r", request.method, request.path, host)
            raise web.HTTPForbidden(text="mescc serve: this address is not served here\n")
        origin = request.headers.get("Origin")
        if origin is not None and not self.rules.origin_allowed(origin, port):
            logger.warning("refused %s %s: Origin %r", request.method, request.path, origin)
            raise web.HTTPForbidden(text="mescc serve: requests from other sites are refused\n")
        if (request.path in self.ws_paths or request.path in PAGE_PATHS) and not (
            self.token_given(request)
        ):
            logger.warning("refused %s %s: no valid token", request.method, request.path)
            raise web.HTTPForbidden(
                text="mescc serve: open the address the server printed when it started "
                "(it ends with ?token=...)\n"
            )
        return await handler(request)

    async def add_headers(self, request: web.Request, response: web.StreamResponse):
        headers = response.headers
        headers["Content-Security-Policy"] = self.content_security_policy(request.host)
        headers["X-Frame-Options"] = "DENY"
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "no-referrer"  # the page's address holds the token
        headers["Cross-Origin-Resource-Policy"] = "same-origin"
        headers["Cross-Origin-Opener-Policy"] = "same-origin"
        if request.path in PAGE_PATHS:
            headers["Cache-Control"] = "no-store"

    def content_security_policy(self, host: str) -> str:
        # trame's client compiles its templates in the browser (Vue's runtime compiler needs
        # 'unsafe-eval') and Vuetify sets inline styles; nothing comes from another origin.
        scripts = "".join(f" 'sha256-{h}'" for h in self.script_hashes)
        return "; ".join(
            [
                "default-src 'self'",
                f"script-src 'self' 'unsafe-eval'{scripts}",
                "style-src 'self' 'unsafe-inline'",
                "img-src 'self' data: blob:",
                "font-src 'self' data:",
                "media-src 'self' blob:",
                "worker-src 'self' blob:",
                f"connect-src 'self' ws://{host} wss://{host}",
                "object-src 'none'",
                "base-uri 'self'",
                "form-action 'self'",
                "frame-ancestors 'none'",
            ]
        )

    async def serve_page(self, _request):
        return web.Response(text=self.page, content_type="text/html")

    async def serve_connect_script(self, _request):
        return web.Response(text=CONNECT_JS, content_type="text/javascript")

    @staticmethod
    def page_html(www: Path) -> tuple[str, list[str]]:
        """trame's ``index.html`` with the connect script before trame's client, and the
        hashes of its inline scripts (allowed by the Content-Security-Policy)."""
        html = (www / "index.html").read_text(encoding="utf-8")
        tag = f'<script src=".{CONNECT_SCRIPT}"></script>\n    '
        html, count = re.subn(r"(?=<script type=\"module\")", tag, html, count=1)
        if count != 1:
            raise RuntimeError("mescc serve: trame's index.html has no module script")
        inline = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
        hashes = [
            base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode("ascii")
            for body in inline
        ]
        return html, hashes

    # -- install ------------------------------------------------------------------------------------
    def install(self, ws_server) -> None:
        """Hook into wslink's aiohttp server (trame's ``on_server_bind``, before it listens)."""
        app = ws_server.app
        www = ws_server.config.get("static", {}).get("/")
        if not www:
            raise RuntimeError("mescc serve: wslink serves no page to protect")
        self.page, self.script_hashes = self.page_html(Path(www))
        handlers = []
        for route in app.router.routes():
            owner = getattr(route.handler, "__self__", None)
            if isinstance(owner, WslinkHandler):  # one handler per path, for GET and HEAD
                self.ws_paths.add(route.resource.canonical)
                if owner not in handlers:
                    handlers.append(owner)
        if not handlers:
            raise RuntimeError("mescc serve: no wslink websocket route to protect")
        app.middlewares.append(self.middleware)
        app.on_response_prepare.append(self.add_headers)
        # Routes added now take precedence over the static ones wslink adds when it starts.
        for path in PAGE_PATHS:
            app.router.add_get(path, self.serve_page)
        app.router.add_get(CONNECT_SCRIPT, self.serve_connect_script)
        for handler in handlers:
            handler.serverProtocol.updateSecret(self.token)  # not wslink's public default
            self._cap_messages(handler)
            self._cap_view_sizes(handler)
            self._keep_server_state(handler)
            self._plain_errors(handler)

    @staticmethod
    def _cap_messages(handler: WslinkHandler) -> None:
        on_connect, on_message = handler.onConnect, handler.onMessage

        async def connect(request, client_id):
            await on_connect(request, client_id)
            handler.unchunkers[client_id] = CappedUnChunker()

        async def message(is_binary, msg, client_id):
            try:
                await on_message(is_binary, msg, client_id)
            except MessageTooLarge as exc:
                logger.warning("closed a websocket: %s", exc)
                handler.unchunkers[client_id].release_pending_messages()
                await handler.connections[client_id].close(
                    code=aiohttp.WSCloseCode.MESSAGE_TOO_BIG, message=b"message too big"
                )

        handler.onConnect, handler.onMessage = connect, message

    @staticmethod
    def _cap_view_sizes(handler: WslinkHandler) -> None:
        if VIEW_SIZE_CALL not in handler.functionMap:
            raise RuntimeError(f"mescc serve: no {VIEW_SIZE_CALL} call to cap")
        protocol, update_size = handler.functionMap[VIEW_SIZE_CALL]

        def capped(obj, area_name, origin, size):
            safe, changed = clamp_view_size(size)
            if changed:
                logger.warning("view %s: size %r clamped to %r", area_name, size, safe)
            return update_size(obj, area_name, origin, safe)

        handler.functionMap[VIEW_SIZE_CALL] = (protocol, capped)

    @staticmethod
    def _keep_server_state(handler: WslinkHandler) -> None:
        """A client may not set trame's own keys: trame relays a client's changes to the
        other clients, and a ``trame__template_*`` is page code they would run."""
        if STATE_CALL not in handler.functionMap:
            raise RuntimeError(f"mescc serve: no {STATE_CALL} call to filter")
        protocol, update_state = handler.functionMap[STATE_CALL]

        def filtered(obj, changes):
            if isinstance(changes, list):
                kept = [
                    c
                    for c in changes
                    if not (isinstance(c, dict) and str(c.get("key", "")).startswith(SERVER_KEYS))
                ]
                if len(kept) != len(changes):
                    logger.warning("ignored a client's change to trame's own state")
                changes = kept
            return update_state(obj, changes)

        handler.functionMap[STATE_CALL] = (protocol, filtered)

    @staticmethod
    def _plain_errors(handler: WslinkHandler) -> None:
        send_error = handler.sendWrappedError

        async def send(rpcid, code, message, data=None, client_id=None):
            if code == EXCEPTION_ERROR:
                # wslink calls this from the ``except`` around the call, after logging the
                # traceback: the exception being handled is the call's.
                method = data.get("method", "") if isinstance(data, dict) else ""
                data = {"method": method, "exception": client_error_text(sys.exc_info()[1])}
                message = "call failed"
            await send_error(rpcid, code, message, data, client_id=client_id)

        handler.sendWrappedError = send
