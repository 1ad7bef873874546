"""Blocking domains where Cilium can only block addresses: resolve-and-deny."""
