"""A front door's JSON answer under ``puente serve`` leaves in one call (``Answer`` in
server/lifecycle/http_guard.py, ``JSONResponse.head_lines`` in server/api/wire.py): the same
bytes, headers in the same order, as uvicorn's request cycle writes from the two ASGI messages —
which another ASGI server still gets — with the same refusals of a header the HTTP layer must not
write, keep-alive, ``connection: close``, a reader that stops reading and a client that left."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import Iterator
from typing import Any, cast

import orjson
import pytest
from starlette.requests import Request
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE
from uvicorn.server import ServerState

from server.api.envelopes import over_capacity
from server.api.fast_lane import Doors
from server.api.middleware import with_request_id
from server.api.wire import JSONResponse, json_bytes_response, json_headers, json_lines
from server.config import HttpLimits
from server.lifecycle.http_guard import guarded_httptools
from server.lifecycle.one_write import OneWriteTransport
from tests.access_support import ADMIN, create_key
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
# What a keys-on answer of the OpenAI-compatible door carries, in this order.
KEYS_ON_HEADERS = [
    "date",
    "server",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "x-puente-model",
    "content-length",
    "content-type",
    "x-request-id",
]


def _as_written(headers: list[tuple[bytes, bytes]]) -> bytes:
    """Header lines as uvicorn's request cycle writes a list (names lowercased)."""
    return b"".join(b"%s: %s\r\n" % (name.lower(), value) for name, value in headers)


# -- the lines, against the list ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"x-puente-model": "m"},
        {"X-RateLimit-Limit-Requests": "10", "x-puente-model": "vendor/m%C3%A9"},
        {"Retry-After": "1", "WWW-Authenticate": "Bearer"},
        {"retry-after": "2", "x-should-retry": "true", "empty": ""},
        {"request-id": "abc", "x-puente-token-count": "estimate\tplus tab", "x-8": "caf\xe9"},
    ],
)
def test_the_lines_are_the_list_as_uvicorn_writes_it(headers: dict[str, str] | None) -> None:
    response = JSONResponse({"a": [1, "é"]}, status_code=201, headers=headers)
    lines = response.head_lines(b"rid-1")
    assert lines is not None
    assert lines == _as_written(with_request_id(response.raw_headers, b"rid-1"))
    assert response.head_lines(b"rid-1") is None  # once the list is out, it may change: its way
    plain = json_bytes_response(b"{}", 404)
    assert plain.head_lines(b"x") == (
        b"content-length: 2\r\ncontent-type: application/json\r\nx-request-id: x\r\n"
    )


def test_a_header_the_http_layer_refuses_leaves_the_answer_to_the_list() -> None:
    """Every character uvicorn refuses in a name or a value, alone or among others: the lines
    are not made (uvicorn checks the list and refuses it, as before); what they are made of
    otherwise is written exactly as the list would be."""
    for code in range(256):
        char = chr(code)
        for name, value in ((f"x-a{char}b", "v"), ("x-a", f"v{char}w")):
            headers = {"x-puente-model": "m", name: value, "x-after": "z"}
            lines = json_lines(headers, 2)
            encoded = (name.encode("latin-1"), value.encode("latin-1"))
            refused = HEADER_RE.search(encoded[0]) or HEADER_VALUE_RE.search(encoded[1])
            if refused:
                assert lines is None, (name, value)
            if lines is not None:
                assert lines == _as_written(json_headers(b"{}", headers)), (name, value)
    for given in ("content-length", "Content-Type", "connection", "transfer-encoding"):
        assert json_lines({given: "1"}, 2) is None
        assert JSONResponse({}, headers={given: "1"}).raw_headers  # the list, made at once
    assert json_lines({"x-request-id": "theirs"}, 2) is None  # ``with_request_id``'s to replace
    twice = {"Retry-After": "1", "retry-after": "2"}  # one name once lowercased: the list has two
    assert json_lines(twice, 2) is None
    assert [name for name, _ in json_headers(b"{}", twice)][:2] == [b"retry-after"] * 2
    hostile = JSONResponse({}, headers={"x-upstream": "ok\r\nset-cookie: pwned=1"})
    assert hostile.head_lines(b"rid") is None


