"""Throughput benchmark: every data path between two namespace hosts, in one run.

Paths (container to container unless noted, MTU 1500 underlay):
  underlay       host to host over the veth+bridge underlay itself (the ceiling)
  vxlan-kernel   a Linux VXLAN pair configured by hand (the reference: ratios are to it)
  host-gw        flanneld, host-gw backend
  vxlan          flanneld, vxlan backend, kernel data plane (target: within 5% of vxlan-kernel)
  vxlan-userspace        flanneld, vxlan backend, userspace data plane, offloads on, the
                         native fast path (backends/_native/)
  vxlan-userspace-python the same on the Python engine (FLANNELD_ENGINE=python)
  vxlan-userspace-plain  native, with "Offload": false (one datagram per syscall)
  udp            flanneld, udp backend (TUN TSO + UDP GSO/GRO, cut and joined in userspace),
                 native fast path
  udp-python     the same on the Python engine
  udp-plain      native, with "Offload": false
  socat          `socat TUN<->UDP` carrying flannel's udp format (one packet per syscall)
  python-minimal the same job in the fewest lines of Python (benchmarks/minimal_forwarder.py:
                 uvloop, one packet per syscall, no checks): what Python costs on this machine
  wireguard      flanneld, wireguard backend, userspace data plane (backends/_wg_userspace.py;
                 this machine has no wireguard module, so Dataplane auto lands there)
  wireguard-go   wireguard-go devices configured by hand with `wg`, as Go flannel configures
                 flannel-wg (the reference for wireguard: its ratio is to this row)

For each: iperf3 TCP with 1 and 4 streams, UDP packets per second at 64-byte payloads
(iperf3 -u -l 64 -b 0, counted at the receiver), ping RTT (median of 100, 20 ms apart), and
CPU per Gbit/s (all cores of the machine, busy time during the 1-stream run: the peer's
softirq work lands in the sender's syscalls, so per-process figures mislead). Prints a
table, writes JSON and a PNG bar chart.

Every path runs over the same underlay: veth with its offloads, which carries GSO
super-packets between namespaces unsegmented and checksums unfinished (the kernel paths
gain from that as much as ours). The interop tests give a userspace VXLAN receiver a
wire-like port instead (Lab.wire_like), because a kernel VXLAN peer's tunnel super-packets
must reach it segmented; between two userspace ends that is not needed.
Run as root:  python3 -m benchmarks.throughput [--seconds 4] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any, Final

from benchmarks import guarded
from flanneld.files import write_atomic
from flanneld.lab import Host, Lab, LabError, wait_for
from flanneld.subnet_env import format_subnet_env
from flanneld.tables import format_table

NETWORK = IPv4Network("10.5.0.0/16")
SUBNETS = (IPv4Network("10.5.1.0/24"), IPv4Network("10.5.2.0/24"))
RESULTS = Path(__file__).parent / "results"
PINGS = 100  # 2 s at 20 ms apart: far enough apart that each one finds the hops idle


def set_mtu(lab: Lab, host: Host, mtu: int) -> None:
    """What docker would do with a different FLANNEL_MTU: docker0 and the veth pair."""
    for ns, dev in ((host.ns, "docker0"), (host.ns, "veth0"), (host.container_ns, "eth0")):
        lab.exec(ns, "ip", "link", "set", dev, "mtu", str(mtu))


def measure(lab: Lab, a: Host, b: Host, seconds: float, direct: bool = False) -> dict[str, Any]:
    """iperf3 TCP with 1 and 4 streams, UDP pps at 64 bytes, ping RTT and CPU per Gbit/s,
    a->b; `direct` uses the hosts' underlay addresses."""
    if direct:
        client, server, ip = a.ns, b.ns, b.ip
    else:
        client, server, ip = a.container_ns, b.container_ns, b.container_ip
    wait_for("the path to carry a ping", lambda: lab.exec(
        client, "ping", "-c", "1", "-W", "1", ip, check=False).returncode == 0, timeout=15)
    result: dict[str, Any] = {}
    for streams in (1, 4):
        before = cpu_times()
        report = iperf3(lab, client, server, ip, seconds, "-P", str(streams))
        busy = cpu_busy(before, cpu_times())
        result[f"gbit_s_{streams}"] = report["end"]["sum_received"]["bits_per_second"] / 1e9
        if streams == 1:
            result["cpu_cores"] = busy
            result["cpu_per_gbit_s"] = busy / max(result["gbit_s_1"], 1e-9)
    udp = iperf3(lab, client, server, ip, seconds, "-u", "-l", "64", "-b", "0")["end"]["sum"]
    result["pps_64"] = max(0, udp["packets"] - udp["lost_packets"]) / udp["seconds"]
    result["rtt_ms"] = ping_median_ms(lab.exec(client, "ping", "-c", str(PINGS), "-i", "0.02",
                                              ip, check=False).stdout)
    return result


