"""Control-plane scale benchmark: thousands of simulated leases in a real etcd, real daemons.

What it measures, per backend (host-gw, vxlan with eager programming):
  startup      a new daemon, with N leases already in etcd: time from its start to all N
               peers programmed in the kernel (routes; for vxlan also neighbours and FDB)
  propagation  one new lease, written while `--daemons` daemons run: time until each has
               programmed it (`ip -ts monitor route` in every namespace; max and median)
  memory       each daemon's resident memory with N peers, and per peer (against a daemon
               that has none)
  per event    daemon CPU time per lease event (a burst of updates to existing leases)
  kernel       kernel entries per peer (routes, neighbours, FDB entries)

The simulated leases are ordinary flannel leases (host-gw: PublicIP on the underlay
subnet; vxlan: also a VtepMAC), written in transactions of 128 through etcd3aio from
inside the lab's underlay namespace. Nothing leaves the lab's namespaces.

Run as root:  python3 -m benchmarks.scale [--leases 5000] [--daemons 10] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from benchmarks import guarded
from flanneld.lab import Host, Lab, LabError, wait_for
from flanneld.tables import format_table

RESULTS = Path(__file__).parent / "results"
NETWORK = IPv4Network("10.64.0.0/10")  # 16384 /24 subnets
PROPAGATION = IPv4Network("10.127.255.0/24")  # the lease propagation() adds

# Runs inside the underlay namespace (etcd at 127.0.0.1): writes (or, for a value of None,
# deletes) leases in transactions of etcd's largest size.
WRITER = """
import asyncio, json, sys, time
from etcd3aio.connections import ConnectionManager
from etcd3aio.kv import KVService

async def main(port, items):
    channel = ConnectionManager([f"127.0.0.1:{port}"]).get_channel()
    kv = KVService(channel)
    await kv.get(b"/")  # connected before the clock starts
    print(time.time(), flush=True)
    for start in range(0, len(items), 128):
        batch = items[start:start + 128]
        ops = [kv.txn_op_delete(key.encode()) if value is None else
               kv.txn_op_put(key.encode(), value.encode()) for key, value in batch]
        await kv.txn([], ops, timeout=30)
    await channel.close()

asyncio.run(main(int(sys.argv[1]), json.load(sys.stdin)))
"""


def simulated_leases(count: int, backend: str, skip: set[IPv4Network],
                     generation: int = 0) -> list[tuple[str, str]]:
    """`count` leases for subnets of NETWORK not in `skip`, PublicIPs 192.0.2.100-249 (the
    lab's hosts are .1 and up: a lease with a host's own address would be taken as its
    own); another `generation` moves every PublicIP (and VtepMAC)."""
    items: list[tuple[str, str]] = []
    subnets = (s for s in NETWORK.subnets(new_prefix=24) if s not in skip)
    for index, subnet in zip(range(count), subnets, strict=False):
        public_ip = f"192.0.2.{100 + (index + generation) % 150}"
        if backend == "vxlan":
            mac = f"0e:{generation:02x}:{index >> 16 & 255:02x}:{index >> 8 & 255:02x}:" \
                  f"{index & 255:02x}:01"
            value = json.dumps({"PublicIP": public_ip, "PublicIPv6": None,
                                "BackendType": "vxlan",
                                "BackendData": {"VNI": 1, "VtepMAC": mac}},
                               separators=(",", ":"))
        else:
            value = json.dumps({"PublicIP": public_ip, "PublicIPv6": None,
                                "BackendType": "host-gw"}, separators=(",", ":"))
        key = f"/coreos.com/network/subnets/{subnet.network_address}-24"
        items.append((key, value))
    return items


def write_leases(lab: Lab, items: Sequence[tuple[str, str | None]]) -> float:
    """Write `items` (a value of None deletes the key); the wall-clock time the first
    transaction was sent."""
    done = subprocess.run(["ip", "netns", "exec", lab.underlay_ns, sys.executable, "-c",
                           WRITER, "2379"], input=json.dumps(list(items)), text=True,
                          check=True, timeout=300, stdout=subprocess.PIPE)
    return float(done.stdout.split()[0])


def kernel_entries(lab: Lab, host: Host, backend: str) -> dict[str, int]:
    """Routes with our protocol tag; for vxlan also flannel.1's neighbours and FDB."""
    routes = lab.exec(host.ns, "ip", "route", "show", "proto", "70").stdout.count("\n")
    entries = {"routes": routes}
    if backend == "vxlan":
        entries["neighbours"] = lab.exec(host.ns, "ip", "neigh", "show", "dev",
                                         "flannel.1").stdout.count("\n")
        entries["fdb"] = lab.exec(host.ns, "bridge", "fdb", "show", "dev",
                                  "flannel.1").stdout.count("dst ")
    return entries


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(host: Host) -> int:
    assert host.daemon is not None
    return host.daemon.pid  # `ip netns exec` execs the interpreter: same PID


