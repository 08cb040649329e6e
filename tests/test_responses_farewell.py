"""A persona's farewell reaches Responses API clients exactly as chat clients get it: the model's
marker becomes the persona's farewell in the Response, whole and streamed (deltas included)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente
from tests.persona_setup import FAREWELL, MARKER, MATH_SYSTEM, persona_config


@pytest.fixture(scope="module")
def personas(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    config = {"auth": "none", **persona_config(fake_upstream)}
    with InProcessPuente(config, tmp_path_factory.mktemp("responses-personas")) as proc:
        yield proc


def test_a_personas_farewell_is_said_whole_and_streamed(
    personas: InProcessPuente, fake: FakeOpenAI
) -> None:
    with openai.OpenAI(base_url=personas.base_url, api_key="unused", max_retries=0) as client:
        marker = {"fake": {"reply": f"{MARKER} Adiós."}}
        whole = client.responses.create(model="matematicas", input="¿Fútbol?", extra_body=marker)
        with client.responses.stream(
            model="matematicas", input="¿Fútbol?", extra_body=marker
        ) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            streamed = stream.get_final_response()
    assert whole.output_text == FAREWELL
    assert streamed.output_text == "".join(deltas) == FAREWELL
    assert fake.state.received[-1]["messages"][0]["content"].startswith(MATH_SYSTEM)
