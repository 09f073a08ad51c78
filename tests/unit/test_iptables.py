"""Tests for flanneld/iptables.py: flannel's rules byte-exact, the
iptables-restore input, and the keep_rules coordinator against an in-memory fake."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Sequence
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Final

import pytest

from flanneld.iptables import (
    IPTables,
    Rule,
    delete_text,
    format_rule,
    forward_rules,
    keep_rules,
    masq_rules,
    own_chains,
    parse_version,
    restore_text,
)
from lease.errors import BackendError

NETWORK: Final = IPv4Network("10.5.0.0/16")
SUBNET: Final = IPv4Network("10.5.72.0/24")
MASQ: Final = '-m comment --comment "flanneld masq"'
FWD: Final = '-m comment --comment "flanneld forward"'

# Go flannel's rules with <Network> = 10.5.0.0/16, <subnet> = 10.5.72.0/24, the comment placed
# where flannel puts it (before the target), i.e. exactly as iptables-save prints the rules.
MASQ_LINES: Final = [
    f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
    f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.5.72.0/24 -d 10.5.0.0/16 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 -d 10.5.72.0/24 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.72.0/24 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s 10.5.0.0/16 ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully",
    f"-A FLANNEL-POSTRTG ! -s 10.5.0.0/16 -d 10.5.0.0/16 {MASQ} -j MASQUERADE --random-fully",
]
FORWARD_LINES: Final = [
    f"-A FORWARD {FWD} -j FLANNEL-FWD",
    f"-A FLANNEL-FWD -s 10.5.0.0/16 {FWD} -j ACCEPT",
    f"-A FLANNEL-FWD -d 10.5.0.0/16 {FWD} -j ACCEPT",
]


def as_rule(table: str, line: str) -> Rule:
    """The independent reading of one of Go flannel's rule lines: split it like a shell would."""
    action, chain, *args = shlex.split(line)
    assert action == "-A"
    return Rule(table, chain, tuple(args))


# -- the rules -------------------------------------------------------------------------------


def test_masq_rules_are_flannels_in_flannels_order() -> None:
    rules = masq_rules(NETWORK, SUBNET, random_fully=True)
    assert rules == [as_rule("nat", line) for line in MASQ_LINES]
    assert [format_rule(rule) for rule in rules] == MASQ_LINES


def test_masq_rules_without_random_fully() -> None:
    rules = masq_rules(NETWORK, SUBNET, random_fully=False)
    expected = [line.removesuffix(" --random-fully") for line in MASQ_LINES]
    assert [format_rule(rule) for rule in rules] == expected
    assert not any("--random-fully" in rule.args for rule in rules)
    assert [rule.args[-2:] for rule in rules if "MASQUERADE" in rule.args] == [
        ("-j", "MASQUERADE"), ("-j", "MASQUERADE")]


def test_forward_rules_are_flannels() -> None:
    rules = forward_rules(NETWORK)
    assert rules == [as_rule("filter", line) for line in FORWARD_LINES]
    assert [format_rule(rule) for rule in rules] == FORWARD_LINES


def test_every_rule_carries_its_comment() -> None:
    for rule in masq_rules(NETWORK, SUBNET, random_fully=True):
        assert ("--comment", "flanneld masq") in zip(rule.args, rule.args[1:], strict=False)
    for rule in forward_rules(NETWORK):
        assert ("--comment", "flanneld forward") in zip(rule.args, rule.args[1:], strict=False)


def test_rule_is_a_frozen_hashable_value() -> None:
    rule = forward_rules(NETWORK)[0]
    assert rule == Rule("filter", "FORWARD", rule.args)
    assert len({rule, Rule("filter", "FORWARD", rule.args)}) == 1
    with pytest.raises(AttributeError):
        rule.chain = "INPUT"  # type: ignore[misc]
    assert rule.target == "FLANNEL-FWD"
    assert not rule.in_own_chain
    assert forward_rules(NETWORK)[1].in_own_chain
    assert Rule("nat", "X", ("-s", "1.2.3.4")).target == ""


def test_own_chains_are_the_flannel_chains_in_first_seen_order() -> None:
    rules = [*masq_rules(NETWORK, SUBNET, True), *forward_rules(NETWORK)]
    assert own_chains(rules) == [("nat", "FLANNEL-POSTRTG"), ("filter", "FLANNEL-FWD")]
    assert own_chains(forward_rules(NETWORK)[:1]) == [("filter", "FLANNEL-FWD")]  # jump target
    assert own_chains([]) == []


@pytest.mark.parametrize(("arg", "quoted"), [
    ("10.5.0.0/16", "10.5.0.0/16"),
    ("flanneld masq", '"flanneld masq"'),
    ("", '""'),
    ('say "hi"', '"say \\"hi\\""'),
    ("#", '"#"'),
])
def test_format_rule_quotes_like_iptables_save(arg: str, quoted: str) -> None:
    assert format_rule(Rule("nat", "C", ("--comment", arg)), "-D") == f"-D C --comment {quoted}"


# -- iptables-restore input ------------------------------------------------------------------


