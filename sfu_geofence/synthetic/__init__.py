"""Synthetic peers: pre-encoded media sources, non-decoding receive meters, a signaling client.

What tests, the forwarding benchmark and the load tester use to stand in for real participants
cheaply: a synthetic publisher sends a looped pre-encoded clip (no encoding per peer), a synthetic
subscriber counts what arrives (no decoding per peer).
"""
