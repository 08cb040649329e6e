"""A faithful fake of the Gemini API's ``generateContent`` on 127.0.0.1.

Wire format as documented at https://ai.google.dev/api/generate-content and checked against the
``google-genai`` SDK's own types (whose models forbid unknown fields): every answer and stream
piece is validated with ``types.GenerateContentResponse`` before it is sent.

- ``POST /v1beta/models/{model}:batchEmbedContents`` (``requests``: at most 100, each naming
  ``models/{model}``; answers ``{"embeddings": [{"values": [...]}]}``, no token counts).
- ``POST /v1/models/{model}:generateContent`` (the SDK's default version; ``/v1beta/…`` too) and
  ``:streamGenerateContent?alt=sse`` (``data: {...}`` frames, the last one with ``finishReason``
  and the final ``usageMetadata``).
- Auth: ``x-goog-api-key`` (or ``?key=``). A wrong key answers as Gemini does: 400
  ``INVALID_ARGUMENT`` with an ``ErrorInfo`` detail whose reason is ``API_KEY_INVALID``.
- Errors: ``{"error": {"code", "message", "status", "details"}}``; 429 carries a ``RetryInfo``
  detail with ``retryDelay``; inside a stream the same object arrives as a ``data:`` frame.
- Field names are read as proto3 JSON does (``mime_type`` = ``mimeType``) and recorded in
  camelCase. Requests are then checked as the API does: unknown fields ("Invalid JSON payload
  received. Unknown name …"), turns alternating between user and model, as many
  ``functionResponse`` parts as the previous turn had ``functionCall`` parts (same names), and on
  ``gemini-3*`` models a ``thoughtSignature`` on each model turn's first function call.

Behaviour per upstream model (``program``): ``status`` (+ ``retry_delay``), ``hang``,
``error_after`` (stream pieces before an error frame), ``tool_calls``, ``reply``, ``delay``,
``finish_reason``, ``blocked`` (the prompt is refused: no candidates); and, as a broken vendor
would: ``usage`` (merged into ``usageMetadata`` as given, unvalidated), ``retry_after`` (a raw
``Retry-After`` header on a programmed error), ``broken`` (sent as is, unvalidated, in place of
the whole answer, or in a stream as the piece after the first ``broken_after``, default 1; JSON
unless given as bytes) and ``end_after`` (a stream that ends cleanly after that many pieces).
"""

from __future__ import annotations

import base64
import itertools
from typing import Any

import orjson
from aiohttp import web
from google.genai import types

from tests.fakes.vectors import vector
from tests.fakes.vendor_server import VendorServer, sample_for, words

TOP_LEVEL = {
    "contents",
    "systemInstruction",
    "generationConfig",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
    "labels",
}
GENERATION = {
    "temperature",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "responseLogprobs",
    "logprobs",
    "thinkingConfig",
    "responseModalities",
}
PART_FIELDS = {
    "text",
    "inlineData",
    "fileData",
    "functionCall",
    "functionResponse",
    "thoughtSignature",
    "thought",
}
STATUSES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
SKIP = b"skip_thought_signature_validator"
# batchEmbedContents: what each request may hold, and how many requests one call may carry.
EMBED_FIELDS = {"model", "content", "taskType", "title", "outputDimensionality"}
EMBED_BATCH = 100
_ids = itertools.count(1)


