"""``/admin/keys`` and ``/admin/usage``: key management over HTTP, for the holder of
``PUENTE_ADMIN_KEY`` only (sent like any key: ``Authorization: Bearer …`` or ``x-api-key``).

    POST   /admin/keys          create; the answer carries the key, the only time it is shown
    GET    /admin/keys          list (never the keys themselves)
    GET    /admin/keys/{name}
    DELETE /admin/keys/{name}   revoke; the next request with it gets 401
    GET    /admin/usage         totals per day, key and model (?since=&until=&key=)
    POST   /admin/reload        reload models and personas from the config file (as SIGHUP)
    GET    /admin/personas      the personas as configured (rules, farewell), for the console
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.access.auth import Access
from server.access.keys import InvalidKeySpec, KeySpec, Limits, mint, parse_expiry
from server.access.periods import day_range
from server.access.storage import KeyNameTaken
from server.api.deps import RuntimeDep, runtime_of
from server.api.wire import JSONResponse
from server.errors import InvalidRequest, ModelNotFound, NotFound, Unauthorized, param_path
from server.pipeline.request import load_object

log = logging.getLogger("puente.access")

router = APIRouter(prefix="/admin")


async def _admin(request: Request) -> Access:
    access = runtime_of(request).access
    if access.admin_hash is None:
        raise Unauthorized(
            "The admin API is off: set PUENTE_ADMIN_KEY and restart Puente.",
            code="admin_api_disabled",
        )
    if not access.is_admin(request.headers):
        access.metrics.auth_failures.labels("admin").inc()
        raise Unauthorized("Incorrect admin key provided.")
    return access


AdminDep = Annotated[Access, Depends(_admin)]


# Limits fit the databases' 64-bit integers with room to add usage to them.
Amount = Annotated[int, Field(ge=1, le=2**53)]


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    models: Annotated[list[str], Field(min_length=1)] = ["*"]
    rpm: Amount | None = None
    tpm: Amount | None = None
    budget_day: Amount | None = None
    budget_month: Amount | None = None
    expires: str | None = None
    """A duration (``30d``), a date (``2026-12-31``) or ``never``."""


def _new_key(raw: bytes) -> NewKey:
    try:
        return NewKey.model_validate(load_object(raw))
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        param = param_path(err["loc"]) or None
        raise InvalidRequest(f"Invalid value for '{param}': {err['msg']}.", param=param) from None


@router.post("/keys", status_code=201)
async def create_key(request: Request, access: AdminDep) -> JSONResponse:
    # The body is read only once the admin key was checked (a parameter would be parsed first).
    body = _new_key(await request.body())
    now = time.time()
    try:
        spec = KeySpec(
            name=body.name,
            models=tuple(body.models),
            limits=Limits(body.rpm, body.tpm, body.budget_day, body.budget_month),
            expires_at=parse_expiry(body.expires or "never", now),
        )
        secret, key = mint(spec, now)
    except InvalidKeySpec as exc:
        raise InvalidRequest(f"Invalid key: {exc}.", code="invalid_value") from None
    try:
        await access.stored(access.store.create_key(key))
    except KeyNameTaken as exc:
        raise InvalidRequest(f"{exc}.", param="name", code="key_name_taken") from None
    access.key_created()
    return JSONResponse({**key.public(), "key": secret}, status_code=201)


@router.get("/keys")
async def list_keys(access: AdminDep) -> JSONResponse:
    keys = await access.stored(access.store.list_keys())
    return JSONResponse({"object": "list", "data": [key.public() for key in keys]})


@router.get("/keys/{name}")
async def get_key(name: str, access: AdminDep) -> JSONResponse:
    key = await access.stored(access.store.get_key(name))
    if key is None:
        raise NotFound(f"No key named '{name}'.", code="key_not_found")
    return JSONResponse(key.public())


@router.delete("/keys/{name}")
async def revoke_key(name: str, access: AdminDep) -> JSONResponse:
    key = await access.revoke(name, time.time())
    if key is None:
        raise NotFound(f"No key named '{name}'.", code="key_not_found")
    return JSONResponse(key.public())


@router.get("/usage")
async def usage(
    access: AdminDep,
    since: Annotated[str | None, Query()] = None,
    until: Annotated[str | None, Query()] = None,
    days: Annotated[int, Query(ge=1, le=3660)] = 30,
    key: Annotated[str | None, Query()] = None,
) -> JSONResponse:
    try:
        first, last = day_range(since, until, days)
    except ValueError as exc:
        raise InvalidRequest(f"{exc}.", param="since") from None
    totals = await access.stored(access.store.usage_totals(first, last, key))
    return JSONResponse(
        {"object": "list", "since": first, "until": last, "data": [t.to_dict() for t in totals]}
    )


@router.post("/reload")
async def reload_config(request: Request, access: AdminDep) -> JSONResponse:
    config = await runtime_of(request).reloader.reload()
    return JSONResponse(
        {
            "status": "reloaded",
            "models": [m.name for m in config.models],
            "personas": [p.name for p in config.personas],
        }
    )


@router.get("/personas")
async def list_personas(runtime: RuntimeDep, access: AdminDep) -> JSONResponse:
    # The whole configuration of each persona (its instructions included, which clients never
    # see), and whether its model can serve now.
    snapshot = runtime.pipeline.snapshot
    data = []
    for persona in snapshot.personas:
        try:
            snapshot.catalog.resolve(persona.model)
            available = True
        except ModelNotFound:
            available = False  # its model is disabled (a missing key): so is the persona
        data.append({**persona.config.model_dump(mode="json"), "available": available})
    return JSONResponse({"object": "list", "data": data})
