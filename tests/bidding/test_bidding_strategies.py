"""Every non-probe strategy's accept and reject case, through Bidder.evaluate."""

from __future__ import annotations

from pathlib import Path

import pytest
from bidhelpers import GI, DirStorage, Setup, limits, make_job

from computenode.bidding import STRATEGY_NAMES, Bidder, Verdict
from computenode.config import JobSelectionConfig, TimeoutsConfig
from computenode.model import Job, ResourceUsageData, StorageSource

MI = 2**20


async def verdicts(b: Bidder, job: Job) -> dict[str, Verdict]:
    out = await b.evaluate(job)
    assert [v.name for v in out] == list(STRATEGY_NAMES)
    return {v.name: v for v in out}


def local_input(name: str) -> dict[str, str]:
    return {"StorageSource": "LocalDirectory", "SourcePath": f"/{name}", "path": f"/inputs/{name}"}


async def test_plain_job_is_accepted_by_every_strategy(bidder) -> None:
    got = await verdicts(bidder(), make_job())
    assert all(v.ok for v in got.values()), got


@pytest.mark.parametrize("network", ["Full", "HTTP"])
async def test_networked_job_rejected_by_default(bidder, network: str) -> None:
    v = (await verdicts(bidder(), make_job(Network={"Type": network})))["networking"]
    assert not v.ok
    assert "accept_networked_jobs" in v.reason and network in v.reason


async def test_full_network_accepted_when_allowed(bidder) -> None:
    v = (await verdicts(bidder(accept_networked_jobs=True), make_job(Network={"Type": "Full"})))["networking"]
    assert v.ok, v


async def test_http_network_never_accepted(bidder) -> None:
    job = make_job(Network={"Type": "HTTP", "Domains": ["example.com"]})
    v = (await verdicts(bidder(accept_networked_jobs=True), job))["networking"]
    assert not v.ok
    assert v.reason == "HTTP network filtering is not supported by this node"


async def test_stateless_job(bidder, tmp_path: Path, setup: Setup) -> None:
    assert (await verdicts(bidder(), make_job()))["stateless"].ok
    v = (await verdicts(bidder(reject_stateless_jobs=True), make_job()))["stateless"]
    assert not v.ok and "reject_stateless_jobs" in v.reason
    # Contexts do not make a job stateful (Bacalhau counts Inputs only).
    ctx = make_job(Contexts=[local_input("ctx")])
    assert not (await verdicts(bidder(reject_stateless_jobs=True), ctx))["stateless"].ok
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path)
    with_input = make_job(inputs=[local_input("a")])
    assert (await verdicts(bidder(reject_stateless_jobs=True), with_input))["stateless"].ok


async def test_locality_local_accepts_inputs_on_this_node(bidder, tmp_path: Path, setup: Setup) -> None:
    (tmp_path / "a").write_text("here")
    (tmp_path / "b").mkdir()
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path)
    job = make_job(inputs=[local_input("a"), local_input("b")])
    v = (await verdicts(bidder(locality="local"), job))["locality"]
    assert v.ok, v


async def test_locality_local_names_each_missing_input(bidder, tmp_path: Path, setup: Setup) -> None:
    (tmp_path / "a").write_text("here")
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path)
    job = make_job(
        inputs=[local_input("a"), local_input("gone"), {"StorageSource": "IPFS", "CID": "QmX", "path": "/x"}]
    )
    v = (await verdicts(bidder(locality="local"), job))["locality"]
    assert not v.ok
    assert "locality is local" in v.reason
    assert "/gone" in v.reason and "is not on this node" in v.reason
    assert "IPFS QmX" in v.reason and "no provider" in v.reason
    assert "/a " not in v.reason


async def test_locality_anywhere_accepts_remote_inputs(bidder) -> None:
    job = make_job(inputs=[{"StorageSource": "IPFS", "CID": "QmX", "path": "/x"}])
    v = (await verdicts(bidder(locality="anywhere"), job))["locality"]
    assert v.ok and v.reason == "job_selection.locality is anywhere"
    v = (await verdicts(bidder(locality="local"), make_job()))["locality"]
    assert v.ok and v.reason == "no inputs"


async def test_locality_lookup_failures_are_reasons(bidder, tmp_path: Path, setup: Setup) -> None:
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path, broken=True)
    job = make_job(inputs=[local_input("a")])
    v = (await verdicts(bidder(), job))["locality"]
    assert not v.ok and "could not be looked up: OSError" in v.reason
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path, lookup_delay_s=30)
    v = (await verdicts(bidder(probe_timeout="100ms"), job))["locality"]
    assert not v.ok and "within 0.1s" in v.reason


@pytest.mark.parametrize(
    ("timeout", "ok", "words"),
    [
        (0, True, "timeouts.job_default"),
        (60, True, "60s"),
        (0.1, False, "below timeouts.job_min 0.5s"),
        (7200, False, "exceeds timeouts.job_max 3600s"),
        (9223372037, False, "maximum possible value"),
    ],
)
async def test_timeout_bounds(bidder, timeout: float, ok: bool, words: str) -> None:
    v = (await verdicts(bidder(), make_job(Timeout=timeout)))["timeout"]
    assert v.ok is ok and words in v.reason, v


