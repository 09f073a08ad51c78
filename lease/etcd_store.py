"""LeaseStore on etcd v3 (etcd3aio over gRPC): the only module that talks to etcd.

Shell: thin. Every call has a deadline and makes one attempt; the coordinator owns the
retry policy. gRPC failures become StoreUnavailable; nothing here logs a secret.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import grpc
import grpc.aio
from etcd3aio import EtcdError, EtcdUnauthenticatedError, prefix_range_end
from etcd3aio._protobuf import (
    Compare,
    LeaseKeepAliveRequest,
    WatchCreateRequest,
    WatchRequest,
    WatchStub,
)
from etcd3aio.auth import AuthService
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import KVService
from etcd3aio.lease import LeaseService

from lease.errors import ConfigError, DecodeError, StoreAuthError, StoreUnavailable

from .model import SUBNETS_DIR, Lease, LeaseAttrs, decode_lease, encode_lease_attrs, subnet_key
from .store import DEFAULT_ENDPOINTS, DEFAULT_PREFIX, KeyEvent, Listing, WatchBatch

log = logging.getLogger(__name__)

CALL_TIMEOUT_S: Final = 5.0
RECONNECT_CAP_MS: Final = 2_000  # the longest a reconnect waits once etcd is back
SYSTEM_CA: Final = Path("/etc/ssl/certs/ca-certificates.crt")


@dataclass(frozen=True, slots=True)
class EtcdSettings:
    endpoints: Sequence[str] = DEFAULT_ENDPOINTS
    prefix: str = DEFAULT_PREFIX
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:  # never show the password
        return (f"EtcdSettings(endpoints={list(self.endpoints)!r}, prefix={self.prefix!r}, "
                f"tls={self.uses_tls}, username={self.username!r})")

    @property
    def uses_tls(self) -> bool:
        """TLS when a CA is given (alone is enough, unlike upstream) or a URL says https."""
        return bool(self.cafile) or any(e.startswith("https://") for e in self.endpoints)


def parse_endpoints(endpoints: Sequence[str]) -> tuple[list[str], str]:
    """`http://host:port` URLs -> (`ip:port` targets, the first host name for TLS)."""
    targets: list[str] = []
    first_host = ""
    for url in endpoints:
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
        except ValueError as exc:  # e.g. an unclosed [IPv6 literal
            raise ConfigError(f"-etcd-endpoints: {url!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"-etcd-endpoints: {url!r} is not an http(s)://host:port URL")
        try:
            port = parts.port or 2379
        except ValueError:
            raise ConfigError(f"-etcd-endpoints: {url!r} has a bad port") from None
        host = parts.hostname
        first_host = first_host or host
        try:
            addr = str(ip_address(host))
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
            except OSError:
                raise ConfigError(f"-etcd-endpoints: cannot resolve {host!r}") from None
            addr = str(infos[0][4][0])
        targets.append(f"{addr}:{port}")
    if not targets:
        raise ConfigError("-etcd-endpoints: no endpoint given")
    return targets, first_host


def _read(path: str, flag: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror}") from None


def _check_pem(ca: str, certfile: str, keyfile: str) -> None:
    """ConfigError unless `ca` holds a PEM certificate and certfile/keyfile (if given) a PEM
    certificate and its (unencrypted) key: gRPC would only say so on stderr, at each try."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=ca)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"-etcd-cafile: {ca} holds no PEM certificate ({_reason(exc)})") \
            from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile, password=lambda: b"")
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"-etcd-certfile/-etcd-keyfile: {certfile} and {keyfile} are not "
                              f"a PEM certificate and its unencrypted key ({_reason(exc)})") \
                from None


def _reason(exc: Exception) -> str:
    """OpenSSL's words without its tags: `[X509: NO_...] no certificate found (_ssl.c:1)`."""
    text = str(exc.args[-1] if exc.args else exc)
    return re.sub(r"^\[[^\]]*\]\s*|\s*\(_ssl\.c:\d+\)$", "", text) or type(exc).__name__


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, grpc.aio.AioRpcError):
        return StoreUnavailable(f"{exc.code().name}: {exc.details() or ''}".rstrip(": "))
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(f"no answer within {CALL_TIMEOUT_S:.0f} s")
    return StoreUnavailable(str(exc) or type(exc).__name__)


