"""flanneld/iptables.py against the real iptables, inside a network namespace this test creates
and always deletes: every command runs as `ip netns exec NS iptables ...`, never in the root
namespace."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network
from pathlib import Path
from typing import Final

import pytest

from flanneld.iptables import (
    IPTables,
    Rule,
    format_rule,
    forward_rules,
    keep_rules,
    masq_rules,
    own_chains,
)
from flanneld.lab import sh
from lease.errors import BackendError

NETWORK: Final = IPv4Network("10.5.0.0/16")
SUBNET: Final = IPv4Network("10.5.72.0/24")
NEW_SUBNET: Final = IPv4Network("10.5.9.0/24")
RESYNC_S: Final = 1.0
SLACK_S: Final = 3.0  # subprocess time on a busy machine, on top of one resync period


def _require() -> None:
    if os.geteuid() != 0:
        pytest.fail("iptables integration tests need root (network namespaces); run as root")
    missing = [t for t in ("ip", "iptables", "iptables-save", "iptables-restore")
               if not shutil.which(t)]
    if missing:
        pytest.fail(f"iptables integration tests need {', '.join(missing)}")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (its own, empty iptables); deleted whatever happens."""
    _require()
    name = f"flipt-{secrets.token_hex(3)}"
    sh("ip", "netns", "add", name)
    try:
        yield name
    finally:
        sh("ip", "netns", "del", name, check=False)
        assert name not in sh("ip", "netns", "list").stdout.split(), f"{name} left behind"


def in_ns(ns: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns)


def save(ns: str) -> list[str]:
    """iptables-save of the namespace, a tool we did not write reading the kernel's rules."""
    return sh(*in_ns(ns), "iptables-save").stdout.splitlines()


def all_rules(subnet: IPv4Network, random_fully: bool) -> list[Rule]:
    return [*masq_rules(NETWORK, subnet, random_fully), *forward_rules(NETWORK)]


def assert_installed_once(ns: str, rules: list[Rule]) -> None:
    lines = save(ns)
    for rule in rules:
        assert lines.count(format_rule(rule)) == 1, f"{format_rule(rule)!r} in {lines}"
    for table, chain in own_chains(rules):
        assert f":{chain} - [0:0]" in lines, f"chain {chain} ({table}) not declared"
    # flannel's chains hold exactly our rules, in flannel's order
    for _, chain in own_chains(rules):
        ours = [format_rule(rule) for rule in rules if rule.chain == chain]
        assert [line for line in lines if line.startswith(f"-A {chain} ")] == ours


async def eventually(what: str, condition: Callable[[], bool], timeout_s: float) -> float:
    """Poll `condition` (run in a thread: it runs iptables) until true; seconds it took."""
    started = time.monotonic()
    while not await asyncio.to_thread(condition):
        if time.monotonic() - started > timeout_s:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def test_install_shows_every_rule_with_its_comment(netns: str) -> None:
    ipt = IPTables(prefix=in_ns(netns))
    assert ipt.available()
    random_fully = ipt.supports_random_fully()
    rules = all_rules(SUBNET, random_fully)
    assert ipt.missing(rules) == rules  # a fresh namespace has none (and no flannel chains)

    ipt.install(rules)
    assert_installed_once(netns, rules)
    assert ipt.missing(rules) == []
    lines = save(netns)
    assert sum('--comment "flanneld masq"' in line for line in lines) == 7
    assert sum('--comment "flanneld forward"' in line for line in lines) == 3
    assert any("--random-fully" in line for line in lines) is random_fully

    ipt.install(rules)  # again: nothing doubled, not even the jumps in built-in chains
    assert_installed_once(netns, rules)


def test_remove_deletes_the_rules_and_ignores_gone_ones(netns: str) -> None:
    ipt = IPTables(prefix=in_ns(netns))
    rules = all_rules(SUBNET, ipt.supports_random_fully())
    ipt.install(rules)
    sh(*in_ns(netns), "iptables", "-t", "filter", "-D", "FLANNEL-FWD", *rules[-1].args)
    ipt.remove(rules)
    assert ipt.missing(rules) == rules
    assert not [line for line in save(netns) if "flanneld" in line]
    ipt.remove(rules)  # all gone already: no error


def test_missing_reads_iptables_save_once_per_table_and_asks_only_what_it_lacks(
        netns: str, tmp_path: Path) -> None:
    """The resync check: one iptables-save per table and no `iptables -C` while the rules
    are there as iptables-save prints them; a rule spelled otherwise (`--source` for `-s`)
    is asked about, and found."""
    log = tmp_path / "calls"
    wrappers = {}
    for tool in ("iptables", "iptables-save"):
        wrapper = tmp_path / tool
        wrapper.write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\nexec {tool} "$@"\n')
        wrapper.chmod(0o755)
        wrappers[tool] = str(wrapper)
    ipt = IPTables(prefix=in_ns(netns), iptables=wrappers["iptables"],
                   iptables_save=wrappers["iptables-save"])
    rules = all_rules(SUBNET, ipt.supports_random_fully())
    ipt.install(rules)

    log.write_text("")
    assert ipt.missing(rules) == []
    assert log.read_text().splitlines() == ["iptables-save -t nat", "iptables-save -t filter"]

    log.write_text("")
    net = str(NETWORK)
    respelled = Rule("filter", "FLANNEL-FWD",
                     ("--source", net, "-m", "comment", "--comment", "flanneld forward",
                      "-j", "ACCEPT"))
    absent = Rule("filter", "FLANNEL-FWD", ("-s", "10.6.0.0/16", "-j", "ACCEPT"))
    assert ipt.missing([*rules, respelled, absent]) == [absent]
    calls = log.read_text().splitlines()
    assert [call.split(" -C ")[0] for call in calls if " -C " in call] == \
        ["iptables -w -t filter"] * 2
    assert calls.count("iptables-save -t nat") == calls.count("iptables-save -t filter") == 1


