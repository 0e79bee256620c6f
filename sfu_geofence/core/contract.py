"""The version of the host contract (docs/plugin.md) this core keeps.

A host states the version it was written against; the host-contract suite
(:mod:`sfu_geofence.testing.host_contract`) fails a host whose version is not this one, so a change of
what hosts must do reaches every host as a failing test rather than as a silent difference.
"""

from __future__ import annotations

CONTRACT_VERSION = 1
"""Bumped whenever docs/plugin.md changes what a host must call, when, or what it must do with the answer."""
