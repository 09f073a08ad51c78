"""Tests for lease/allocation.py: flannel's tryAcquireLease as a pure function."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Network
from typing import Any, Final

import pytest

from lease.allocation import MAX_CANDIDATES, Allocation, allocate, free_subnets
from lease.config import NetworkConfig, parse_network_config
from lease.errors import LeaseError
from lease.model import Lease, LeaseAttrs

OUR_IP: Final = IPv4Address("192.168.0.10")


def make_config(**fields: Any) -> NetworkConfig:
    """Network 10.5.0.0/16 with /24 subnets (10.5.1.0 .. 10.5.255.0) unless overridden."""
    doc: dict[str, Any] = {"Network": "10.5.0.0/16", "Backend": {"Type": "vxlan"}}
    doc.update(fields)
    return parse_network_config(json.dumps(doc))


def make_lease(
    cidr: str, public_ip: str | IPv4Address = "192.168.0.1", etcd_lease: int = 1
) -> Lease:
    return Lease(IPv4Network(cidr), LeaseAttrs(IPv4Address(public_ip)), etcd_lease=etcd_lease)


def others(*cidrs: str) -> list[Lease]:
    """Leases of other hosts, one per CIDR, each with its own PublicIP."""
    return [make_lease(cidr, f"192.168.1.{i + 1}") for i, cidr in enumerate(cidrs)]


def overlaps(a: IPv4Network, leases: Sequence[Lease]) -> bool:
    return any(a.overlaps(lease.subnet) for lease in leases)


def test_make_config_helper() -> None:
    config = make_config(SubnetMin="10.5.10.0", SubnetMax="10.5.12.0")
    assert config.subnet_min == IPv4Address("10.5.10.0")
    assert config.subnet_max == IPv4Address("10.5.12.0")
    assert config.subnet_len == 24


# --- (1) a lease with our PublicIP ----------------------------------------------------------


def test_reuse_fitting_lease_with_our_public_ip() -> None:
    ours = make_lease("10.5.7.0/24", OUR_IP, etcd_lease=5)
    leases = [*others("10.5.1.0/24", "10.5.2.0/24"), ours, *others("10.5.9.0/24")]
    result = allocate(make_config(), leases, OUR_IP, IPv4Network("10.5.42.0/24"), random.Random(1))
    assert result == Allocation(reuse=ours, create=None, stale=())


@pytest.mark.parametrize("reservation_first", [True, False])
def test_reservation_is_preferred(reservation_first: bool) -> None:
    expiring = make_lease("10.5.3.0/24", OUR_IP, etcd_lease=9)
    reservation = make_lease("10.5.9.0/24", OUR_IP, etcd_lease=0)
    ours = [reservation, expiring] if reservation_first else [expiring, reservation]
    leases = [*others("10.5.1.0/24"), *ours]
    result = allocate(make_config(), leases, OUR_IP, None, random.Random(1))
    assert result.reuse == reservation
    assert result.reuse is not None and result.reuse.is_reservation
    assert result.create is None
    assert result.stale == ()


@pytest.mark.parametrize(
    "cidr",
    [
        "10.5.0.0/24",  # below SubnetMin (the first subnet is skipped)
        "10.5.7.0/25",  # wrong length
        "10.5.6.0/23",
        "10.6.7.0/24",  # outside Network
        "172.16.0.0/24",
    ],
)
def test_non_fitting_lease_with_our_public_ip_is_stale(cidr: str) -> None:
    ours = make_lease(cidr, OUR_IP)
    leases = [*others("10.5.1.0/24"), ours]
    result = allocate(make_config(), leases, OUR_IP, None, random.Random(1))
    assert result.reuse is None
    assert result.stale == (ours,)
    assert result.create is not None
    assert result.create != IPv4Network("10.5.1.0/24")
    assert make_config().fits(result.create)


def test_non_fitting_reservation_with_our_public_ip_is_stale() -> None:
    ours = make_lease("10.5.7.0/25", OUR_IP, etcd_lease=0)
    result = allocate(make_config(), [ours], OUR_IP, None, random.Random(1))
    assert result.reuse is None
    assert result.stale == (ours,)


def test_fitting_reused_and_non_fitting_deleted_together() -> None:
    fitting = make_lease("10.5.7.0/24", OUR_IP)
    non_fitting = make_lease("10.5.8.0/25", OUR_IP)
    leases = [non_fitting, *others("10.5.1.0/24"), fitting]
    result = allocate(make_config(), leases, OUR_IP, None, random.Random(1))
    assert result == Allocation(reuse=fitting, create=None, stale=(non_fitting,))


def test_stale_lease_does_not_block_its_own_space() -> None:
    # Only 10.5.7.0/24 is allocatable; our old /25 in it is deleted first, so it is free.
    config = make_config(SubnetMin="10.5.7.0", SubnetMax="10.5.7.0")
    ours = make_lease("10.5.7.0/25", OUR_IP)
    result = allocate(config, [ours], OUR_IP, None, random.Random(1))
    assert result == Allocation(create=IPv4Network("10.5.7.0/24"), stale=(ours,))


def test_leases_of_other_hosts_are_never_reused_or_deleted() -> None:
    leases = others("10.5.1.0/24", "10.5.0.0/24", "10.5.2.0/25")
    result = allocate(make_config(), leases, OUR_IP, None, random.Random(1))
    assert result.reuse is None
    assert result.stale == ()
    assert result.create is not None
    assert not overlaps(result.create, leases)


# --- (2) the previous subnet ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 1234])
def test_previous_subnet_used_when_free_and_fitting(seed: int) -> None:
    previous = IPv4Network("10.5.42.0/24")
    leases = others("10.5.1.0/24", "10.5.41.0/24", "10.5.43.0/24")
    result = allocate(make_config(), leases, OUR_IP, previous, random.Random(seed))
    assert result == Allocation(reuse=None, create=previous, stale=())


def test_previous_subnet_at_the_range_edges() -> None:
    for cidr in ("10.5.1.0/24", "10.5.255.0/24"):
        result = allocate(make_config(), [], OUR_IP, IPv4Network(cidr), random.Random(1))
        assert result.create == IPv4Network(cidr)


def test_own_fitting_lease_beats_previous_subnet() -> None:
    ours = make_lease("10.5.7.0/24", OUR_IP)
    result = allocate(make_config(), [ours], OUR_IP, IPv4Network("10.5.42.0/24"), random.Random(1))
    assert result == Allocation(reuse=ours)


@pytest.mark.parametrize(
    "taker",
    [
        "10.5.10.0/24",  # the same subnet
        "10.5.10.128/25",  # a smaller lease inside it
        "10.5.10.64/26",
        "10.5.10.0/23",  # a bigger lease around it (also takes 10.5.11.0)
    ],
)
def test_previous_subnet_ignored_when_taken(taker: str) -> None:
    # Allocatable: 10.5.10.0, 10.5.11.0, 10.5.12.0.
    config = make_config(SubnetMin="10.5.10.0", SubnetMax="10.5.12.0")
    leases = [*others(taker), *others("10.5.11.0/24")]
    for seed in range(20):
        result = allocate(config, leases, OUR_IP, IPv4Network("10.5.10.0/24"), random.Random(seed))
        assert result == Allocation(create=IPv4Network("10.5.12.0/24"))


@pytest.mark.parametrize(
    "previous",
    [
        "10.5.0.0/24",  # the skipped first subnet
        "10.5.10.0/24",  # inside Network, outside SubnetMin..SubnetMax
        "10.5.12.0/24",
        "10.5.11.0/25",  # wrong length
        "10.5.11.128/25",
        "10.5.10.0/23",
        "10.6.11.0/24",  # outside Network
    ],
)
def test_previous_subnet_ignored_when_not_fitting(previous: str) -> None:
    config = make_config(SubnetMin="10.5.11.0", SubnetMax="10.5.11.0")
    result = allocate(config, [], OUR_IP, IPv4Network(previous), random.Random(7))
    assert result == Allocation(create=IPv4Network("10.5.11.0/24"))


def test_previous_subnet_held_by_our_stale_lease_is_free() -> None:
    ours = make_lease("10.5.42.0/25", OUR_IP)
    previous = IPv4Network("10.5.42.0/24")
    result = allocate(make_config(), [ours], OUR_IP, previous, random.Random(1))
    assert result == Allocation(create=previous, stale=(ours,))


# --- (3) a random pick among the first 100 free subnets --------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 42, 1234, 99999])
def test_same_seed_same_subnet(seed: int) -> None:
    leases = others("10.5.1.0/24", "10.5.5.0/24", "10.5.17.0/24")
    first = allocate(make_config(), leases, OUR_IP, None, random.Random(seed))
    second = allocate(make_config(), leases, OUR_IP, None, random.Random(seed))
    assert first.create is not None
    assert first == second


def test_random_pick_is_free_aligned_and_in_range() -> None:
    config = make_config()
    leases = others(*(f"10.5.{i}.0/24" for i in range(1, 256, 3)), "10.5.100.0/22")
    first_free = free_subnets(config, leases)
    assert len(first_free) == MAX_CANDIDATES
    picks: set[IPv4Network] = set()
    for seed in range(300):
        result = allocate(config, leases, OUR_IP, None, random.Random(seed))
        assert result.reuse is None
        assert result.stale == ()
        subnet = result.create
        assert subnet is not None
        assert subnet.prefixlen == 24
        assert int(subnet.network_address) % 256 == 0
        assert config.subnet_min <= subnet.network_address <= config.subnet_max
        assert subnet.subnet_of(config.network)
        assert not overlaps(subnet, leases)
        assert subnet in first_free
        picks.add(subnet)
    assert len(picks) >= 30  # the rng is used, not always the first free subnet


def test_random_pick_only_among_first_100_free() -> None:
    config = make_config()
    leases = others(*(f"10.5.{i}.0/24" for i in range(1, 51)))  # 10.5.1.0 .. 10.5.50.0 taken
    low, high = IPv4Address("10.5.51.0"), IPv4Address("10.5.150.0")
    for seed in range(300):
        subnet = allocate(config, leases, OUR_IP, None, random.Random(seed)).create
        assert subnet is not None
        assert low <= subnet.network_address <= high


def test_random_pick_within_explicit_range() -> None:
    config = make_config(SubnetLen=26, SubnetMin="10.5.200.64", SubnetMax="10.5.210.128")
    for seed in range(200):
        subnet = allocate(config, [], OUR_IP, None, random.Random(seed)).create
        assert subnet is not None
        assert subnet.prefixlen == 26
        assert int(subnet.network_address) % 64 == 0
        assert IPv4Address("10.5.200.64") <= subnet.network_address <= IPv4Address("10.5.210.128")


def test_overlap_with_other_prefix_length_counts_as_taken() -> None:
    config = make_config()
    leases = others("10.5.0.0/20", "10.5.33.64/26", "10.5.40.0/21")
    free = free_subnets(config, leases, limit=300)
    assert free[0] == IPv4Network("10.5.16.0/24")
    assert IPv4Network("10.5.33.0/24") not in free
    assert IPv4Network("10.5.32.0/24") in free
    assert IPv4Network("10.5.34.0/24") in free
    assert not any(IPv4Network(f"10.5.{i}.0/24") in free for i in range(40, 48))
    assert IPv4Network("10.5.48.0/24") in free
    assert len(free) == 255 - 15 - 1 - 8
    for seed in range(200):
        subnet = allocate(config, leases, OUR_IP, None, random.Random(seed)).create
        assert subnet is not None
        assert not overlaps(subnet, leases)


def test_supernet_lease_takes_everything() -> None:
    with pytest.raises(LeaseError, match="out of subnets"):
        allocate(make_config(), others("10.0.0.0/8"), OUR_IP, None, random.Random(1))


# --- free_subnets -------------------------------------------------------------------------


def test_free_subnets_without_leases() -> None:
    free = free_subnets(make_config(), [])
    assert free == [IPv4Network(f"10.5.{i}.0/24") for i in range(1, 101)]


def test_free_subnets_limit() -> None:
    assert free_subnets(make_config(), [], limit=3) == [
        IPv4Network("10.5.1.0/24"),
        IPv4Network("10.5.2.0/24"),
        IPv4Network("10.5.3.0/24"),
    ]
    assert len(free_subnets(make_config(), [], limit=1000)) == 255


def test_free_subnets_skips_taken_in_any_order() -> None:
    leases = others("10.5.4.0/24", "10.5.2.0/24", "10.5.1.0/24", "192.168.0.0/24", "10.5.2.0/25")
    assert free_subnets(make_config(), leases, limit=4) == [
        IPv4Network("10.5.3.0/24"),
        IPv4Network("10.5.5.0/24"),
        IPv4Network("10.5.6.0/24"),
        IPv4Network("10.5.7.0/24"),
    ]


def test_free_subnets_small_network() -> None:
    config = make_config(Network="10.5.0.0/28")
    assert free_subnets(config, []) == [
        IPv4Network("10.5.0.4/30"),
        IPv4Network("10.5.0.8/30"),
        IPv4Network("10.5.0.12/30"),
    ]
    assert free_subnets(config, others("10.5.0.8/30")) == [
        IPv4Network("10.5.0.4/30"),
        IPv4Network("10.5.0.12/30"),
    ]


def test_free_subnets_with_nested_taken_ranges() -> None:
    # A big lease listed with small ones inside and after it.
    leases = others("10.5.1.0/24", "10.5.0.0/18", "10.5.2.0/25", "10.5.64.0/26", "10.5.66.0/24")
    assert free_subnets(make_config(), leases, limit=3) == [
        IPv4Network("10.5.65.0/24"),
        IPv4Network("10.5.67.0/24"),
        IPv4Network("10.5.68.0/24"),
    ]


def test_free_subnets_matches_brute_force() -> None:
    rng = random.Random(1234)
    config = make_config(SubnetLen=26)
    candidates = [IPv4Network((int(config.subnet_min) + i * 64, 26)) for i in range(1023)]
    assert candidates[-1].network_address == config.subnet_max
    for _ in range(50):
        leases = []
        for _ in range(rng.randint(0, 40)):
            length = rng.choice((20, 23, 24, 26, 27, 30))
            address = IPv4Address(0x0A050000 + rng.randrange(1 << 16))
            leases.append(make_lease(str(IPv4Network((address, length), strict=False))))
        expected = [net for net in candidates if not overlaps(net, leases)][:MAX_CANDIDATES]
        assert free_subnets(config, leases) == expected


# --- out of subnets ----------------------------------------------------------------------


def test_out_of_subnets() -> None:
    config = make_config(Network="10.5.0.0/28")
    leases = others("10.5.0.4/30", "10.5.0.8/30", "10.5.0.12/30")
    with pytest.raises(LeaseError, match="out of subnets") as excinfo:
        allocate(config, leases, OUR_IP, None, random.Random(1))
    assert "out of subnets" in str(excinfo.value)


def test_out_of_subnets_even_with_a_taken_previous_subnet() -> None:
    config = make_config(Network="10.5.0.0/28")
    leases = others("10.5.0.4/30", "10.5.0.8/30", "10.5.0.12/30")
    with pytest.raises(LeaseError, match="out of subnets"):
        allocate(config, leases, OUR_IP, IPv4Network("10.5.0.8/30"), random.Random(1))


def test_out_of_subnets_full_16() -> None:
    leases = others(*(f"10.5.{i}.0/24" for i in range(1, 256)))
    with pytest.raises(LeaseError, match="out of subnets"):
        allocate(make_config(), leases, OUR_IP, None, random.Random(1))
    # the skipped first subnet does not count as free
    assert free_subnets(make_config(), leases) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"Network": "10.5.0.0/28"},  # 3 subnets
        {"Network": "10.5.0.0/24", "SubnetLen": 28},  # 15 subnets
        {"Network": "10.5.0.0/16", "SubnetMin": "10.5.100.0", "SubnetMax": "10.5.139.0"},  # 40
        {"Network": "10.5.0.0/16", "SubnetLen": 26},  # 1023, more than 100
    ],
)
def test_n_free_subnets_for_n_hosts(fields: dict[str, Any]) -> None:
    config = make_config(**fields)
    everything = free_subnets(config, [], limit=1 << 20)
    rng = random.Random(1234)
    leases: list[Lease] = []
    for host in range(len(everything)):
        public_ip = IPv4Address(int(IPv4Address("172.16.0.1")) + host)
        result = allocate(config, leases, public_ip, None, rng)
        assert result.reuse is None
        assert result.stale == ()
        assert result.create is not None
        assert config.fits(result.create)
        assert not overlaps(result.create, leases)
        leases.append(make_lease(str(result.create), public_ip))
    assert sorted(lease.subnet for lease in leases) == everything
    assert len({lease.subnet for lease in leases}) == len(everything)
    with pytest.raises(LeaseError, match="out of subnets"):
        allocate(config, leases, OUR_IP, None, rng)
    # each host that restarts gets its own subnet back
    for lease in leases[:20]:
        assert allocate(config, leases, lease.attrs.public_ip, None, rng) == Allocation(reuse=lease)


# --- dual stack (EnableIPv6): both subnets chosen together --------------------------------

DUAL: Final[dict[str, Any]] = {"EnableIPv6": True, "IPv6Network": "fc00:5::/48"}


def dual_lease(cidr: str, cidr6: str | None, public_ip: str | IPv4Address = "192.168.0.1",
               etcd_lease: int = 1) -> Lease:
    return Lease(IPv4Network(cidr), LeaseAttrs(IPv4Address(public_ip)),
                 IPv6Network(cidr6) if cidr6 else None, etcd_lease=etcd_lease)


def test_fits6_is_flannels_ipv6_compat() -> None:
    dual, v4 = make_config(**DUAL), make_config()
    assert dual.fits6(IPv6Network("fc00:5:0:1::/64"))
    assert dual.fits6(IPv6Network("fc00:5:0:ffff::/64"))
    assert not dual.fits6(IPv6Network("fc00:5::/64"))  # the first subnet is skipped
    assert not dual.fits6(IPv6Network("fc00:5:0:1::/80"))  # wrong length
    assert not dual.fits6(IPv6Network("fc00:6::/64"))  # outside
    assert not dual.fits6(None)  # a v4-only lease does not fit a dual-stack config
    assert v4.fits6(None)
    assert not v4.fits6(IPv6Network("fc00:5:0:1::/64"))  # nor a dual one a v4-only config


@pytest.mark.parametrize("seed", range(20))
def test_dual_stack_creates_both_subnets_free_and_in_range(seed: int) -> None:
    config = make_config(**DUAL)
    taken = [dual_lease(f"10.5.{i}.0/24", f"fc00:5:0:{i:x}::/64", f"192.168.1.{i}")
             for i in range(1, 60)]
    plan = allocate(config, taken, OUR_IP, None, random.Random(seed))
    assert plan.create is not None and plan.create6 is not None
    assert config.fits(plan.create) and config.fits6(plan.create6)
    assert not overlaps(plan.create, taken)
    assert not any(plan.create6.overlaps(t.ipv6_subnet) for t in taken if t.ipv6_subnet)


def test_dual_stack_candidates_are_the_first_100_free_ipv6_subnets() -> None:
    config = make_config(**DUAL)
    picks = {allocate(config, [], OUR_IP, None, random.Random(seed)).create6
             for seed in range(400)}
    first = [IPv6Network(f"fc00:5:0:{i:x}::/64") for i in range(1, MAX_CANDIDATES + 1)]
    assert picks <= set(first) and len(picks) > 50


def test_v4_only_config_draws_as_before_and_creates_no_ipv6_subnet() -> None:
    plan = allocate(make_config(), [], OUR_IP, None, random.Random(3))
    assert plan == Allocation(create=random.Random(3).choice(free_subnets(make_config(), [])))
    assert plan.create6 is None


def test_dual_stack_reuses_our_lease_only_if_both_parts_fit() -> None:
    config = make_config(**DUAL)
    good = dual_lease("10.5.7.0/24", "fc00:5:0:7::/64", OUR_IP)
    assert allocate(config, [good], OUR_IP, None, random.Random(1)) == Allocation(reuse=good)
    v4_only = dual_lease("10.5.8.0/24", None, OUR_IP)  # e.g. from before EnableIPv6
    plan = allocate(config, [v4_only], OUR_IP, None, random.Random(1))
    assert plan.stale == (v4_only,) and plan.create6 is not None
    wrong6 = dual_lease("10.5.9.0/24", "fc00:6:0:1::/64", OUR_IP)
    assert allocate(config, [wrong6], OUR_IP, None, random.Random(1)).stale == (wrong6,)
    # and a dual-stack lease of ours is stale once the config drops IPv6
    assert allocate(make_config(), [good], OUR_IP, None, random.Random(1)).stale == (good,)


def test_dual_stack_previous_pair_taken_only_if_both_free() -> None:
    config = make_config(**DUAL)
    prev, prev6 = IPv4Network("10.5.42.0/24"), IPv6Network("fc00:5:0:42::/64")
    plan = allocate(config, [], OUR_IP, prev, random.Random(1), prev6)
    assert (plan.create, plan.create6) == (prev, prev6)
    holder = dual_lease("10.5.43.0/24", "fc00:5:0:42::/64", "192.168.1.1")
    plan = allocate(config, [holder], OUR_IP, prev, random.Random(1), prev6)
    assert plan.create6 != prev6 and plan.create6 is not None
    # no IPv6 hint (a subnet.env from a v4-only run): both are drawn afresh
    plan = allocate(config, [], OUR_IP, prev, random.Random(1), None)
    assert plan.create6 is not None and plan.create in free_subnets(config, [])


def test_dual_stack_out_of_ipv6_subnets_names_the_ipv6_range() -> None:
    config = make_config(**DUAL, IPv6SubnetMin="fc00:5:0:1::", IPv6SubnetMax="fc00:5:0:2::")
    taken = [dual_lease("10.5.1.0/24", "fc00:5:0:1::/64", "192.168.1.1"),
             dual_lease("10.5.2.0/24", "fc00:5:0:2::/64", "192.168.1.2")]
    with pytest.raises(LeaseError, match=r"out of subnets: every IPv6 /64 between "
                       r"fc00:5:0:1:: and fc00:5:0:2:: in fc00:5::/48 is leased"):
        allocate(config, taken, OUR_IP, None, random.Random(1))


def test_v4_only_peers_do_not_block_ipv6_subnets() -> None:
    config = make_config(**DUAL, IPv6SubnetMin="fc00:5:0:1::", IPv6SubnetMax="fc00:5:0:1::")
    peers = [dual_lease("10.5.1.0/24", None, "192.168.1.1")]  # an IPv4-only peer
    plan = allocate(config, peers, OUR_IP, None, random.Random(1))
    assert plan.create6 == IPv6Network("fc00:5:0:1::/64")
