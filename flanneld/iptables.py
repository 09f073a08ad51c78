"""flannel's iptables rules: the masquerade rules of `--ip-masq` and the forward rules.

Three parts, pure apart from shell (one file because they only make sense together):

* pure: `masq_rules()`, `forward_rules()` build flannel's exact rules (as Go flannel's
  iptables traffic manager writes them), `restore_text()` / `delete_text()` render them as
  `iptables-restore --noflush` input, `format_rule()` as `iptables-save` prints them;
* shell: `IPTables`, the only code here that runs `iptables`, `iptables-save` and
  `iptables-restore` (optionally under a command prefix such as `ip netns exec NS`);
* coordinator: `keep_rules()` installs the rules, re-checks them every `resync_s` seconds and
  follows changes of the network or subnet, through the small `RuleProgrammer` protocol.

Installing declares flannel's own chains (FLANNEL-POSTRTG, FLANNEL-FWD): with `--noflush`,
iptables-restore flushes a declared user chain, so the chain is rewritten whole and in order in
one transaction. Rules in built-in chains (the jumps) that are already there are deleted and
appended again in the same transaction, as flannel does, so they are never doubled.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Final, Protocol

from lease.errors import BackendError

log = logging.getLogger(__name__)

POSTRTG_CHAIN: Final = "FLANNEL-POSTRTG"
FWD_CHAIN: Final = "FLANNEL-FWD"
OWN_CHAIN_PREFIX: Final = "FLANNEL-"
MASQ_COMMENT: Final = "flanneld masq"
FORWARD_COMMENT: Final = "flanneld forward"
KUBE_PROXY_MARK: Final = "0x4000/0x4000"  # kube-proxy's masquerade mark: never NAT twice
MULTICAST: Final = "224.0.0.0/4"
MULTICAST6: Final = "ff00::/8"  # flannel's masqIP6Rules
RANDOM_FULLY_SINCE: Final = (1, 6, 2)  # first iptables release with MASQUERADE --random-fully
# what `iptables -C` says (exit 1) when a rule or its chain is not there, legacy and nf_tables
NOT_THERE: Final = ("does a matching rule exist", "No chain/target/match by that name",
                    "does not exist")


# -- pure ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: `iptables -t <table> -A <chain> <args...>`."""

    table: str
    chain: str
    args: tuple[str, ...]

    @property
    def target(self) -> str:
        """The `-j` target ("" if none)."""
        args = self.args
        for i, arg in enumerate(args[:-1]):
            if arg in ("-j", "--jump"):
                return args[i + 1]
        return ""

    @property
    def in_own_chain(self) -> bool:
        """True if the rule lives in one of flannel's chains (rewritten whole on install)."""
        return is_own_chain(self.chain)


def is_own_chain(chain: str) -> bool:
    return chain.startswith(OWN_CHAIN_PREFIX)


def _comment(text: str) -> tuple[str, ...]:
    return ("-m", "comment", "--comment", text)


def masq_rules(network: IPv4Network | IPv6Network, subnet: IPv4Network | IPv6Network,
               random_fully: bool) -> list[Rule]:
    """flannel's `--ip-masq` rules (nat table) for the overlay `network` and this host's
    `subnet`, in flannel's order; `--random-fully` only if iptables supports it. For an
    IPv6 network they are flannel's masqIP6Rules (for ip6tables): the same, with ff00::/8
    as the multicast range."""
    net, sub = str(network), str(subnet)
    multicast = MULTICAST6 if network.version == 6 else MULTICAST
    masq = ("-j", "MASQUERADE", *(("--random-fully",) if random_fully else ()))
    comment = _comment(MASQ_COMMENT)

    def rule(*spec: str, target: tuple[str, ...] = ("-j", "RETURN")) -> Rule:
        return Rule("nat", POSTRTG_CHAIN, (*spec, *comment, *target))

    return [
        # the jump into flannel's chain
        Rule("nat", "POSTROUTING", (*comment, "-j", POSTRTG_CHAIN)),
        # traffic kube-proxy marked for masquerading is NATed by kube-proxy, not twice
        rule("-m", "mark", "--mark", KUBE_PROXY_MARK),
        # no NAT inside the overlay (e.g. from docker0 to another host's containers)
        rule("-s", sub, "-d", net),
        rule("-s", net, "-d", sub),
        # no NAT for external traffic to our containers arriving from a host that owns them
        rule("!", "-s", net, "-d", sub),
        # NAT what leaves the overlay, but not multicast
        rule("-s", net, "!", "-d", multicast, target=masq),
        # NAT what the host sends into the overlay
        rule("!", "-s", net, "-d", net, target=masq),
    ]


def forward_rules(network: IPv4Network | IPv6Network) -> list[Rule]:
    """flannel's forward rules (filter table): accept forwarding to and from `network`
    (an IPv6 one for ip6tables, as flannel's SetupAndEnsureForwardRules does)."""
    net = str(network)
    comment = _comment(FORWARD_COMMENT)
    return [
        Rule("filter", "FORWARD", (*comment, "-j", FWD_CHAIN)),
        Rule("filter", FWD_CHAIN, ("-s", net, *comment, "-j", "ACCEPT")),
        Rule("filter", FWD_CHAIN, ("-d", net, *comment, "-j", "ACCEPT")),
    ]


