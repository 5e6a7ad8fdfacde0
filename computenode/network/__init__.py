"""Joining a Bacalhau v0.3.23 network over libp2p (docs/network.md).

The only package that imports libp2p and trio (the optional `network` extra); node.py imports
it only when network.enabled is set, so a node without it costs nothing.
"""