def ping_median_ms(output: str) -> float:
    """The median round trip of ping's replies (`time=0.123 ms` lines); NaN if none came.
    A median, not ping's mean: on a 2-vCPU machine one late wake-up moves a mean of 20."""
    times = [float(match) for match in re.findall(r"time=([0-9.]+) ms", output)]
    return statistics.median(times) if times else float("nan")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def cpu_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """How many CPUs were busy, on average, between two cpu_times() samples."""
    busy, total = after[0] - before[0], after[1] - before[1]
    return busy / total * (os.cpu_count() or 1) if total else float("nan")


def iperf3(lab: Lab, client_ns: str, server_ns: str, ip: str, seconds: float,
           *options: str) -> dict[str, Any]:
    """One iperf3 run (a fresh one-off server in `server_ns`); its JSON report."""
    server = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for("iperf3 server", lambda: lab.exec(server_ns, "ss", "-Hltn",
                                                   "sport = :5201").stdout, timeout=10)
        out = lab.exec(client_ns, "iperf3", "-J", "-c", ip, "-t", f"{seconds:g}", *options,
                       check=False, timeout=seconds + 30).stdout
        try:
            report: dict[str, Any] = json.loads(out)
        except ValueError:
            raise LabError(f"iperf3 {' '.join(options)}: no report") from None
        if "error" in report:
            raise LabError(f"iperf3 {' '.join(options)}: {report['error']}")
        return report
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


@contextlib.contextmanager
def kernel_vxlan(lab: Lab, a: Host, b: Host) -> Iterator[None]:
    """Two VXLAN devices, static FDB and neighbours, routes: what flannel's vxlan does."""
    macs = {a.index: "02:42:00:00:00:01", b.index: "02:42:00:00:00:02"}
    for me, peer, peer_subnet in ((a, b, SUBNETS[1]), (b, a, SUBNETS[0])):
        lab.exec(me.ns, "ip", "link", "add", "vxbench", "type", "vxlan", "id", "42",
                 "dstport", "4789", "local", me.ip, "dev", "eth0", "nolearning")
        lab.exec(me.ns, "ip", "link", "set", "vxbench", "address", macs[me.index], "mtu", "1450",
                 "up")
        gw = str(peer_subnet.network_address)
        lab.exec(me.ns, "ip", "neigh", "add", gw, "lladdr", macs[peer.index], "dev", "vxbench",
                 "nud", "permanent")
        lab.exec(me.ns, "bridge", "fdb", "append", macs[peer.index], "dev", "vxbench", "dst",
                 peer.ip)
        lab.exec(me.ns, "ip", "route", "add", str(peer_subnet), "via", gw, "dev", "vxbench",
                 "onlink")
        set_mtu(lab, me, 1450)
    try:
        yield
    finally:
        for host in (a, b):
            lab.exec(host.ns, "ip", "link", "del", "vxbench", check=False)


@contextlib.contextmanager
def flanneld(lab: Lab, a: Host, b: Host, backend: str, mtu: int, engine: str = "native",
             **options: Any) -> Iterator[None]:
    lab.etcdctl("del", "--prefix", "/coreos.com/network/subnets/")
    lab.put_config({"Network": str(NETWORK), "Backend": {"Type": backend, **options}})
    for host in (a, b):  # the old subnet.env steers each daemon back to its subnet
        lab.start_daemon(host, env={"FLANNELD_ENGINE": engine,
                                    "WIREGUARD_KEY_FILE": str(host.workdir / "wgkey")})
    try:
        for host, subnet in ((a, SUBNETS[0]), (b, SUBNETS[1])):
            if lab.wait_ready(host) != subnet:
                raise LabError(f"{host.ns} got {host.subnet}, not the hinted {subnet}")
            set_mtu(lab, host, mtu)
        yield
    finally:
        for host in (a, b):
            lab.stop_daemon(host)
            lab.exec(host.ns, "ip", "route", "flush", "proto", "70", check=False)
            lab.exec(host.ns, "ip", "link", "del", "flannel.1", check=False)


def has_link(lab: Lab, host: Host, name: str) -> bool:
    return lab.exec(host.ns, "ip", "link", "show", name, check=False).returncode == 0


