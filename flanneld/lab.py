"""A multi-host flannel lab on one machine: the README's first command, and the harness of
the integration tests and benchmarks.

Topology (all inside network namespaces this module creates and always deletes):

    <p>-ul   underlay: bridge br0 192.0.2.254/24, etcd on 192.0.2.254:2379
    <p>-hN   host N: eth0 192.0.2.N/24 on br0, flanneld, bridge docker0 = FLANNEL_SUBNET
    <p>-cN   container N: eth0 = <subnet>.2, default route via docker0

With `ipv6` (`--ipv6`): dual stack. Each host's eth0 also gets 2001:db8::N/64 (the
documentation range), IPv6 forwarding, and the network config EnableIPv6 with an IPv6Network
inside fc00::/7 (fc00:5::/48); docker0 also gets FLANNEL_IPV6_SUBNET and the container
<IPv6 subnet>::2 with a default route via docker0.

Nothing touches the root namespace; the namespaces have no route to the outside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network
from pathlib import Path
from types import FrameType
from typing import Any, Final

from backends import REGISTRY
from flanneld.tables import format_table
from lease.allocation import free_subnets
from lease.config import parse_network_config
from lease.errors import ConfigError

UNDERLAY: Final = IPv4Network("192.0.2.0/24")
ROUTED: Final = IPv4Network("198.51.100.0/24")  # a second underlay, behind a router
ROUTER_IP: Final = "192.0.2.253"
ETCD_IP: Final = "192.0.2.254"
ETCD_PORT: Final = 2379
DEFAULT_NETWORK: Final = "10.5.0.0/16"
UNDERLAY6: Final = IPv6Network("2001:db8::/64")
DEFAULT_NETWORK6: Final = "fc00:5::/48"


class LabError(Exception):
    """A lab step failed; the message says which and why."""


def sh(*args: str, check: bool = True, timeout: float = 30,
       input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; LabError with its stderr if it fails."""
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                                input=input_text, check=False)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(args)}: timed out after {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 20.0,
             interval: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; LabError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Host:
    index: int
    ns: str
    container_ns: str
    workdir: Path
    daemon: subprocess.Popen[bytes] | None = None
    log_handle: Any = None
    address: str = ""  # set for hosts behind the router

    @property
    def ip(self) -> str:
        return self.address or str(UNDERLAY.network_address + self.index)

    @property
    def subnet_file(self) -> Path:
        return self.workdir / "subnet.env"

    @property
    def key_file(self) -> Path:
        """The wireguard backend's private key: one per host (the namespaces share one file
        system, so the default /run/flannel/wgkey would give every host the same key)."""
        return self.workdir / "wgkey"

    @property
    def log_file(self) -> Path:
        return self.workdir / "flanneld.log"

    def subnet_env(self) -> dict[str, str]:
        from .subnet_env import parse_subnet_env

        try:
            return parse_subnet_env(self.subnet_file.read_text())
        except FileNotFoundError:
            return {}

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Interface(self.subnet_env()["FLANNEL_SUBNET"]).network

    @property
    def container_ip(self) -> str:
        return str(self.subnet.network_address + 2)

    @property
    def ip6(self) -> str:
        """The host's IPv6 underlay address (in a lab made with ipv6=True)."""
        return str(UNDERLAY6.network_address + self.index)

    @property
    def subnet6(self) -> IPv6Network:
        return IPv6Interface(self.subnet_env()["FLANNEL_IPV6_SUBNET"]).network

    @property
    def container_ip6(self) -> str:
        return str(self.subnet6.network_address + 2)


@dataclass
class Lab:
    hosts_count: int = 3
    prefix: str = field(default_factory=lambda: "fl" + secrets.token_hex(2))
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="flanneld-lab-")))
    hosts: list[Host] = field(default_factory=list)
    etcd: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)  # member -> etcd
    etcd_members: int = 1
    namespaces: list[str] = field(default_factory=list)
    etcd_user: str = ""  # "name:password" once a test turned etcd auth on
    ipv6: bool = False  # dual-stack underlay: hosts get 2001:db8::N/64 too

    @property
    def underlay_ns(self) -> str:
        return f"{self.prefix}-ul"

    @property
    def etcd_endpoint(self) -> str:
        return self.etcd_endpoints

    # -- topology -----------------------------------------------------------------------

    def _add_ns(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def create_underlay(self) -> None:
        self._add_ns(self.underlay_ns)
        sh("ip", "-n", self.underlay_ns, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.underlay_ns, "addr", "add", f"{ETCD_IP}/24", "dev", "br0")
        sh("ip", "-n", self.underlay_ns, "link", "set", "br0", "up")

    def add_host(self) -> Host:
        index = len(self.hosts) + 1
        host = Host(index, f"{self.prefix}-h{index}", f"{self.prefix}-c{index}",
                    self.workdir / f"h{index}")
        host.workdir.mkdir(parents=True, exist_ok=True)
        self._add_ns(host.ns)
        peer = f"{self.prefix}h{index}"
        sh("ip", "-n", host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
           "netns", self.underlay_ns)
        sh("ip", "-n", self.underlay_ns, "link", "set", peer, "master", "br0", "up")
        sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        if self.ipv6:
            self.exec(host.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0",
                      "net.ipv6.conf.default.disable_ipv6=0", "net.ipv6.conf.all.forwarding=1")
            sh("ip", "-n", host.ns, "addr", "add", f"{host.ip6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
        self.exec(host.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.hosts.append(host)
        return host

    def wire_like(self, host: Host) -> None:
        """Make the underlay port into `host` deliver what a physical wire would.

        veth passes a kernel VXLAN sender's tunnel-GSO super-packets (up to 64 KB) and
        unfinished checksums straight into the receiving namespace, where a userspace
        VXLAN data plane's UDP socket would get them; a NIC on a wire segments and
        finishes them. Called for hosts that run the userspace VXLAN data plane; the
        kernel paths keep their offloads, so benchmarks stay realistic for them. Like a
        NIC's driver, the host's end runs GRO, so UDP GRO batches still reach a socket
        that asks for them."""
        port = f"{self.prefix}h{host.index}" if not host.address else f"{self.prefix}r{host.index}"
        ns = self.underlay_ns if not host.address else f"{self.prefix}-rt"
        self.exec(ns, "ethtool", "-K", port, "tx", "off")
        self.exec(host.ns, "ethtool", "-K", "eth0", "gro", "on")

    def add_routed_host(self) -> Host:
        """A host on 198.51.100.0/24, reachable from the others only through a router
        (<p>-rt: 192.0.2.253 on br0, 198.51.100.1 on its own bridge)."""
        router = f"{self.prefix}-rt"
        if router not in self.namespaces:
            self._add_ns(router)
            uplink = f"{self.prefix}rt"
            sh("ip", "-n", router, "link", "add", "eth0", "type", "veth", "peer", "name", uplink,
               "netns", self.underlay_ns)
            sh("ip", "-n", self.underlay_ns, "link", "set", uplink, "master", "br0", "up")
            sh("ip", "-n", router, "addr", "add", f"{ROUTER_IP}/24", "dev", "eth0")
            sh("ip", "-n", router, "link", "set", "eth0", "up")
            sh("ip", "-n", router, "link", "add", "br1", "type", "bridge")
            sh("ip", "-n", router, "addr", "add", f"{ROUTED.network_address + 1}/24", "dev", "br1")
            sh("ip", "-n", router, "link", "set", "br1", "up")
            self.exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for ns in [self.underlay_ns, *(h.ns for h in self.hosts if not h.address)]:
                sh("ip", "-n", ns, "route", "replace", str(ROUTED), "via", ROUTER_IP)
        index = len(self.hosts) + 1
        host = Host(index, f"{self.prefix}-h{index}", f"{self.prefix}-c{index}",
                    self.workdir / f"h{index}", address=str(ROUTED.network_address + 100 + index))
        host.workdir.mkdir(parents=True, exist_ok=True)
        self._add_ns(host.ns)
        peer = f"{self.prefix}r{index}"
        sh("ip", "-n", host.ns, "link", "add", "eth0", "type", "veth", "peer", "name", peer,
           "netns", router)
        sh("ip", "-n", router, "link", "set", peer, "master", "br1", "up")
        sh("ip", "-n", host.ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        sh("ip", "-n", host.ns, "link", "set", "eth0", "up")
        sh("ip", "-n", host.ns, "route", "add", "default", "via", str(ROUTED.network_address + 1))
        self.exec(host.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.hosts.append(host)
        return host

    def exec(self, ns: str, *args: str, check: bool = True,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    # -- etcd ---------------------------------------------------------------------------

    def _member_port(self, index: int) -> int:
        return ETCD_PORT + 100 * index

    def start_etcd(self, members: int | None = None) -> None:
        """etcd in the underlay namespace: one member, or a cluster of `members` (client
        ports 2379, 2479, ...). Started again after stop_etcd() with its data kept."""
        self.etcd_members = members or self.etcd_members
        cluster = ",".join(f"m{i}=http://127.0.0.1:{self._member_port(i) + 1}"
                           for i in range(self.etcd_members))
        for index in range(self.etcd_members):
            if self.etcd.get(index) is not None:
                continue
            port = self._member_port(index)
            data = self.workdir / f"etcd-m{index}"
            data.mkdir(exist_ok=True)
            with (self.workdir / f"etcd-m{index}.log").open("ab") as log:
                self.etcd[index] = subprocess.Popen(
                    ["ip", "netns", "exec", self.underlay_ns, "etcd", "--name", f"m{index}",
                     "--data-dir", str(data),
                     "--listen-client-urls", f"http://{ETCD_IP}:{port},http://127.0.0.1:{port}",
                     "--advertise-client-urls", f"http://{ETCD_IP}:{port}",
                     "--listen-peer-urls", f"http://127.0.0.1:{port + 1}",
                     "--initial-advertise-peer-urls", f"http://127.0.0.1:{port + 1}",
                     "--initial-cluster", cluster],
                    stdout=log, stderr=log, start_new_session=True,
                )

        def healthy() -> bool:
            return self.etcdctl("endpoint", "health", check=False).returncode == 0

        try:
            wait_for("etcd to answer", healthy, timeout=30, interval=0.1)
        except LabError as exc:  # say why while its log exists (teardown removes it)
            tail = _tail(self.workdir / f"etcd-m{self.etcd_members - 1}.log", 3)
            raise LabError(f"{exc}; etcd's log ends: {tail}") from None

    def stop_etcd(self, member: int | None = None) -> None:
        """Stop one member, or all of them."""
        for index in [member] if member is not None else list(self.etcd):
            proc = self.etcd.pop(index, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @property
    def etcd_endpoints(self) -> str:
        """Every member's client URL, as -etcd-endpoints wants them."""
        return ",".join(f"http://{ETCD_IP}:{self._member_port(i)}"
                        for i in range(self.etcd_members))

    def etcdctl(self, *args: str, check: bool = True,
                input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        alive = [i for i in range(self.etcd_members) if i in self.etcd] or [0]
        endpoints = ",".join(f"http://127.0.0.1:{self._member_port(i)}" for i in alive)
        env_args = ("env", "ETCDCTL_API=3", "etcdctl", "--dial-timeout=2s",
                    f"--endpoints={endpoints}",
                    *([f"--user={self.etcd_user}"] if self.etcd_user else []))
        return sh("ip", "netns", "exec", self.underlay_ns, *env_args, *args, check=check,
                  input_text=input_text)

    def put_config(self, config: dict[str, Any] | str, prefix: str = "/coreos.com/network") -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        self.etcdctl("put", f"{prefix}/config", text)

    def leases(self, prefix: str = "/coreos.com/network") -> dict[str, dict[str, Any]]:
        """subnet key name -> lease JSON, read with etcdctl (a client we did not write)."""
        out = self.etcdctl("get", "--prefix", f"{prefix}/subnets/").stdout.splitlines()
        pairs = zip(out[::2], out[1::2], strict=False)
        return {key.rsplit("/", 1)[1]: json.loads(value) for key, value in pairs}

    # -- daemons ------------------------------------------------------------------------

    def start_daemon(self, host: Host, *extra: str, env: dict[str, str] | None = None,
                     iface: str | None = "eth0") -> None:
        host.log_handle = host.log_file.open("ab")
        args = ["ip", "netns", "exec", host.ns, sys.executable, "-m", "flanneld",
                f"-etcd-endpoints={self.etcd_endpoint}", f"-subnet-file={host.subnet_file}",
                *([f"-iface={iface}"] if iface else []), *extra]
        host.daemon = subprocess.Popen(args, stdout=host.log_handle, stderr=host.log_handle,
                                       env={**os.environ, "WIREGUARD_KEY_FILE": str(host.key_file),
                                            **(env or {})},
                                       start_new_session=True)

    def wait_ready(self, host: Host, timeout: float = 30) -> IPv4Network:
        def ready() -> bool:
            if host.daemon is not None and host.daemon.poll() is not None:
                raise LabError(f"flanneld on {host.ns} exited with {host.daemon.returncode}: "
                               f"{self.log_tail(host)}")
            return "FLANNEL_SUBNET" in host.subnet_env()

        wait_for(f"flanneld on {host.ns} to write subnet.env", ready, timeout)
        return host.subnet

    def stop_daemon(self, host: Host, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Signal the daemon (by its PID) and return its exit code."""
        code = 0
        if host.daemon is not None:
            with contextlib.suppress(ProcessLookupError):
                host.daemon.send_signal(sig)
            try:
                code = host.daemon.wait(timeout)
            except subprocess.TimeoutExpired:
                host.daemon.kill()
                host.daemon.wait()
                raise LabError(
                    f"flanneld on {host.ns} ignored signal {sig} for {timeout} s") from None
            host.daemon = None
        if host.log_handle is not None:
            host.log_handle.close()
            host.log_handle = None
        return code

    def counters(self, host: Host, port: int = 8471) -> dict[str, Any]:
        """The daemon's /counters (needs -healthz-port=<port>), fetched inside its namespace."""
        fetch = ("import sys, urllib.request; "
                 "print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
        out = self.exec(host.ns, sys.executable, "-c", fetch,
                        f"http://{host.ip}:{port}/counters").stdout
        parsed: dict[str, Any] = json.loads(out)
        return parsed

    def log_tail(self, host: Host, lines: int = 5) -> str:
        return _tail(host.log_file, lines)

    # -- containers ---------------------------------------------------------------------

    def add_container(self, host: Host) -> None:
        """What `dockerd --bip=$FLANNEL_SUBNET --mtu=$FLANNEL_MTU` plus one container do."""
        env = host.subnet_env()
        bip, mtu = env["FLANNEL_SUBNET"], env["FLANNEL_MTU"]
        self._add_ns(host.container_ns)
        sh("ip", "-n", host.ns, "link", "add", "docker0", "type", "bridge")
        sh("ip", "-n", host.ns, "link", "set", "docker0", "mtu", mtu)
        sh("ip", "-n", host.ns, "addr", "add", bip, "dev", "docker0")
        sh("ip", "-n", host.ns, "link", "set", "docker0", "up")
        sh("ip", "-n", host.ns, "link", "add", "veth0", "mtu", mtu, "type", "veth", "peer",
           "name", "eth0", "mtu", mtu, "netns", host.container_ns)
        sh("ip", "-n", host.ns, "link", "set", "veth0", "master", "docker0", "up")
        cidr = f"{host.container_ip}/{host.subnet.prefixlen}"
        sh("ip", "-n", host.container_ns, "addr", "add", cidr, "dev", "eth0")
        sh("ip", "-n", host.container_ns, "link", "set", "eth0", "up")
        gateway = str(host.subnet.network_address + 1)
        sh("ip", "-n", host.container_ns, "route", "add", "default", "via", gateway)
        if "FLANNEL_IPV6_SUBNET" in env:  # dual stack: what dockerd --ipv6 does
            self.exec(host.container_ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0")
            sh("ip", "-n", host.ns, "addr", "add", env["FLANNEL_IPV6_SUBNET"], "dev", "docker0",
               "nodad")
            cidr6 = f"{host.container_ip6}/{host.subnet6.prefixlen}"
            sh("ip", "-n", host.container_ns, "addr", "add", cidr6, "dev", "eth0", "nodad")
            sh("ip", "-n", host.container_ns, "-6", "route", "add", "default", "via",
               str(host.subnet6.network_address + 1))

    # -- traffic ------------------------------------------------------------------------

    def ping(self, src: Host, dst_ip: str, count: int = 3, timeout: float = 1) -> dict[str, float]:
        out = self.exec(src.container_ns, "ping", "-n", "-q", "-c", str(count), "-i", "0.2",
                        "-W", str(timeout), dst_ip, check=False, timeout=count * 2 + 10).stdout
        received, rtt = 0, float("nan")
        for line in out.splitlines():
            if "received" in line:
                received = int(line.split(",")[1].split()[0])
            if line.startswith(("rtt", "round-trip")):
                rtt = float(line.split("=")[1].split("/")[1])
        return {"sent": count, "received": received, "rtt_ms": rtt}

    def can_reach(self, src: Host, dst_ip: str) -> bool:
        return self.ping(src, dst_ip, count=1, timeout=1)["received"] == 1

    def iperf(self, client: Host, server: Host, seconds: float = 3,
              streams: int = 1, ipv6: bool = False) -> float:
        """TCP throughput container-to-container in bit/s (iperf3, JSON); over IPv6 between
        the containers' IPv6 addresses with `ipv6`."""
        target = server.container_ip6 if ipv6 else server.container_ip
        srv = subprocess.Popen(["ip", "netns", "exec", server.container_ns, "iperf3", "-s",
                                "-1", "-B", target],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def listening() -> str:
                return self.exec(server.container_ns, "ss", "-Hltn", "sport = :5201").stdout

            wait_for("iperf3 server to listen", listening, timeout=10)
            result = self.exec(client.container_ns, "iperf3", "-J", "-c", target,
                               "-t", f"{seconds:g}", "-P", str(streams), check=False,
                               timeout=seconds + 30)
            try:
                report: dict[str, Any] = json.loads(result.stdout)
                return float(report["end"]["sum_received"]["bits_per_second"])
            except (ValueError, KeyError):
                error = report.get("error") if isinstance(report, dict) else result.stderr
                raise LabError(f"iperf3 c{client.index} -> c{server.index}: {error}") from None
        finally:
            if srv.poll() is None:
                srv.kill()
            srv.wait()

    # -- life cycle ---------------------------------------------------------------------

    def teardown(self) -> None:
        for host in self.hosts:
            with contextlib.suppress(LabError, OSError):
                self.stop_daemon(host, timeout=5)
        with contextlib.suppress(OSError):
            self.stop_etcd()
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "pids", ns, check=False)  # (informational; killed below)
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)  # etcd's data alone is 62 MB

    @contextlib.contextmanager
    def running(self) -> Iterator[Lab]:
        """Underlay + etcd + `hosts_count` hosts; everything removed on exit, whatever happens
        (namespaces, processes, and the work directory with etcd's data and the logs)."""
        try:
            self.create_underlay()
            self.start_etcd()
            for _ in range(self.hosts_count):
                self.add_host()
            yield self
        finally:
            self.teardown()


# -- the lab command ---------------------------------------------------------------------


def _tail(path: Path, lines: int) -> str:
    """The last lines of a log, on one line."""
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _report(lab: Lab, exc: LabError) -> None:
    print(f"\nflanneld-lab: {exc}", file=sys.stderr)
    for host in lab.hosts:
        print(f"  h{host.index} log: {lab.log_tail(host)}", file=sys.stderr)


def _step(number: int, total: int, text: str) -> Callable[..., None]:
    started = time.monotonic()
    print(f"[{number}/{total}] {text} ...", end="", flush=True)

    def done(result: str = "ok") -> None:
        print(f" {result} ({time.monotonic() - started:.1f} s)", flush=True)

    return done


def _network_config(backend: str, network: str, dataplane: str | None = None,
                    network6: str | None = None) -> dict[str, Any]:
    options = {"Dataplane": dataplane} if dataplane else {}
    dual = {"EnableIPv6": True, "IPv6Network": network6} if network6 else {}
    return {"Network": network, **dual, "Backend": {"Type": backend, **options}}


def _network_problem(network: str, hosts: int) -> str:
    """Why `network` cannot carry a lab of `hosts` ("" if it can): what the daemons would
    refuse in etcd, too few subnets, or an overlap with the lab's underlays."""
    try:
        config = parse_network_config(json.dumps({"Network": network}))
    except ConfigError as exc:
        return str(exc).removeprefix("network config: ")
    room = len(free_subnets(config, (), limit=hosts))
    if room < hosts:
        return f"room for {room} subnets of /{config.subnet_len}, not {hosts}"
    clash = next((net for net in (UNDERLAY, ROUTED) if net.overlaps(config.network)), None)
    return f"overlaps the lab's underlay {clash}" if clash else ""


def run_lab(hosts: int, backend: str, network: str, seconds: float, as_json: bool,
            keep: bool, dataplane: str | None = None, ipv6: bool = False) -> int:
    if os.geteuid() != 0:
        print("flanneld-lab: must run as root (it creates network namespaces)", file=sys.stderr)
        return 2
    for tool in ("ip", "etcd", "etcdctl", "iperf3", "ping", "ethtool"):
        if shutil.which(tool) is None:
            print(f"flanneld-lab: {tool} is not installed", file=sys.stderr)
            return 2
    lab = Lab(hosts_count=hosts, ipv6=ipv6)
    total = 6
    network6 = DEFAULT_NETWORK6 if ipv6 else None
    results: dict[str, Any] = {"backend": backend, "hosts": hosts, "network": network,
                               "prefix": lab.prefix}
    if network6:
        results["ipv6_network"] = network6

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        done = _step(1, total, f"underlay, etcd and {hosts} host namespaces ({lab.prefix}-*)")
        with lab.running():
            try:
                done()
                shown = backend + (f" ({dataplane} data plane)" if dataplane else "")
                nets = f"{network} + {network6}" if network6 else network
                done = _step(2, total, f"network config: {nets}, backend {shown}")
                lab.put_config(_network_config(backend, network, dataplane, network6))
                done()
                done = _step(3, total, "starting flanneld on every host")
                for host in lab.hosts:
                    if dataplane == "userspace":
                        lab.wire_like(host)
                    lab.start_daemon(host)
                for host in lab.hosts:
                    lab.wait_ready(host)
                done(", ".join(f"h{h.index}={h.subnet}" for h in lab.hosts))
                done = _step(4, total, "docker0 (--bip=$FLANNEL_SUBNET) and a container per host")
                for host in lab.hosts:
                    lab.add_container(host)
                done()
                done = _step(5, total, "container-to-container ping, every pair"
                             + (" (IPv4 and IPv6)" if ipv6 else ""))
                pairs = [(a, b) for a in lab.hosts for b in lab.hosts if a is not b]
                for a, b in pairs:
                    wait_for(f"c{a.index} -> c{b.index}", partial(lab.can_reach, a, b.container_ip),
                             timeout=10)
                    if ipv6:
                        wait_for(f"c{a.index} -> c{b.index} over IPv6",
                                 partial(lab.can_reach, a, b.container_ip6), timeout=10)
                pings = {(a.index, b.index): lab.ping(a, b.container_ip, count=5) for a, b in pairs}
                pings6 = {(a.index, b.index): lab.ping(a, b.container_ip6, count=5)
                          for a, b in pairs} if ipv6 else {}
                done()
                done = _step(6, total, f"iperf3 between hosts, {seconds:.0f} s each"
                             + (" (IPv4 and IPv6)" if ipv6 else ""))
                ring = list(zip(lab.hosts, [*lab.hosts[1:], lab.hosts[0]], strict=True))
                rates = {(a.index, b.index): lab.iperf(a, b, seconds) for a, b in ring}
                rates6 = {(a.index, b.index): lab.iperf(a, b, seconds, ipv6=True)
                          for a, b in ring} if ipv6 else {}
                done()
                results["subnets"] = {f"h{h.index}": str(h.subnet) for h in lab.hosts}
                results["ping"] = [{"from": f"c{a}", "to": f"c{b}", **v}
                                   for (a, b), v in pings.items()]
                results["iperf3"] = [{"from": f"c{a}", "to": f"c{b}", "gbit_s": r / 1e9}
                                     for (a, b), r in rates.items()]
                if ipv6:
                    results["subnets6"] = {f"h{h.index}": str(h.subnet6) for h in lab.hosts}
                    results["ping6"] = [{"from": f"c{a}", "to": f"c{b}", **v}
                                        for (a, b), v in pings6.items()]
                    results["iperf3_ipv6"] = [{"from": f"c{a}", "to": f"c{b}", "gbit_s": r / 1e9}
                                              for (a, b), r in rates6.items()]
                failed = [p for p in [*results["ping"], *results.get("ping6", [])]
                          if p["received"] != p["sent"]]
                if as_json:
                    print(json.dumps(results, indent=2))
                else:
                    print()
                    print(format_table(["host", "underlay", "subnet"],
                                 [(f"h{h.index}", h.ip, str(h.subnet)) for h in lab.hosts]))
                    print()
                    print(format_table(["from", "to", "received", "rtt"],
                                 [(p["from"], p["to"], f"{p['received']}/{p['sent']}",
                                   f"{p['rtt_ms']:.3f} ms") for p in results["ping"]]))
                    print()
                    print(format_table(["from", "to", "throughput"],
                                 [(r["from"], r["to"], f"{r['gbit_s']:.2f} Gbit/s")
                                  for r in results["iperf3"]]))
                    if ipv6:
                        print()
                        print(format_table(["host", "underlay IPv6", "IPv6 subnet"],
                                           [(f"h{h.index}", h.ip6, str(h.subnet6))
                                            for h in lab.hosts]))
                        print()
                        print(format_table(["from", "to", "IPv6 received", "rtt"],
                                           [(p["from"], p["to"], f"{p['received']}/{p['sent']}",
                                             f"{p['rtt_ms']:.3f} ms") for p in results["ping6"]]))
                        print()
                        print(format_table(["from", "to", "IPv6 throughput"],
                                           [(r["from"], r["to"], f"{r['gbit_s']:.2f} Gbit/s")
                                            for r in results["iperf3_ipv6"]]))
                if keep:
                    print(f"\n--keep: lab stays up until Enter (namespaces {lab.prefix}-*)")
                    with contextlib.suppress(EOFError):
                        input()
                print("\ntearing down ...", flush=True)
                return 1 if failed else 0
            except LabError as exc:  # reported while the logs are still there
                _report(lab, exc)
                return 1
    except LabError as exc:  # the lab itself could not be built
        _report(lab, exc)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted; lab torn down", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="flanneld-lab",
        description="Run N flannel hosts as network namespaces on this machine, with a real "
                    "etcd, containers and traffic; everything is removed afterwards.")
    parser.add_argument("--hosts", type=int, default=3, help="number of hosts (2..50)")
    parser.add_argument("--backend", default="host-gw", choices=sorted(REGISTRY),
                        help="the network config's Backend.Type")
    parser.add_argument("--dataplane", choices=["kernel", "userspace"], default=None,
                        help="vxlan and wireguard: the Backend's Dataplane option")
    parser.add_argument("--network", default=DEFAULT_NETWORK, help="the overlay Network")
    parser.add_argument("--seconds", type=float, default=3, help="iperf3 duration per pair")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--keep", action="store_true", help="wait for Enter before teardown")
    parser.add_argument("--ipv6", action="store_true",
                        help=f"dual stack: EnableIPv6 with IPv6Network {DEFAULT_NETWORK6}, "
                             "underlay 2001:db8::/64, ping and iperf3 over IPv6 too "
                             "(host-gw, wireguard and kernel vxlan)")
    args = parser.parse_args(argv)
    if not 2 <= args.hosts <= 50:
        parser.error("--hosts must be between 2 and 50")
    if args.dataplane and args.backend not in ("vxlan", "wireguard"):
        parser.error("--dataplane goes with --backend vxlan or wireguard")
    if args.ipv6 and (args.backend == "udp"
                      or (args.backend == "vxlan" and args.dataplane == "userspace")):
        parser.error("--ipv6 needs --backend host-gw, wireguard or vxlan (kernel data plane): "
                     "the udp backend and the userspace VXLAN data plane are IPv4-only")
    if not 1 <= args.seconds <= 600:  # loads on this machine are bounded in time
        parser.error("--seconds must be between 1 and 600")
    problem = _network_problem(args.network, args.hosts)
    if problem:
        parser.error(f"--network {args.network}: {problem}")
    sys.exit(run_lab(args.hosts, args.backend, args.network, args.seconds, args.json, args.keep,
                     args.dataplane, args.ipv6))


if __name__ == "__main__":
    main()
