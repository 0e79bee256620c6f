"""Test databases: the tests' name for :mod:`sfu_geofence.core.dbbuild` (which ``mkdb`` and the load
tester use too), so that building a ``.mmdb`` for a test reads as part of the testing kit."""

from __future__ import annotations

from ..core.dbbuild import Assignment, Shape, build_database

__all__ = ["Assignment", "Shape", "build_database"]
