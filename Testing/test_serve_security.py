"""``mescc serve`` against the attacks of the security review (issue 18).

One real ``mescc serve --demo`` per module, on a free loopback port with throw-away folders,
stopped in the fixture's ``finally``. A script plays the foreign web page and the greedy
client with ``websocket-client`` and wslink's own message format (a 12-byte header: message
id, offset, total size; then msgpack). The command line's refusals run in-process: they stop
before anything is served.
"""

from __future__ import annotations

import io
import secrets
import struct
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgpack
import pytest
import websocket
from PIL import Image
from webdriver import free_port, serve, stop, wait_until_served

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.web.access import (
    INTERNAL_ERROR,
    MAX_VIEW_PX,
    HostRules,
    check_token,
    clamp_view_size,
    client_error_text,
    new_token,
    page_urls,
)

EVIL = "http://evil.example"
CLOSE = websocket.ABNF.OPCODE_CLOSE


# -- the served demo ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def a_server(tmp_path_factory):
    """``mescc serve --demo`` on a free port; yields (process, port, token)."""
    work = tmp_path_factory.mktemp("serve_security")
    port = free_port()
    process = serve(["--demo", "--port", str(port), "--out", str(work / "session")], cwd=work)
    try:
        url = wait_until_served(process, port)
        yield process, port, parse_qs(urlsplit(url).query)["token"][0]
    finally:
        stop(process)


def http_get(port, path="/", *, headers=None):
    """(status, headers) of ``GET path``; 4xx answers are returned, not raised."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def refused_upgrade(port, query="", **options) -> int | None:
    """The HTTP status refusing the websocket upgrade, or None if it was accepted."""
    try:
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws{query}", timeout=10, **options)
    except websocket.WebSocketBadStatusException as e:
        return e.status_code
    ws.close()
    return None


class Client:
    """A wslink client over ``websocket-client``: the page's protocol, scripted."""

    def __init__(self, port, token, *, secret=None):
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/ws?token={token}",
            origin=f"http://127.0.0.1:{port}",
            timeout=30,
        )
        self.pending = []
        self.count = 0
        self.hello = self.call("wslink.hello", {"secret": secret or token}, rpc="system")

    def send(self, message: dict, *, message_id=None):
        body = msgpack.packb(message)
        header = struct.pack("<III", message_id or secrets.randbits(32), 0, len(body))
        self.ws.send_binary(header + body)

    def receive(self) -> dict:
        """The next wslink message (the server's are one chunk each: all are under 4 MB)."""
        opcode, data = self.ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_BINARY, (opcode, data)
        _id, offset, total = struct.unpack_from("<III", data)
        assert offset == 0 and total == len(data) - 12
        return msgpack.unpackb(data[12:])

    def call(self, method, *args, rpc="rpc") -> dict:
        self.count += 1
        rpc_id = f"{rpc}:c0:{self.count}"
        self.send({"wslink": "1.0", "id": rpc_id, "method": method, "args": list(args)})
        while True:
            message = self.receive()
            if message.get("id") == rpc_id:
                return message
            self.pending.append(message)

    def published(self, topic, *, timeout_s=30.0):
        """Messages the server publishes on ``topic``, as they come (first the buffered)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = self.pending.pop(0) if self.pending else self.receive()
            if message.get("id", "").startswith(f"publish:{topic}:"):
                yield message["result"]

    def close_code(self, *, timeout_s=30.0) -> int | None:
        """The status of the server's close frame (other frames skipped), None if none came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                opcode, data = self.ws.recv_data(control_frame=True)
            except websocket.WebSocketConnectionClosedException:
                return None
            if opcode == CLOSE:
                return struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None
        return None

    def close(self):
        self.ws.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# -- 1. only the page of the printed address drives the server ----------------------------------------
def test_the_page_needs_the_token(a_server):
    _process, port, token = a_server
    assert http_get(port, "/")[0] == 403
    assert http_get(port, "/index.html?token=" + "0" * len(token))[0] == 403
    assert http_get(port, f"/?token={token}")[0] == 200
    assert http_get(port, f"/index.html?token={token}")[0] == 200


