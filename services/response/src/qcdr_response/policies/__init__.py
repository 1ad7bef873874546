"""Runtime-security policies: generators, version targets, validators and the blast-radius lint.

Deliberately empty: importing the package must not import (and register) the generators, so
callers import the submodule they need (``policies.generate``, ``policies.validator_tetragon``,
``policies.validator_cilium``, ``policies.lint``, ...).
"""