def test_the_headers_are_taken_when_the_answer_is_made() -> None:
    given = {"x-puente-model": "m"}
    response = JSONResponse({}, headers=given)
    given["x-puente-model"] = "changed later"
    lines = response.head_lines(b"r")
    assert lines is not None and b"changed" not in lines
    assert dict(response.raw_headers)[b"x-puente-model"] == b"m"


def test_a_value_latin_1_cannot_write_fails_where_it_did() -> None:
    with pytest.raises(UnicodeEncodeError):
        JSONResponse({}, headers={"x-puente-model": "\u20ac"})


# -- on the wire, against uvicorn's own protocol ------------------------------------------------


@pytest.fixture(scope="module")
def two_servers(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, tuple[InProcessPuente, str]]]:
    """Keys and limits on, the same configuration: ``puente serve``'s protocol and uvicorn's."""
    servers = {}
    with (
        InProcessPuente(
            gateway_config(fake_upstream),
            tmp_path_factory.mktemp("wire-own"),
            env={"PUENTE_ADMIN_KEY": ADMIN},
        ) as own,
        InProcessPuente(
            gateway_config(fake_upstream),
            tmp_path_factory.mktemp("wire-uvicorn"),
            env={"PUENTE_ADMIN_KEY": ADMIN},
            own_protocol=False,
        ) as theirs,
    ):
        for name, server in (("own", own), ("uvicorn", theirs)):
            servers[name] = (server, create_key(server, "wire", rpm=1000, tpm=10_000_000))
        yield servers


def _take(data: bytes) -> tuple[tuple[bytes, bytes], bytes] | None:
    """The first whole answer (head, body) in ``data`` and what follows it, or None yet."""
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return None
    found = re.search(rb"\r\ncontent-length: (\d+)", head)
    if found:
        end = int(found.group(1))
    else:  # chunked (a stream): up to its last, empty chunk
        last = rest.find(b"\r\n0\r\n\r\n")
        if last < 0:
            return None
        end = last + 7
    if len(rest) < end:
        return None
    return (head, rest[:end]), rest[end:]


def _exchange(
    port: int, request: bytes, count: int = 1, *, then_closed: bool = False
) -> list[tuple[bytes, bytes]]:
    """Send ``request`` (one or more); the first ``count`` answers (head, body); with
    ``then_closed``, the server must have closed the connection after them."""
    answers: list[tuple[bytes, bytes]] = []
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        while len(answers) < count:
            taken = _take(data)
            if taken is None:
                piece = sock.recv(65536)
                assert piece, data
                data += piece
            else:
                answer, data = taken
                answers.append(answer)
        if then_closed:  # a request after them is not answered
            assert data == b""
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                sock.sendall(request)
                assert sock.recv(65536) == b""
    return answers


def _post(key: str, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST /v1/chat/completions HTTP/%s\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
        b"Content-Type: application/json\r\nX-Request-Id: wire-1\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (version, key.encode(), extra, len(body), body)
    )


# Values that differ between two servers for reasons of their own: the clock, the windows.
_VARYING = re.compile(
    rb"^(date|x-ratelimit-reset-\w+|content-length|retry-after): [^\r]*", re.MULTILINE
)


def _masked(head: bytes) -> bytes:
    return _VARYING.sub(rb"\1: ~", head)


def _names(head: bytes) -> list[str]:
    return [line.split(b":")[0].decode() for line in head.split(b"\r\n")[1:]]


WHOLE = orjson.dumps(CHAT)
CASES: dict[str, tuple[bytes, int, bool]] = {
    # name: (request with key KEY, status, written in one call under puente serve)
    "keys on": (_post("KEY", WHOLE), 200, True),
    "bad json": (_post("KEY", b"{"), 400, True),
    "no model": (_post("KEY", orjson.dumps({**CHAT, "model": "nope"})), 404, True),
    "wrong key": (_post("sk-nope", WHOLE), 401, True),
    "declared too big": (_post("KEY", b" " * 200_001), 413, True),
    "compressed": (_post("KEY", b"x", b"Content-Encoding: gzip\r\n"), 415, True),
    "stream": (_post("KEY", orjson.dumps({**CHAT, "stream": True})), 200, False),
    "connection close": (_post("KEY", WHOLE, b"Connection: close\r\n"), 200, True),
    "http/1.0": (_post("KEY", WHOLE, version=b"1.0"), 200, True),
}


