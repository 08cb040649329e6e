"""The SSRF guard reads address literals as HTTP clients do and refuses every non-global address,
IPv4 carried inside IPv6 included (issue 15, Medium 4)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator

import pytest

from server.errors import InvalidRequest
from server.providers.address_guard import AddressPolicy, literal_address
from server.providers.images import ImageFetcher
from tests.fakes.gemini_vendor import FakeGemini

LOOPBACK_SPELLINGS = ["127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f000001", "0"]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_legacy_ipv4_spellings_are_read_as_the_address_they_reach(host: str) -> None:
    address = literal_address(host)
    assert address is not None
    assert address in ipaddress.ip_network("127.0.0.0/8") or str(address) == "0.0.0.0"
    assert not AddressPolicy().permits(address)


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::808:808",  # local-use NAT64
        "::7f00:1",  # IPv4-compatible ::127.0.0.1
        "::ffff:0:7f00:1",  # SIIT
        "fec0::1",  # site-local
        "5f00::1",  # SRv6
        "3fff::1",  # documentation
        "2001:db8::1",  # documentation
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "192.0.0.8",  # IPv4 dummy address
        "198.18.0.1",  # benchmarking
        "240.0.0.1",  # reserved
    ],
)
def test_reserved_and_transition_addresses_are_refused(address: str) -> None:
    assert not AddressPolicy().permits(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700:4700::1111", "64:ff9b::808:808", "::ffff:8.8.8.8"]
)
def test_public_addresses_still_pass(address: str) -> None:
    assert AddressPolicy().permits(ipaddress.ip_address(address))


def test_host_names_are_left_to_the_resolver() -> None:
    assert literal_address("example.com") is None
    assert literal_address("1e100.net") is None
    assert literal_address("[::1]") == ipaddress.ip_address("::1")


@pytest.fixture
async def fetcher() -> AsyncIterator[ImageFetcher]:
    fetcher = ImageFetcher()
    yield fetcher
    await fetcher.aclose()


@pytest.mark.parametrize("host", [*LOOPBACK_SPELLINGS, "[::ffff:0:7f00:1]", "[64:ff9b::7f00:1]"])
async def test_no_spelling_of_loopback_reaches_it(
    fetcher: ImageFetcher, gemini_vendor: FakeGemini, host: str
) -> None:
    before = list(gemini_vendor.state.image_requests)
    with pytest.raises(InvalidRequest) as caught:
        await fetcher.fetch(f"http://{host}:{gemini_vendor.port}/images/pixel.png", "p")
    assert "not a public address" in caught.value.message
    assert gemini_vendor.state.image_requests == before