def test_restore_text_declares_chains_and_commits_per_table() -> None:
    rules = [*masq_rules(NETWORK, SUBNET, True), *forward_rules(NETWORK)]
    assert restore_text(rules) == "\n".join([
        "*nat",
        ":FLANNEL-POSTRTG - [0:0]",
        *MASQ_LINES,
        "COMMIT",
        "*filter",
        ":FLANNEL-FWD - [0:0]",
        *FORWARD_LINES,
        "COMMIT",
    ]) + "\n"


def test_restore_text_replaces_present_jumps_instead_of_doubling_them() -> None:
    rules = forward_rules(NETWORK)
    # present rules of flannel's own chains need no delete: declaring the chain flushes it
    assert restore_text(rules, replace=set(rules)) == "\n".join([
        "*filter",
        ":FLANNEL-FWD - [0:0]",
        f"-D FORWARD {FWD} -j FLANNEL-FWD",
        *FORWARD_LINES,
        "COMMIT",
    ]) + "\n"


def test_restore_text_never_declares_builtin_chains() -> None:
    text = restore_text([*masq_rules(NETWORK, SUBNET, False), *forward_rules(NETWORK)])
    declared = [line for line in text.splitlines() if line.startswith(":")]
    assert declared == [":FLANNEL-POSTRTG - [0:0]", ":FLANNEL-FWD - [0:0]"]


def test_restore_text_of_nothing_is_empty() -> None:
    assert restore_text([]) == ""
    assert delete_text([]) == ""


def test_delete_text_deletes_chain_rules_before_the_jump() -> None:
    rules = forward_rules(NETWORK)
    assert delete_text(rules) == "\n".join([
        "*filter",
        f"-D FLANNEL-FWD -s 10.5.0.0/16 {FWD} -j ACCEPT",
        f"-D FLANNEL-FWD -d 10.5.0.0/16 {FWD} -j ACCEPT",
        f"-D FORWARD {FWD} -j FLANNEL-FWD",
        "COMMIT",
    ]) + "\n"


# -- version detection -----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "version"), [
    ("iptables v1.8.9 (nf_tables)", (1, 8, 9)),
    ("iptables v1.6.2", (1, 6, 2)),
    ("iptables v1.4.21\n", (1, 4, 21)),
    ("ip6tables-legacy v1.8.7 (legacy)", (1, 8, 7)),
    ("no version here", None),
    ("", None),
])
def test_parse_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == version


def fake_iptables(tmp_path: Path, version_line: str) -> tuple[IPTables, Path]:
    """An IPTables whose command prefix is a shell that prints `version_line` and logs each
    call: version detection without running iptables."""
    calls = tmp_path / "calls"
    script = f'echo "$0 $*" >> {shlex.quote(str(calls))}; echo "{version_line}"'
    return IPTables(prefix=("sh", "-c", script)), calls


@pytest.mark.parametrize(("version_line", "supported"), [
    ("iptables v1.6.1", False),
    ("iptables v1.6.2", True),
    ("iptables v1.8.9 (nf_tables)", True),
    ("iptables v1.4.21", False),
    ("garbage", False),
])
def test_random_fully_from_version_detected_once(tmp_path: Path, version_line: str,
                                                 supported: bool) -> None:
    ipt, calls = fake_iptables(tmp_path, version_line)
    assert ipt.supports_random_fully() is supported
    assert ipt.supports_random_fully() is supported
    assert calls.read_text().splitlines() == ["iptables --version"]


def test_missing_binary_is_unavailable_and_never_random_fully() -> None:
    ipt = IPTables(iptables="/nonexistent/iptables", iptables_restore="/nonexistent/restore")
    assert ipt.available() is False
    assert ipt.supports_random_fully() is False
    with pytest.raises(BackendError, match=r"^/nonexistent/restore: not found") as info:
        ipt.install([Rule("filter", "FLANNEL-FWD", ("-j", "ACCEPT"))])
    assert "\n" not in str(info.value)


# -- keep_rules ------------------------------------------------------------------------------


