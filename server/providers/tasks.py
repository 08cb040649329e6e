"""Which requests a model entry answers: chat models do not embed, embedding models do not chat.

``ModelConfig.embeds`` says which one an entry is (its ``task``, a launched pooling engine, or an
upstream name with "embed" in it). A request of the other kind gets a 400 naming the endpoint to
use, rather than whatever the upstream answers (a launched vLLM answers a bare 404 "Not Found").
An embeddings request to an entry that is not known to be a chat model (a ``vendor/*`` wildcard,
a cloud model) is passed on: the upstream knows best.
"""

from __future__ import annotations

from server.config import ModelConfig
from server.errors import InvalidRequest
from server.pipeline.request import Operation


def check_task(config: ModelConfig, operation: Operation) -> None:
    if operation == "embeddings":
        known_chat = config.task == "chat" or (config.launch is not None and not config.embeds)
        if known_chat:
            raise InvalidRequest(
                f"Model '{config.name}' is a chat model: it does not serve /v1/embeddings. "
                "Ask an embedding model (GET /v1/models lists what each model serves).",
                param="model",
                code="model_not_supported",
            )
    elif config.embeds:
        endpoint = "/v1/chat/completions" if operation == "chat" else "/v1/completions"
        raise InvalidRequest(
            f"Model '{config.name}' is an embedding model: it serves /v1/embeddings, "
            f"not {endpoint}.",
            param="model",
            code="model_not_supported",
        )
