"""Puente's HTTP/1.1 client (server/providers/http1/) against real local servers that answer
with scripted bytes: keep-alive reuse and when a connection must not be reused, each way of
delimiting a body, timeouts, answers that are not HTTP, TLS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gzip
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from server.providers.http1 import (
    ConnectError,
    ConnectTimeout,
    Disconnected,
    Pool,
    ProtocolError,
    Resolver,
    Response,
    Timeout,
    split_url,
)
from tests.inprocess import InProcessPuente
from tests.support import error_envelope, free_port

SECRET = "sk-http1-SECRET-31415926"
Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A server whose connections each run ``answer`` for every request read on them."""

    def __init__(self, answer: Answer, ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl = ssl_context
        self.accepted = 0
        self.closed = 0  # connections whose client closed them
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def url(self, path: str = "/v1/chat") -> str:
        scheme = "https" if self.ssl else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
        finally:
            writer.close()


def answering(*raw: bytes, close: bool = False) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in raw:
            writer.write(piece)
            await writer.drain()
        if close:
            writer.close()

    return answer


OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


async def post(pool: Pool, url: str, *, read_timeout: float = 10.0) -> Response:
    return await pool.request(
        "POST",
        url,
        {"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
        b'{"model":"m"}',
        connect_timeout=5.0,
        read_timeout=read_timeout,
    )


async def fetch(pool: Pool, url: str) -> bytes:
    response = await post(pool, url)
    try:
        return await response.read()
    finally:
        response.release()


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    client = Pool(idle_timeout=30)
    yield client
    await client.aclose()


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


# -- keep-alive ---------------------------------------------------------------------------------


async def test_a_connection_is_reused_for_the_next_request(pool: Pool) -> None:
    async with Scripted(answering(OK)) as server:
        for _ in range(3):
            assert await fetch(pool, server.url()) == b'{"ok":true}'
        assert server.accepted == 1
        origin, _ = split_url(server.url())
        assert pool.idle(origin) == 1
        request = server.requests[0]
        assert request.startswith(b"POST /v1/chat HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in request
        assert b"Accept-Encoding: identity\r\n" in request
        assert request.endswith(b'\r\n\r\n{"model":"m"}')


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhell\r\n",
    b"7\r\no, worl\r\n1\r\nd\r\n0\r\n\r\n",
)


async def test_a_chunked_body_is_read_whole_and_the_connection_kept(pool: Pool) -> None:
    async with Scripted(answering(*CHUNKED)) as server:
        assert await fetch(pool, server.url()) == b"hello, world"
        assert await fetch(pool, server.url()) == b"hello, world"
        assert server.accepted == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close",
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 15\r\n\r\nuntil the close",
        b"HTTP/1.0 200 OK\r\nContent-Length: 15\r\n\r\nuntil the close",
    ],
    ids=["close-delimited", "connection-close", "http-1.0"],
)
async def test_an_answer_that_ends_the_connection_is_not_reused(pool: Pool, raw: bytes) -> None:
    async with Scripted(answering(raw, close=True)) as server:
        assert await fetch(pool, server.url()) == b"until the close"
        assert await fetch(pool, server.url()) == b"until the close"
        assert server.accepted == 2
        assert pool.idle(split_url(server.url())[0]) == 0


async def test_a_connection_the_server_closed_while_idle_is_not_reused(pool: Pool) -> None:
    closing = asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK)
        await writer.drain()
        if not closing.is_set():
            closing.set()
            writer.close()  # as an upstream whose keep-alive timeout ran out

    async with Scripted(answer) as server:
        assert await fetch(pool, server.url()) == b'{"ok":true}'
        origin, _ = split_url(server.url())
        await until(lambda: pool.idle(origin) == 0)  # the close was seen
        assert await fetch(pool, server.url()) == b'{"ok":true}'
        assert server.accepted == 2


