"""What Puente loaded to start is frozen out of the garbage collector (server/app.py): a full
collection that walked those ~300,000 objects again paused every stream in flight for ~150 ms
(bench/README.md). Objects made while serving are still collected."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import httpx

from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.inprocess import InProcessPuente


def _tracked(obj: object) -> bool:
    return any(o is obj for o in gc.get_objects())


def test_startup_objects_are_frozen_and_later_garbage_is_still_collected(
    fake_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with InProcessPuente(gateway_config(fake_upstream), tmp_path) as server:
        runtime = server.runtime
        assert gc.get_freeze_count() > 100_000  # the framework, the SDKs, the configuration
        assert not _tracked(runtime)  # a full collection no longer walks what startup built

        r = httpx.post(
            server.base_url + "/chat/completions",
            json={"model": "fake-model", "messages": [{"role": "user", "content": "hola"}]},
            timeout=30,
        )
        assert r.status_code == 200

        class Cycle:
            pass

        garbage = Cycle()
        garbage.me = garbage  # type: ignore[attr-defined]
        assert _tracked(garbage)  # made after startup: the collector still sees it
        gone = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert gone() is None