@contextlib.contextmanager
def forwarders(lab: Lab, a: Host, b: Host, name: str,
               command: Callable[[Host, Host, IPv4Network], list[str]]) -> Iterator[None]:
    """A userspace TUN<->UDP forwarder per host, each with its own TUN device `name`
    carrying the host's subnet as flannel0 does (<subnet>.0 on the whole network)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for me, peer, subnet in ((a, b, SUBNETS[0]), (b, a, SUBNETS[1])):
            with (me.workdir / f"{name}.log").open("wb") as log:
                procs.append(subprocess.Popen(["ip", "netns", "exec", me.ns,
                                               *command(me, peer, subnet)],
                                              stdout=log, stderr=log, cwd=RESULTS.parents[1]))
        for me, proc, subnet in zip((a, b), procs, SUBNETS, strict=True):
            def up(me: Host = me, proc: subprocess.Popen[bytes] = proc) -> bool:
                if proc.poll() is not None:
                    raise LabError(f"{name} exited: {(me.workdir / f'{name}.log').read_text()}")
                return has_link(lab, me, name)

            wait_for(name, up, timeout=10)
            address = f"{subnet.network_address}/{NETWORK.prefixlen}"
            if address not in lab.exec(me.ns, "ip", "-br", "addr", "show", name).stdout:
                lab.exec(me.ns, "ip", "addr", "add", address, "dev", name)
            lab.exec(me.ns, "ip", "link", "set", name, "mtu", "1472", "up")
            set_mtu(lab, me, 1472)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(5)


@contextlib.contextmanager
def wireguard_go(lab: Lab, a: Host, b: Host) -> Iterator[None]:
    """wireguard-go per host (in the foreground, so we hold its PID), configured with `wg`
    as Go flannel configures flannel-wg: key, ListenPort 51820, the peer at PublicIP:51820
    with its subnet as allowed IPs, <subnet>.0/32 on the device, MTU 1420, a route for the
    network. Each host's device has its own name: wireguard-go's control socket lives in
    /var/run/wireguard/<name>.sock, which the namespaces share."""
    env = {**os.environ, "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD": "1"}
    keys = {}
    for host in (a, b):
        private = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True,
                                check=True).stdout.strip()
        keys[host.index] = (private, public)
        (host.workdir / "wgbench.key").write_text(private)
        (host.workdir / "wgbench.key").chmod(0o400)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for me, peer, subnet, peer_subnet in ((a, b, SUBNETS[0], SUBNETS[1]),
                                               (b, a, SUBNETS[1], SUBNETS[0])):
            with (me.workdir / "wireguard-go.log").open("wb") as log:
                procs.append(subprocess.Popen(["ip", "netns", "exec", me.ns, "wireguard-go",
                                               "-f", f"wgb{me.index}"], env=env, stdout=log,
                                              stderr=log))
            def up(me: Host = me) -> bool:
                return has_link(lab, me, f"wgb{me.index}")

            wait_for(f"wireguard-go's wgb{me.index}", up, timeout=10)
            lab.exec(me.ns, "wg", "set", f"wgb{me.index}", "private-key",
                     str(me.workdir / "wgbench.key"), "listen-port", "51820", "peer",
                     keys[peer.index][1], "endpoint", f"{peer.ip}:51820", "allowed-ips",
                     str(peer_subnet))
            lab.exec(me.ns, "ip", "addr", "add", f"{subnet.network_address}/32", "dev",
                     f"wgb{me.index}")
            lab.exec(me.ns, "ip", "link", "set", f"wgb{me.index}", "mtu", "1420", "up")
            lab.exec(me.ns, "ip", "route", "add", str(NETWORK), "dev", f"wgb{me.index}")
            set_mtu(lab, me, 1420)
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for host in (a, b):
            lab.exec(host.ns, "ip", "link", "del", f"wgb{host.index}", check=False)


def socat(lab: Lab, a: Host, b: Host) -> contextlib.AbstractContextManager[None]:
    """socat TUN<->UDP per host: flannel's udp wire format, one packet per syscall, in C."""
    return forwarders(lab, a, b, "socat0", lambda me, peer, subnet: [
        "socat", "-b", "65536", f"UDP-DATAGRAM:{peer.ip}:8285,bind={me.ip}:8285",
        f"TUN:{subnet.network_address}/{NETWORK.prefixlen},tun-name=socat0,iff-no-pi,iff-up"])


def python_minimal(lab: Lab, a: Host, b: Host) -> contextlib.AbstractContextManager[None]:
    """benchmarks/minimal_forwarder.py per host: the same job in the fewest lines of Python."""
    return forwarders(lab, a, b, "pymin0", lambda me, peer, subnet: [
        sys.executable, "-m", "benchmarks.minimal_forwarder", "--tun", "pymin0",
        "--local", me.ip, "--peer", peer.ip])


