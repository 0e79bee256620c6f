"""The edge: aiohttp application factory and WebSocket signaling."""

from .app import CONFIG, SFU, ServerConfig, create_app

__all__ = ["CONFIG", "SFU", "ServerConfig", "create_app"]
