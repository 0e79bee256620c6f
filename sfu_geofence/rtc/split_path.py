"""A hostile client's trick, for tests: answer the checks from one address, send media from another.

Only the address that answers STUN checks becomes the selected pair, so only it is geolocated. A
client that keeps STUN on its checked socket but sends its DTLS and SRTP from a second socket (a host
in a restricted country) tests that the server takes media from the nominated source alone
(:mod:`sfu_geofence.rtc.media_source`).
"""

from __future__ import annotations

import asyncio

from aioice import Connection


def send_data_from(connection: Connection, transport: asyncio.DatagramTransport) -> None:
    """Make ``connection`` send its data (DTLS, SRTP, RTCP) through ``transport`` to the nominated
    pair's remote address; its STUN (checks, responses, consent) still goes through its own sockets."""

    async def sendto(data: bytes, component: int) -> None:
        pair = connection._nominated.get(component)
        if pair is None:
            raise ConnectionError("Cannot send data, not connected")
        transport.sendto(data, pair.remote_addr)

    connection.sendto = sendto  # type: ignore[method-assign]
