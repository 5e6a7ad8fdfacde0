"""Host fingerprint and the node's capacity limits."""

from computenode.capacity.fingerprint import NodeLimits, gpu_indexes, host_resources, node_limits

__all__ = ["NodeLimits", "gpu_indexes", "host_resources", "node_limits"]
