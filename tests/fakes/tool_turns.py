"""The fake OpenAI upstream as an agent's model: a tool call first, then text.

Agent loops (the Agents SDK, Codex CLI) send the same request shape every turn, so a per-request
directive cannot say "call a tool this time only". This fake decides from the conversation: while
the last message is not a tool result it calls the first tool offered (with the arguments set in
``arguments`` for that tool's name), and once a tool result is in it answers with text that
quotes the result, so a test can see the result went round.
"""

from __future__ import annotations

from typing import Any

import orjson

from tests.fakes.openai_upstream import FakeOpenAI, _words


class ToolThenText(FakeOpenAI):
    name = "tool-then-text"

    def __init__(self, arguments: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.arguments = arguments or {}

    @staticmethod
    def _tool_result(body: dict[str, Any]) -> str | None:
        messages = body.get("messages") or []
        if messages and messages[-1].get("role") == "tool":
            content = messages[-1].get("content")
            return content if isinstance(content, str) else str(content)
        return None

    def _tool_calls(self, body: dict[str, Any], fake: dict[str, Any]) -> list[dict[str, Any]]:
        if not body.get("tools") or self._tool_result(body) is not None:
            return []
        calls = super()._tool_calls(body, {**fake, "tool_calls": 1})
        for call in calls:
            wanted = self.arguments.get(call["function"]["name"])
            if wanted is not None:
                call["function"]["arguments"] = orjson.dumps(wanted).decode()
        return calls

    def _plan(self, body: dict[str, Any], fake: dict[str, Any]) -> tuple[list[str], str]:
        result = self._tool_result(body)
        if result is None:
            return super()._plan(body, fake)
        return _words(f"The tool said: {result.strip()}"), "stop"
