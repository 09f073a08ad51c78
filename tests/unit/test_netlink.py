"""Tests for backends/_netlink.py: the device watch, against the kernel's loopback (read
only: nothing is created or changed)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from backends._netlink import device_lost, watch_device
from lease.errors import BackendError


def test_a_device_that_is_still_ours_is_not_lost() -> None:
    assert device_lost("lo", socket.if_nametoindex("lo")) is None


def test_a_deleted_device_is_lost_with_one_line() -> None:
    lost = device_lost("flnotthere0", 7)
    assert isinstance(lost, BackendError)
    assert str(lost).startswith("flnotthere0 was deleted: exiting")
    assert "\n" not in str(lost)


def test_a_device_of_the_same_name_with_another_index_was_replaced() -> None:
    index = socket.if_nametoindex("lo")
    lost = device_lost("lo", index + 1000)
    assert lost is not None
    assert f"was replaced (ifindex {index + 1000}, now {index})" in str(lost)


async def test_watch_device_raises_once_the_device_is_gone() -> None:
    with pytest.raises(BackendError, match="flnotthere0 was deleted"):
        await asyncio.wait_for(watch_device("flnotthere0", 7, period_s=0.01), timeout=5)
    with pytest.raises(TimeoutError):  # ours: it keeps watching
        await asyncio.wait_for(watch_device("lo", socket.if_nametoindex("lo"), period_s=0.01),
                               timeout=0.1)