class _OneRequest:
    """A request stream of one message that stays open until finish(): a watch sends its
    create request and then only listens."""

    def __init__(self, request: Any) -> None:
        self._request: Any = request
        self._finished = asyncio.Event()

    def __aiter__(self) -> _OneRequest:
        return self

    async def __anext__(self) -> Any:
        if self._request is not None:
            request, self._request = self._request, None
            return request
        await self._finished.wait()
        raise StopAsyncIteration

    def finish(self) -> None:
        self._finished.set()


class EtcdLeaseStore:
    """Implements lease.store.LeaseStore."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._prefix = settings.prefix.rstrip("/")
        self._subnets = f"{self._prefix}/{SUBNETS_DIR}"
        targets, host = parse_endpoints(settings.endpoints)
        tls: dict[str, Any] = {}
        if settings.uses_tls:
            ca = settings.cafile or (str(SYSTEM_CA) if SYSTEM_CA.exists() else "")
            if not ca:
                raise ConfigError("https etcd endpoint but no -etcd-cafile and no system CA")
            tls["ca_cert"] = _read(ca, "-etcd-cafile")
            if bool(settings.certfile) != bool(settings.keyfile):
                raise ConfigError("-etcd-certfile and -etcd-keyfile must be given together")
            if settings.certfile:
                tls["cert_chain"] = _read(settings.certfile, "-etcd-certfile")
                tls["cert_key"] = _read(settings.keyfile, "-etcd-keyfile")
            _check_pem(ca, settings.certfile, settings.keyfile)
            tls["tls_server_name"] = host
        manager = ConnectionManager(targets)
        # gRPC's own reconnect back-off grows to 120 s: after a long etcd outage the channel
        # would stay down for minutes after etcd is back. Ours is the one that matters.
        manager.grpc_options += [("grpc.initial_reconnect_backoff_ms", 500),
                                 ("grpc.min_reconnect_backoff_ms", 500),
                                 ("grpc.max_reconnect_backoff_ms", RECONNECT_CAP_MS)]
        self._channel = manager.get_channel(**tls)
        self._kv = KVService(self._channel, max_attempts=1)
        self._lease = LeaseService(self._channel, max_attempts=1)
        self._auth = AuthService(self._channel, max_attempts=1)
        self._watch = WatchStub(self._channel)
        self._token: str | None = None

    @property
    def config_key(self) -> str:
        return f"{self._prefix}/config"

    async def close(self) -> None:
        await self._channel.close()

    # -- plumbing -----------------------------------------------------------------------

    def _set_token(self, token: str | None) -> None:
        self._token = token
        for service in (self._kv, self._lease):
            service.set_token(token)

    async def _authenticate(self) -> None:
        try:
            response = await self._auth.authenticate(
                self._settings.username, self._settings.password, timeout=CALL_TIMEOUT_S
            )
        except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
                    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise _unavailable(exc) from None
            reason = _unavailable(exc)  # the server's reason; never the password
            raise StoreAuthError(
                f"etcd refused user {self._settings.username!r}: {reason}") from None
        self._set_token(response.token)

    async def _call(self, op: Any, *args: Any, **kwargs: Any) -> Any:
        """One RPC with a deadline; authenticates first (and again when the token dies)."""
        for attempt in (1, 2):
            try:
                if self._settings.username and self._token is None:
                    await self._authenticate()
                return await op(*args, timeout=CALL_TIMEOUT_S, **kwargs)
            except EtcdUnauthenticatedError as exc:
                if not self._settings.username or attempt == 2:
                    raise StoreUnavailable(f"etcd: unauthenticated ({exc})") from None
                self._token = None
            except (EtcdError, grpc.aio.AioRpcError, TimeoutError, OSError) as exc:
                raise _unavailable(exc) from None
        raise AssertionError("unreachable")

    def _key(self, name: str) -> str:
        return f"{self._subnets}{name}"

    def _mod_revision_is(self, key: str, revision: int) -> Any:
        return Compare(result=Compare.EQUAL, target=Compare.MOD, key=key.encode(),
                       mod_revision=revision)

    # -- LeaseStore ---------------------------------------------------------------------

    async def get_config(self) -> bytes | None:
        response = await self._call(self._kv.get, self.config_key)
        return bytes(response.kvs[0].value) if response.kvs else None

    async def list_leases(self) -> Listing:
        response = await self._call(self._kv.get, self._subnets,
                                    range_end=prefix_range_end(self._subnets))
        leases: list[Lease] = []
        invalid: list[str] = []
        for kv in response.kvs:
            name = kv.key.decode(errors="replace")[len(self._subnets):]
            try:
                leases.append(decode_lease(name, kv.value, kv.lease, kv.mod_revision))
            except DecodeError:
                invalid.append(name)
        return Listing(leases, response.header.revision, invalid)

    async def create_lease(
        self, subnet: IPv4Network, attrs: LeaseAttrs, ttl_s: int,
        ipv6_subnet: IPv6Network | None = None,
    ) -> tuple[Lease, float] | None:
        key = self._key(subnet_key(subnet, ipv6_subnet))
        grant = await self._call(self._lease.grant, ttl_s)
        put = self._kv.txn_op_put(key, encode_lease_attrs(attrs), lease=grant.ID)
        try:
            txn = await self._call(self._kv.txn, [self._kv.txn_compare_version(key, 0)], [put])
        except StoreUnavailable:
            await self._revoke_quietly(grant.ID)
            raise
        if not txn.succeeded:
            await self._revoke_quietly(grant.ID)
            return None
        return Lease(subnet, attrs, ipv6_subnet, grant.ID, txn.header.revision), \
            float(grant.TTL)

    async def update_lease(self, lease: Lease, attrs: LeaseAttrs) -> Lease | None:
        key = self._key(lease.key)
        put = self._kv.txn_op_put(key, encode_lease_attrs(attrs), lease=lease.etcd_lease)
        txn = await self._call(self._kv.txn, [self._mod_revision_is(key, lease.mod_revision)],
                               [put])
        if not txn.succeeded:
            return None
        return Lease(lease.subnet, attrs, lease.ipv6_subnet, lease.etcd_lease,
                     txn.header.revision)

    async def delete_lease(self, lease: Lease) -> None:
        key = self._key(lease.key)
        await self._call(self._kv.txn, [self._mod_revision_is(key, lease.mod_revision)],
                         [self._kv.txn_op_delete(key)])

    async def renew_lease(self, lease: Lease) -> float | None:
        async def keepalive_once(timeout: float) -> float | None:  # noqa: ASYNC109
            async def one_request() -> AsyncIterator[Any]:
                yield LeaseKeepAliveRequest(ID=lease.etcd_lease)

            call = self._lease._stub.LeaseKeepAlive(one_request(),
                                                    metadata=self._metadata() or None)
            try:
                async with asyncio.timeout(timeout):
                    async for response in call:
                        return float(response.TTL) if response.TTL > 0 else None
            finally:
                call.cancel()
            raise StoreUnavailable("keep-alive stream closed without an answer")

        result: float | None = await self._call(keepalive_once)
        return result

    async def _revoke_quietly(self, etcd_lease: int) -> None:
        try:
            await self.revoke(etcd_lease)
        except StoreUnavailable:
            log.debug("could not revoke unused etcd lease %x", etcd_lease)

    async def revoke(self, etcd_lease: int) -> None:
        await self._call(self._lease.revoke, etcd_lease)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self._token),) if self._token else ()

    async def watch_leases(self, start_revision: int) -> AsyncIterator[WatchBatch]:
        if self._settings.username and self._token is None:
            await self._call(self._kv.get, self.config_key)  # authenticates
        key = self._subnets.encode()

        requests = _OneRequest(WatchRequest(create_request=WatchCreateRequest(
            key=key, range_end=prefix_range_end(key), start_revision=start_revision)))
        call = self._watch.Watch(requests, metadata=self._metadata() or None)
        try:
            async for response in call:
                if response.compact_revision > 0:
                    yield WatchBatch((), response.compact_revision, compacted=True)
                    return
                if response.canceled:
                    if "authenticat" in response.cancel_reason.lower():
                        self._token = None
                    raise StoreUnavailable(f"watch canceled: {response.cancel_reason}")
                events = [
                    KeyEvent(
                        name=event.kv.key.decode(errors="replace")[len(self._subnets):],
                        value=bytes(event.kv.value) if event.type == 0 else None,
                        etcd_lease=event.kv.lease,
                        mod_revision=event.kv.mod_revision,
                    )
                    for event in response.events
                ]
                if events:
                    yield WatchBatch(events, events[-1].mod_revision)
                elif response.created:
                    yield WatchBatch((), start_revision - 1)
                else:  # progress notification: everything up to here was sent
                    yield WatchBatch((), response.header.revision)
            raise StoreUnavailable("watch stream closed by etcd")
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                self._token = None
            raise _unavailable(exc) from None
        finally:
            requests.finish()  # ends the request stream gRPC reads, so nothing is left
            call.cancel()      # pending (an async generator here would be closed while
            #                    gRPC still awaits it: "aclose(): ... already running")