class Invalid(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def error_body(code: int, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {
        "code": code,
        "message": message,
        "status": STATUSES.get(code, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_response(code: int, message: str, details: list[Any] | None = None) -> web.Response:
    return web.json_response(error_body(code, message, details), status=code)


# Values that are the caller's own JSON (schemas, arguments, results): their keys are kept as is.
OPAQUE = {
    "args",
    "response",
    "parametersJsonSchema",
    "responseJsonSchema",
    "responseSchema",
    "parameters",
    "labels",
}


def proto_json(node: Any) -> Any:
    """Field names as the API's proto3 JSON parser reads them: ``mime_type`` and ``mimeType``
    are the same field (the SDK sends some of each), so both are recorded as ``mimeType``."""
    if isinstance(node, list):
        return [proto_json(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        head, *rest = key.split("_")
        name = head + "".join(word.title() for word in rest)
        out[name] = value if name in OPAQUE else proto_json(value)
    return out


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else orjson.dumps(value)


def _text(parts: list[dict[str, Any]]) -> str:
    return " ".join(p["text"] for p in parts if "text" in p and not p.get("thought"))


class FakeGemini(VendorServer):
    name = "gemini"

    def vendor_routes(self, app: web.Application) -> None:
        # The SDK calls v1 by default; v1beta is where preview features live. Both answer.
        app.router.add_post("/v1/models/{spec}", self._generate)
        app.router.add_post("/v1beta/models/{spec}", self._generate)

    # -- checks the API makes ------------------------------------------------------------------

    def _validate(self, body: dict[str, Any], model: str) -> None:
        for key in body:
            if key not in TOP_LEVEL:
                raise Invalid(
                    f'Invalid JSON payload received. Unknown name "{key}": Cannot find field.'
                )
        for key in body.get("generationConfig") or {}:
            if key not in GENERATION:
                raise Invalid(
                    f'Invalid JSON payload received. Unknown name "{key}" at '
                    "'generation_config': Cannot find field."
                )
        contents = body.get("contents") or []
        if not contents:
            raise Invalid("* GenerateContentRequest.contents: contents is not specified")
        calls: list[str] = []
        for i, content in enumerate(contents):
            role = content.get("role")
            if role not in ("user", "model"):
                raise Invalid(f"Please use a valid role: user, model. (contents[{i}])")
            if i and contents[i - 1].get("role") == role:
                raise Invalid(
                    "Please ensure that multiturn requests alternate between user and model."
                )
            parts = content.get("parts") or []
            if not parts:
                raise Invalid(f"contents[{i}].parts: must not be empty")
            for part in parts:
                unknown = set(part) - PART_FIELDS
                if unknown:
                    raise Invalid(f'Invalid JSON payload received. Unknown name "{unknown.pop()}"')
                if "inlineData" in part:
                    base64.b64decode(part["inlineData"]["data"], validate=True)
            responses = [p["functionResponse"]["name"] for p in parts if "functionResponse" in p]
            if calls and sorted(responses) != sorted(calls):
                raise Invalid(
                    "Please ensure that the number of function response parts is equal "
                    "to the number of function call parts of the function call turn."
                )
            if responses and not calls:
                raise Invalid(
                    "Please ensure that function response turn comes immediately after "
                    "a function call turn."
                )
            calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
            first_call = next((p for p in parts if "functionCall" in p), None)
            if (
                model.startswith("gemini-3")
                and first_call
                and not first_call.get("thoughtSignature")
            ):
                raise Invalid(
                    f"Function call is missing a thought_signature in functionCall parts. "
                    f"This is required for tools to work correctly. (contents[{i}])"
                )

    # -- answering -----------------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["spec"].partition(":")
        try:
            body = proto_json(orjson.loads(await request.read()))
        except orjson.JSONDecodeError:
            return error_response(400, "Invalid JSON payload received.")
        await self.record(request, body)
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if key is None:
            return error_response(
                403,
                "Method doesn't allow unregistered callers (callers "
                "without established identity). Please use API Key or "
                "other form of API consumer identity to call this API.",
            )
        if key != self.api_key:
            return error_response(
                400,
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        if method == "batchEmbedContents":
            return self._embed(body, model)
        if method not in ("generateContent", "streamGenerateContent"):
            return error_response(404, f"Method {method} not found.")
        plan = self.behaviour(model)
        if plan.get("hang") and await self.idle(request, float(plan["hang"])):
            return web.Response(status=499)
        if plan.get("status"):
            return self._programmed_error(plan)
        try:
            self._validate(body, model)
        except Invalid as exc:
            return error_response(400, exc.message)
        answer = self._answer(body, model, plan)
        if plan.get("usage"):
            answer["usageMetadata"] = {**answer["usageMetadata"], **plan["usage"]}
        if method == "streamGenerateContent":
            if request.query.get("alt") != "sse":
                return error_response(400, "The fake streams only with alt=sse.")
            return await self._stream(request, answer, plan)
        if "broken" in plan:
            return web.Response(body=_raw(plan["broken"]), content_type="application/json")
        return web.json_response(answer)

    def _embed(self, body: dict[str, Any], model: str) -> web.Response:
        """``batchEmbedContents``: one ``values`` list per request, in order; at most 100."""
        plan = self.behaviour(model)
        if plan.get("status"):
            return self._programmed_error(plan)
        requests = body.get("requests") or []
        if not requests:
            return error_response(400, "* BatchEmbedContentsRequest.requests: is empty")
        if len(requests) > EMBED_BATCH:
            return error_response(
                400, f"* BatchEmbedContentsRequest.requests: at most {EMBED_BATCH} requests."
            )
        embeddings = []
        for i, item in enumerate(requests):
            unknown = set(item) - EMBED_FIELDS
            if unknown:
                return error_response(
                    400, f'Invalid JSON payload received. Unknown name "{unknown.pop()}"'
                )
            if item.get("model") != f"models/{model}":
                return error_response(
                    400, f"* BatchEmbedContentsRequest.requests[{i}].model: does not match"
                )
            text = _text(item["content"]["parts"])
            embeddings.append({"values": vector(text, item.get("outputDimensionality"))})
        answer = {"embeddings": embeddings}
        types.EmbedContentResponse.model_validate(answer)
        return web.json_response(answer)

    def _programmed_error(self, plan: dict[str, Any]) -> web.Response:
        status = int(plan["status"])
        message = {
            429: "Resource has been exhausted (e.g. check quota).",
            503: "The model is overloaded. Please try again later.",
            500: "An internal error has occurred.",
            504: "Deadline exceeded.",
            404: "models/x is not found for API version v1beta.",
            403: "The caller does not have permission",
        }.get(status, "Request contains an invalid argument.")
        details = None
        if status == 429:
            delay = plan.get("retry_delay", 7)
            details = [
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{delay}s"}
            ]
        response = error_response(status, message, details)
        if "retry_after" in plan:
            response.headers["Retry-After"] = str(plan["retry_after"])
        return response

    def _answer(self, body: dict[str, Any], model: str, plan: dict[str, Any]) -> dict[str, Any]:
        contents = body["contents"]
        last = contents[-1]["parts"]
        results = [p["functionResponse"] for p in last if "functionResponse" in p]
        tools = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations", [])]
        config = body.get("generationConfig") or {}
        fcc = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = fcc.get("mode", "AUTO")
        prompt = sum(len(_text(c["parts"]).split()) + 3 for c in contents)
        usage: dict[str, Any] = {
            "promptTokenCount": prompt,
            "cachedContentTokenCount": 2,
            "thoughtsTokenCount": 4,
        }
        if plan.get("blocked"):
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": {**usage, "totalTokenCount": prompt},
                "modelVersion": model,
                "responseId": f"resp-fake{next(_ids)}",
            }
        calls = int(plan.get("tool_calls", 1 if tools and mode != "NONE" else 0))
        candidates = []
        output = 0
        for index in range(int(config.get("candidateCount", 1))):
            parts: list[dict[str, Any]] = []
            finish = plan.get("finish_reason", "STOP")
            if calls and not results and mode != "NONE":
                allowed = fcc.get("allowedFunctionNames") or [t["name"] for t in tools]
                for i in range(calls):
                    part: dict[str, Any] = {
                        "functionCall": {
                            "name": allowed[i % len(allowed)],
                            "args": {"city": f"Lima{i}"},
                        }
                    }
                    if model.startswith("gemini-3") and i == 0:
                        signature = f"sig-{next(_ids)}".encode()
                        part["thoughtSignature"] = base64.b64encode(signature).decode()
                    parts.append(part)
                output += 10 * calls
            else:
                if config.get("responseJsonSchema"):
                    text = orjson.dumps(sample_for(config["responseJsonSchema"])).decode()
                elif config.get("responseMimeType") == "application/json":
                    text = '{"answer": "Lima"}'
                elif results:
                    text = "The tools said: " + "; ".join(
                        orjson.dumps(r["response"]).decode() for r in results
                    )
                else:
                    text = plan.get("reply") or f"Hello! You said: {_text(last)}"
                pieces = words(text)
                limit = config.get("maxOutputTokens")
                if limit is not None and len(pieces) > limit:
                    pieces, finish = pieces[:limit], "MAX_TOKENS"
                text = "".join(pieces)
                for stop in config.get("stopSequences") or []:
                    if stop in text:
                        text = text[: text.index(stop)]
                output += len(words(text)) if text else 0
                parts.append({"text": text})
            candidates.append(
                {
                    "content": {"parts": parts, "role": "model"},
                    "finishReason": finish,
                    "index": index,
                }
            )
        usage.update(candidatesTokenCount=output, totalTokenCount=prompt + output + 4)
        answer = {
            "candidates": candidates,
            "usageMetadata": usage,
            "modelVersion": model,
            "responseId": f"resp-fake{next(_ids)}",
        }
        types.GenerateContentResponse.model_validate(answer)
        return answer

    async def _stream(
        self, request: web.Request, answer: dict[str, Any], plan: dict[str, Any]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces: list[dict[str, Any]] = []
        meta = answer["usageMetadata"]
        early = {k: v for k, v in meta.items() if k in ("promptTokenCount",)}
        base = {"modelVersion": answer["modelVersion"], "responseId": answer["responseId"]}
        if "candidates" not in answer:
            pieces.append(answer)
        for candidate in answer.get("candidates", []):
            parts = candidate["content"]["parts"]
            texts = [w for p in parts if "text" in p for w in words(p["text"]) if w]
            calls = [p for p in parts if "functionCall" in p]
            for w in texts:
                pieces.append(
                    {
                        **base,
                        "usageMetadata": early,
                        "candidates": [
                            {
                                "content": {"parts": [{"text": w}], "role": "model"},
                                "index": candidate["index"],
                            }
                        ],
                    }
                )
            last: dict[str, Any] = {
                "content": {"parts": calls or [{"text": ""}], "role": "model"},
                "finishReason": candidate["finishReason"],
                "index": candidate["index"],
            }
            pieces.append({**base, "usageMetadata": meta, "candidates": [last]})
        fail_after = plan.get("error_after")
        broken_after = int(plan.get("broken_after", 1)) if "broken" in plan else None
        end_after = plan.get("end_after")
        for n, piece in enumerate(pieces):
            if fail_after is not None and n == int(fail_after):
                error = error_body(503, "The model is overloaded. Please try again later.")
                await response.write(b"data: " + orjson.dumps(error) + b"\r\n\r\n")
                return response
            if n == broken_after:
                await response.write(b"data: " + _raw(plan["broken"]) + b"\r\n\r\n")
                return response
            if end_after is not None and n == int(end_after):
                break
            types.GenerateContentResponse.model_validate(piece)
            await response.write(b"data: " + orjson.dumps(piece) + b"\r\n\r\n")
            if await self.idle(request, float(plan.get("delay", 0.001))):
                return response
        await response.write_eof()
        return response
