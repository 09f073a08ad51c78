"""Subnet leases in etcd: network config, lease model, allocation, store and watcher."""