def own_chains(rules: Iterable[Rule]) -> list[tuple[str, str]]:
    """(table, chain) of every flannel chain the rules live in or jump to, first seen first."""
    seen: dict[tuple[str, str], None] = {}
    for rule in rules:
        for chain in (rule.chain, rule.target):
            if is_own_chain(chain):
                seen.setdefault((rule.table, chain), None)
    return list(seen)


def _quote(arg: str) -> str:
    """Quote an argument the way iptables-save prints it and iptables-restore reads it."""
    if arg and not any(c.isspace() or c in "\"'\\#" for c in arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def format_rule(rule: Rule, action: str = "-A") -> str:
    """The rule as one iptables-save line, e.g. `-A FLANNEL-FWD -s 10.5.0.0/16 -m comment
    --comment "flanneld forward" -j ACCEPT`."""
    return " ".join([action, rule.chain, *(_quote(a) for a in rule.args)])


def _by_table(rules: Iterable[Rule]) -> dict[str, list[Rule]]:
    tables: dict[str, list[Rule]] = {}
    for rule in rules:
        tables.setdefault(rule.table, []).append(rule)
    return tables


def restore_text(rules: Sequence[Rule], replace: Collection[Rule] = ()) -> str:
    """`iptables-restore --noflush` input installing `rules` in one transaction per table.

    Each table declares flannel's chains (`:FLANNEL-POSTRTG - [0:0]`; with --noflush this
    creates or flushes them, built-in chains are never declared) and appends every rule in
    order. A rule of a built-in chain that is in `replace` (already present) is deleted first,
    so that it is not doubled.
    """
    chains = own_chains(rules)
    lines: list[str] = []
    for table, table_rules in _by_table(rules).items():
        lines.append(f"*{table}")
        lines.extend(f":{chain} - [0:0]" for t, chain in chains if t == table)
        for rule in table_rules:
            if rule in replace and not rule.in_own_chain:
                lines.append(format_rule(rule, "-D"))
            lines.append(format_rule(rule))
        lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def delete_text(rules: Sequence[Rule]) -> str:
    """`iptables-restore --noflush` input deleting `rules` (all must exist), jumps last."""
    lines: list[str] = []
    for table, table_rules in _by_table(rules).items():
        lines.append(f"*{table}")
        ordered = sorted(table_rules, key=lambda r: not r.in_own_chain)  # stable
        lines.extend(format_rule(rule, "-D") for rule in ordered)
        lines.append("COMMIT")
    return "".join(f"{line}\n" for line in lines)


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`iptables v1.8.9 (nf_tables)` -> (1, 8, 9); None if there is no version in it."""
    match = re.search(r"v(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        return None
    major, minor, patch = (int(g) for g in match.groups())
    return major, minor, patch


# -- shell -----------------------------------------------------------------------------------


class IPTables:
    """Runs iptables, iptables-save and iptables-restore, optionally under `prefix` (e.g.
    `("ip", "netns", "exec", "ns1")`). Every failure is a BackendError with one line.
    IPTables.v6() runs ip6tables and its twins."""

    @classmethod
    def v6(cls, prefix: Sequence[str] = ()) -> IPTables:
        return cls(prefix, iptables="ip6tables", iptables_save="ip6tables-save",
                   iptables_restore="ip6tables-restore")

    def __init__(self, prefix: Sequence[str] = (), *, iptables: str = "iptables",
                 iptables_save: str = "iptables-save",
                 iptables_restore: str = "iptables-restore", timeout_s: float = 30.0) -> None:
        self.prefix = tuple(prefix)
        self.iptables = iptables
        self.iptables_save = iptables_save
        self.iptables_restore = iptables_restore
        self.timeout_s = timeout_s
        self._random_fully: bool | None = None

    def _run(self, *argv: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([*self.prefix, *argv], input=input_text, capture_output=True,
                                  text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise BackendError(f"{argv[0]}: not found (is iptables installed?)") from None
        except subprocess.TimeoutExpired:
            raise BackendError(f"{argv[0]}: no answer after {self.timeout_s:g} s") from None
        except OSError as exc:
            raise BackendError(f"{argv[0]}: {exc.strerror or exc}") from None

    @staticmethod
    def _error(what: str, result: subprocess.CompletedProcess[str]) -> BackendError:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        first = lines[0].strip() if lines else "no message"
        return BackendError(f"{what} failed (exit {result.returncode}): {first}")

    def available(self) -> bool:
        """True if iptables and iptables-restore run (False for a missing binary)."""
        for binary in (self.iptables, self.iptables_restore):
            try:
                if self._run(binary, "--version").returncode != 0:
                    return False
            except BackendError:
                return False
        return True

    def supports_random_fully(self) -> bool:
        """MASQUERADE --random-fully needs iptables >= 1.6.2; asked once, then remembered."""
        if self._random_fully is None:
            try:
                result = self._run(self.iptables, "--version")
                version = parse_version(result.stdout + result.stderr)
            except BackendError:
                version = None
            self._random_fully = version is not None and version >= RANDOM_FULLY_SINCE
        return self._random_fully

    def _restore(self, text: str) -> None:
        result = self._run(self.iptables_restore, "-w", "--noflush", input_text=text)
        if result.returncode != 0:
            raise self._error(self.iptables_restore, result)

    def _save(self, table: str) -> tuple[set[str], set[str]]:
        """The chains of `table` and its rules as iptables-save prints them (`-A ...`)."""
        result = self._run(self.iptables_save, "-t", table)
        if result.returncode != 0:
            raise self._error(f"{self.iptables_save} -t {table}", result)
        chains: set[str] = set()
        lines: set[str] = set()
        for line in result.stdout.splitlines():
            if line.startswith(":") and len(line) > 1:
                chains.add(line[1:].split()[0])
            elif line.startswith("-A "):
                lines.add(line)
        return chains, lines

    def _exists(self, rule: Rule) -> bool:
        result = self._run(self.iptables, "-w", "-t", rule.table, "-C", rule.chain, *rule.args)
        if result.returncode == 0:
            return True
        what = f"{self.iptables} -t {rule.table} -C {rule.chain}"
        if result.returncode == 1:
            if any(text in result.stderr for text in NOT_THERE):
                return False
            # exit 1 is also what a prefix like `ip netns exec` returns when it cannot start
            # the binary at all: that is an error, not a missing rule
            version = self._run(self.iptables, "--version")
            if version.returncode != 0:
                raise self._error(what, version)
            return False
        raise self._error(what, result)

    def missing(self, rules: Sequence[Rule]) -> list[Rule]:
        """The rules that are not there, in order, from one iptables-save per table: a rule
        printed there as format_rule() prints it is there; a rule in or jumping to a flannel
        chain that does not exist is missing; any other is asked about with `iptables -C`
        (another iptables version may spell a rule differently). Unchanged rules cost two
        processes per resync instead of one per rule."""
        saved = {table: self._save(table) for table in dict.fromkeys(r.table for r in rules)}
        gone: list[Rule] = []
        for rule in rules:
            chains, lines = saved[rule.table]
            no_chain = any(is_own_chain(c) and c not in chains for c in (rule.chain, rule.target))
            if no_chain or (format_rule(rule) not in lines and not self._exists(rule)):
                gone.append(rule)
        return gone

    def install(self, rules: Sequence[Rule]) -> None:
        """Install `rules` in one iptables-restore --noflush call: flannel's chains rewritten
        in order, jumps in built-in chains deleted and appended again if already there."""
        if not rules:
            return
        builtin = [rule for rule in rules if not rule.in_own_chain]
        absent = set(self.missing(builtin))
        present = {rule for rule in builtin if rule not in absent}
        self._restore(restore_text(rules, replace=present))

    def remove(self, rules: Sequence[Rule]) -> None:
        """Delete the rules that are there (one iptables-restore call); gone ones are ignored.
        flannel's chains themselves stay (empty), as flannel leaves them."""
        absent = set(self.missing(rules))
        present = [rule for rule in rules if rule not in absent]
        if present:
            self._restore(delete_text(present))


# -- coordinator -----------------------------------------------------------------------------


class RuleProgrammer(Protocol):
    """What keep_rules needs from IPTables (blocking calls, run in a worker thread)."""

    def install(self, rules: Sequence[Rule]) -> None: ...

    def missing(self, rules: Sequence[Rule]) -> list[Rule]: ...

    def remove(self, rules: Sequence[Rule]) -> None: ...


async def keep_rules(ipt: RuleProgrammer, rules_fn: Callable[[], Sequence[Rule]],
                     resync_s: float, on_ready: Callable[[], object] | None = None, *,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """Install `rules_fn()`, call `on_ready` once they are in, then every `resync_s` seconds:
    if `rules_fn()` changed (a new network or subnet), remove the old rules that are no longer
    wanted and install the new ones; else reinstall all if any rule went missing.

    A failure of the first install raises BackendError; later failures are logged (one line)
    and retried at the next resync. Runs until cancelled; the rules stay installed. `sleep`
    is there for tests (a scripted clock).
    """
    current = tuple(rules_fn())
    await asyncio.to_thread(ipt.install, current)
    log.info("iptables rules installed count=%d", len(current))
    if on_ready is not None:
        on_ready()
    while True:
        await sleep(resync_s)
        wanted = tuple(rules_fn())
        try:
            if wanted != current:
                keep = set(wanted)
                stale = [rule for rule in current if rule not in keep]
                await asyncio.to_thread(ipt.remove, stale)
                await asyncio.to_thread(ipt.install, wanted)
                current = wanted
                log.info("iptables rules replaced removed=%d installed=%d", len(stale),
                         len(wanted))
                continue
            gone = await asyncio.to_thread(ipt.missing, current)
            if gone:
                await asyncio.to_thread(ipt.install, current)
                log.warning("iptables rules missing, restored %d", len(gone))
        except BackendError as exc:
            log.error("iptables resync failed, retrying in %g s: %s", resync_s, exc)
