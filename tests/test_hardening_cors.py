"""CORS for browser apps: off unless configured, then only for the listed origins
(issue 15, Low 14). In process: the middleware is the point, not the socket."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from server.app import create_app
from server.config import ConfigError, Settings, parse_config

APP_ORIGIN = "https://app.example.com"


def _client(server: dict[str, Any]) -> httpx.AsyncClient:
    text = f"server: {server}\nmodels: []\n" if server else "models: []\n"
    app = create_app(Settings(parse_config(text, "test.yaml")))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://puente")


def _preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
    }


async def test_off_by_default() -> None:
    async with _client({}) as client:
        response = await client.options("/v1/chat/completions", headers=_preflight(APP_ORIGIN))
        assert response.status_code == 405
        assert "access-control-allow-origin" not in response.headers
        answer = await client.get("/health", headers={"Origin": APP_ORIGIN})
        assert "access-control-allow-origin" not in answer.headers


async def test_a_listed_origin_gets_its_preflight_and_its_answers() -> None:
    async with _client({"cors": {"allow_origins": [APP_ORIGIN]}}) as client:
        response = await client.options("/v1/chat/completions", headers=_preflight(APP_ORIGIN))
        assert response.status_code == 204
        assert response.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "POST" in response.headers["access-control-allow-methods"]
        assert "authorization" in response.headers["access-control-allow-headers"]
        assert "x-stainless-os" in response.headers["access-control-allow-headers"]
        assert response.headers["vary"] == "Origin"
        assert "access-control-allow-credentials" not in response.headers

        answer = await client.get("/health", headers={"Origin": APP_ORIGIN})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
        exposed = answer.headers["access-control-expose-headers"]
        # What a browser app reads: the request id, which model answered, the limits.
        for name in ("x-request-id", "x-puente-model", "x-ratelimit-remaining-requests"):
            assert name in exposed


async def test_an_unlisted_origin_gets_nothing() -> None:
    async with _client({"cors": {"allow_origins": [APP_ORIGIN]}}) as client:
        evil = "https://evil.example.net"
        response = await client.options("/v1/chat/completions", headers=_preflight(evil))
        assert response.status_code == 405
        assert "access-control-allow-origin" not in response.headers
        answer = await client.get("/health", headers={"Origin": evil})
        assert "access-control-allow-origin" not in answer.headers


async def test_any_origin_when_asked_for() -> None:
    async with _client({"cors": {"allow_origins": ["*"]}}) as client:
        answer = await client.get("/health", headers={"Origin": "http://localhost:5173"})
        assert answer.headers["access-control-allow-origin"] == "http://localhost:5173"


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path"])
def test_an_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ConfigError, match="is not an origin"):
        parse_config(f"server: {{cors: {{allow_origins: ['{origin}']}}}}\n", "test.yaml")
