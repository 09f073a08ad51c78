"""TUN device, offloads and packet helpers for the userspace data planes (udp, vxlan userspace)."""
