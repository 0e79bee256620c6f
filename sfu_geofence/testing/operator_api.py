"""Calling a node's operator API as an operator would: HTTP with the bearer token, JSON both ways."""

from __future__ import annotations

from typing import Any

import aiohttp


async def operator_call(
    base: str,
    token: str,
    method: str,
    path: str,
    body: Any = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[int, Any]:
    """``method base/api/path`` with ``body`` as JSON; the status and the decoded answer.

    Pass ``session`` to reuse its connections (many calls in a row)."""
    headers = {"Authorization": f"Bearer {token}"}
    if session is None:
        async with aiohttp.ClientSession() as own:
            return await operator_call(base, token, method, path, body, own)
    async with session.request(method, f"{base}/api{path}", json=body, headers=headers) as response:
        return response.status, await response.json(content_type=None)
