"""Images in OpenAI ``image_url`` parts: ``data:`` URLs decoded, ``http(s)`` URLs fetched.

Vendors that take only inline image bytes (Gemini) get URLs fetched by Puente. A fetch is capped in
size and time, follows a bounded number of redirects, and never connects to a non-public address
(``address_guard``), so a client cannot use Puente to read its internal network.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass

import aiohttp
from yarl import URL

from server.config import ImageFetchConfig
from server.errors import InvalidRequest
from server.providers.address_guard import (
    AddressPolicy,
    ForbiddenAddress,
    GuardedResolver,
    literal_address,
)

log = logging.getLogger("puente.images")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, slots=True)
class Image:
    data: bytes
    media_type: str

    @property
    def base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


def _bad(param: str, message: str, code: str = "invalid_image_url") -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


class ImageBudget:
    """What the images of one request may cost together: a few bytes of request must not make
    Puente fetch and hold hundreds of megabytes (``max_images``, ``max_total_bytes``)."""

    def __init__(self, config: ImageFetchConfig) -> None:
        self.config = config
        self.count = 0
        self.spent = 0

    def admit(self, param: str) -> None:
        """One more image; refused past ``max_images``."""
        self.count += 1
        if self.count > self.config.max_images:
            raise _bad(
                param,
                f"A request may carry at most {self.config.max_images} images.",
                code="too_many_images",
            )

    @property
    def room(self) -> int:
        """Bytes the next image may have."""
        return max(0, min(self.config.max_bytes, self.config.max_total_bytes - self.spent))

    def spend(self, image: Image, param: str) -> Image:
        if len(image.data) > self.room:
            raise self.too_big(param)
        self.spent += len(image.data)
        return image

    def too_big(self, param: str) -> InvalidRequest:
        if self.config.max_bytes <= self.config.max_total_bytes - self.spent:
            return _bad(
                param, f"The image is larger than the limit of {self.config.max_bytes} bytes."
            )
        return _bad(
            param,
            f"The request's images are larger than the limit of {self.config.max_total_bytes} "
            "bytes together.",
        )


def sniff(data: bytes) -> str | None:
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def parse_data_url(url: str, param: str) -> Image:
    """``data:image/png;base64,....`` → the bytes and their media type."""
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:"):
        raise _bad(param, "The image data URL is malformed: expected 'data:<type>;base64,<data>'.")
    meta = header[5:].split(";")
    if "base64" not in meta[1:]:
        raise _bad(param, "The image data URL must be base64-encoded.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(param, "The image data URL does not hold valid base64.") from None
    media_type = (meta[0] or sniff(data) or "").lower()
    if not media_type.startswith("image/"):
        raise _bad(param, f"The data URL holds '{media_type or 'unknown'}', not an image.")
    return Image(data, media_type)


class ImageFetcher:
    """Fetches image URLs for a whole app; its own connection pool, DNS checked per connection."""

    def __init__(self, config: ImageFetchConfig | None = None) -> None:
        self.config = config or ImageFetchConfig()
        self.policy = AddressPolicy(self.config.allow_networks)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                resolver=GuardedResolver(self.policy), use_dns_cache=False, limit=32
            )
            # trust_env stays off: an environment proxy would make the address check moot.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False)
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def budget(self) -> ImageBudget:
        """A fresh budget for the images of one request."""
        return ImageBudget(self.config)

    async def fetch(self, url: str, param: str, budget: ImageBudget | None = None) -> Image:
        """The image at ``url``, within ``budget`` (a request's; one image's own when None).
        The caller ``admit``-s the image to the budget; it is charged here."""
        budget = budget or self.budget()
        try:
            async with asyncio.timeout(self.config.timeout):
                return budget.spend(await self._follow(URL(url), param, budget), param)
        except TimeoutError:
            raise _bad(
                param, f"The image URL did not answer within {self.config.timeout:g} seconds."
            ) from None
        except ForbiddenAddress as exc:
            raise self._forbidden(param, exc) from None
        except aiohttp.ClientConnectorDNSError as exc:
            if isinstance(exc.os_error, ForbiddenAddress):
                raise self._forbidden(param, exc.os_error) from None
            raise _bad(param, f"The image URL's host '{exc.host}' could not be resolved.") from None
        except (aiohttp.ClientError, ValueError) as exc:
            log.info("image fetch failed: %s", type(exc).__name__)
            raise _bad(param, "The image URL could not be fetched.") from None

    def _forbidden(self, param: str, exc: ForbiddenAddress) -> InvalidRequest:
        log.warning("refused an image URL: %s", exc)
        return _bad(
            param,
            f"The image URL's host '{exc.host}' is not a public address; Puente does not fetch "
            "from loopback, private, link-local or metadata addresses.",
        )

    async def _follow(self, url: URL, param: str, budget: ImageBudget) -> Image:
        session = self._client()
        for _ in range(self.config.max_redirects + 1):
            if url.scheme not in ("http", "https") or not url.host:
                raise _bad(param, "Image URLs must be http(s) or data: URLs.")
            if literal_address(url.host) is not None:
                # An address literal (in any spelling a client accepts) may be connected to
                # without asking the resolver: judge it here.
                self.policy.check(url.host, url.host)
            async with session.get(url, allow_redirects=False) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    url = url.join(URL(response.headers["Location"]))
                    continue
                if response.status != 200:
                    raise _bad(param, f"The image URL answered HTTP {response.status}.")
                data = await self._read_capped(response, param, budget)
                declared = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                media_type = sniff(data) or declared
                if not media_type.startswith("image/"):
                    raise _bad(
                        param, f"The image URL served '{declared or 'unknown'}', not an image."
                    )
                return Image(data, media_type)
        raise _bad(param, f"The image URL redirected more than {self.config.max_redirects} times.")

    async def _read_capped(
        self, response: aiohttp.ClientResponse, param: str, budget: ImageBudget
    ) -> bytes:
        limit = budget.room
        if response.content_length is not None and response.content_length > limit:
            raise budget.too_big(param)
        body = bytearray()
        async for piece in response.content.iter_chunked(64 * 1024):
            body += piece
            if len(body) > limit:
                raise budget.too_big(param)
        return bytes(body)
