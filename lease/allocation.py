"""Choosing this host's subnet, as flannel's tryAcquireLease does, as a pure function.

Order (FLANNEL.md §1): (1) a lease holding our PublicIP that fits the config is reused,
one that does not fit is deleted; (2) the subnet from the previous subnet.env, if free
and fitting; (3) a random pick among the first 100 free aligned subnets between
SubnetMin and SubnetMax. Randomness comes in as an argument.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Final

from flanneld.errors import LeaseError

from .config import NetworkConfig
from .model import Lease

MAX_CANDIDATES: Final = 100


@dataclass(frozen=True, slots=True)
class Allocation:
    """What to do: reuse `reuse`, or create `create`; delete `stale` first in both cases."""

    reuse: Lease | None = None
    create: IPv4Network | None = None
    stale: tuple[Lease, ...] = field(default_factory=tuple)


def _taken(leases: Sequence[Lease]) -> list[tuple[int, int]]:
    """Occupied address ranges [first, last], whatever their prefix length."""
    return sorted(
        (int(lease.subnet.network_address), int(lease.subnet.broadcast_address))
        for lease in leases
    )


def _is_free(first: int, last: int, taken: list[tuple[int, int]]) -> bool:
    return all(last < t_first or first > t_last for t_first, t_last in taken)


def free_subnets(
    config: NetworkConfig, leases: Sequence[Lease], limit: int = MAX_CANDIDATES
) -> list[IPv4Network]:
    """The first `limit` free subnets from SubnetMin upwards."""
    taken = _taken(leases)
    size = config.subnet_size
    free: list[IPv4Network] = []
    start, stop = int(config.subnet_min), int(config.subnet_max)
    index = 0
    for first in range(start, stop + 1, size):
        last = first + size - 1
        # skip the taken ranges that lie wholly below this candidate
        while index < len(taken) and taken[index][1] < first:
            index += 1
        if index < len(taken) and taken[index][0] <= last:
            continue
        free.append(IPv4Network((first, config.subnet_len)))
        if len(free) >= limit:
            break
    return free


def allocate(
    config: NetworkConfig,
    leases: Sequence[Lease],
    public_ip: IPv4Address,
    previous: IPv4Network | None,
    rng: random.Random,
) -> Allocation:
    """Decide which subnet this host gets; LeaseError("out of subnets") if none is left."""
    ours = [lease for lease in leases if lease.attrs.public_ip == public_ip]
    stale = tuple(lease for lease in ours if not config.fits(lease.subnet))
    fitting = sorted(
        (lease for lease in ours if config.fits(lease.subnet)),
        key=lambda lease: (not lease.is_reservation, lease.subnet),
    )
    if fitting:
        return Allocation(reuse=fitting[0], stale=stale)

    others = [lease for lease in leases if lease not in stale]
    if previous is not None and config.fits(previous):
        first, last = int(previous.network_address), int(previous.broadcast_address)
        if _is_free(first, last, _taken(others)):
            return Allocation(create=previous, stale=stale)

    candidates = free_subnets(config, others)
    if not candidates:
        raise LeaseError(
            f"out of subnets: every /{config.subnet_len} between {config.subnet_min} and "
            f"{config.subnet_max} in {config.network} is leased"
        )
    return Allocation(create=rng.choice(candidates), stale=stale)