def startup(lab: Lab, host: Host, backend: str, peers: int) -> float:
    """Start `host`'s daemon; seconds until all `peers` are programmed."""
    started = time.monotonic()
    lab.start_daemon(host)
    lab.wait_ready(host, timeout=120)

    def programmed() -> bool:
        return all(count >= peers for count in kernel_entries(lab, host, backend).values())

    wait_for(f"{host.ns} to program {peers} peers", programmed, timeout=300, interval=0.1)
    return time.monotonic() - started


def propagation(lab: Lab, hosts: Sequence[Host], backend: str) -> list[float]:
    """Write one new lease; seconds until each host has its route."""
    subnet = PROPAGATION
    monitors = [subprocess.Popen(["ip", "netns", "exec", host.ns, "ip", "-ts", "monitor",
                                  "route"], stdout=subprocess.PIPE, text=True)
                for host in hosts]
    try:
        time.sleep(0.5)  # the monitors subscribe before the write
        item = simulated_leases(1, backend, set(), generation=0xEE)[0]
        written = write_leases(lab, [(f"/coreos.com/network/subnets/"
                                      f"{subnet.network_address}-24", item[1])])
        wait_for("every host to route the new lease", lambda: all(
            str(subnet) in lab.exec(host.ns, "ip", "route", "show", str(subnet)).stdout
            for host in hosts), timeout=30, interval=0.05)
    finally:
        for monitor in monitors:
            monitor.send_signal(signal.SIGTERM)
    delays: list[float] = []
    for monitor in monitors:
        out = monitor.communicate(timeout=10)[0]
        line = next(line for line in out.splitlines() if str(subnet) in line)
        stamp = datetime.strptime(line[1:line.index("]")], "%Y-%m-%dT%H:%M:%S.%f")
        delays.append(stamp.timestamp() - written)
    return delays


def per_event_cpu(lab: Lab, hosts: Sequence[Host], backend: str, leases: int,
                  skip: set[IPv4Network]) -> float:
    """CPU seconds per lease event: rewrite 1000 leases (a new PublicIP), averaged."""
    events = min(1000, leases)
    before = [cpu_s(pid_of(host)) for host in hosts]
    items = simulated_leases(events, backend, skip, generation=1)
    write_leases(lab, items)
    key, value = items[-1]  # the last event applied everywhere: all of them are
    subnet = key.rsplit("/", 1)[1].replace("-", "/")
    doc = json.loads(value)

    def applied(host: Host) -> bool:
        if backend == "vxlan":
            gateway = subnet.split("/")[0]
            return doc["BackendData"]["VtepMAC"] in lab.exec(
                host.ns, "ip", "neigh", "show", gateway, "dev", "flannel.1").stdout
        return f"via {doc['PublicIP']} " in lab.exec(host.ns, "ip", "route", "show",
                                                      subnet).stdout

    wait_for("the updates to be applied", lambda: all(applied(h) for h in hosts),
             timeout=300, interval=0.2)
    after = [cpu_s(pid_of(host)) for host in hosts]

    return statistics.median((b - a) / events for a, b in zip(before, after, strict=True))


def mass_removal(lab: Lab, hosts: Sequence[Host], backend: str, leases: int,
                 own: set[IPv4Network]) -> float:
    """Delete the simulated leases at once (etcd transactions of 128), and propagation()'s;
    seconds until every daemon has taken all their kernel entries away (the daemons' own
    leases stay)."""
    gone: list[tuple[str, str | None]] = [
        (key, None) for key, _ in simulated_leases(leases, backend, own)]
    gone.append((f"/coreos.com/network/subnets/{PROPAGATION.network_address}-24", None))
    began = time.monotonic()
    write_leases(lab, gone)

    def cleaned() -> bool:
        return all(count <= len(hosts) - 1
                   for host in hosts for count in kernel_entries(lab, host, backend).values())

    wait_for(f"all {leases} peers to be removed", cleaned, timeout=300, interval=0.1)
    return time.monotonic() - began


