"""Image URLs Puente fetches for vendors that want inline bytes: decoded, capped, and never from
Puente's own network — checked after DNS resolution and again on every redirect."""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import AsyncIterator

import pytest

from server.config import ImageFetchConfig
from server.errors import InvalidRequest
from server.providers.address_guard import AddressPolicy
from server.providers.images import ImageFetcher, parse_data_url
from tests.fakes.gemini_vendor import FakeGemini
from tests.fakes.vendor_server import PNG

PARAM = "messages[0].content[1].image_url.url"


@pytest.fixture
async def default_fetcher() -> AsyncIterator[ImageFetcher]:
    fetcher = ImageFetcher()  # what a configuration without ``server.images`` gets
    yield fetcher
    await fetcher.aclose()


@pytest.fixture
async def allowing_loopback() -> AsyncIterator[ImageFetcher]:
    fetcher = ImageFetcher(
        ImageFetchConfig(allow_networks=["127.0.0.1/32"], max_bytes=1000, timeout=0.5)
    )
    yield fetcher
    await fetcher.aclose()


async def refused(fetcher: ImageFetcher, url: str) -> str:
    with pytest.raises(InvalidRequest) as caught:
        await fetcher.fetch(url, PARAM)
    assert caught.value.param == PARAM
    assert caught.value.status_code == 400
    return caught.value.message


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "100.64.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "2002:7f00:1::",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert AddressPolicy().permits(ipaddress.ip_address(address))


def test_an_allowed_network_is_exempt_and_nothing_else() -> None:
    policy = AddressPolicy(["10.0.0.0/8"])
    assert policy.permits(ipaddress.ip_address("10.9.9.9"))
    assert not policy.permits(ipaddress.ip_address("192.168.0.1"))


async def test_loopback_is_refused_by_default(
    default_fetcher: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    before = list(gemini_vendor.state.image_requests)
    message = await refused(default_fetcher, gemini_vendor.image_url())
    assert "not a public address" in message
    # By name too: the check runs on what the name resolves to, before connecting.
    message = await refused(default_fetcher, f"http://localhost:{gemini_vendor.port}/images/x.png")
    assert "'localhost' is not a public address" in message
    assert gemini_vendor.state.image_requests == before  # nothing was ever fetched


async def test_metadata_and_mapped_addresses_are_refused(default_fetcher: ImageFetcher) -> None:
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/x.png",
        "http://[::1]:9/x.png",
    ):
        assert "not a public address" in await refused(default_fetcher, url)


async def test_the_allow_list_lets_a_host_in(
    allowing_loopback: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    image = await allowing_loopback.fetch(gemini_vendor.image_url(), PARAM)
    assert (image.data, image.media_type) == (PNG, "image/png")


async def test_every_redirect_is_checked_again(
    allowing_loopback: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    # 127.0.0.2 is loopback too, but outside the allowed 127.0.0.1/32.
    target = f"http://127.0.0.2:{gemini_vendor.port}/images/pixel.png"
    url = f"{gemini_vendor.url}/images/redirect?to={target}"
    assert "'127.0.0.2' is not a public address" in await refused(allowing_loopback, url)
    followed = f"{gemini_vendor.url}/images/redirect?to={gemini_vendor.image_url()}"
    assert (await allowing_loopback.fetch(followed, PARAM)).data == PNG


async def test_size_time_and_type_limits(
    allowing_loopback: ImageFetcher, gemini_vendor: FakeGemini
) -> None:
    assert "larger than the limit of 1000 bytes" in await refused(
        allowing_loopback, gemini_vendor.image_url("big.png")
    )
    assert "within 0.5 seconds" in await refused(
        allowing_loopback, gemini_vendor.image_url("slow.png")
    )
    assert "not an image" in await refused(allowing_loopback, gemini_vendor.image_url("page.html"))
    assert "HTTP 404" in await refused(allowing_loopback, gemini_vendor.image_url("nope.png"))
    assert "http(s)" in await refused(allowing_loopback, "file:///etc/passwd")


def test_data_urls() -> None:
    encoded = base64.b64encode(PNG).decode()
    assert parse_data_url(f"data:image/png;base64,{encoded}", PARAM).data == PNG
    # No declared type: the bytes say what they are.
    assert parse_data_url(f"data:;base64,{encoded}", PARAM).media_type == "image/png"
    for bad in (
        "data:image/png,rawbytes",
        "data:image/png;base64,@@@",
        "data:text/plain;base64,aGk=",
    ):
        with pytest.raises(InvalidRequest) as caught:
            parse_data_url(bad, PARAM)
        assert caught.value.param == PARAM
