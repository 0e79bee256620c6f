"""Peer-reflexive churn: authenticated STUN checks from ever new source ports of a client's address.

Each check from a new port is, to ICE, a new peer-reflexive candidate; the server checks back, the
port answers as the client would, and with aggressive nomination the new pair is nominated. Without
limits each one became a candidate, a pair, a selected-pair change and an audit row.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import cast

from aioice import stun


class _Responder(asyncio.DatagramProtocol):
    """Answers the server's connectivity checks with the client's password."""

    def __init__(self, password: bytes) -> None:
        self.password = password
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = stun.parse_message(data)
        except ValueError:
            return
        if message.message_class is stun.Class.REQUEST and self.transport is not None:
            response = stun.Message(
                message_method=stun.Method.BINDING,
                message_class=stun.Class.RESPONSE,
                transaction_id=message.transaction_id,
            )
            response.attributes["XOR-MAPPED-ADDRESS"] = addr
            response.add_message_integrity(self.password)
            response.add_fingerprint()
            self.transport.sendto(bytes(response), addr)


class PrflxChurner:
    """Sends checks to ``server`` (the server's ICE address) from new ports of ``host``, as the client.

    ``server_credentials`` are the ufrag and password of the server's offer, ``client_credentials``
    those of the client's answer (:func:`sfu_geofence.testing.sdp.ice_credentials`). Close it to
    close every socket it opened.
    """

    def __init__(
        self,
        host: str,
        server: tuple[str, int],
        server_credentials: tuple[str, str],
        client_credentials: tuple[str, str],
    ) -> None:
        self.host = host
        self.server = server
        self._username = f"{server_credentials[0]}:{client_credentials[0]}"
        self._server_password = server_credentials[1].encode()
        self._client_password = client_credentials[1].encode()
        self._transports: list[asyncio.DatagramTransport] = []

    async def check_from_new_port(self) -> int:
        """Send one authenticated check from a new socket (which then answers checks); its port."""
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Responder(self._client_password), local_addr=(self.host, 0)
        )
        self._transports.append(transport)
        port: int = transport.get_extra_info("sockname")[1]
        self.check_again(port)
        return port

    def check_again(self, port: int) -> None:
        """Send a check from the socket on ``port`` (one :meth:`check_from_new_port` opened) again, as a
        real client retransmits a check until it is answered (RFC 8489's retransmissions)."""
        [transport] = [t for t in self._transports if t.get_extra_info("sockname")[1] == port]
        request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        request.attributes["USERNAME"] = self._username
        request.attributes["PRIORITY"] = 1853824767
        request.attributes["ICE-CONTROLLED"] = secrets.randbits(64)
        request.add_message_integrity(self._server_password)
        request.add_fingerprint()
        transport.sendto(bytes(request), self.server)

    def close(self) -> None:
        for transport in self._transports:
            transport.close()
        self._transports.clear()
