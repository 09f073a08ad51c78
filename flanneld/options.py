"""The daemon's options: every flag's value, with flannel's defaults, defined once.

flanneld/cli.py's flag table parses them (and reads each default from here); the daemon
and everything else take an Options without knowing about the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lease.store import DEFAULT_ENDPOINTS, DEFAULT_PREFIX

from .subnet_env import DEFAULT_SUBNET_FILE


@dataclass(frozen=True, slots=True)
class Options:
    etcd_endpoints: str = ",".join(DEFAULT_ENDPOINTS)
    etcd_prefix: str = DEFAULT_PREFIX
    etcd_keyfile: str = ""
    etcd_certfile: str = ""
    etcd_cafile: str = ""
    etcd_username: str = ""
    etcd_password: str = field(default="", repr=False)
    iface: tuple[str, ...] = ()
    iface_regex: tuple[str, ...] = ()
    iface_can_reach: str = ""
    public_ip: str = ""
    public_ipv6: str = ""
    subnet_file: str = DEFAULT_SUBNET_FILE
    subnet_lease_renew_margin: int = 60
    subnet_lease_ttl: int = 86400
    vxlan_dataplane: str = ""
    wireguard_dataplane: str = ""
    offload: str = ""
    ip_masq: bool = False
    iptables_resync: int = 5
    iptables_forward_rules: bool = True
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0
    v: int = 0
    version: bool = False
    print_systemd_unit: bool = False
    print_docker_dropin: bool = False
    help: bool = False
