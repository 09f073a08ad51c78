"""Cutting one super-packet, for tests: tun/offload.py cuts whole bursts
(segment_tcp4_many); a test usually has one packet and wants its segments."""

from __future__ import annotations

from tun.offload import Segmented, segment_tcp4_many, tso_header_len


def segment_tcp4(packet: memoryview, n: int, gso_size: int, prefix: bytes | memoryview,
                 out: bytearray | memoryview) -> Segmented | None:
    """Cut the IPv4/TCP super-packet packet[:n] into segments of `gso_size` payload bytes,
    each `prefix` + IP header + TCP header + payload; None if it is not one to cut or `out`
    is too small (as segment_tcp4_many says)."""
    if not tso_header_len(packet, n, gso_size):
        return None
    h = len(prefix)
    source = bytearray(h + n)
    source[:h], source[h:] = prefix, packet[:n]
    return segment_tcp4_many(source, 0, len(source), [n], gso_size, h, out)
