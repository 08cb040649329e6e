"""What ``/v1/embeddings`` (``input``) and ``/v1/completions`` (``prompt``) both take, checked once:
a string, a list of strings, a list of token ids, or a list of token-id lists, never empty lists.
Also the one way both doors validate the rest of their body against a schema."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from server.errors import InvalidRequest
from server.pipeline.request import JSON, first_error


class Schema(BaseModel):
    # Unknown fields are accepted (and forwarded); only the known ones are checked.
    model_config = ConfigDict(extra="allow", strict=False)


def validate(schema: type[Schema], body: JSON) -> None:
    try:
        schema.model_validate(body)
    except ValidationError as exc:
        raise first_error(exc) from None


def _token_ids(value: list[Any]) -> bool:
    return bool(value) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def check_text_input(value: Any, param: str) -> None:
    if isinstance(value, str):
        return
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value) or _token_ids(value):
            return
        if all(isinstance(v, list) and _token_ids(v) for v in value):
            return
    if value is None:
        raise InvalidRequest(
            f"'{param}' is a required property", param=param, code="missing_required_parameter"
        )
    raise InvalidRequest(
        f"Invalid value for '{param}': expected a string, a list of strings, a list of token "
        "ids or a list of token-id lists, none of them empty.",
        param=param,
        code="invalid_value",
    )
