"""Builds the C fan-out (``sfu_geofence/rtc/fanout.c``) with cffi; everything else is in pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["sfu_geofence/rtc/fanout_build.py:ffibuilder"])
