from tests.storage.conftest import ipfs_cli, kubo  # noqa: F401 - shared fixtures
