"""Images cost a request a bounded amount: how many, how large each, how large together
(issue 15, Medium 5)."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from server.config import ImageFetchConfig
from server.errors import InvalidRequest
from server.providers.gemini_translate import convert_messages
from server.providers.images import ImageFetcher
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.vendor_server import PNG

BIG = len(PNG) + 200_000  # what the fake serves as big.png


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    config = ImageFetchConfig(
        allow_networks=["127.0.0.1/32"],
        max_images=4,
        max_bytes=BIG + 10,
        max_total_bytes=2 * BIG + 10,
    )
    fetcher = ImageFetcher(config)
    yield fetcher
    await fetcher.aclose()


def _message(urls: list[str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "look"}]
    parts += [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    return [{"role": "user", "content": parts}]


async def test_too_many_images_are_refused_before_the_extra_one_is_fetched(
    fetcher: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    before = len(gemini_vendor.state.image_requests)
    with pytest.raises(InvalidRequest) as caught:
        await convert_messages(_message([gemini_vendor.image_url()] * 5), fetcher)
    assert caught.value.code == "too_many_images"
    assert caught.value.param == "messages[0].content[5].image_url.url"
    assert len(gemini_vendor.state.image_requests) - before == 4
    # Four is fine.
    _, contents = await convert_messages(_message([gemini_vendor.image_url()] * 4), fetcher)
    assert len(contents[0]["parts"]) == 5


async def test_the_images_of_a_request_are_bounded_together(
    fetcher: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    big = gemini_vendor.image_url("big.png")
    await convert_messages(_message([big, big]), fetcher)  # each and both within the limits
    with pytest.raises(InvalidRequest) as caught:
        await convert_messages(_message([big, big, big]), fetcher)
    assert f"limit of {2 * BIG + 10} bytes together" in caught.value.message
    assert caught.value.param == "messages[0].content[3].image_url.url"


async def test_inline_images_count_too(fetcher: ImageFetcher) -> None:
    inline = "data:image/png;base64," + base64.b64encode(PNG + b"\0" * 200_000).decode()
    with pytest.raises(InvalidRequest) as caught:
        await convert_messages(_message([inline] * 3), fetcher)
    assert "bytes together" in caught.value.message
