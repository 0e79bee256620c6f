"""Participants' addresses in the server log: at DEBUG only (operators read them in the API and audit).

Our own log lines name participants by id. Two libraries name their addresses above DEBUG: aioice at
INFO (every candidate pair it checks, both addresses) and aiohttp (its access log at INFO, the peer of
every request; ``Error handling request from <address>`` at ERROR when a handler raises).
"""

from __future__ import annotations

import logging

ADDRESS_LOGGERS = ("aioice", "aiohttp.access")
"""Held at WARNING unless the server logs at DEBUG."""

SERVER_LOGGER = "aiohttp.server"
_REQUEST_ERROR = "Error handling request from %s"


class PeerAddressRedacted(logging.Filter):
    """Keeps aiohttp's request error (and its traceback), without the peer's address."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == _REQUEST_ERROR:
            record.msg, record.args = "Error handling request (its peer's address is logged at DEBUG)", ()
        return True


def keep_addresses_at_debug(debug: bool) -> None:
    """Configure the libraries' loggers for a server logging at DEBUG (``debug``) or above."""
    for name in ADDRESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if debug else logging.WARNING)
    server = logging.getLogger(SERVER_LOGGER)
    for installed in [f for f in server.filters if isinstance(f, PeerAddressRedacted)]:
        server.removeFilter(installed)
    if not debug:
        server.addFilter(PeerAddressRedacted())
