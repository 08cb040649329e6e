"""Retrieval-augmented generation on the local engines, end to end through Puente: Spanish and
English passages on Peruvian history are embedded by the local embedding model, the passage
nearest to each question is retrieved, and the local chat model answers with it.

The machine runs one vLLM engine at a time: the embedding engine is stopped before the chat
engine (the session's, tests/engine_support.py) is asked. SmolLM2's answers are not judged on
content (notes/local-engine.md); retrieval is, exactly.
"""

from __future__ import annotations

import math
from pathlib import Path

import openai
import pytest

from tests.embedding_engine import EMBEDDING_MODEL, embedding_puente
from tests.engine_support import MODEL, LocalEngine

pytestmark = pytest.mark.engine

PASSAGES = [
    "Machu Picchu is a 15th-century Inca citadel built for the emperor Pachacuti in the Andes.",
    "The Battle of Ayacucho in December 1824 ended Spanish rule in Peru and South America.",
    "The Nazca Lines are huge geoglyphs drawn in the desert of southern Peru long ago.",
    "Túpac Amaru II encabezó en 1780 la mayor rebelión indígena contra el dominio español.",
    "José de San Martín proclamó la independencia del Perú en Lima el 28 de julio de 1821.",
    "La ciudad de Caral, en el valle de Supe, es la más antigua de América: unos 5000 años.",
]
QUESTIONS = {
    "Who built Machu Picchu?": 0,
    "Which battle ended Spanish rule in Peru?": 1,
    "What are the Nazca Lines?": 2,
    "¿Qué rebelión encabezó Túpac Amaru II?": 3,
    "¿Quién proclamó la independencia del Perú en 1821?": 4,
}


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_passages_retrieved_through_puente_answer_a_question_on_the_chat_model(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with (
        embedding_puente(tmp_path) as puente,
        openai.OpenAI(base_url=puente.base_url, api_key="x", max_retries=0) as sdk,
    ):
        documents = sdk.embeddings.create(model=EMBEDDING_MODEL, input=PASSAGES)
        asked = sdk.embeddings.create(model=EMBEDDING_MODEL, input=list(QUESTIONS)).data
    stored = [d.embedding for d in documents.data]
    retrieved = {
        question: max(range(len(PASSAGES)), key=lambda i: cosine(vector.embedding, stored[i]))
        for question, vector in zip(QUESTIONS, asked, strict=True)
    }
    assert retrieved == QUESTIONS

    # The embedding engine is stopped: now the chat engine.
    chat: LocalEngine = request.getfixturevalue("local_engine")
    question = "Which battle ended Spanish rule in Peru?"
    passage = PASSAGES[retrieved[question]]
    with openai.OpenAI(base_url=chat.puente.base_url, api_key="x", max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model=MODEL,
            messages=[
                {"role": "system", "content": f"Answer from this passage only: {passage}"},
                {"role": "user", "content": question},
            ],
            max_tokens=24,
            temperature=0,
        )
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.prompt_tokens > len(passage.split())
