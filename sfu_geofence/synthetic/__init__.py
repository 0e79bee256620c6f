"""Synthetic peers: pre-encoded media sources, non-decoding receive meters, a signaling client."""
