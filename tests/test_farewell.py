"""The farewell marker becomes the persona's exact farewell, whole or streamed in pieces."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from server.personas.farewell import FarewellDetector, replace_in_stream
from server.pipeline.request import StreamChunk
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.persona_setup import (
    FAREWELL,
    MARKER,
    SPACED_FAREWELL,
    SPACED_MARKER,
    persona_config,
)

USER: Any = [{"role": "user", "content": "¿Quién ganó el mundial de 1970?"}]

# -- the detector, piece by piece --------------------------------------------------------------


def _run(pieces: list[str], marker: str = MARKER) -> tuple[list[str], FarewellDetector]:
    detector = FarewellDetector(marker, FAREWELL)
    out = [detector.feed(piece) for piece in pieces]
    out.append(detector.flush())
    return out, detector


def test_marker_alone_becomes_the_farewell() -> None:
    out, detector = _run([MARKER])
    assert out == [FAREWELL, ""]
    assert detector.said


@pytest.mark.parametrize("cut", range(1, len(MARKER)))
def test_marker_split_anywhere_is_caught(cut: int) -> None:
    out, detector = _run([MARKER[:cut], MARKER[cut:]])
    assert out == ["", FAREWELL, ""]
    assert detector.said


def test_marker_in_many_pieces_with_decoration() -> None:
    out, _ = _run(["\n", "**", "[[", "FARE", "WELL", "]]", "**", " Adiós."])
    assert "".join(out) == FAREWELL
    assert out[5] == FAREWELL  # sent the moment the marker completed


def test_normal_text_is_sent_at_once() -> None:
    out, detector = _run(["Hola", " mundo", "."])
    assert out == ["Hola", " mundo", ".", ""]
    assert not detector.said


def test_only_a_possible_marker_start_is_held_back() -> None:
    detector = FarewellDetector(MARKER, FAREWELL)
    assert detector.feed("La suma es [[") == "La suma es "
    assert detector.feed("FA") == ""  # "[[FA" could still be the marker
    assert detector.feed("CTOR]]") == "[[FACTOR]]"


def test_leading_whitespace_waits_for_the_first_word_only() -> None:
    detector = FarewellDetector(MARKER, FAREWELL)
    assert detector.feed("\n\n") == ""
    assert detector.feed("Hola") == "\n\nHola"


def test_hold_back_is_bounded_by_the_marker_length() -> None:
    detector = FarewellDetector(MARKER, FAREWELL)
    blank = " " * (len(MARKER) + 1)
    assert detector.feed(blank) == blank


def test_mid_answer_marker_keeps_what_came_before_and_drops_the_rest() -> None:
    out, detector = _run(["La suma es 4. ", MARKER, " Pero además", " esto."])
    assert out == ["La suma es 4. ", FAREWELL, "", "", ""]
    assert detector.said


def test_flush_delivers_a_partial_marker_at_the_end() -> None:
    out, detector = _run(["Fin [[FARE"])
    assert out == ["Fin ", "[[FARE"]
    assert not detector.said


def _chunk(index: int, content: str | None, finish: str | None = None) -> StreamChunk:
    delta = {} if content is None else {"content": content}
    choice = {"index": index, "delta": delta, "finish_reason": finish}
    return StreamChunk(data={"id": "c", "object": "chat.completion.chunk", "choices": [choice]})


async def test_stream_keeps_choices_apart() -> None:
    async def upstream() -> AsyncIterator[StreamChunk]:
        for chunk in [
            _chunk(0, "[[FARE"),
            _chunk(1, "[[nota"),
            _chunk(0, "WELL]]"),
            _chunk(1, "]] bien"),
            _chunk(0, " resto", "length"),
            _chunk(1, None, "stop"),
        ]:
            yield chunk

    said: list[bool] = []
    out = [
        c.data
        async for c in replace_in_stream(upstream(), MARKER, FAREWELL, lambda: said.append(True))
    ]
    texts: dict[int, str] = {0: "", 1: ""}
    for data in out:
        choice = data["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content") or ""
    assert texts == {0: FAREWELL, 1: "[[nota]] bien"}
    assert said == [True]
    finishes = [c["choices"][0]["finish_reason"] for c in out if c["choices"][0]["finish_reason"]]
    assert finishes == ["stop", "stop"]  # the farewell ends choice 0, whatever the model did next


# -- through Puente, with the openai SDK -------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("farewell")
    with InProcessPuente(persona_config(fake_upstream), workdir) as proc:
        yield proc


@pytest.fixture
def sdk(server: InProcessPuente, fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0) as client:
        yield client


def _ask(sdk: openai.OpenAI, reply: str, model: str = "matematicas", **fake: Any) -> Any:
    return sdk.chat.completions.create(
        model=model, messages=USER, extra_body={"fake": {"reply": reply, **fake}}
    )


def _stream(sdk: openai.OpenAI, reply: str, model: str = "matematicas", **fake: Any) -> list[Any]:
    stream = sdk.chat.completions.create(
        model=model, messages=USER, stream=True, extra_body={"fake": {"reply": reply, **fake}}
    )
    return list(stream)


def _text(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def _farewells(server: InProcessPuente, persona: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(
        rf'^puente_persona_farewells_total\{{persona="{persona}"\}} (\S+)$', text, re.M
    )
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize("reply", [MARKER, f"**{MARKER}**", f"  {MARKER} No sé de fútbol."])
def test_non_streaming_farewell_is_exact(sdk: openai.OpenAI, reply: str) -> None:
    answer = _ask(sdk, reply)
    assert answer.model == "matematicas"
    assert answer.choices[0].message.content == FAREWELL
    assert answer.choices[0].finish_reason == "stop"


def test_streaming_farewell_is_exact(sdk: openai.OpenAI) -> None:
    chunks = _stream(sdk, f"{MARKER} Lo que siga no se envía.")
    assert _text(chunks) == FAREWELL
    assert all("[[" not in (c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert {c.model for c in chunks} == {"matematicas"}


def test_marker_split_across_chunks(sdk: openai.OpenAI, fake: FakeOpenAI) -> None:
    # The fake streams word by word, so this marker arrives as five chunks, 20 ms apart.
    chunks = _stream(sdk, f"{SPACED_MARKER} Y algo más.", model="espaciado", delay=0.02)
    assert _text(chunks) == SPACED_FAREWELL
    assert fake.state.received[0]["messages"][0]["content"].endswith(
        f"reply with exactly {SPACED_MARKER} and nothing else."
    )
    answer = _ask(sdk, SPACED_MARKER, model="espaciado")
    assert answer.choices[0].message.content == SPACED_FAREWELL


def test_mid_answer_marker(sdk: openai.OpenAI) -> None:
    reply = f"La suma es 4. {MARKER} y luego más texto."
    expected = f"La suma es 4. {FAREWELL}"
    assert _text(_stream(sdk, reply)) == expected
    assert _ask(sdk, reply).choices[0].message.content == expected


def test_normal_answer_streams_unchanged(sdk: openai.OpenAI) -> None:
    chunks = _stream(sdk, "El teorema de Pitágoras: a² + b² = c². [[ojo]]")
    assert _text(chunks) == "El teorema de Pitágoras: a² + b² = c². [[ojo]]"
    assert chunks[-1].choices[0].finish_reason == "stop"


@pytest.mark.parametrize("first", ["Hola", "[[nota]]"])
def test_first_chunk_not_held_for_the_next_one(sdk: openai.OpenAI, first: str) -> None:
    # The fake sends the role chunk and the first word, then fails instead of sending a second
    # word. A gateway that held the first word back until the next one arrived would never send
    # it: the client gets it only if it went out as soon as it came in. No clock involved.
    stream = sdk.chat.completions.create(
        model="matematicas",
        messages=USER,
        stream=True,
        extra_body={"fake": {"reply": f"{first} mundo cruel", "fail_after": 2}},
    )
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.extend(c.delta.content for c in chunk.choices if c.delta.content)
    assert received == [first]


def test_marker_from_a_plain_model_is_not_touched(sdk: openai.OpenAI) -> None:
    assert _ask(sdk, MARKER, model="fake-model").choices[0].message.content == MARKER


def test_farewells_are_counted_per_persona(server: InProcessPuente, sdk: openai.OpenAI) -> None:
    before = _farewells(server, "matematicas")
    _ask(sdk, MARKER)
    _stream(sdk, MARKER)
    _ask(sdk, "Cuatro.")
    assert _farewells(server, "matematicas") == before + 2
