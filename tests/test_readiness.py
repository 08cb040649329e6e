"""``/ready`` per model, its probes shared, its inside detail behind the admin key; a key for
``/metrics``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from server.providers.base import Health
from tests.fakes.provider import FakeProvider
from tests.inprocess import InProcessPuente
from tests.support import error_envelope

ADMIN = "admin-key-for-the-readiness-tests-000000"
METRICS = "metrics-key-for-the-readiness-tests-0000"
UNUSED = "http://127.0.0.1:9/v1"


def _entry(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "provider": "openai_compatible", "base_url": UNUSED, **extra}


def _serve(
    tmp: Path, providers: dict[str, FakeProvider], models: list[dict[str, Any]], **server: Any
) -> InProcessPuente:
    config = {"auth": "none", "server": server, "models": models}
    env = {"PUENTE_ADMIN_KEY": ADMIN, "PUENTE_METRICS_KEY": METRICS}
    return InProcessPuente(config, tmp, providers=providers, env=env)


@pytest.fixture
def down_cloud() -> dict[str, FakeProvider]:
    return {
        "engine": FakeProvider(),
        "cloud": FakeProvider(health=Health("down", detail="http://10.0.0.7:8000 refused")),
    }


def test_a_cloud_model_down_does_not_take_the_instance_out(
    tmp_path: Path, down_cloud: dict[str, FakeProvider]
) -> None:
    models = [_entry("engine", required_for_ready=True), _entry("cloud")]
    with _serve(tmp_path, down_cloud, models, ready_cache=0) as puente:
        response = httpx.get(puente.url + "/ready")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ready"
        assert body["models"]["cloud"]["state"] == "down"
        assert body["models"]["cloud"]["required"] is False
        assert body["models"]["engine"]["required"] is True


def test_a_required_model_down_does(tmp_path: Path, down_cloud: dict[str, FakeProvider]) -> None:
    models = [_entry("engine"), _entry("cloud", required_for_ready=True)]
    with _serve(tmp_path, down_cloud, models, ready_cache=0) as puente:
        response = httpx.get(puente.url + "/ready")
        assert response.status_code == 503
        assert response.json()["status"] == "not_ready"


def test_upstream_detail_only_for_the_admin(
    tmp_path: Path, down_cloud: dict[str, FakeProvider]
) -> None:
    with _serve(tmp_path, down_cloud, [_entry("engine"), _entry("cloud")], ready_cache=0) as p:
        outside = httpx.get(p.url + "/ready").text
        assert "10.0.0.7" not in outside and "detail" not in outside
        inside = httpx.get(p.url + "/ready", headers={"Authorization": f"Bearer {ADMIN}"})
        assert inside.json()["models"]["cloud"]["detail"] == "http://10.0.0.7:8000 refused"


def test_probes_are_shared_by_calls_close_together(tmp_path: Path) -> None:
    providers = {"engine": FakeProvider()}
    with _serve(tmp_path, providers, [_entry("engine")], ready_cache=3600) as puente:
        for _ in range(20):
            assert httpx.get(puente.url + "/ready").status_code == 200
    assert providers["engine"].health_calls == 1


def test_metrics_need_the_metrics_key_when_one_is_set(tmp_path: Path) -> None:
    with _serve(tmp_path, {"engine": FakeProvider()}, [_entry("engine")]) as puente:
        url = puente.url + "/metrics"
        refused = httpx.get(url)
        assert refused.status_code == 401
        assert error_envelope(refused)["type"] == "authentication_error"
        wrong = httpx.get(url, headers={"Authorization": "Bearer not-the-metrics-key-000000"})
        assert wrong.status_code == 401
        for key in (METRICS, ADMIN):
            scraped = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
            assert scraped.status_code == 200
            assert "puente_requests_total" in scraped.text


def test_metrics_are_open_without_a_metrics_key(tmp_path: Path) -> None:
    config = {"auth": "none", "models": [_entry("engine")]}
    with InProcessPuente(config, tmp_path, providers={"engine": FakeProvider()}) as puente:
        assert httpx.get(puente.url + "/metrics").status_code == 200
