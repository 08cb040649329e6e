"""The OpenAI Responses API (``/v1/responses``) as pure converters onto the chat pipeline:
``request`` (a Responses body → a chat body), ``answer`` (a ``chat.completion`` → a Response) and
``stream`` (chat chunks → typed Responses SSE events)."""

from server.api.responses_api.answer import response_object, to_response
from server.api.responses_api.request import Converted, convert, input_items, new_id
from server.api.responses_api.stream import ResponseEvents, encode

__all__ = [
    "Converted",
    "ResponseEvents",
    "convert",
    "encode",
    "input_items",
    "new_id",
    "response_object",
    "to_response",
]
