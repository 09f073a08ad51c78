"""systemd integration: sd_notify (READY=1, STOPPING=1, WATCHDOG=1) and the unit files.

sd_notify is one datagram to $NOTIFY_SOCKET (an abstract socket when it starts with `@`);
outside systemd the variable is unset and every call is a no-op. No libsystemd needed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from typing import Final

log = logging.getLogger(__name__)

UNIT: Final = """\
[Unit]
Description=flanneld-py: flannel overlay network daemon
Documentation=https://github.com/flannel-io/flannel
After=network-online.target
Wants=network-online.target
Before=docker.service

[Service]
Type=notify
NotifyAccess=main
# flags as FLANNELD_* variables, e.g. FLANNELD_ETCD_ENDPOINTS=https://10.0.0.1:2379
EnvironmentFile=-/etc/default/flanneld
ExecStart={executable}
Restart=on-failure
RestartSec=5
WatchdogSec=30
TimeoutStopSec=10

[Install]
WantedBy=multi-user.target
"""

DOCKER_DROPIN: Final = """\
# /etc/systemd/system/docker.service.d/flannel.conf
[Unit]
After=flanneld.service
Requires=flanneld.service

[Service]
EnvironmentFile=/run/flannel/subnet.env
ExecStart=
ExecStart=/usr/bin/dockerd --bip=${FLANNEL_SUBNET} --mtu=${FLANNEL_MTU}
"""


def unit_text(executable: str) -> str:
    return UNIT.format(executable=executable)


class Notifier:
    """Sends sd_notify messages if systemd asked for them (NOTIFY_SOCKET)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        self.watchdog_s = 0.0
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, state: str) -> bool:
        if not self._address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as exc:
            log.debug("sd_notify %s failed: %s", state, exc)
            return False
        return True

    async def run_watchdog(self) -> None:
        """WATCHDOG=1 at half the interval systemd asked for, while the loop is alive."""
        if not self.watchdog_s:
            await asyncio.Event().wait()
        while True:
            self.notify("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)
