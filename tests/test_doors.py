"""A front door's POST under Puente's own HTTP protocol (server/lifecycle/http_guard.py) is handed
straight to the app's ``Doors`` (server/api/fast_lane.py), which answers with raw ASGI messages:
every answer still carries one ``x-request-id``, bodies are still limited (413, 415) whether
their length is declared or not, ``Expect: 100-continue``, keep-alive and pipelining still work,
and a client that leaves is seen through the protocol's disconnect hook, without a task."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse as StarlettesJSON

from server.api import front_door
from server.api.envelopes import over_capacity
from server.api.fast_lane import LaneApp
from server.api.front_door import until_disconnect
from server.api.wire import JSONResponse, error_response, json_bytes_response
from server.config import HttpLimits
from server.errors import RateLimited
from server.lifecycle.http_guard import DISCONNECT, guarded_httptools
from server.pipeline.pipeline import ClientDisconnected
from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.support import free_port
from tests.test_disconnect import _send_and_leave, _wait_closed

CHAT = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}
HEX_ID = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def puente(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("doors")
    with InProcessPuente(gateway_config(fake_upstream), workdir) as server:  # 200,000-byte bodies
        yield server


def _read_answers(sock: socket.socket, count: int) -> list[tuple[bytes, bytes]]:
    """``count`` whole answers (head, body) read from ``sock``, each sized by content-length."""
    data = b""
    answers = []
    while len(answers) < count:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if len(rest) >= length:
                answers.append((head, rest[:length]))
                data = rest[length:]
                continue
        piece = sock.recv(65536)
        assert piece, data
        data += piece
    return answers


def _post(path: bytes, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
        b"Content-Length: %d\r\n\r\n%s" % (path, extra, len(body), body)
    )


def test_a_doors_post_is_taken_by_the_protocol_and_the_rest_by_the_app(
    puente: InProcessPuente, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered: list[str] = []
    dispatch = LaneApp.__call__

    async def counting(self: LaneApp, scope: Any, receive: Any, send: Any) -> None:
        entered.append(scope["path"])
        await dispatch(self, scope, receive, send)

    monkeypatch.setattr(LaneApp, "__call__", counting)
    with httpx.Client(base_url=puente.base_url) as client:
        direct = client.post("/chat/completions", json=CHAT)
        assert direct.status_code == 200
        # A query string: not a door's path as the protocol sees it, so the usual way, same answer.
        usual = client.post("/chat/completions", params={"x": "1"}, json=CHAT)
        assert usual.status_code == 200
        assert usual.json()["choices"] == direct.json()["choices"]
        assert client.get("/models").status_code == 200
    assert entered == ["/v1/chat/completions", "/v1/models"]


def test_every_answer_of_a_door_carries_one_request_id(puente: InProcessPuente) -> None:
    def chunks() -> Iterator[bytes]:  # no content-length: the limit is counted while reading
        for _ in range(30):
            yield b" " * 10_000

    with httpx.Client(base_url=puente.base_url) as client:
        answers = {
            "whole": client.post(
                "/chat/completions", json=CHAT, headers={"x-request-id": "mine-1"}
            ),
            "bad json": client.post(
                "/chat/completions", content=b"{", headers={"x-request-id": "no way"}
            ),
            "no model": client.post("/chat/completions", json={**CHAT, "model": "nope"}),
            "declared too big": client.post("/chat/completions", content=b" " * 300_000),
            "chunked too big": client.post("/chat/completions", content=chunks()),
            "compressed": client.post(
                "/chat/completions", content=b"x", headers={"content-encoding": "gzip"}
            ),
            "anthropic error": client.post(
                "/messages", json={"model": "nope", "max_tokens": 5, "messages": CHAT["messages"]}
            ),
        }
        with client.stream(
            "POST",
            "/chat/completions",
            json={**CHAT, "stream": True},
            headers={"x-request-id": "s-1"},
        ) as stream:
            stream.read()
            answers["stream"] = stream
    statuses = {name: answer.status_code for name, answer in answers.items()}
    assert statuses == {
        "whole": 200,
        "bad json": 400,
        "no model": 404,
        "declared too big": 413,
        "chunked too big": 413,
        "compressed": 415,
        "anthropic error": 404,
        "stream": 200,
    }
    ids = {name: answer.headers.get_list("x-request-id") for name, answer in answers.items()}
    assert ids["whole"] == ["mine-1"] and ids["stream"] == ["s-1"]
    for name, found in ids.items():
        assert len(found) == 1, name
        if name not in ("whole", "stream"):
            assert HEX_ID.match(found[0]), (name, found)  # made here ("no way" is not a token)
    for name in ("bad json", "no model", "declared too big", "chunked too big", "compressed"):
        assert answers[name].json()["error"]["message"], name  # OpenAI's envelope
    assert answers["chunked too big"].json()["error"]["code"] == "request_too_large"
    assert answers["anthropic error"].json()["type"] == "error"  # Anthropic's envelope
    assert answers["anthropic error"].headers["request-id"] == ids["anthropic error"][0]


def test_expect_100_continue_then_the_answer(puente: InProcessPuente) -> None:
    body = orjson.dumps(CHAT)
    with socket.create_connection(("127.0.0.1", puente.port), timeout=15) as sock:
        head = _post(b"/v1/chat/completions", b"", b"Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)
        )
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            piece = sock.recv(1)
            assert piece, interim
            interim += piece
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"  # asked for the body: send it
        sock.sendall(body)
        [(answer_head, answer)] = _read_answers(sock, 1)
    assert answer_head.startswith(b"HTTP/1.1 200 OK")
    assert orjson.loads(answer)["choices"][0]["message"]["role"] == "assistant"


def test_pipelined_posts_on_one_connection_are_answered_in_order(
    puente: InProcessPuente,
) -> None:
    body = orjson.dumps(CHAT)
    requests = b"".join(
        _post(b"/v1/chat/completions", body, b"X-Request-Id: p%d\r\n" % i) for i in range(3)
    )
    with socket.create_connection(("127.0.0.1", puente.port), timeout=15) as sock:
        sock.sendall(requests)
        answers = _read_answers(sock, 3)
        sock.sendall(_post(b"/v1/chat/completions", body, b"X-Request-Id: p3\r\n"))  # kept alive
        answers += _read_answers(sock, 1)
    ids = [re.search(rb"x-request-id: (\S+)", head).group(1) for head, _ in answers]  # type: ignore[union-attr]
    assert ids == [b"p0", b"p1", b"p2", b"p3"]
    assert all(head.startswith(b"HTTP/1.1 200 OK") for head, _ in answers)


def test_the_protocol_calls_back_when_the_client_leaves() -> None:
    """The hook itself, with an app of its own: registered, told once, then refused."""
    told = threading.Event()
    afterwards: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        hook = scope["extensions"][DISCONNECT]
        gone = asyncio.Event()
        assert hook.watch(gone.set)
        await gone.wait()
        told.set()
        afterwards.append(hook.watch(lambda: None))  # the client is gone: no more watching

    limits = HttpLimits()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=free_port(),
        lifespan="off",
        log_config=None,
        http=guarded_httptools(limits, over_capacity),
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            threading.Event().wait(0.02)
        with socket.create_connection(("127.0.0.1", config.port), timeout=15) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert told.wait(15)
    finally:
        server.should_exit = True
        thread.join(15)
    assert afterwards == [False]


class _Hook:
    def __init__(self, left: bool) -> None:
        self.left = left
        self.watching: list[Any] = []

    def watch(self, callback: Any) -> bool:
        if self.left:
            return False
        self.watching.append(callback)
        return True

    def unwatch(self, callback: Any) -> None:
        self.watching.remove(callback)


def _request(extensions: dict[str, Any] | None, receive: Any = None) -> Request:
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": []}
    if extensions is not None:
        scope["extensions"] = extensions
    return Request(scope, receive)


async def test_until_disconnect_through_the_hook() -> None:
    hook = _Hook(left=False)
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        await asyncio.sleep(30)
        return "finished"

    async def leave() -> None:
        await started.wait()
        hook.watching[0]()  # what the protocol does when the connection is lost

    leaving = asyncio.ensure_future(leave())
    with pytest.raises(ClientDisconnected):
        await until_disconnect(_request({DISCONNECT: hook}), work())
    await leaving
    assert hook.watching == []  # unwatched on the way out

    async def quick() -> str:
        return "done"

    assert await until_disconnect(_request({DISCONNECT: hook}), quick()) == "done"
    assert hook.watching == []
    # Gone before the work began: the work is closed unstarted (no "never awaited" warning).
    with pytest.raises(ClientDisconnected):
        await until_disconnect(_request({DISCONNECT: _Hook(left=True)}), quick())


async def test_until_disconnect_without_the_hook_watches_receive() -> None:
    """Under another ASGI server: a watcher task reads ``http.disconnect``."""
    leave = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    async def work() -> str:
        leave.set()
        await asyncio.sleep(30)
        return "finished"

    with pytest.raises(ClientDisconnected):
        await until_disconnect(_request(None, receive), work())


def test_under_another_asgi_server_a_client_leaving_still_closes_the_upstream(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """uvicorn's own protocol has no disconnect hook: the watcher tasks on ``receive`` do it."""
    with InProcessPuente(gateway_config(fake_upstream), tmp_path, own_protocol=False) as puente:
        for stream, delay in ((False, 30), (True, 0.1)):
            fake_upstream.reset()
            body = {
                "model": "fake-model",
                "stream": stream,
                "messages": [{"role": "user", "content": "count " * 200}],
                "fake": {"delay": delay},  # far longer than the client stays
            }
            _send_and_leave(puente, body, wait=0.3)
            _wait_closed(fake_upstream)
            assert fake_upstream.state.closed[-1].request_id.startswith("leaver-")
        with httpx.Client(base_url=puente.base_url) as client:  # and answers carry their id
            answer = client.post("/chat/completions", json=CHAT, headers={"x-request-id": "o-1"})
        assert answer.headers.get_list("x-request-id") == ["o-1"]


