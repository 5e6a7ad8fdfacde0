"""URLDownload inputs: streamed to disk over http(s) with a size cap, a checksum and retries.

aiohttp rather than httpx: it reads large bodies several times faster here, as
fast as curl (figures in docs/storage.md).

As Bacalhau v0.3.23: the file is named after the last segment of the final URL
path (after redirects), a Docker job sees it at `<path>/<filename>` and a WASM
job at `<path>` itself. Unlike it: a size cap, a sha256 check when the spec's
Metadata has "sha256", and no retry for statuses that cannot get better.

storage.url.deny_private holds across redirects and DNS: redirects are followed
here (at most MAX_REDIRECTS), each hop's URL checked, and names are resolved once
by AddressGuard, the session's resolver, which refuses the whole answer when any
address in it is not allowed; aiohttp connects to an address from that same
answer, so a name cannot resolve to a public address for the check and to a
private one for the connection. Literal IPs never reach a resolver (aiohttp
connects to them as they are), so each hop's URL is checked for one.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import posixpath
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from computenode import progress
from computenode.config import URLConfig
from computenode.errors import InputUnavailable
from computenode.model import StorageSpec
from computenode.storage.ipfs_client import stream_to_file
from computenode.volume import InputVolume

log = logging.getLogger(__name__)

SHA256_KEY = "sha256"  # Metadata key holding the expected hex digest
_NO_RETRY = {400, 404, 410}  # statuses a retry cannot change; Bacalhau retried every status
_DIR_PREFIX = "url-"
MAX_REDIRECTS = 10  # as aiohttp's own default
_REDIRECTS = {301, 302, 303, 307, 308}
_DENY = "a loopback or private address (storage.url.deny_private)"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix: the last 32 bits are an IPv4 address


class _Permanent(Exception):
    """A failure this download cannot get past; carries the user's reason.

    `retryable` tells the node whether running the execution again later may help
    (a server that kept failing may come back; a 404 or a wrong checksum will not).
    """

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class URLStorage:
    def __init__(self, cfg: URLConfig, *, backoff_s: float = 0.25) -> None:
        self.cfg = cfg
        self.backoff_s = backoff_s  # first retry wait, doubled each time, at most 2 s
        self.policy = AddressPolicy(cfg.deny_private, cfg.allow_private)
        self._client: aiohttp.ClientSession | None = None
        self._resolver: AddressGuard | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._client is None:  # created lazily: constructors never touch the loop
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self.cfg.fetch_timeout)
            self._resolver = AddressGuard(self.policy)
            # trust_env stays off: a proxy from the environment would be resolved and
            # connected to instead of the checked address
            self._client = aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(resolver=self._resolver), trust_env=False
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._resolver is not None:  # a resolver handed to a connector is closed by its owner
            await self._resolver.close()
            self._resolver = None

    async def check(self) -> str | None:
        return None

    async def has_locally(self, spec: StorageSpec) -> bool:
        return False

    async def size(self, spec: StorageSpec) -> int:
        """Content-Length from a HEAD request, best effort: 0 when unknown."""
        try:
            async with asyncio.timeout(min(10.0, self.cfg.fetch_timeout)):
                async with self._follow("HEAD", spec.url) as resp:
                    return int(resp.headers.get("Content-Length", 0)) if resp.ok else 0
        except (_Permanent, aiohttp.ClientError, TimeoutError, ValueError):
            return 0

    async def prepare(self, spec: StorageSpec, workdir: Path) -> InputVolume:
        url = spec.url.strip().strip("\"'")
        folder = workdir / f"{_DIR_PREFIX}{uuid.uuid4().hex[:12]}"
        await asyncio.to_thread(folder.mkdir, parents=True)
        try:
            self._check_hop(url, url, 0)
            async with asyncio.timeout(self.cfg.fetch_timeout):
                file = await self._download_with_retries(url, folder, spec.metadata.get(SHA256_KEY, ""))
        except _Permanent as exc:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise InputUnavailable(str(exc), retryable=exc.retryable) from exc.__cause__
        except TimeoutError:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise InputUnavailable(
                f"download of {url} did not finish within {self.cfg.fetch_timeout:g} s (storage.url.fetch_timeout)"
            ) from None
        except BaseException:
            await asyncio.to_thread(shutil.rmtree, folder, True)
            raise
        return InputVolume(spec=spec, host_path=folder, target=spec.path, host_file=file)

    async def cleanup(self, volume: InputVolume) -> None:
        if volume.host_path.name.startswith(_DIR_PREFIX):
            await asyncio.to_thread(shutil.rmtree, volume.host_path, True)

    async def explode(self, spec: StorageSpec) -> list[StorageSpec]:
        return [spec]

    def _check_hop(self, url: str, hop: str, hops: int) -> URL:
        """`hop` (`url` itself when hops is 0) as a URL, when it may be requested.

        Only the scheme and a literal IP are checked here; a name is checked by
        AddressGuard when the connection resolves it.
        """
        name = _hop_name(url, hop, hops)
        try:
            parsed = URL(hop)
        except ValueError:
            raise _Permanent(f"{name} is not an http or https URL") from None
        host = parsed.raw_host
        if parsed.scheme not in ("http", "https") or not host:
            raise _Permanent(f"{name} is not an http or https URL")
        if self.policy.deny_private and _looks_like_ip(host):
            try:
                ip = ipaddress.ip_address(host)
            except ValueError:
                # aiohttp would take it for an address and not resolve it: refuse what
                # cannot be checked
                raise _Permanent(
                    f"{name}: {host} is not a valid IP address (storage.url.deny_private)"
                ) from None
            if self.policy.refuses(ip):
                raise _Permanent(f"{name} points to {_DENY}")
        return parsed

    @asynccontextmanager
    async def _follow(self, method: str, url: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response at the end of `url`'s redirects; every hop checked by the policy."""
        hop = url
        for hops in range(MAX_REDIRECTS + 1):
            target = self._check_hop(url, hop, hops)
            try:
                resp = await self.http.request(method, target, allow_redirects=False)
            except aiohttp.ClientConnectorError as exc:
                if isinstance(exc.os_error, RefusedAddress):
                    raise _Permanent(f"{_hop_name(url, hop, hops)}: {exc.os_error}") from exc
                raise
            async with resp:
                location = resp.headers.get("Location")
                if resp.status not in _REDIRECTS or location is None:
                    yield resp
                    return
                try:
                    hop = str(resp.url.join(URL(location)))
                except ValueError:
                    raise _Permanent(f"redirect from {hop} to an invalid URL {location!r}") from None
        raise _Permanent(f"download of {url} failed: more than {MAX_REDIRECTS} redirects")

    async def _download_with_retries(self, url: str, folder: Path, sha256: str) -> Path:
        attempt = 0
        while True:
            try:
                return await self._download(url, folder, sha256.lower())
            except (_Permanent, aiohttp.InvalidURL) as exc:
                if isinstance(exc, _Permanent):
                    raise
                raise _Permanent(f"download of {url} failed: {_why(exc)}") from exc
            except (aiohttp.ClientError, _Retryable) as exc:
                if attempt >= self.cfg.retries:
                    reason = f"download of {url} failed after {attempt + 1} attempts: {_why(exc)}"
                    raise _Permanent(reason, retryable=True) from exc
                wait = min(2.0, self.backoff_s * 2**attempt)
                log.info(
                    "url download retry", extra={"url": url, "attempt": attempt + 1, "reason": _why(exc)}
                )
                attempt += 1
                await asyncio.sleep(wait)

    async def _download(self, url: str, folder: Path, sha256: str) -> Path:
        await asyncio.to_thread(_empty, folder)  # a previous attempt's partial file
        async with self._follow("GET", url) as resp:
            if resp.status in _NO_RETRY or resp.status in _REDIRECTS:  # a redirect without Location
                raise _Permanent(f"non-200 response from URL ({url}): {resp.status}")
            if not resp.ok:
                raise _Retryable(f"non-200 response from URL ({url}): {resp.status}")
            length = resp.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > self.cfg.max_size:
                raise _Permanent(_too_big(url, self.cfg.max_size))
            if length.isdigit():
                progress.transfer().expect(int(length))
            dest = folder / file_name(str(resp.url))
            digest = hashlib.sha256() if sha256 else None
            await self._write(resp, dest, digest, url)
        if digest is not None and digest.hexdigest() != sha256:
            raise _Permanent(
                f"checksum mismatch for {url}: sha256 is {digest.hexdigest()}, the spec says {sha256}"
            )
        return dest

    async def _write(
        self, resp: aiohttp.ClientResponse, dest: Path, digest: hashlib._Hash | None, url: str
    ) -> None:
        received = progress.transfer().stream()  # bytes and rate of the execution's `fetching inputs`

        def capped(total: int) -> None:
            if total > self.cfg.max_size:
                raise _Permanent(_too_big(url, self.cfg.max_size))
            received(total)

        await stream_to_file(resp, dest, capped, digest)


