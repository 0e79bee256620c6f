"""The geofence core: locate an address, decide by a room's policy, audit for operators.

Knows nothing of aiortc or aiohttp; a host SFU embeds it through :class:`~.geofence.Geofence`.
"""
