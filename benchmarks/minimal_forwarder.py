"""The floor for a Python data path: the smallest TUN<->UDP forwarder that speaks the udp
backend's wire format (the bare IPv4 packet in one UDP datagram, port 8285).

It is the plainest fast Python loop, "add_reader + up to 64 os.read/sendto per wake-up":
one peer, no checks, no counters, no batching, no offloads, uvloop as in the daemon. The throughput
benchmark runs it as the `python-minimal` path, so that one run shows what Python itself
costs on the machine at hand, next to `socat` (the same job in C) and the udp backend (the
same job with checks, counters and the fast path). It is a yardstick, not a data plane:
it forwards whatever arrives, from anyone.

    python3 -m benchmarks.minimal_forwarder --tun NAME --local IP --peer IP [--port 8285]

The device is created plain (IFF_TUN | IFF_NO_PI); the caller gives it an address, an MTU
and brings it up. Runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Final

import uvloop

from lease.errors import FlannelError
from tun.device import TunDevice

BURST: Final = 64  # packets per wake-up and direction
PORT: Final = 8285


def forward(tun_fd: int, sock: socket.socket, peer: tuple[str, int]) -> None:
    """Both directions from add_reader callbacks, one packet per syscall."""
    buf = bytearray(65536)
    view = memoryview(buf)

    def from_tun() -> None:
        for _ in range(BURST):
            try:
                n = os.readv(tun_fd, (buf,))
                sock.sendto(view[:n], peer)
            except BlockingIOError:
                return
            except OSError:
                continue  # no route to the peer yet, a full queue: the packet is lost

    def from_net() -> None:
        for _ in range(BURST):
            try:
                n = sock.recv_into(buf)
                os.write(tun_fd, view[:n])
            except BlockingIOError:
                return
            except OSError:
                continue

    loop = asyncio.get_running_loop()
    loop.add_reader(tun_fd, from_tun)
    loop.add_reader(sock.fileno(), from_net)


async def serve(tun: str, local: str, peer: str, port: int) -> None:
    device = TunDevice.open(tun)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((local, port))
        sock.setblocking(False)
        forward(device.fd, sock, (peer, port))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        sock.close()
        device.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="benchmarks.minimal_forwarder",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--tun", required=True, help="TUN device to create")
    parser.add_argument("--local", required=True, help="underlay address to bind")
    parser.add_argument("--peer", required=True, help="the other end's underlay address")
    parser.add_argument("--port", type=int, default=PORT)
    args = parser.parse_args(argv)
    try:
        uvloop.run(serve(args.tun, args.local, args.peer, args.port))
    except (FlannelError, OSError) as exc:
        sys.exit(f"minimal_forwarder: {exc}")


if __name__ == "__main__":
    main()