async def test_an_unread_body_closes_the_connection_on_release(pool: Pool) -> None:
    started = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        started.set()
        while True:  # until the client closes the connection
            writer.write(b"5\r\nmore.\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)

    async with Scripted(endless) as server:
        response = await post(pool, server.url())
        await started.wait()
        assert (await anext(response.iter_any())).startswith(b"more.")
        response.release()
        await until(lambda: server.closed == 1)  # the server saw its connection closed
        assert pool.idle(split_url(server.url())[0]) == 0


async def test_idle_connections_are_closed_after_the_idle_timeout() -> None:
    pool = Pool(idle_timeout=0.05)
    try:
        async with Scripted(answering(OK)) as server:
            await fetch(pool, server.url())
            await until(lambda: server.closed == 1)
            assert pool.idle(split_url(server.url())[0]) == 0
    finally:
        await pool.aclose()


# -- names --------------------------------------------------------------------------------------


async def test_a_name_is_looked_up_once_for_the_connections_it_opens(pool: Pool) -> None:
    async with Scripted(answering(OK)) as server:
        url = f"http://localhost:{server.port}/v1/chat"
        # Three requests in flight at once: three connections, one lookup between them.
        responses = await asyncio.gather(*(post(pool, url) for _ in range(3)))
        for response in responses:
            assert await response.read() == b'{"ok":true}'
            response.release()
        assert server.accepted == 3
        assert pool.resolver.lookups == 1
        request = server.requests[0]
        assert f"Host: localhost:{server.port}\r\n".encode() in request


async def test_a_name_is_looked_up_again_once_its_time_is_up() -> None:
    pool = Pool(idle_timeout=0.01, resolver=Resolver(ttl=0))
    try:
        async with Scripted(answering(OK)) as server:
            url = f"http://localhost:{server.port}/v1/chat"
            assert await fetch(pool, url) == b'{"ok":true}'
            await until(lambda: not pool.idle(split_url(url)[0]))  # the next one connects anew
            assert await fetch(pool, url) == b'{"ok":true}'
            assert server.accepted == 2
            assert pool.resolver.lookups == 2
    finally:
        await pool.aclose()


async def test_an_address_that_refuses_is_looked_up_again(pool: Pool) -> None:
    async with Scripted(answering(OK)) as server:
        url = f"http://localhost:{server.port}/v1/chat"
        assert await fetch(pool, url) == b'{"ok":true}'
    await pool.aclose()  # the kept-alive connection with it
    pool = Pool(idle_timeout=30, resolver=pool.resolver)
    try:
        with pytest.raises(ConnectError):  # the server is gone: its address refuses
            await post(pool, url)
        with pytest.raises(ConnectError):
            await post(pool, url)
        assert pool.resolver.lookups == 2  # the refusal sent the next request to look again
    finally:
        await pool.aclose()


async def test_a_name_that_does_not_resolve_is_a_connect_error(pool: Pool) -> None:
    async def post_unresolvable() -> Response:
        # A connect timeout long enough for a resolver that times out rather than answers.
        return await pool.request(
            "POST",
            "http://no-such-host.invalid/v1/chat",
            {"Authorization": f"Bearer {SECRET}"},
            b"{}",
            connect_timeout=60,
            read_timeout=60,
        )

    with pytest.raises(ConnectError) as caught:
        await post_unresolvable()
    assert SECRET not in str(caught.value)
    with pytest.raises(ConnectError):
        await post_unresolvable()
    assert pool.resolver.lookups == 2  # a failure is not kept


# -- bodies -------------------------------------------------------------------------------------


async def test_a_body_is_read_as_it_arrives(pool: Pool) -> None:
    async with Scripted(answering(*CHUNKED)) as server:
        response = await post(pool, server.url())
        pieces = [piece async for piece in response.iter_chunked(3)]
        response.release()
        assert b"".join(pieces) == b"hello, world"
        assert max(len(p) for p in pieces) <= 3


async def test_the_chunks_of_one_read_arrive_as_one_piece(pool: Pool) -> None:
    # An upstream streaming events often sends each as its own chunk; one network read that
    # brings three is handed over once, as what that read brought.
    body = b"3\r\none\r\n3\r\ntwo\r\n5\r\nthree\r\n0\r\n\r\n"
    async with Scripted(answering(CHUNKED[0][: CHUNKED[0].index(b"\r\n\r\n") + 4], body)) as server:
        response = await post(pool, server.url())
        pieces = [piece async for piece in response.iter_any()]
        response.release()
        assert pieces == [b"onetwothree"]


async def test_what_a_read_brought_before_broken_framing_is_read_before_the_error(
    pool: Pool,
) -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    async with Scripted(answering(head, b"5\r\nfirst\r\nzz\r\nnot a chunk")) as server:
        response = await post(pool, server.url())
        received = []
        with pytest.raises(ProtocolError):
            async for piece in response.iter_any():
                received.append(piece)
        response.release()
        assert received == [b"first"]


async def test_a_body_larger_than_the_buffer_arrives_whole_and_the_connection_is_kept(
    pool: Pool,
) -> None:
    # 4 MiB: the connection stops reading while 256 KiB wait unread, and reads on once taken.
    body = bytes(range(256)) * (16 * 1024)
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    async with Scripted(answering(head + body)) as server:
        for _ in range(2):
            response = await post(pool, server.url())
            await asyncio.sleep(0.05)  # the body piles up unread meanwhile
            received = b"".join([piece async for piece in response.iter_any()])
            response.release()
            assert received == body
        assert server.accepted == 1


async def test_a_gzip_answer_is_decompressed_in_bounded_steps(pool: Pool) -> None:
    plain = b"a" * (1024 * 1024)
    packed = gzip.compress(plain)
    head = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
    async with Scripted(answering(head + packed)) as server:
        response = await post(pool, server.url())
        assert response.content_length is None  # the length on the wire is not the body's
        pieces = [piece async for piece in response.iter_any()]
        response.release()
        assert b"".join(pieces) == plain
        assert max(len(p) for p in pieces) <= 64 * 1024


async def test_an_unknown_compression_is_refused(pool: Pool) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nxx"
    async with Scripted(answering(raw)) as server:
        with pytest.raises(ProtocolError, match="'br' compression"):
            await post(pool, server.url())


async def test_an_answer_cut_short_is_disconnected(pool: Pool) -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnot all of it"
    async with Scripted(answering(raw, close=True)) as server:
        response = await post(pool, server.url())
        with pytest.raises(Disconnected):
            await response.read()
        response.release()


async def test_a_connection_closed_before_the_answer_is_disconnected(pool: Pool) -> None:
    async with Scripted(answering(close=True)) as server:
        with pytest.raises(Disconnected):
            await post(pool, server.url())


# -- failures -----------------------------------------------------------------------------------


async def test_a_refused_connection_is_a_connect_error(pool: Pool) -> None:
    with pytest.raises(ConnectError) as caught:
        await post(pool, f"http://127.0.0.1:{free_port()}/v1/chat")
    assert SECRET not in str(caught.value)


@contextlib.contextmanager
def never_accepting() -> Iterator[int]:
    """A port whose listener never accepts and whose queue of connections is full: the kernel
    drops a new connection's SYN, so connecting to it hangs (no timing involved)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    try:
        while True:  # a connection or two fit in the queue, then one waits in vain
            blocked = socket.socket()
            blocked.settimeout(0.5)
            try:
                blocked.connect(("127.0.0.1", port))
            except TimeoutError:
                blocked.close()
                break
            queued.append(blocked)
        yield port
    finally:
        for conn in queued:
            conn.close()
        listener.close()


async def test_a_connection_not_made_within_the_connect_timeout_is_a_connect_timeout(
    pool: Pool,
) -> None:
    with never_accepting() as port:
        with pytest.raises(ConnectTimeout, match=r"no connection within 0\.3 s"):
            await pool.request(
                "POST",
                f"http://127.0.0.1:{port}/v1/chat",
                {"Authorization": f"Bearer {SECRET}"},
                b"{}",
                connect_timeout=0.3,
                read_timeout=30,
            )
        assert not pool.opened


async def test_an_upstream_that_never_answers_times_out(pool: Pool) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    async with Scripted(silent) as server:
        with pytest.raises(Timeout) as caught:
            await post(pool, server.url(), read_timeout=0.2)
        assert isinstance(caught.value, TimeoutError)
        await until(lambda: server.closed == 1)  # the connection was given up


async def test_a_body_that_stalls_times_out(pool: Pool) -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await reader.read()

    async with Scripted(stalls) as server:
        response = await post(pool, server.url(), read_timeout=0.2)
        with pytest.raises(Timeout):
            await response.read()
        response.release()
        await until(lambda: server.closed == 1)


async def test_a_total_timeout_bounds_a_trickling_body(pool: Pool) -> None:
    async def trickles(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            await asyncio.sleep(0.02)

    async with Scripted(trickles) as server:
        response = await pool.request(
            "POST", server.url(), {}, b"", connect_timeout=5, read_timeout=5, total_timeout=0.3
        )
        with pytest.raises(Timeout, match="total"):
            await response.read()
        response.release()


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 two hundred OK\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"HTTP/1.1 200 OK\r\nContent Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok",
    ],
    ids=["status", "not-http", "header-name", "length-and-chunked"],
)
async def test_an_answer_that_is_not_http_is_a_protocol_error(pool: Pool, raw: bytes) -> None:
    async with Scripted(answering(raw)) as server:
        with pytest.raises(ProtocolError) as caught:
            await post(pool, server.url())
        assert SECRET not in str(caught.value)


async def endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nX-Filler: ")
    while not writer.is_closing():
        writer.write(b"f" * 4096)
        await writer.drain()
        await asyncio.sleep(0)


@pytest.mark.parametrize(
    "answer",
    [
        endless_header,
        # Whole before the client reads it: bounded as it is parsed.
        answering(b"HTTP/1.1 200 OK\r\n" + b"X-Filler: f\r\n" * 1000 + b"\r\n"),
    ],
    ids=["arriving", "whole"],
)
async def test_oversized_headers_are_refused(answer: Answer) -> None:
    pool = Pool(idle_timeout=30, max_head=8 * 1024)
    try:
        async with Scripted(answer) as server:
            with pytest.raises(ProtocolError, match="over 8192 bytes"):
                await post(pool, server.url())
    finally:
        await pool.aclose()


async def test_a_header_with_a_line_break_is_not_sent(pool: Pool) -> None:
    async with Scripted(answering(OK)) as server:
        with pytest.raises(ValueError, match="line break"):
            await pool.request(
                "POST",
                server.url(),
                {"X-Id": "a\r\nX-Evil: 1"},
                b"",
                connect_timeout=5,
                read_timeout=5,
            )
        assert server.accepted == 0


# -- TLS ----------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "puente-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_verifies_the_certificate_and_keeps_the_connection(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    trusted, default = Pool(idle_timeout=30, ssl_context=trusting), Pool(idle_timeout=30)
    try:
        async with Scripted(answering(OK), ssl_context=served) as server:
            assert await fetch(trusted, server.url()) == b'{"ok":true}'
            assert await fetch(trusted, server.url()) == b'{"ok":true}'
            assert server.accepted == 1
            # The system's roots do not know this certificate: nothing is sent.
            with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED") as caught:
                await fetch(default, server.url())
            assert SECRET not in str(caught.value)
            assert len(server.requests) == 2
    finally:
        await trusted.aclose()
        await default.aclose()


# -- through the gateway: the OpenAI-compatible provider on this client --------------------------

COMPLETION = (
    b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)
BY_MODEL = {
    b'"model":"good"': b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION),
    b'"model":"bad-status"': b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}",
    b'"model":"bad-header"': b"HTTP/1.1 200 OK\r\nBad\x01Name: x\r\nContent-Length: 2\r\n\r\n{}",
    b'"model":"huge-head"': b"HTTP/1.1 200 OK\r\n" + b"X-Filler: f\r\n" * 10_000 + b"\r\n",
}


class Gateway(NamedTuple):
    puente: InProcessPuente
    upstream: Scripted


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    """Puente with a model per answer in ``BY_MODEL``, all on one scripted upstream."""

    async def by_model(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = upstream.requests[-1]
        writer.write(next(raw for key, raw in BY_MODEL.items() if key in request))
        await writer.drain()

    async with Scripted(by_model) as upstream:
        models = [
            {
                "name": key.split(b'"')[3].decode(),
                "provider": "openai_compatible",
                "base_url": upstream.url("/v1"),
                "api_key": SECRET,
                "retries": 0,
            }
            for key in BY_MODEL
        ]
        with InProcessPuente({"models": models}, tmp_path) as puente:
            yield Gateway(puente, upstream)


async def chat(puente: InProcessPuente, model: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=puente.base_url, timeout=30) as client:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
        return await client.post("/chat/completions", json=body)


async def test_the_gateway_keeps_its_upstream_connection_alive(gateway: Gateway) -> None:
    for _ in range(3):
        response = await chat(gateway.puente, "good")
        assert response.status_code == 200
        assert response.json()["choices"][0]["message"]["content"] == "hi"
    assert gateway.upstream.accepted == 1
    assert f"Bearer {SECRET}".encode() in gateway.upstream.requests[0]


@pytest.mark.parametrize("model", ["bad-status", "bad-header", "huge-head"])
async def test_an_answer_that_is_not_http_is_the_gateways_502(gateway: Gateway, model: str) -> None:
    response = await chat(gateway.puente, model)
    assert response.status_code == 502
    error = error_envelope(response)
    assert error["code"] == "upstream_bad_response"
    assert f"Model '{model}' answered with broken HTTP" in error["message"]
    assert SECRET not in response.text
    assert SECRET not in gateway.puente.logs()


async def test_an_upstream_that_does_not_accept_in_time_is_the_gateways_504(
    tmp_path: Path,
) -> None:
    with never_accepting() as port:
        model = {
            "name": "unaccepting",
            "provider": "openai_compatible",
            "base_url": f"http://127.0.0.1:{port}/v1",
            "api_key": SECRET,
            "retries": 0,
            "timeouts": {"connect": 0.3},
        }
        with InProcessPuente({"models": [model]}, tmp_path) as puente:
            response = await chat(puente, "unaccepting")
            logs = puente.logs()
    assert response.status_code == 504
    error = error_envelope(response)
    assert error["code"] == "upstream_timeout"
    assert "Model 'unaccepting' did not answer within its timeout." in error["message"]
    assert SECRET not in response.text
    assert SECRET not in logs