def test_a_header_value_with_a_line_break_never_reaches_the_wire(
    puente: InProcessPuente, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever a door puts in its answer's headers (values that came from an upstream or a
    client included), the HTTP layer refuses a CR or LF in them rather than write it: the
    doors' prebuilt header lists still pass uvicorn's check of every header."""
    made = front_door._headers

    def hostile(headers: dict[str, str], parsed: Any) -> dict[str, str]:
        return {**made(headers, parsed), "x-upstream": "ok\r\nset-cookie: pwned=1"}

    monkeypatch.setattr(front_door, "_headers", hostile)
    body = orjson.dumps(CHAT)
    with socket.create_connection(("127.0.0.1", puente.port), timeout=15) as sock:
        sock.sendall(_post(b"/v1/chat/completions", body))
        received = b""
        while piece := sock.recv(65536):
            received += piece
    # uvicorn refuses the head and closes the connection: no answer rather than a forged one.
    assert b"pwned" not in received
    assert received == b""


def test_with_cors_on_a_browsers_post_takes_the_whole_stack(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    origin = "https://app.example.com"
    config = gateway_config(fake_upstream)
    config["server"] = {**config["server"], "cors": {"allow_origins": [origin]}}
    puente = InProcessPuente(config, tmp_path)
    with puente, httpx.Client(base_url=puente.base_url) as client:
        browser = client.post("/chat/completions", json=CHAT, headers={"Origin": origin})
        plain = client.post("/chat/completions", json=CHAT)
    assert browser.status_code == plain.status_code == 200
    assert browser.headers["access-control-allow-origin"] == origin
    assert "x-request-id" in browser.headers["access-control-expose-headers"]
    assert len(browser.headers.get_list("x-request-id")) == 1
    assert "access-control-allow-origin" not in plain.headers


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"X-RateLimit-Limit-Requests": "10", "x-puente-model": "m"},
        {"Content-Type": "application/problem+json", "retry-after": "1"},
        {"content-length": "3"},
    ],
)
def test_json_answers_have_the_headers_starlette_would_give_them(
    headers: dict[str, str] | None,
) -> None:
    content = {"a": [1, "é"]}
    ours = JSONResponse(content, status_code=201, headers=headers)
    theirs = StarlettesJSON(content, status_code=201, headers=headers)
    assert ours.body == theirs.body  # both compact UTF-8
    assert ours.raw_headers == theirs.raw_headers  # the same headers, in the same order
    error = RateLimited("slow down", retry_after=2)
    refused = error_response(error)
    assert refused.status_code == 429
    assert dict(refused.raw_headers)[b"retry-after"] == b"2"
    assert json_bytes_response(b"{}", 200).raw_headers == [
        (b"content-length", b"2"),
        (b"content-type", b"application/json"),
    ]
