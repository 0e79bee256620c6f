"""The operator API's token: where it comes from and what a usable one looks like."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

#: Environment variable the serve command reads the token from (preferred to a flag: argv is public).
TOKEN_ENV = "SFU_GEOFENCE_ADMIN_TOKEN"
#: Shortest token accepted: a guessable token would expose every participant's country and address.
MIN_TOKEN_LENGTH = 16
REALM = "sfu-geofence"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """``--admin-token`` (or :data:`TOKEN_ENV`). Without a token the operator API is not mounted."""

    token: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None:
            check_token(self.token)

    @classmethod
    def from_env(cls, token: str | None = None, environ: Mapping[str, str] = os.environ) -> AdminConfig:
        """The token given (a flag), else the one in :data:`TOKEN_ENV`, else none (API disabled)."""
        return cls(token if token is not None else environ.get(TOKEN_ENV) or None)

    @property
    def enabled(self) -> bool:
        return self.token is not None


def check_token(token: str) -> None:
    """Refuse tokens that are short or cannot travel in an ``Authorization: Bearer`` header."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the admin token must be at least {MIN_TOKEN_LENGTH} characters long")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise ValueError("the admin token must be printable ASCII without spaces")