async def test_timeout_default_is_checked_too(bidder) -> None:
    b = bidder(timeouts=TimeoutsConfig(job_default="2h", job_max="1h"))
    v = (await verdicts(b, make_job()))["timeout"]
    assert not v.ok and "7200s (timeouts.job_default) exceeds timeouts.job_max" in v.reason


async def test_huge_timeout_refused_even_without_job_max(bidder) -> None:
    b = bidder(timeouts=TimeoutsConfig(job_max=0))
    assert (await verdicts(b, make_job(Timeout=86400 * 365)))["timeout"].ok
    assert not (await verdicts(b, make_job(Timeout=9223372037)))["timeout"].ok


async def test_job_max_names_each_resource(bidder) -> None:
    job = make_job(Resources={"CPU": "3", "Memory": "8Gi", "GPU": "2"})
    v = (await verdicts(bidder(), job))["job_max"]
    assert not v.ok
    assert "cpu: requested 3, allowed 2" in v.reason
    assert "memory: requested 8Gi, allowed 4Gi" in v.reason
    assert "gpu: requested 2, allowed 1" in v.reason
    assert "disk" not in v.reason and "capacity.job_max" in v.reason


async def test_job_max_accepts_within_limits(bidder) -> None:
    assert (await verdicts(bidder(), make_job(Resources={"CPU": "2", "Memory": "4Gi"})))["job_max"].ok


async def test_job_max_counts_input_sizes_as_disk(bidder, tmp_path: Path, setup: Setup) -> None:
    (tmp_path / "big").write_bytes(b"x" * 3 * MI)
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path)
    b = bidder(node_limits=limits(job_max=ResourceUsageData(2, 4 * GI, 2 * MI, 0)))
    v = (await verdicts(b, make_job(inputs=[local_input("big")])))["job_max"]
    assert not v.ok and "disk: requested 3Mi, allowed 2Mi" in v.reason


async def test_usage_fills_defaults_and_disk(bidder, tmp_path: Path, setup: Setup) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one").write_bytes(b"x" * MI)
    (tmp_path / "d" / "two").write_bytes(b"x" * MI)
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path)
    b = bidder()
    assert await b.usage(make_job()) == ResourceUsageData(0.1, 100 * MI, 0, 0)
    assert await b.usage(make_job(Resources={"CPU": "500m", "GPU": "1"})) == ResourceUsageData(
        0.5, 100 * MI, 0, 1
    )
    job = make_job(inputs=[local_input("d")])
    assert (await b.usage(job)).disk == 2 * MI
    # The spec's own Disk wins when larger than its inputs (Bacalhau: Max).
    assert (await b.usage(make_job(inputs=[local_input("d")], Resources={"Disk": "1Gi"}))).disk == GI
    # A source that is down makes the size unknown, not the bid fail.
    setup.storage[StorageSource.LOCAL_DIRECTORY] = DirStorage(tmp_path, broken=True)
    assert (await bidder().usage(job)).disk == 0


async def test_supported_declines_parts_this_node_never_runs(bidder) -> None:
    job = Job.model_validate(
        {
            "Spec": {
                "Engine": "PythonWasm",
                "Publisher": "Filecoin",
                "inputs": [
                    {"StorageSource": "Estuary", "CID": "Qm1", "path": "/a"},
                    {"StorageSource": "Filecoin", "CID": "Qm2", "path": "/b"},
                ],
            }
        }
    )
    v = (await verdicts(bidder(), job))["supported"]
    assert not v.ok
    for words in (
        "engine PythonWasm",
        "storage source Estuary",
        "storage source Filecoin",
        "publisher Filecoin",
    ):
        assert words in v.reason
    language = Job.model_validate({"Spec": {"Engine": "Language"}})
    assert "engine Language is not supported" in (await verdicts(bidder(), language))["supported"].reason


async def test_installed_turns_reasons_into_a_verdict(bidder, setup: Setup) -> None:
    assert (await verdicts(bidder(), make_job()))["installed"].ok
    setup.missing[:] = ["engine Docker is not available: docker down", "publisher Ipfs is not enabled"]
    v = (await verdicts(bidder(), make_job()))["installed"]
    assert (
        not v.ok and v.reason == "engine Docker is not available: docker down; publisher Ipfs is not enabled"
    )


async def test_every_failing_strategy_is_reported(bidder, setup: Setup) -> None:
    setup.missing[:] = ["engine Docker is not enabled on this node"]
    job = make_job(
        Network={"Type": "Full"},
        Timeout=7200,
        Resources={"CPU": "8"},
        NodeSelectors=[{"Key": "zone", "Operator": "=", "Values": ["us"]}],
        inputs=[{"StorageSource": "IPFS", "CID": "QmX", "path": "/x"}],
    )
    got = await verdicts(bidder(), job)
    failed = {name for name, v in got.items() if not v.ok}
    assert failed == {"networking", "locality", "node_selectors", "timeout", "job_max", "installed"}


async def test_update_swaps_policy_and_limits(bidder) -> None:
    b = bidder()
    job = make_job(Network={"Type": "Full"}, Resources={"CPU": "3"})
    assert {v.name for v in await b.evaluate(job) if not v.ok} == {"networking", "job_max"}
    b.update(selection=JobSelectionConfig(accept_networked_jobs=True))
    b.update(limits=limits(job_max=ResourceUsageData(4, 4 * GI, 50 * GI, 1)))
    assert all(v.ok for v in await b.evaluate(job))
    assert "networked=True" in repr(b)
