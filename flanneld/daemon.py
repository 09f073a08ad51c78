"""The daemon, top to bottom: pick the interface, read the config, create the backend,
acquire the lease, write subnet.env, then run renewal, the lease watch and the backend in
one TaskGroup until SIGTERM/SIGINT. The lease stays in etcd and the backend's kernel state
stays in place on exit, so a restart takes the same subnet and traffic keeps flowing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import uvloop

from backends import Backend, BackendContext, ExternalInterface, check_backend, create_backend
from backends._codec import engine_choice
from lease.config import BackendSpec, NetworkConfig
from lease.errors import BackendError, ConfigError, DecodeError, FlannelError
from lease.etcd_store import EtcdLeaseStore, EtcdSettings
from lease.manager import LeaseManager, LeaseSettings
from lease.model import Lease

from .files import check_writable, write_atomic
from .health import HealthServer, HealthState
from .iface import check_ipv6, pick_interface
from .iptables import IPTables, Rule, forward_rules, keep_rules, masq_rules
from .options import Options
from .report import Report
from .subnet_env import (
    format_subnet_env,
    parse_subnet_env,
    previous_ipv6_subnet,
    previous_subnet,
)
from .systemd import Notifier

log = logging.getLogger("flanneld")


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def setup_logging(verbosity: int) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 0 else logging.INFO,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("grpc", "etcd3aio", "pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbosity < 5 else logging.DEBUG)


def _hint_from_subnet_file(path: str) -> tuple[IPv4Network | None, IPv6Network | None]:
    """The subnets (IPv4, IPv6) of a previous run, from the old subnet.env, if it is
    readable."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        log.warning("cannot read %s: %s; not using it as a hint", path, exc.strerror)
        return None, None
    try:
        values = parse_subnet_env(text)
        return previous_subnet(values), previous_ipv6_subnet(values)
    except DecodeError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None, None


def with_node_overrides(config: NetworkConfig, options: Options) -> NetworkConfig:
    """This node's own choices on top of the shared config (-vxlan-dataplane,
    -wireguard-dataplane, -offload)."""
    options_ = dict(config.backend.options)
    if options.vxlan_dataplane and config.backend.type == "vxlan":
        options_ = {**_without(options_, "dataplane"), "Dataplane": options.vxlan_dataplane}
    if options.wireguard_dataplane and config.backend.type == "wireguard":
        options_ = {**_without(options_, "dataplane"), "Dataplane": options.wireguard_dataplane}
    if options.offload and config.backend.type in ("udp", "vxlan", "wireguard"):
        options_ = {**_without(options_, "offload"), "Offload": options.offload == "on"}
    if options_ == config.backend.options:
        return config
    return dataclasses.replace(config, backend=BackendSpec(config.backend.type, options_))


def _without(options: dict[str, Any], name: str) -> dict[str, Any]:
    """`options` without the key `name` in any letter case (flannel matches keys so)."""
    return {key: value for key, value in options.items() if key.lower() != name}


async def traffic_rules(
    options: Options, network: IPv4Network | IPv6Network, subnet: IPv4Network | IPv6Network
) -> tuple[IPTables, Callable[[], list[Rule]]] | None:
    """flannel's iptables rules for -ip-masq and -iptables-forward-rules, or None; for an
    IPv6 network and subnet, its ip6tables rules."""
    if not (options.ip_masq or options.iptables_forward_rules):
        return None
    ipt = IPTables.v6() if network.version == 6 else IPTables()
    if not await asyncio.to_thread(ipt.available):
        if options.ip_masq:
            raise BackendError(f"-ip-masq needs {ipt.iptables}, which is not installed")
        log.warning("%s is not installed: FLANNEL-FWD accept rules not set up "
                    "(pass -iptables-forward-rules=false to silence this)", ipt.iptables)
        return None
    random_fully = await asyncio.to_thread(ipt.supports_random_fully)

    def rules() -> list[Rule]:
        wanted = masq_rules(network, subnet, random_fully) if options.ip_masq else []
        return wanted + (forward_rules(network) if options.iptables_forward_rules else [])

    return ipt, rules


def _cannot_write(path: str, exc: OSError) -> ConfigError:
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != path else ""
    return ConfigError(f"-subnet-file {path}: cannot write it: {exc.strerror or exc}{where}")


def _lease_manager(options: Options, iface: ExternalInterface) -> tuple[EtcdLeaseStore,
                                                                          LeaseManager]:
    """etcd and the lease manager over it, hinted with the subnets of our last subnet.env."""
    store = EtcdLeaseStore(EtcdSettings(
        endpoints=[e.strip() for e in options.etcd_endpoints.split(",") if e.strip()],
        prefix=options.etcd_prefix, cafile=options.etcd_cafile,
        certfile=options.etcd_certfile, keyfile=options.etcd_keyfile,
        username=options.etcd_username, password=options.etcd_password,
    ))
    hint, hint6 = _hint_from_subnet_file(options.subnet_file)
    return store, LeaseManager(store, MonotonicClock(), LeaseSettings(
        public_ip=iface.public_ip, ttl_s=options.subnet_lease_ttl,
        renew_margin_s=options.subnet_lease_renew_margin * 60.0,
        previous_subnet=hint, previous_ipv6_subnet=hint6,
    ), random.Random())


