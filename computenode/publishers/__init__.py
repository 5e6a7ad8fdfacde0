"""Publishers: ipfs, local, noop."""

from computenode.publishers.base import Publisher, published_name

__all__ = ["Publisher", "published_name"]