def test_iptables_errors_are_one_line_backend_errors(netns: str) -> None:
    ipt = IPTables(prefix=in_ns(netns))
    with pytest.raises(BackendError, match=r"^iptables-restore failed \(exit \d+\): ") as info:
        ipt.install([Rule("nat", "FLANNEL-POSTRTG", ("--no-such-option", "-j", "RETURN"))])
    assert "\n" not in str(info.value)


def test_missing_iptables_binary_is_unavailable(netns: str) -> None:
    rules = forward_rules(NETWORK)
    IPTables(prefix=in_ns(netns)).install(rules)
    ipt = IPTables(prefix=in_ns(netns), iptables="/nonexistent/iptables")
    assert ipt.available() is False
    assert ipt.supports_random_fully() is False
    assert ipt.missing(rules) == []  # iptables-save shows every one of them
    other = Rule("filter", "FLANNEL-FWD", ("-s", "10.6.0.0/16", "-j", "ACCEPT"))
    with pytest.raises(BackendError, match="/nonexistent/iptables") as info:
        ipt.missing([other])  # not shown, but its chain exists: this has to ask `iptables -C`
    assert "\n" not in str(info.value)

    restore_gone = IPTables(prefix=in_ns(netns), iptables_restore="/nonexistent/restore")
    assert restore_gone.available() is False
    with pytest.raises(BackendError, match="/nonexistent/restore") as info:
        restore_gone.install(rules)
    assert "\n" not in str(info.value)


async def test_keep_rules_restores_deleted_rules_within_the_resync_period(
        netns: str, caplog: pytest.LogCaptureFixture) -> None:
    ipt = IPTables(prefix=in_ns(netns))
    rules = all_rules(SUBNET, ipt.supports_random_fully())
    ready = asyncio.Event()
    with caplog.at_level(logging.INFO, logger="flanneld.iptables"):
        task = asyncio.create_task(keep_rules(ipt, lambda: rules, RESYNC_S, ready.set))
        try:
            await asyncio.wait_for(ready.wait(), timeout=30)
            await asyncio.to_thread(assert_installed_once, netns, rules)

            # a rule inside flannel's chain, deleted by hand
            victim = rules[3]
            await asyncio.to_thread(sh, *in_ns(netns), "iptables", "-t", victim.table, "-D",
                                    victim.chain, *victim.args)
            assert await asyncio.to_thread(ipt.missing, rules) == [victim]
            took = await eventually("the deleted rule to come back",
                                    lambda: not ipt.missing(rules), RESYNC_S + SLACK_S)
            assert took <= RESYNC_S + SLACK_S
            await asyncio.to_thread(assert_installed_once, netns, rules)

            # the jump from a built-in chain, deleted by hand: restored, not doubled
            jump = rules[0]
            await asyncio.to_thread(sh, *in_ns(netns), "iptables", "-t", jump.table, "-D",
                                    jump.chain, *jump.args)
            await eventually("the deleted jump to come back", lambda: not ipt.missing(rules),
                             RESYNC_S + SLACK_S)
            await asyncio.to_thread(assert_installed_once, netns, rules)
            assert not task.done()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    restored = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert restored == ["iptables rules missing, restored 1"] * 2


async def test_keep_rules_replaces_the_rules_of_an_old_subnet(netns: str) -> None:
    ipt = IPTables(prefix=in_ns(netns))
    random_fully = ipt.supports_random_fully()
    subnet = [SUBNET]
    ready = asyncio.Event()
    task = asyncio.create_task(keep_rules(ipt, lambda: all_rules(subnet[0], random_fully),
                                          RESYNC_S, ready.set))
    try:
        await asyncio.wait_for(ready.wait(), timeout=30)
        old, new = all_rules(SUBNET, random_fully), all_rules(NEW_SUBNET, random_fully)
        await asyncio.to_thread(assert_installed_once, netns, old)

        subnet[0] = NEW_SUBNET

        def switched() -> bool:
            lines = save(netns)
            return (all(format_rule(rule) in lines for rule in new)
                    and not any(str(SUBNET) in line for line in lines))

        await eventually("the rules of the new subnet", switched, RESYNC_S + SLACK_S)
        await asyncio.to_thread(assert_installed_once, netns, new)
        assert not task.done()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