class FakeIPTables:
    """In-memory rule set with iptables-like semantics for the coordinator."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self.installs = 0
        self.fail_next = False

    def _maybe_fail(self) -> None:
        if self.fail_next:
            self.fail_next = False
            raise BackendError("iptables-restore failed (exit 4): resource busy")

    def install(self, rules: Sequence[Rule]) -> None:
        self._maybe_fail()
        self.installs += 1
        self.rules = [r for r in self.rules if r not in rules] + list(rules)

    def missing(self, rules: Sequence[Rule]) -> list[Rule]:
        self._maybe_fail()
        return [rule for rule in rules if rule not in self.rules]

    def remove(self, rules: Sequence[Rule]) -> None:
        self._maybe_fail()
        self.rules = [rule for rule in self.rules if rule not in rules]


class Done(Exception):
    """The scripted clock ran out of steps."""


class ScriptedSleep:
    """sleep() runs the next step (what happens during that pause), then returns."""

    def __init__(self, steps: Sequence[Callable[[], object]]) -> None:
        self.steps = list(steps)
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)
        if not self.steps:
            raise Done
        self.steps.pop(0)()


async def test_keep_rules_installs_then_reports_ready_once() -> None:
    ipt, ready = FakeIPTables(), []
    rules = [*masq_rules(NETWORK, SUBNET, True), *forward_rules(NETWORK)]

    def on_ready() -> None:
        assert ipt.rules == rules  # ready only once the rules are in
        ready.append(True)

    sleep = ScriptedSleep([lambda: None, lambda: None])
    with pytest.raises(Done):
        await keep_rules(ipt, lambda: rules, 5, on_ready, sleep=sleep)
    assert ready == [True]
    assert ipt.installs == 1  # nothing missing, nothing reinstalled
    assert sleep.slept == [5, 5, 5]


async def test_keep_rules_restores_a_missing_rule(caplog: pytest.LogCaptureFixture) -> None:
    ipt = FakeIPTables()
    rules = masq_rules(NETWORK, SUBNET, True)
    sleep = ScriptedSleep([lambda: ipt.rules.remove(rules[3]), lambda: None])
    with caplog.at_level(logging.INFO, logger="flanneld.iptables"), pytest.raises(Done):
        await keep_rules(ipt, lambda: rules, 5, sleep=sleep)
    assert ipt.rules == rules  # reinstalled whole, in order
    assert ipt.installs == 2
    assert [r.getMessage() for r in caplog.records if "missing" in r.getMessage()] == [
        "iptables rules missing, restored 1"]


async def test_keep_rules_follows_a_new_subnet() -> None:
    ipt = FakeIPTables()
    subnet = [SUBNET]
    new = IPv4Network("10.5.9.0/24")

    def rules() -> list[Rule]:
        return [*masq_rules(NETWORK, subnet[0], True), *forward_rules(NETWORK)]

    old_rules = rules()
    sleep = ScriptedSleep([lambda: subnet.__setitem__(0, new), lambda: None])
    with pytest.raises(Done):
        await keep_rules(ipt, rules, 5, sleep=sleep)
    assert sorted(ipt.rules, key=repr) == sorted(rules(), key=repr)
    assert not [rule for rule in old_rules if rule not in rules() and rule in ipt.rules]
    assert ipt.installs == 2


async def test_keep_rules_first_install_failure_raises() -> None:
    ipt = FakeIPTables()
    ipt.fail_next = True
    ready: list[bool] = []
    with pytest.raises(BackendError, match="resource busy"):
        await keep_rules(ipt, lambda: forward_rules(NETWORK), 5, lambda: ready.append(True),
                         sleep=ScriptedSleep([]))
    assert ready == []


async def test_keep_rules_logs_a_resync_failure_and_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    ipt = FakeIPTables()
    rules = forward_rules(NETWORK)

    def break_things() -> None:
        ipt.rules.clear()
        ipt.fail_next = True

    sleep = ScriptedSleep([break_things, lambda: None])
    with caplog.at_level(logging.INFO, logger="flanneld.iptables"), pytest.raises(Done):
        await keep_rules(ipt, lambda: rules, 5, sleep=sleep)
    assert ipt.rules == rules  # the next resync repaired them
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["iptables resync failed, retrying in 5 s: "
                      "iptables-restore failed (exit 4): resource busy"]


# -- IPv6 (ip6tables): flannel's masqIP6Rules and its forward rules for the IPv6 network -----

NETWORK6: Final = IPv6Network("fc00:5::/48")
SUBNET6: Final = IPv6Network("fc00:5:0:34::/64")
MASQ6_LINES: Final = [
    f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
    f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s fc00:5:0:34::/64 -d fc00:5::/48 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s fc00:5::/48 -d fc00:5:0:34::/64 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG ! -s fc00:5::/48 -d fc00:5:0:34::/64 {MASQ} -j RETURN",
    f"-A FLANNEL-POSTRTG -s fc00:5::/48 ! -d ff00::/8 {MASQ} -j MASQUERADE --random-fully",
    f"-A FLANNEL-POSTRTG ! -s fc00:5::/48 -d fc00:5::/48 {MASQ} -j MASQUERADE --random-fully",
]


def test_ipv6_masq_rules_are_flannels_masqIP6Rules() -> None:
    rules = masq_rules(NETWORK6, SUBNET6, random_fully=True)
    assert [format_rule(rule) for rule in rules] == MASQ6_LINES
    assert rules == [as_rule("nat", line) for line in MASQ6_LINES]


def test_ipv6_forward_rules_name_the_ipv6_network() -> None:
    assert [format_rule(rule) for rule in forward_rules(NETWORK6)] == [
        f"-A FORWARD {FWD} -j FLANNEL-FWD",
        f"-A FLANNEL-FWD -s fc00:5::/48 {FWD} -j ACCEPT",
        f"-A FLANNEL-FWD -d fc00:5::/48 {FWD} -j ACCEPT"]


def test_ip6tables_runs_the_ip6tables_binaries() -> None:
    ipt = IPTables.v6(("ip", "netns", "exec", "x"))
    assert (ipt.iptables, ipt.iptables_save, ipt.iptables_restore) == (
        "ip6tables", "ip6tables-save", "ip6tables-restore")
    assert ipt.prefix == ("ip", "netns", "exec", "x")
