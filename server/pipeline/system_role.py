"""``system_role: fold``: system text moved into the user's turn, for models that refuse it.

Some chat templates reject the ``system`` role outright (Gemma 2's raises "System role not
supported", which vLLM returns as a 400). For a model configured with ``system_role: fold``,
every system (or ``developer``) message — a persona's or a client's — is removed and its text put
at the start of the next user message, separated by a blank line. System text with no user
message after it goes at the end of the last user message, or becomes a user message of its own
when there is none.

This runs on the request as it is finally shaped for one model, after personas are applied, so it
holds for every provider.
"""

from __future__ import annotations

from typing import Any

from server.pipeline.request import JSON, UpstreamRequest

SYSTEM_ROLES = frozenset({"system", "developer"})


def text_of(content: Any) -> str:
    """The text of a message's content, a string or a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and part.get("type") == "text" and "text" in part
        )
    return ""


def _with_text(message: JSON, text: str, *, before: bool) -> JSON:
    content = message.get("content")
    if isinstance(content, list):
        part = {"type": "text", "text": text}
        return {**message, "content": [part, *content] if before else [*content, part]}
    if not isinstance(content, str) or not content:
        return {**message, "content": text}
    joined = f"{text}\n\n{content}" if before else f"{content}\n\n{text}"
    return {**message, "content": joined}


def fold_system(messages: list[JSON]) -> list[JSON]:
    out: list[JSON] = []
    pending: list[str] = []
    for message in messages:
        if message.get("role") in SYSTEM_ROLES:
            text = text_of(message.get("content"))
            if text:
                pending.append(text)
            continue
        if pending and message.get("role") == "user":
            out.append(_with_text(message, "\n\n".join(pending), before=True))
            pending = []
            continue
        out.append(message)
    if pending:
        text = "\n\n".join(pending)
        last_user = next(
            (i for i in range(len(out) - 1, -1, -1) if out[i].get("role") == "user"), None
        )
        if last_user is None:
            out.append({"role": "user", "content": text})
        else:
            out[last_user] = _with_text(out[last_user], text, before=False)
    return out


def shape_for_model(request: UpstreamRequest, system_role: str) -> UpstreamRequest:
    """The request as it goes to a model with this ``system_role`` setting."""
    messages = request.body.get("messages")
    if (
        system_role == "fold"
        and isinstance(messages, list)
        and any(isinstance(m, dict) and m.get("role") in SYSTEM_ROLES for m in messages)
    ):
        return request.with_body({**request.body, "messages": fold_system(messages)})
    return request