def _write_subnet_env(options: Options, config: NetworkConfig, lease: Lease, mtu: int) -> None:
    try:
        write_atomic(options.subnet_file, format_subnet_env(
            config.network, lease.subnet, mtu, options.ip_masq, config.ipv6_network,
            lease.ipv6_subnet))
    except OSError as exc:
        raise _cannot_write(options.subnet_file, exc) from None


async def _rule_keepers(options: Options, config: NetworkConfig,
                        lease: Lease) -> list[tuple[str, IPTables, Callable[[], list[Rule]]]]:
    """(task name, iptables or ip6tables, its rules) for each family that has rules."""
    keepers = []
    rules = await traffic_rules(options, config.network, lease.subnet)
    if rules is not None:
        keepers.append(("iptables", *rules))
    if config.ipv6_network is not None and lease.ipv6_subnet is not None:
        rules6 = await traffic_rules(options, config.ipv6_network, lease.ipv6_subnet)
        if rules6 is not None:
            keepers.append(("ip6tables", *rules6))
    return keepers


async def serve(options: Options) -> None:
    engine_choice(os.environ)  # FLANNELD_ENGINE: a bad value is one line before anything starts
    try:  # before anything is leased or programmed, not after
        check_writable(options.subnet_file)
    except OSError as exc:
        raise _cannot_write(options.subnet_file, exc) from None
    iface = await pick_interface(options.iface, options.iface_regex, options.iface_can_reach,
                                 options.public_ip, options.public_ipv6)
    log.info("using interface name=%s address=%s public_ip=%s mtu=%d",
             iface.name, iface.address, iface.public_ip, iface.mtu)
    store, manager = _lease_manager(options, iface)
    notifier, health = Notifier(), HealthState()
    server = HealthServer(health, options.healthz_ip, options.healthz_port)
    backend: Backend | None = None
    try:
        if options.healthz_port:
            await server.start()
        config = with_node_overrides(await manager.wait_for_config(), options)
        log.info("network config network=%s subnet_len=%d backend=%s",
                 config.network, config.subnet_len, config.backend.type)
        backend = create_backend(BackendContext(config, iface))
        if config.enable_ipv6:
            check_ipv6(iface)
            log.info("dual stack ipv6_network=%s ipv6_subnet_len=%d address6=%s "
                     "public_ipv6=%s", config.ipv6_network, config.ipv6_subnet_len,
                     iface.address6, iface.public_ipv6)
        previous = await manager.previous_attrs(config)
        lease = await manager.acquire(config, await backend.lease_attrs(previous))
        await backend.start(lease)
        _write_subnet_env(options, config, lease, backend.mtu)
        report = Report(manager, lease, config, backend)
        health.counters, health.status = report.counters, report.status
        keepers = await _rule_keepers(options, config, lease)
        log.info("running subnet=%s mtu=%d subnet_file=%s",
                 lease.subnet, backend.mtu, options.subnet_file)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(manager.run_renewal(), name="renewal")
            tasks.create_task(manager.run_watch(backend.apply), name="watch")
            tasks.create_task(backend.run(), name="backend")
            tasks.create_task(notifier.run_watchdog(), name="watchdog")
            tasks.create_task(manager.run_config_watch(config, check=check_backend),
                              name="config")
            installed = [asyncio.Event() for _ in keepers]
            for (name, ipt, rules), event in zip(keepers, installed, strict=True):
                tasks.create_task(keep_rules(ipt, rules, options.iptables_resync, event.set),
                                  name=name)
            for event in installed:
                await event.wait()
            health.ready = True  # subnet.env written, rules installed, backend running
            notifier.notify("READY=1")
            log.info("ready")
    finally:
        health.ready = False
        notifier.notify("STOPPING=1")
        await server.close()
        if backend is not None:
            await backend.close()
        await store.close()


async def _main(options: Options) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopping: list[str] = []

    def stop(name: str) -> None:
        if not stopping:
            log.info("received %s, shutting down (lease and routes stay in place)", name)
        stopping.append(name)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    status = 0
    try:
        try:
            await serve(options)
        except* FlannelError as group:
            for exc in group.exceptions:
                log.error("%s", exc)
            status = 1
    except asyncio.CancelledError:
        if not stopping:
            raise
    return status


def run_daemon(options: Options) -> int:
    setup_logging(options.v)
    try:
        return uvloop.run(_main(options))
    except KeyboardInterrupt:
        return 0