COLUMNS = ("path", "1 stream", "4 streams", "x kernel VXLAN", "64 B UDP", "RTT",
           "CPU per Gbit/s")


def _row(r: dict[str, Any]) -> list[str]:
    return [r["path"], f"{r['gbit_s_1']:.2f} Gbit/s", f"{r['gbit_s_4']:.2f} Gbit/s",
            f"{r['ratio_to_vxlan_kernel']:.2f}", f"{r['pps_64'] / 1e3:.0f} kpps",
            f"{r['rtt_ms']:.3f} ms", f"{r['cpu_per_gbit_s']:.2f} cores"]


def _table(rows: Sequence[dict[str, Any]]) -> str:
    return format_table(COLUMNS, [_row(r) for r in rows])


def chart(rows: Sequence[dict[str, Any]], target: Path) -> None:
    """Bars: Gbit/s (1 TCP stream) and 64-byte packets per second, per path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["path"] for r in rows][::-1]
    figure, (rate, pps) = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 1.6))
    bars = rate.barh(names, [r["gbit_s_1"] for r in rows][::-1], color="#4c72b0")
    rate.bar_label(bars, [f"{r['gbit_s_1']:.2f} ({r['ratio_to_vxlan_kernel']:.2f}x)"
                          for r in rows][::-1], padding=3, fontsize=8)
    rate.set_xlabel("Gbit/s, 1 TCP stream (x kernel VXLAN)")
    rate.set_xlim(0, max(r["gbit_s_1"] for r in rows) * 1.35)
    bars = pps.barh(names, [r["pps_64"] / 1e3 for r in rows][::-1], color="#dd8452")
    pps.bar_label(bars, [f"{r['pps_64'] / 1e3:.0f}k" for r in rows][::-1], padding=3,
                  fontsize=8)
    pps.set_xlabel("thousand packets/s, UDP with 64-byte payloads")
    pps.set_xlim(0, max(r["pps_64"] for r in rows) / 1e3 * 1.25)
    pps.set_yticklabels([])
    figure.suptitle("flanneld-py data paths, two namespace hosts, MTU 1500")
    figure.tight_layout()
    figure.savefig(target, dpi=110)
    plt.close(figure)


# the fast path's targets, each a ratio to kernel VXLAN in the same run: (metric, bound)
TARGETS: Final = (
    ("gbit_s_1", ">=", 0.6, "1 TCP stream"),
    ("rtt_ms", "<=", 2.0, "ping RTT"),
    ("pps_64", ">=", 0.9, "UDP packets/s at 64 B"),
    ("cpu_per_gbit_s", "<=", 2.0, "CPU per Gbit/s"),
)
TARGET_PATHS: Final = ("udp", "vxlan-userspace")


def targets(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target for each userspace path measured, as a ratio to vxlan-kernel's figure."""
    by_path = {row["path"]: row for row in rows}
    reference = by_path.get("vxlan-kernel")
    if reference is None:
        return []
    checks = []
    for path in TARGET_PATHS:
        if path not in by_path:
            continue
        for metric, op, bound, label in TARGETS:
            ratio = by_path[path][metric] / reference[metric]
            met = ratio >= bound if op == ">=" else ratio <= bound
            checks.append({"path": path, "metric": label, "ratio": ratio,
                           "target": f"{op} {bound}x", "met": met})
    return checks


