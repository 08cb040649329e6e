"""RAG frameworks on Puente's embeddings and legacy completions, as the course uses them:
LangChain's ``OpenAIEmbeddings`` (with tiktoken off: a local model has another tokenizer) and its
``OpenAI`` text-completion LLM, and LlamaIndex's default embedding class, against the fake
upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx2
import langchain_openai
import pytest
from llama_index.embeddings.openai import OpenAIEmbedding

from tests.fakes.openai_upstream import FakeOpenAI
from tests.fakes.vectors import vector
from tests.inprocess import InProcessPuente

PASSAGES = ["El Tahuantinsuyo tenía cuatro suyos.", "The Inca capital was Cusco."]


# LangChain builds HTTP clients it never closes; these are handed to it and closed here.
@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client() as client:
        yield client


@pytest.fixture
async def ahttp() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def embedder(
    puente: InProcessPuente, model: str = "fake-embed", **clients: object
) -> langchain_openai.OpenAIEmbeddings:
    return langchain_openai.OpenAIEmbeddings(
        model=model,
        base_url=puente.base_url,
        api_key="unused",
        check_embedding_ctx_length=False,
        tiktoken_enabled=False,
        max_retries=0,
        **clients,
    )


def test_embed_documents_and_query(
    embed_puente: InProcessPuente, fake: FakeOpenAI, http: httpx2.Client
) -> None:
    client = embedder(embed_puente, http_client=http)
    documents = client.embed_documents(PASSAGES)
    assert [pytest.approx(v) for v in documents] == [vector(p) for p in PASSAGES]
    query = client.embed_query("¿Cuál era la capital inca?")
    assert query == pytest.approx(vector("¿Cuál era la capital inca?"))
    # Text went upstream, not tiktoken ids.
    assert fake.state.received[0]["input"] == PASSAGES


async def test_async_embed_through_gemini(
    embed_puente: InProcessPuente, gemini_fake: object, ahttp: httpx2.AsyncClient
) -> None:
    client = embedder(embed_puente, "gemini-embedding", http_async_client=ahttp)
    documents = await client.aembed_documents(PASSAGES)
    assert documents == [pytest.approx(vector(p)) for p in PASSAGES]


def test_text_completion_llm(
    embed_puente: InProcessPuente, fake: FakeOpenAI, http: httpx2.Client
) -> None:
    llm = langchain_openai.OpenAI(
        model="fake-model",
        base_url=embed_puente.base_url,
        api_key="unused",
        max_tokens=5,
        http_client=http,
    )
    assert llm.invoke("Cusco fue") == " and then the story of"
    assert "".join(llm.stream("Cusco fue")) == " and then the story of"
    assert fake.state.received[-1]["prompt"] in ("Cusco fue", ["Cusco fue"])


def test_llamaindex_default_embedding_class(
    embed_puente: InProcessPuente, fake: FakeOpenAI
) -> None:
    embedding = OpenAIEmbedding(
        model_name="fake-embed", api_base=embed_puente.base_url, api_key="unused", max_retries=0
    )
    documents = embedding.get_text_embedding_batch(PASSAGES)
    assert [pytest.approx(v) for v in documents] == [vector(p) for p in PASSAGES]
    # Sync only: its async path opens a client per call that it never closes (a ResourceWarning
    # that is LlamaIndex's, not Puente's).
    assert embedding.get_query_embedding("Cusco") == pytest.approx(vector("Cusco"))
