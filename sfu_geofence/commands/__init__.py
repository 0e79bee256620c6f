"""Subcommands of the ``sfu-geofence`` command, one module each (see :mod:`sfu_geofence.cli`)."""