def run_backend(backend: str, leases: int, daemons: int) -> dict[str, Any]:
    lab = Lab(hosts_count=0)
    result: dict[str, Any] = {"backend": backend, "leases": leases, "daemons": daemons}
    with lab.running():
        config: dict[str, Any] = {"Network": str(NETWORK), "Backend": {"Type": backend}}
        lab.put_config(config)
        hosts = [lab.add_host() for _ in range(daemons + 1)]
        idle = hosts[-1]  # measured alone first: the baseline memory without peers
        lab.start_daemon(idle)
        lab.wait_ready(idle)
        time.sleep(1)
        baseline = rss_mib(pid_of(idle))
        lab.stop_daemon(idle)
        lab.etcdctl("del", "--prefix", "/coreos.com/network/subnets/")
        print(f"[{backend}] writing {leases} leases ...", flush=True)
        began = time.monotonic()
        write_leases(lab, simulated_leases(leases, backend, set()))
        result["write_s"] = time.monotonic() - began
        print(f"[{backend}] starting {daemons} daemons one by one ...", flush=True)
        startups = [startup(lab, host, backend, leases + index)
                    for index, host in enumerate(hosts[:daemons])]
        result["startup_s"] = {"first": startups[0], "max": max(startups),
                               "median": statistics.median(startups)}
        print(f"[{backend}] start-up: {max(startups):.2f} s at most", flush=True)
        running = hosts[:daemons]
        delays = propagation(lab, running, backend)
        result["propagation_s"] = {"max": max(delays), "median": statistics.median(delays)}
        print(f"[{backend}] one new lease on all {daemons}: {max(delays) * 1e3:.0f} ms",
              flush=True)
        memory = [rss_mib(pid_of(host)) for host in running]
        result["rss_mib"] = {"median": statistics.median(memory), "baseline": baseline}
        peers = leases + daemons
        result["kib_per_peer"] = (statistics.median(memory) - baseline) * 1024 / peers
        result["kernel_entries_per_peer"] = {
            kind: count / peers for kind, count in kernel_entries(lab, running[0],
                                                                  backend).items()}
        own = {host.subnet for host in running}
        result["cpu_ms_per_event"] = per_event_cpu(lab, running, backend, leases, own) * 1e3
        result["all_leave_s"] = mass_removal(lab, running, backend, leases, own)
        print(f"[{backend}] all {leases} leave at once: gone on all {daemons} in "
              f"{result['all_leave_s']:.2f} s", flush=True)
        for host in running:
            if host.daemon is None or host.daemon.poll() is not None:
                raise LabError(f"{host.ns}'s daemon died: {lab.log_tail(host)}")
    return result


def _table(results: Sequence[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        entries = ", ".join(f"{v:.2f} {k}" for k, v in r["kernel_entries_per_peer"].items())
        rows.append((r["backend"], str(r["leases"]), f"{r['startup_s']['max']:.2f} s",
                     f"{r['propagation_s']['max'] * 1e3:.0f} ms",
                     f"{r['rss_mib']['median']:.1f} MiB", f"{r['kib_per_peer']:.2f} KiB",
                     f"{r['cpu_ms_per_event']:.3f} ms", f"{r['all_leave_s']:.2f} s",
                     entries))
    return format_table(("backend", "leases", "start-up (max)", "new lease on all (max)",
                         "RSS (median)", "per peer", "CPU per event", "all leave at once",
                         "kernel entries per peer"), rows)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leases", type=int, default=5000, help="simulated leases")
    parser.add_argument("--daemons", type=int, default=10, help="daemons running at once")
    parser.add_argument("--backends", default="host-gw,vxlan")
    parser.add_argument("--json", type=Path, default=None, help="where to write the JSON")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not 1 <= args.leases <= 16000 or not 1 <= args.daemons <= 200:
        parser.error("--leases must be 1..16000 and --daemons 1..200")
    if any(b not in ("host-gw", "vxlan") for b in backends) or not backends:
        parser.error("--backends: host-gw and/or vxlan")

    results = guarded(lambda: [run_backend(backend, args.leases, args.daemons)
                               for backend in backends])
    print()
    print(_table(results))
    target = args.json or RESULTS / "scale.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({"kernel": os.uname().release, "results": results},
                                 indent=2) + "\n")
    print(f"\nJSON: {target}")


if __name__ == "__main__":
    main()