class _Retryable(Exception):
    pass


def file_name(final_url: str) -> str:
    """The last segment of the URL path, as Bacalhau; a generated name when there is none."""
    name = posixpath.basename(unquote(urlsplit(final_url).path))
    if name in ("", ".", "..") or "\0" in name:
        return uuid.uuid4().hex
    return name


def _too_big(url: str, cap: int) -> str:
    return f"download of {url} is larger than {cap} bytes (storage.url.max_size)"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _hop_name(url: str, hop: str, hops: int) -> str:
    return f"redirect to {hop}" if hops else url


def _looks_like_ip(host: str) -> bool:
    """aiohttp's own test (helpers.is_ip_address): such a host is connected to without a resolver."""
    return ":" in host or host.replace(".", "").isdigit()


class AddressPolicy:
    """storage.url.deny_private with its allow_private exceptions, as one test of an address."""

    def __init__(self, deny_private: bool, allow_private: Sequence[Network]) -> None:
        self.deny_private = deny_private
        self.allow_private = tuple(allow_private)

    def refuses(self, ip: Address) -> bool:
        if not self.deny_private:
            return False
        forms = _forms(ip)
        if any(form in net for form in forms for net in self.allow_private if form.version == net.version):
            return False
        return any(_not_global(form) for form in forms)


