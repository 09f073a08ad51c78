# The two set-up commands for a new machine (run as root):
#   make lab    - a 3-host flannel lab in network namespaces: etcd, flanneld, containers, traffic
#   make test   - lint, types, unit and integration tests (root, namespaces, real etcd)
# Each installs what it needs first (Debian packages and this Python package) when missing.

PY ?= python3
APT_PACKAGES := etcd-server etcd-client iperf3 socat iproute2 iptables iputils-ping ethtool \
	make wireguard-go wireguard-tools
BACKEND ?= host-gw
HOSTS ?= 3

.PHONY: deps lab test lint

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	    dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# etcd-server's package starts a system etcd on 127.0.0.1:2379; the lab and tests run
	@# their own etcd inside namespaces and do not need or touch it.
	$(PY) -m pip install -q --disable-pip-version-check --root-user-action=ignore -e '.[test]'

lab: deps
	$(PY) -m flanneld.lab --backend $(BACKEND) --hosts $(HOSTS)

lint: deps
	ruff check .
	mypy

test: lint
	$(PY) -m pytest -q -p no:cacheprovider
