"""The job-selection strategies that need no I/O: one Verdict each, naming what failed.

Unlike Bacalhau v0.3.23, which stops at the first "no", every strategy runs and each
rejection names the policy key, selector key or resource (with requested and allowed amounts).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from computenode.config import JobSelectionConfig, TimeoutsConfig
from computenode.model import Engine, Network, Publisher, ResourceUsageData, Spec, StorageSource
from computenode.model.selector import unmatched

# Go's time.Duration is int64 nanoseconds: Bacalhau refuses anything longer (MaxInt64 / 1e9 s).
MAX_TIMEOUT_S = 9223372036

# Parts of the v1beta1 model this node knows but will not run, and why.
DECLINED_SOURCES = {
    StorageSource.ESTUARY: "storage source Estuary is not supported by this node (Estuary is shut down)",
    StorageSource.FILECOIN: "storage source Filecoin is not supported by this node (use FilecoinUnsealed or IPFS)",
}
DECLINED_PUBLISHERS = {
    Publisher.FILECOIN: "publisher Filecoin is not supported by this node (use Ipfs or Local)",
}
DECLINED_ENGINES = {
    Engine.LANGUAGE: "engine Language is not supported by this node (use Docker or Wasm)",
    Engine.PYTHON_WASM: "engine PythonWasm is not supported by this node (use Docker or Wasm)",
}
HTTP_NOT_SUPPORTED = "HTTP network filtering is not supported by this node"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One strategy's answer: `reason` says what failed when not ok (several joined by "; ")."""

    name: str
    ok: bool
    reason: str = ""


def verdict(name: str, reasons: list[str], ok_reason: str = "") -> Verdict:
    return Verdict(name, False, "; ".join(reasons)) if reasons else Verdict(name, True, ok_reason)


def networking(spec: Spec, policy: JobSelectionConfig) -> Verdict:
    """Full and HTTP only with accept_networked_jobs; HTTP never, as the Docker executor cannot filter domains."""
    kind = spec.network.type
    reasons = []
    if kind is not Network.NONE and not policy.accept_networked_jobs:
        reasons.append(
            f"job_selection.accept_networked_jobs is false and the job asks for {kind.value} networking"
        )
    if kind is Network.HTTP:
        reasons.append(HTTP_NOT_SUPPORTED)
    return verdict("networking", reasons, f"network {kind.value}")


def stateless(spec: Spec, policy: JobSelectionConfig) -> Verdict:
    # As Bacalhau: only Inputs count; Contexts do not make a job stateful.
    if policy.reject_stateless_jobs and not spec.inputs:
        return Verdict(
            "stateless", False, "job_selection.reject_stateless_jobs is true and the job has no inputs"
        )
    return Verdict("stateless", True, f"{len(spec.inputs)} input(s)")


def node_selectors(spec: Spec, labels: Mapping[str, str]) -> Verdict:
    return verdict(
        "node_selectors", unmatched(spec.node_selectors, labels), f"{len(spec.node_selectors)} matched"
    )


def effective_timeout_s(spec: Spec, timeouts: TimeoutsConfig) -> float:
    """The job's Timeout, or timeouts.job_default when it is 0."""
    return spec.timeout or timeouts.job_default


def timeout(spec: Spec, timeouts: TimeoutsConfig) -> Verdict:
    t = effective_timeout_s(spec, timeouts)
    shown = f"job timeout {t:g}s" + (" (timeouts.job_default)" if not spec.timeout else "")
    if t > MAX_TIMEOUT_S:
        return Verdict("timeout", False, f"{shown} exceeds the maximum possible value {MAX_TIMEOUT_S}s")
    if timeouts.job_max > 0 and t > timeouts.job_max:
        return Verdict("timeout", False, f"{shown} exceeds timeouts.job_max {timeouts.job_max:g}s")
    if t < timeouts.job_min:
        return Verdict("timeout", False, f"{shown} is below timeouts.job_min {timeouts.job_min:g}s")
    return Verdict("timeout", True, shown)


def job_max(usage: ResourceUsageData, limit: ResourceUsageData) -> Verdict:
    over = usage.exceeding(limit)
    return verdict("job_max", [f"over capacity.job_max: {r}" for r in over], "within capacity.job_max")


def supported(spec: Spec) -> Verdict:
    """Engines, sources and publishers of the model this node declines whatever its config."""
    reasons = []
    if spec.engine in DECLINED_ENGINES:
        reasons.append(DECLINED_ENGINES[spec.engine])
    sources = {s.storage_source for s in spec.all_storage_specs()}
    reasons += [why for src, why in DECLINED_SOURCES.items() if src in sources]
    if spec.publisher in DECLINED_PUBLISHERS:
        reasons.append(DECLINED_PUBLISHERS[spec.publisher])
    return verdict(
        "supported", reasons, f"engine {spec.engine.value} and every source and publisher supported"
    )
