"""Every route, fuzzed: no 500 and no error outside the envelope (a short run; the long one and
its figures are ``bench/fuzz_routes.py`` and ``bench/README.md``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import gateway_config
from tests.fakes.openai_upstream import FakeOpenAI
from tests.fuzzing import fuzz
from tests.inprocess import InProcessPuente

ADMIN = "admin-key-for-the-fuzz-tests-00000000000"


@pytest.fixture(scope="module")
def target(
    fake_upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[InProcessPuente]:
    workdir: Path = tmp_path_factory.mktemp("fuzz")
    config = {**gateway_config(fake_upstream), "auth": "none"}
    with InProcessPuente(config, workdir, env={"PUENTE_ADMIN_KEY": ADMIN}) as server:
        yield server


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzzed_requests_never_get_a_500_or_a_bare_error(
    target: InProcessPuente, seed: int
) -> None:
    tally = fuzz(target.url, "fake-model", 400, {"Authorization": f"Bearer {ADMIN}"}, seed=seed)
    assert tally.sent >= 390
    assert tally.failures == []
    assert sum(n for status, n in tally.statuses.items() if 400 <= status < 500) > 100
