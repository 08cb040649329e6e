"""Fixtures of the fault-injection suite (tests/test_faults*.py), imported by conftest.py: the
faulty fakes and one Puente in front of them configured by ``fault_config``."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.fakes.faults import FaultyOpenAI
from tests.resilience_support import fault_config, settled
from tests.support import PuenteProcess

ADMIN_KEY = "admin-key-for-the-fault-tests-000000000"


@pytest.fixture(scope="session")
def faulty_upstream() -> Iterator[FaultyOpenAI]:
    fake = FaultyOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def broken_upstream() -> Iterator[FaultyOpenAI]:
    """A replica that answers every request with 503."""
    fake = FaultyOpenAI(faults={"status": 503}).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def resilient(
    faulty_upstream: FaultyOpenAI,
    broken_upstream: FaultyOpenAI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PuenteProcess]:
    workdir = tmp_path_factory.mktemp("resilient")
    config = fault_config(faulty_upstream, broken_upstream)
    env = {"PUENTE_ADMIN_KEY": ADMIN_KEY}
    with PuenteProcess(config, workdir, name="resilient", env=env) as proc:
        yield proc


@pytest.fixture
def faulty(faulty_upstream: FaultyOpenAI, broken_upstream: FaultyOpenAI) -> FaultyOpenAI:
    settled(faulty_upstream)  # what an earlier test left running is not counted in this one
    faulty_upstream.reset()
    broken_upstream.reset()
    return faulty_upstream


@pytest.fixture
def resilient_sdk(resilient: PuenteProcess) -> Iterator[openai.OpenAI]:
    """The openai SDK in front of the resilient Puente, with its own retries off."""
    with openai.OpenAI(base_url=resilient.base_url, api_key="unused", max_retries=0) as client:
        yield client
