"""Storage sources turn StorageSpecs into local files; sharding splits inputs into shards."""

from computenode.storage.base import StorageProvider

__all__ = ["StorageProvider"]