def median_of(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each metric's median over repeated runs (and the spread of the 1-stream rate)."""
    merged = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    rates = [run["gbit_s_1"] for run in runs]
    merged["gbit_s_1_min"], merged["gbit_s_1_max"] = min(rates), max(rates)
    return merged


def run(seconds: float, paths: Sequence[str], out: Path | None, repeat: int = 1) -> int:
    lab = Lab(hosts_count=2)
    rows: list[dict[str, Any]] = []
    setups: dict[str, Callable[[Lab, Host, Host], contextlib.AbstractContextManager[None]]] = {
        "underlay": lambda lab, a, b: contextlib.nullcontext(),
        "vxlan-kernel": kernel_vxlan,
        "host-gw": lambda lab, a, b: flanneld(lab, a, b, "host-gw", 1500),
        "udp": lambda lab, a, b: flanneld(lab, a, b, "udp", 1472),
        "udp-python": lambda lab, a, b: flanneld(lab, a, b, "udp", 1472, engine="python"),
        "udp-plain": lambda lab, a, b: flanneld(lab, a, b, "udp", 1472, Offload=False),
        "vxlan": lambda lab, a, b: flanneld(lab, a, b, "vxlan", 1450),
        "vxlan-userspace": lambda lab, a, b: flanneld(lab, a, b, "vxlan", 1450,
                                                      Dataplane="userspace"),
        "vxlan-userspace-python": lambda lab, a, b: flanneld(
            lab, a, b, "vxlan", 1450, engine="python", Dataplane="userspace"),
        "vxlan-userspace-plain": lambda lab, a, b: flanneld(
            lab, a, b, "vxlan", 1450, Dataplane="userspace", Offload=False),
        "socat": socat,
        "python-minimal": python_minimal,
        "wireguard": lambda lab, a, b: flanneld(lab, a, b, "wireguard", 1420),
        "wireguard-go": wireguard_go,
    }
    with lab.running():
        a, b = lab.hosts
        for host, subnet in ((a, SUBNETS[0]), (b, SUBNETS[1])):
            write_atomic(host.subnet_file, format_subnet_env(NETWORK, subnet, 1500, False))
            lab.add_container(host)
        for path in paths:
            print(f"measuring {path} ({2 * seconds * repeat:.0f} s of iperf3) ...", end="",
                  flush=True)
            started = time.monotonic()
            with setups[path](lab, a, b):
                result = median_of([measure(lab, a, b, seconds, direct=path == "underlay")
                                    for _ in range(repeat)])
            rows.append({"path": path, **result})
            print(f" {result['gbit_s_1']:.2f} Gbit/s ({time.monotonic() - started:.0f} s)",
                  flush=True)
    reference = next((r["gbit_s_1"] for r in rows if r["path"] == "vxlan-kernel"), float("nan"))
    for row in rows:
        row["ratio_to_vxlan_kernel"] = row["gbit_s_1"] / reference
    print()
    print(_table(rows))
    by_path = {row["path"]: row for row in rows}
    wg_ratio: dict[str, float] = {}
    if "wireguard" in by_path and "wireguard-go" in by_path:
        ours, theirs = by_path["wireguard"], by_path["wireguard-go"]
        wg_ratio = {metric: ours[metric] / theirs[metric]
                    for metric in ("gbit_s_1", "gbit_s_4", "pps_64", "rtt_ms", "cpu_per_gbit_s")}
        for row in (ours, theirs):
            row["ratio_to_wireguard_go"] = row["gbit_s_1"] / theirs["gbit_s_1"]
        print(f"\nwireguard x wireguard-go (same run): 1 stream {wg_ratio['gbit_s_1']:.2f} "
              f"(target >= 0.5: {'met' if wg_ratio['gbit_s_1'] >= 0.5 else 'NOT met'}), "
              f"4 streams {wg_ratio['gbit_s_4']:.2f}, 64 B UDP {wg_ratio['pps_64']:.2f}, "
              f"RTT {wg_ratio['rtt_ms']:.2f}, CPU per Gbit/s {wg_ratio['cpu_per_gbit_s']:.2f}")
    checks = targets(rows)
    if checks:
        print()
        print(format_table(("path", "target", "x kernel VXLAN", "bound", "met"),
                           [[c["path"], c["metric"], f"{c['ratio']:.2f}", c["target"],
                             "yes" if c["met"] else "NO"] for c in checks]))
    report = {"seconds": seconds, "repeat": repeat, "kernel": platform.release(),
              "cpus": os.cpu_count(), "paths": rows, "targets": checks,
              "wireguard_x_wireguard_go": wg_ratio}
    target = out or RESULTS / "throughput.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report, indent=2) + "\n")
    picture = target.with_suffix(".png")
    chart(rows, picture)
    print(f"\nJSON: {target}\nchart: {picture}")
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="iperf3 duration per run")
    parser.add_argument("--paths", default="underlay,vxlan-kernel,host-gw,vxlan,vxlan-userspace,"
                                           "vxlan-userspace-python,vxlan-userspace-plain,udp,"
                                           "udp-python,udp-plain,socat,python-minimal,"
                                           "wireguard,wireguard-go")
    parser.add_argument("--repeat", type=int, default=1, help="runs per path (medians)")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    paths = [p.strip() for p in args.paths.split(",") if p.strip()]
    known = parser.get_default("paths").split(",")
    unknown = [p for p in paths if p not in known]
    if not 1 <= args.seconds <= 120 or not 1 <= args.repeat <= 20:  # loads stay bounded
        parser.error("--seconds must be between 1 and 120 and --repeat between 1 and 20")
    if unknown or not paths:
        parser.error(f"unknown path {', '.join(unknown)}; known: {', '.join(known)}"
                     if unknown else "no path to measure")

    sys.exit(guarded(lambda: run(args.seconds, paths, args.json, args.repeat)))


if __name__ == "__main__":
    main()
