"""Choosing this host's subnet, as flannel's tryAcquireLease does, as a pure function.

Order (Go flannel's): (1) a lease holding our PublicIP that fits the config is reused,
one that does not fit is deleted; (2) the subnet from the previous subnet.env, if free
and fitting; (3) a random pick among the first 100 free aligned subnets between
SubnetMin and SubnetMax. Randomness comes in as an argument.

With EnableIPv6 both subnets are chosen together, as flannel's allocateSubnet does: a
lease fits only if both parts fit (flannel's isSubnetConfigCompat and
isIPv6SubnetConfigCompat), the previous subnet.env's pair is taken only if both are free,
and a new IPv6 subnet is a random pick among the first 100 free ones between
IPv6SubnetMin and IPv6SubnetMax.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Final

from lease.errors import LeaseError

from .config import NetworkConfig
from .model import Lease

MAX_CANDIDATES: Final = 100


@dataclass(frozen=True, slots=True)
class Allocation:
    """What to do: reuse `reuse`, or create `create`; delete `stale` first in both cases."""

    reuse: Lease | None = None
    create: IPv4Network | None = None
    stale: tuple[Lease, ...] = field(default_factory=tuple)
    create6: IPv6Network | None = None  # with EnableIPv6: created together with `create`


def _taken(leases: Sequence[Lease]) -> list[tuple[int, int]]:
    """Occupied address ranges [first, last], whatever their prefix length."""
    return sorted(
        (int(lease.subnet.network_address), int(lease.subnet.broadcast_address))
        for lease in leases
    )


def _taken6(leases: Sequence[Lease]) -> list[tuple[int, int]]:
    return sorted(
        (int(lease.ipv6_subnet.network_address), int(lease.ipv6_subnet.broadcast_address))
        for lease in leases if lease.ipv6_subnet is not None
    )


def _is_free(first: int, last: int, taken: list[tuple[int, int]]) -> bool:
    return all(last < t_first or first > t_last for t_first, t_last in taken)


def free_subnets(
    config: NetworkConfig, leases: Sequence[Lease], limit: int = MAX_CANDIDATES
) -> list[IPv4Network]:
    """The first `limit` free subnets from SubnetMin upwards."""
    return [IPv4Network((first, config.subnet_len)) for first in _free_starts(
        int(config.subnet_min), int(config.subnet_max), config.subnet_size, _taken(leases),
        limit)]


def free_ipv6_subnets(
    config: NetworkConfig, leases: Sequence[Lease], limit: int = MAX_CANDIDATES
) -> list[IPv6Network]:
    """The first `limit` free IPv6 subnets from IPv6SubnetMin upwards ([] without
    EnableIPv6)."""
    if not config.enable_ipv6:
        return []
    assert config.ipv6_subnet_min is not None and config.ipv6_subnet_max is not None
    return [IPv6Network((first, config.ipv6_subnet_len)) for first in _free_starts(
        int(config.ipv6_subnet_min), int(config.ipv6_subnet_max), config.ipv6_subnet_size,
        _taken6(leases), limit)]


def _free_starts(start: int, stop: int, size: int, taken: list[tuple[int, int]],
                 limit: int) -> list[int]:
    """The first addresses of the first `limit` aligned blocks of `size` in [start, stop]
    that overlap none of the sorted `taken` ranges."""
    free: list[int] = []
    index = 0
    for first in range(start, stop + 1, size):
        last = first + size - 1
        # skip the taken ranges that lie wholly below this candidate
        while index < len(taken) and taken[index][1] < first:
            index += 1
        if index < len(taken) and taken[index][0] <= last:
            continue
        free.append(first)
        if len(free) >= limit:
            break
    return free


def allocate(
    config: NetworkConfig,
    leases: Sequence[Lease],
    public_ip: IPv4Address,
    previous: IPv4Network | None,
    rng: random.Random,
    previous6: IPv6Network | None = None,
) -> Allocation:
    """Decide which subnet (with EnableIPv6: which pair) this host gets; LeaseError("out of
    subnets") if none is left."""
    ours = [lease for lease in leases if lease.attrs.public_ip == public_ip]
    stale = tuple(lease for lease in ours
                  if not config.fits_both(lease.subnet, lease.ipv6_subnet))
    fitting = sorted(
        (lease for lease in ours if config.fits_both(lease.subnet, lease.ipv6_subnet)),
        key=lambda lease: (not lease.is_reservation, lease.subnet),
    )
    if fitting:
        return Allocation(reuse=fitting[0], stale=stale)

    others = [lease for lease in leases if lease not in stale]
    wanted6 = previous6 if config.enable_ipv6 else None
    if previous is not None and config.fits_both(previous, wanted6):
        first, last = int(previous.network_address), int(previous.broadcast_address)
        free6 = wanted6 is None or _is_free(int(wanted6.network_address),
                                            int(wanted6.broadcast_address), _taken6(others))
        if free6 and _is_free(first, last, _taken(others)):
            return Allocation(create=previous, stale=stale, create6=wanted6)

    candidates = free_subnets(config, others)
    if not candidates:
        raise LeaseError(
            f"out of subnets: every /{config.subnet_len} between {config.subnet_min} and "
            f"{config.subnet_max} in {config.network} is leased"
        )
    create = rng.choice(candidates)
    if not config.enable_ipv6:
        return Allocation(create=create, stale=stale)
    candidates6 = free_ipv6_subnets(config, others)
    if not candidates6:
        raise LeaseError(
            f"out of subnets: every IPv6 /{config.ipv6_subnet_len} between "
            f"{config.ipv6_subnet_min} and {config.ipv6_subnet_max} in "
            f"{config.ipv6_network} is leased"
        )
    return Allocation(create=create, stale=stale, create6=rng.choice(candidates6))