def test_the_page_forbids_framing_sniffing_and_foreign_code(a_server):
    _process, port, token = a_server
    status, headers = http_get(port, f"/?token={token}")
    assert status == 200
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"
    csp = dict(d.strip().split(" ", 1) for d in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'self'"
    assert csp["frame-ancestors"] == "'none'"
    assert csp["object-src"] == "'none'"
    assert "http" not in csp["script-src"]  # no script from anywhere else
    assert f"ws://127.0.0.1:{port}" in csp["connect-src"].split()
    # the static files the page loads carry them too
    assert http_get(port, "/vue.global.js")[1]["X-Frame-Options"] == "DENY"


def test_another_site_cannot_open_the_websocket(a_server):
    _process, port, token = a_server
    assert refused_upgrade(port, f"?token={token}", origin=EVIL) == 403
    assert refused_upgrade(port, f"?token={token}", origin="null") == 403
    assert refused_upgrade(port, f"?token={token}", origin=f"http://127.0.0.1:{port + 1}") == 403
    assert http_get(port, f"/?token={token}", headers={"Origin": EVIL})[0] == 403


def test_the_websocket_needs_the_token(a_server):
    _process, port, token = a_server
    origin = f"http://127.0.0.1:{port}"
    assert refused_upgrade(port, "", origin=origin) == 403
    assert refused_upgrade(port, "?token=", origin=origin) == 403
    assert refused_upgrade(port, f"?token={new_token()}", origin=origin) == 403
    assert refused_upgrade(port, f"?token={token[:-1]}", origin=origin) == 403


def test_a_rebound_host_name_is_refused(a_server):
    # DNS rebinding: evil.example resolved to 127.0.0.1, the browser still says its name
    _process, port, token = a_server
    evil_host = f"evil.example:{port}"
    assert refused_upgrade(port, f"?token={token}", host=evil_host, origin=EVIL) == 403
    assert refused_upgrade(port, f"?token={token}", host=evil_host, suppress_origin=True) == 403
    assert http_get(port, f"/?token={token}", headers={"Host": evil_host})[0] == 403
    assert http_get(port, "/vue.global.js", headers={"Host": evil_host})[0] == 403


def test_the_right_token_and_origin_connect(a_server):
    _process, port, token = a_server
    for name in ("127.0.0.1", "localhost"):
        origin = f"http://{name}:{port}"
        assert refused_upgrade(port, f"?token={token}", origin=origin) is None
    client = Client(port, token)
    try:
        assert client.hello["result"]["clientID"]
    finally:
        client.close()


def test_wslinks_public_default_secret_is_refused(a_server):
    _process, port, token = a_server
    client = Client(port, token, secret="wslink-secret")
    try:
        assert client.hello["error"]["message"] == "Authentication failed"
        assert "error" in client.call("trame.state.get")
    finally:
        client.close()


# -- 2. memory ---------------------------------------------------------------------------------------
def test_a_huge_announced_message_closes_the_connection_not_the_memory(a_server):
    process, port, token = a_server
    client = Client(port, token)  # authenticated: wslink would allow it 4 GB
    before = rss_mb(process.pid)
    # 16 bytes: a message id, offset 0, a total size of 1 GB, 4 bytes of it
    client.ws.send_binary(struct.pack("<III", 7, 0, 1 << 30) + b"MESC")
    assert client.close_code() == 1009  # message too big
    time.sleep(0.5)
    assert rss_mb(process.pid) - before < 40  # MB; wslink allocated the whole GB at once


def test_a_huge_websocket_frame_is_refused_at_its_header(a_server):
    process, port, token = a_server
    client = Client(port, token)
    before = rss_mb(process.pid)
    # a masked binary frame announcing 1 GB (length 127: a 64-bit length follows), no payload
    client.ws.sock.sendall(bytes([0x82, 0x80 | 127]) + (1 << 30).to_bytes(8, "big") + b"mask")
    assert client.close_code() == 1009
    time.sleep(0.5)
    assert rss_mb(process.pid) - before < 40  # MB


def test_a_huge_view_size_is_clamped(a_server):
    _process, port, token = a_server
    client = Client(port, token)
    # 5000 px rendered across (2500 CSS px at pixel ratio 2): over the cap; a strip 10 px
    # high keeps both the clamped and (should the cap go) the unclamped render cheap. The
    # review's 12000 x 12000 px took the server to 7.5 GB.
    asked = {"w": 2500, "h": 10, "p": 2}
    safe, _changed = clamp_view_size(asked)
    expected = (int(safe["w"] * safe["p"]), int(safe["h"] * safe["p"]))
    assert expected == (MAX_VIEW_PX, 16)
    try:
        assert client.call("trame.rca.size", "Green", "test", asked)["result"] is None
        sizes = []
        for frame in client.published("trame.rca.topic.stream"):
            if frame["name"] == "Green":  # the image itself (its meta's w and h are swapped)
                sizes.append(Image.open(io.BytesIO(frame["content"])).size)
                if sizes[-1] != (300, 300):  # not a frame rendered before the resize
                    break
        assert sizes[-1] == expected
    finally:
        client.call("trame.rca.size", "Green", "test", {"w": 300, "h": 300, "p": 1})
        client.close()


def test_a_client_cannot_rewrite_the_page_of_the_others(a_server):
    # trame relays a client's state changes to the other clients; a template is page code
    _process, port, token = a_server
    writer, reader = Client(port, token), Client(port, token)
    try:
        template = {"key": "trame__template_main", "value": "<div>{{ 'injected' }}</div>"}
        title = {"key": "trame__title", "value": "injected"}
        assert "result" in writer.call("trame.state.update", [template, title])
        state = reader.call("trame.state.get")["result"]["state"]
        assert "injected" not in str(state)
        relayed = [m for m in reader.pending if "injected" in str(m)]
        assert relayed == []
    finally:
        writer.close()
        reader.close()


# -- 3. errors ---------------------------------------------------------------------------------------
def test_a_failed_call_tells_the_client_one_sentence_not_the_traceback(a_server):
    process, port, token = a_server
    client = Client(port, token)
    try:
        answer = client.call("trame.rca.event")  # its three arguments missing: a TypeError
    finally:
        client.close()
    error = answer["error"]
    assert error["data"] == {"method": "trame.rca.event", "exception": INTERNAL_ERROR}
    text = str(answer)
    assert "Traceback" not in text and ".py" not in text and "site-packages" not in text
    assert "on_interaction() missing 3 required positional arguments" in Path(
        process.log.name
    ).read_text(encoding="utf-8")  # the server's log keeps what went wrong


def test_the_client_is_told_a_mescc_error_as_its_sentence():
    error = InputError("load the study first", hint="step 1: Load study")
    assert client_error_text(error) == "load the study first (step 1: Load study)"
    assert client_error_text(FileNotFoundError(2, "No such file", "/home/x/t2.nii.gz")) == (
        INTERNAL_ERROR
    )


# -- the rules, directly --------------------------------------------------------------------------------
def test_loopback_answers_to_its_own_names_on_its_own_port():
    rules = HostRules("127.0.0.1")
    for host in ("127.0.0.1:8080", "localhost:8080", "[::1]:8080", "LOCALHOST:8080"):
        assert rules.host_allowed(host, 8080), host
    for host in ("evil.example:8080", "127.0.0.1:8081", "localhost", "10.0.0.2:8080", "", None):
        assert not rules.host_allowed(host, 8080), host
    assert rules.origin_allowed("http://localhost:8080", 8080)
    assert rules.origin_allowed("https://127.0.0.1:8080", 8080)
    for origin in (EVIL, "null", "http://127.0.0.1:8081", "file://", "http://localhost.evil:8080"):
        assert not rules.origin_allowed(origin, 8080), origin


def test_on_the_network_any_address_but_no_foreign_name():
    rules = HostRules("0.0.0.0")
    assert rules.host_allowed("192.168.1.20:8080", 8080)
    assert rules.host_allowed("127.0.0.1:8080", 8080)
    assert not rules.host_allowed("rebind.evil.example:8080", 8080)
    assert not rules.origin_allowed("http://rebind.evil.example:8080", 8080)
    specific = HostRules("192.168.1.20")
    assert specific.host_allowed("192.168.1.20:8080", 8080)
    assert not specific.host_allowed("192.168.1.21:8080", 8080)
    assert not specific.host_allowed("localhost:8080", 8080)


def test_view_sizes_are_clamped_per_side_and_ratio():
    assert clamp_view_size({"w": 800, "h": 600, "p": 2}) == ({"w": 800, "h": 600, "p": 2}, False)
    safe, changed = clamp_view_size({"w": 12000, "h": 12000, "p": 1})
    assert changed and safe == {"w": MAX_VIEW_PX, "h": MAX_VIEW_PX, "p": 1.0}
    # a modest view on a huge pixel ratio: the rendered side stays within the cap
    safe, changed = clamp_view_size({"w": 2000, "h": 1000, "p": 40})
    assert changed and safe["w"] * safe["p"] == pytest.approx(MAX_VIEW_PX)
    for bad in ({"w": float("nan"), "h": "x", "p": None}, None, {"w": -5, "h": True}):
        safe, _ = clamp_view_size(bad)
        assert 10 <= safe["w"] <= MAX_VIEW_PX and 10 <= safe["h"] <= MAX_VIEW_PX


def test_tokens_are_random_and_weak_ones_refused():
    a, b = new_token(), new_token()
    assert a != b and check_token(a) == a and len(a) == 48
    for weak in ("", "short", "a" * 30, "1" * 30, "12345678901234567890e123", "UPPER" * 6):
        with pytest.raises(InputError):
            check_token(weak)
    for url in page_urls("0.0.0.0", 8080, a) + page_urls("127.0.0.1", 8080, a):
        assert url.endswith(f":8080/?token={a}")


# -- the command line's refusals: one line, exit 2, nothing served -------------------------------------
def refusal(capsys, *args) -> str:
    """The single line ``mescc serve ARGS`` printed, checking it exited with status 2."""
    assert main(["serve", *args]) == 2
    captured = capsys.readouterr()
    lines = [line for line in (captured.out + captured.err).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_short_or_empty_token_is_refused(capsys, monkeypatch):
    monkeypatch.delenv("MESCC_SERVE_TOKEN", raising=False)
    for token in ("", "abc", "0" * 40):
        line = refusal(capsys, "--demo", "--host", "0.0.0.0", "--port", "0", "--token", token)
        assert "token" in line
    monkeypatch.setenv("MESCC_SERVE_TOKEN", "too-short")
    assert "token" in refusal(capsys, "--demo", "--port", "0")


def test_there_is_no_way_to_serve_without_a_token(capsys):
    for option in ("--no-token", "--insecure"):
        assert main(["serve", "--demo", "--port", "0", option]) == 2
        assert f"unrecognized arguments: {option}" in capsys.readouterr().err


@pytest.fixture
def a_class_folder(tmp_path):
    """``class/study`` (all its files real) inside the allowed root, ``private/`` outside."""
    root, private = tmp_path / "class", tmp_path / "private"
    study = root / "study"
    (study / "pet_dicom").mkdir(parents=True)
    private.mkdir()
    for name in ("t2.nii.gz", "t1.nii.gz", "ct.nii.gz", "pet_dicom/IM0001.dcm"):
        (study / name).write_bytes(b"")
        (private / Path(name).name).write_bytes(b"")
    return root, study, private


@pytest.mark.parametrize("linked", ["t2.nii.gz", "ct.nii.gz", "pet_dicom/IM0001.dcm"])
def test_study_files_linking_outside_the_allowed_root_are_refused(capsys, a_class_folder, linked):
    root, study, private = a_class_folder
    (study / linked).unlink()
    (study / linked).symlink_to(private / Path(linked).name)
    line = refusal(capsys, "--study", str(study), "--allowed-root", str(root), "--port", "0")
    assert "outside the allowed folder" in line and str(study / linked) in line


def test_a_linked_pet_folder_outside_the_allowed_root_is_refused(capsys, a_class_folder):
    root, study, private = a_class_folder
    for dicom in (study / "pet_dicom").iterdir():
        dicom.unlink()
    (study / "pet_dicom").rmdir()
    (study / "pet_dicom").symlink_to(private)
    line = refusal(capsys, "--study", str(study), "--allowed-root", str(root), "--port", "0")
    assert str(study / "pet_dicom") in line


def test_links_inside_the_allowed_root_are_followed(a_class_folder):
    from MESCCAnalyzerLib.cli.serve_cmd import resolve_study

    root, study, _private = a_class_folder
    shared = root / "shared_ct.nii.gz"
    (study / "ct.nii.gz").rename(shared)
    (study / "ct.nii.gz").symlink_to(shared)
    assert resolve_study(str(study), str(root)) == study.resolve()
