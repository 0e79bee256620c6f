"""Helpers for testing sfu-geofence and SFUs that embed it.

Nothing here is imported by ``import sfu_geofence``.
"""