@pytest.mark.parametrize("case", CASES)
def test_each_answer_is_written_as_uvicorns_cycle_writes_it(
    two_servers: dict[str, tuple[InProcessPuente, str]],
    case: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request, status, in_one_call = CASES[case]
    whole_writes: list[bytes] = []
    write_whole = OneWriteTransport.write_whole

    def counted(self: OneWriteTransport, data: bytes) -> None:
        whole_writes.append(data)
        write_whole(self, data)

    monkeypatch.setattr(OneWriteTransport, "write_whole", counted)
    heads = {}
    for name, (server, key) in two_servers.items():
        closes = case in ("connection close", "http/1.0")
        request_with_key = request.replace(b"KEY", key.encode())
        [(head, body)] = _exchange(server.port, request_with_key, then_closed=closes)
        assert head.startswith(b"HTTP/1.1 %d " % status), head
        if case != "stream":
            assert f"content-length: {len(body)}".encode() in head
        heads[name] = head
    assert _masked(heads["own"]) == _masked(heads["uvicorn"])
    assert len(whole_writes) == (1 if in_one_call else 0)
    assert heads["own"].count(b"\r\nx-request-id: ") == 1
    if case == "keys on":
        assert _names(heads["own"]) == KEYS_ON_HEADERS
    if case in ("connection close", "http/1.0"):
        assert _names(heads["own"])[-1] == "connection"


def test_a_rate_limit_refusal_is_written_as_uvicorns_cycle_writes_it(
    two_servers: dict[str, tuple[InProcessPuente, str]],
) -> None:
    heads = {}
    for name, (server, _) in two_servers.items():
        key = create_key(server, f"one-a-minute-{name}", rpm=1)
        answered = _exchange(server.port, _post(key, WHOLE) + _post(key, WHOLE), 2)
        heads[name] = [_masked(head) for head, _ in answered]
    assert heads["own"] == heads["uvicorn"]
    refused = heads["own"][1]
    assert refused.startswith(b"HTTP/1.1 429 ")
    assert _names(refused)[2:5] == [
        "retry-after",
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
    ]


def test_pipelined_answers_on_a_connection_closed_after_them(
    two_servers: dict[str, tuple[InProcessPuente, str]],
) -> None:
    answers = {}
    for name, (server, key) in two_servers.items():
        requests = (
            _post(key, WHOLE) + _post(key, b"{") + _post(key, WHOLE, b"Connection: close\r\n")
        )
        answered = _exchange(server.port, requests, 3, then_closed=True)
        answers[name] = [_masked(head) for head, _ in answered]
    assert answers["own"] == answers["uvicorn"]
    assert [head.split(b" ")[1] for head in answers["own"]] == [b"200", b"400", b"200"]


# -- the cycle's state: a reader that stops reading, a client that left --------------------------


class _Socket:
    """What the protocol writes, and the calls an asyncio transport gets."""

    def __init__(self) -> None:
        self.written = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


REQUEST = b"POST /v1/x HTTP/1.1\r\nHost: x\r\nX-Request-Id: r-1\r\nContent-Length: 2\r\n\r\n{}"


async def _serve(release: asyncio.Event, limits: HttpLimits | None = None) -> tuple[Any, _Socket]:
    """A guarded protocol on a recorded socket, its one door answering once ``release`` is set."""

    async def endpoint(request: Request) -> JSONResponse:
        await request.body()
        await release.wait()
        return JSONResponse({"ok": True}, headers={"x-puente-model": "m"})

    doors = Doors(cast(Any, None), cast(Any, None), {"/v1/x": endpoint}, limit=100, cors=False)
    config = Config(cast(Any, doors), log_config=None, lifespan="off", timeout_keep_alive=3600)
    state = ServerState()
    state.default_headers = [(b"date", b"Fri, 04 Dec 2026 00:00:00 GMT"), (b"server", b"uvicorn")]
    protocol_class = guarded_httptools(limits or HttpLimits(), over_capacity, doors)
    protocol = cast(Any, protocol_class)(config=config, server_state=state, app_state={})
    wire = _Socket()
    protocol.connection_made(wire)
    return protocol, wire


async def _turns(count: int = 5) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


EXPECTED = (
    b"HTTP/1.1 200 OK\r\ndate: Fri, 04 Dec 2026 00:00:00 GMT\r\nserver: uvicorn\r\n"
    b"x-puente-model: m\r\ncontent-length: 11\r\ncontent-type: application/json\r\n"
    b'x-request-id: r-1\r\n\r\n{"ok":true}'
)


async def test_the_answer_in_one_call_is_the_bytes_of_the_two_messages(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "uvicorn.access")
    release = asyncio.Event()
    release.set()
    protocol, wire = await _serve(release)
    protocol.data_received(REQUEST)
    await _turns()
    assert wire.written == EXPECTED
    assert protocol.cycle.response_complete and not wire.closed  # kept alive
    assert protocol.server_state.total_requests == 1  # the cycle's ``on_response`` ran
    protocol.data_received(REQUEST)  # and the next request on it is answered the same way
    await _turns()
    assert wire.written == EXPECTED * 2
    # uvicorn's access log line, where its access log is on (``puente serve`` turns it off)
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert logged == ['127.0.0.1:50000 - "POST /v1/x HTTP/1.1" 200'] * 2


async def test_a_reader_that_stopped_reading_gets_the_answer_once_it_reads_again() -> None:
    release = asyncio.Event()
    release.set()
    protocol, wire = await _serve(release)
    protocol.pause_writing()  # the socket's buffer is full: ``send`` waits for room
    protocol.data_received(REQUEST)
    await _turns()
    assert wire.written == b""
    protocol.resume_writing()
    await _turns()
    assert wire.written == EXPECTED


async def test_nothing_is_written_to_a_client_that_left() -> None:
    release = asyncio.Event()
    protocol, wire = await _serve(release)
    protocol.data_received(REQUEST)
    await _turns()
    protocol.connection_lost(None)
    release.set()
    await _turns()
    assert wire.written == b"" and wire.closed
    assert protocol.cycle.disconnected and not protocol.cycle.response_started


# -- the header timer: one per connection ---------------------------------------------------------


async def _serve_on_a_clock(monkeypatch: pytest.MonkeyPatch) -> tuple[list[float], Any, _Socket]:
    """``_serve`` with a ten-second header timeout, its door answering at once, on a loop whose
    clock reads ``now[0]`` (1000 to start)."""
    now = [1000.0]
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: now[0])
    release = asyncio.Event()
    release.set()
    protocol, wire = await _serve(release, HttpLimits(header_timeout=10))
    return now, protocol, wire