def _forms(ip: Address) -> list[Address]:
    """`ip` and the IPv4 addresses it reaches: IPv4-mapped (::ffff:a.b.c.d), 6to4, NAT64."""
    forms: list[Address] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            forms.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            forms.append(ip.sixtofour)
        if ip in _NAT64:
            forms.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return forms


def _not_global(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _not_global(ip.ipv4_mapped)  # Python files every mapped address as private
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_multicast
        or not ip.is_global  # also 100.64.0.0/10, shared address space
    )


class RefusedAddress(OSError):
    """A name resolved to an address the policy refuses; aiohttp wraps it in ClientConnectorDNSError."""


class AddressGuard(AbstractResolver):
    """aiohttp's default resolver, with every address of each answer checked by the policy.

    The connector connects only to addresses this returns, so what is checked is what is
    connected to. One refused address refuses the whole answer: a name that mixes public
    and private addresses is not one to trust with the choice.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy = policy
        self._inner = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answer = await self._inner.resolve(host, port, family)
        for result in answer:
            try:
                ip = ipaddress.ip_address(result["host"])
            except ValueError:
                if self.policy.deny_private:
                    raise RefusedAddress(
                        f"{host} resolves to {result['host']!r}, not an IP address"
                    ) from None
                continue
            if self.policy.refuses(ip):
                raise RefusedAddress(f"{host} resolves to {ip}, {_DENY}")
        return answer

    async def close(self) -> None:
        await self._inner.close()


def _empty(folder: Path) -> None:
    for stale in folder.iterdir():
        stale.unlink()