async def test_each_request_on_a_kept_alive_connection_has_its_whole_header_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The timer armed for one request, firing while a later one is awaited, waits for what
    that one has left: 408 when its own time is up, not before."""
    now, protocol, wire = await _serve_on_a_clock(monkeypatch)
    protocol.data_received(REQUEST)  # at 1000, on a connection opened at 1000
    await _turns()
    assert wire.written == EXPECTED
    now[0] = 1008.0
    protocol.data_received(b"POST /v1/x HTTP/1.1\r\nHost: x\r\n")  # and no more
    for moment in (1010.5, 1017.9):  # past the first timer, short of this request's ten seconds
        now[0] = moment
        await _turns()
        assert wire.written == EXPECTED and not wire.closed, moment
    now[0] = 1018.1
    await _turns()
    assert wire.written.startswith(EXPECTED + b"HTTP/1.1 408 ")
    assert wire.closed


async def test_headers_completed_in_time_are_not_refused_by_an_earlier_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now, protocol, wire = await _serve_on_a_clock(monkeypatch)
    protocol.data_received(REQUEST)  # at 1000: the timer is armed for ten seconds
    await _turns()
    now[0] = 1009.0
    protocol.data_received(REQUEST[:20])  # the next request, begun at 1009
    now[0] = 1012.0  # the timer fires
    await _turns()
    protocol.data_received(REQUEST[20:])  # complete at 1012, three seconds in
    await _turns()
    assert wire.written == EXPECTED * 2 and not wire.closed
    now[0] = 1030.0  # and no refusal later for the request that finished
    await _turns()
    assert wire.written == EXPECTED * 2 and not wire.closed
