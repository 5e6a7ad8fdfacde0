"""Compute on its own: a real Store in tmp_path, the real Runner with Noop backends, the real
Scheduler, and small fakes only for the bid decision and the executors/publishers that fail.

No node, no API, no services: each test drives Compute's methods and reads the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from computenode.backends import Backends
from computenode.bidding import BidDecision
from computenode.callbacks import CallbackSender
from computenode.compute import RESTART_REASON, Compute, with_identity, with_new_identity
from computenode.config import NoopConfig
from computenode.errors import ExecutionFailed, PublishFailed
from computenode.executors import ExecutionRequest, Executor
from computenode.executors.noop import NoopExecutor
from computenode.metrics import Metrics
from computenode.model import (
    Engine,
    ExecutionState,
    Job,
    JobState,
    Publisher,
    ResourceUsageData,
    RunCommandResult,
    StorageSpec,
    Verifier,
    parse_job,
)
from computenode.model import ExecutionState as S
from computenode.publishers import Publisher as PublisherBackend
from computenode.publishers.noop import NoopPublisher
from computenode.runner import Runner
from computenode.scheduler import Scheduler
from computenode.shards import ShardPlans
from computenode.store import Execution, InvalidTransition, JobRecord, Store
from computenode.verifiers.noop import NoopVerifier

USAGE = ResourceUsageData(cpu=0.1, memory=1 << 20)
TOTAL = ResourceUsageData(cpu=2, memory=1 << 30, disk=1 << 30)
CALLBACK = "http://127.0.0.1:9/requester"  # stored, never delivered: CallbackSender.run is not started


JOB = with_identity(parse_job('{"APIVersion": "V1beta1", "Spec": {"Engine": "Noop", "Publisher": "Noop"}}'))


def another_job() -> Job:
    """JOB under a new ID: one offer each (the same ID again is the same offer, answered alike)."""
    return with_new_identity(JOB)


@dataclass
class Decider:
    """The bid decision (the Bidder in production): pure logic, set per test."""

    reasons: list[str] = field(default_factory=list)
    shards: int = 1

    async def decide(self, job: Job) -> BidDecision:
        return BidDecision(list(self.reasons), USAGE, self.shards)


@dataclass
class Flaky:
    """An executor whose first `failures` runs fail retryably (an input fetch timing out), then Noop."""

    failures: int
    runs: int = 0

    async def check(self) -> str | None:
        return None

    async def aclose(self) -> None:
        """Nothing to release."""

    async def run(self, request: ExecutionRequest) -> RunCommandResult:
        self.runs += 1
        if self.runs <= self.failures:
            raise ExecutionFailed(f"flaky run {self.runs}", retryable=True)
        return await NoopExecutor(NoopConfig()).run(request)


class BrokenPublisher:
    async def check(self) -> str | None:
        return None

    async def aclose(self) -> None:
        """Nothing to release."""

    async def publish(
        self, execution_id: str, job_id: str, shard_index: int, node_id: str, results_dir: Path
    ) -> StorageSpec:
        raise PublishFailed("the publisher is broken", retryable=False)


class NoInputs(ShardPlans):
    """Every shard the Decider announces exists, with no inputs."""

    async def inputs(self, job: Job, index: int) -> list[StorageSpec]:
        return []


@dataclass
class Parts:
    store: Store
    runner: Runner
    executors: dict[Engine, Executor]
    publishers: dict[Publisher, PublisherBackend]
    decider: Decider
    http: httpx.AsyncClient
    computes: list[Compute] = field(default_factory=list)

    def compute(self, bid_expiry_s: float = 60.0) -> Compute:
        """A Compute over the shared store: a second one is the node after a restart."""
        c = Compute(
            node_id="n-unit",
            store=self.store,
            runner=self.runner,
            scheduler_factory=lambda start: Scheduler(TOTAL, ResourceUsageData(), [], start),
            bidder=self.decider,
            callbacks=CallbackSender(self.store, self.http),
            bid_expiry_s=bid_expiry_s,
            metrics=Metrics(),
            max_retries=2,
            keep_failed=False,
        )
        self.computes.append(c)
        return c


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    store = Store(tmp_path / "db.sqlite")
    await store.open()
    executors: dict[Engine, Executor] = {Engine.NOOP: NoopExecutor(NoopConfig())}
    publishers: dict[Publisher, PublisherBackend] = {Publisher.NOOP: NoopPublisher()}
    backends = Backends(executors=executors, publishers=publishers, verifiers={Verifier.NOOP: NoopVerifier()})
    runner = Runner(
        node_id="n-unit",
        work_root=tmp_path / "executions",
        backends=backends,
        plans=NoInputs({}),
        default_publisher=Publisher.NOOP,
        default_timeout_s=30.0,
    )
    http = httpx.AsyncClient()
    p = Parts(store, runner, executors, publishers, Decider(), http)
    try:
        yield p
    finally:
        for c in p.computes:  # no task outlives its test
            for task in list(c.tasks.values()):
                task.cancel()
            await asyncio.gather(*c.tasks.values(), return_exceptions=True)
        await http.aclose()
        await store.close()


async def until(compute: Compute, check: Callable[[], Awaitable[bool]], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not await check():
            await compute.wait_changed(0.05)


async def reach(compute: Compute, eid: str, state: ExecutionState) -> Execution:
    async def there() -> bool:
        return (await compute.store.get(eid)).state is state

    await until(compute, there)
    return await compute.store.get(eid)


async def quiet(compute: Compute) -> None:
    """Wait for the execution tasks: a terminal state is stored before the task's last steps."""
    async with asyncio.timeout(10):
        while compute.tasks:
            await asyncio.wait(list(compute.tasks.values()))


async def states(store: Store, eid: str) -> list[ExecutionState]:
    return [t.new for t in await store.history(eid)]


async def callbacks(store: Store) -> list[str]:
    return [cb.name for cb in await store.callbacks()]


async def bid(compute: Compute, job: Job | None = None) -> str:
    [resp] = await compute.ask_for_bid(job or another_job(), [0], CALLBACK)
    assert resp.accepted, resp.reason
    return resp.execution_id


# -- bids ---------------------------------------------------------------------------------------
async def test_bid_accepted_runs_and_proposes(parts: Parts) -> None:
    c = parts.compute()
    eid = await bid(c)
    assert (await parts.store.get(eid)).state is S.CREATED and eid in c.scheduler.reserved
    await c.bid_accepted(eid)
    ex = await reach(c, eid, S.WAITING_VERIFICATION)
    assert ex.run_output is not None and ex.run_output.exit_code == 0
    assert await states(parts.store, eid) == [S.CREATED, S.BID_ACCEPTED, S.RUNNING, S.WAITING_VERIFICATION]
    assert await callbacks(parts.store) == ["on_run_complete"]
    with pytest.raises(InvalidTransition, match=f"{eid} cannot move from WaitingVerification to BidAccepted"):
        await c.bid_accepted(eid)


async def test_a_rejected_decision_makes_no_execution(parts: Parts) -> None:
    parts.decider.reasons = ["engine Noop is not enabled"]
    c = parts.compute()
    [resp] = await c.ask_for_bid(JOB, [0], CALLBACK)
    assert not resp.accepted and resp.reason == "engine Noop is not enabled"
    assert await parts.store.executions() == [] and await parts.store.jobs() == []


async def test_bid_rejected_by_the_requester_only_from_created(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(delay=30))
    c = parts.compute()
    eid = await bid(c)
    ex = await c.bid_rejected(eid, "another node won")
    assert ex.state is S.CANCELLED and ex.comment == "bid rejected: another node won"
    assert eid not in c.scheduler.reserved

    running = await bid(c)
    await c.bid_accepted(running)
    await reach(c, running, S.RUNNING)
    with pytest.raises(InvalidTransition, match="from Running to Cancelled: only an execution in Created"):
        await c.bid_rejected(running, "too late")
    assert (await parts.store.get(running)).state is S.RUNNING and running in c.tasks


async def test_an_unaccepted_bid_expires(parts: Parts) -> None:
    c = parts.compute(bid_expiry_s=0.0)
    eid = await bid(c)
    await c.expire_bids()
    ex = await parts.store.get(eid)
    assert (ex.state, ex.comment) == (S.CANCELLED, "bid expired before it was accepted")
    assert not c.scheduler.reserved
    await c.expire_bids()  # nothing left to expire


# -- cancel, results, publishing -----------------------------------------------------------------
async def test_cancel_stops_the_running_task(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(delay=30))
    c = parts.compute()
    eid = await bid(c)
    await c.bid_accepted(eid)
    await reach(c, eid, S.RUNNING)
    ex = await c.cancel(eid, "the user asked")
    assert ex.state is S.CANCELLED and eid not in c.tasks and not c.scheduler.running
    assert not parts.runner.work_dir(eid).exists()
    assert await callbacks(parts.store) == ["on_cancel_complete"]
    with pytest.raises(InvalidTransition, match="from Cancelled to Cancelled: it has already ended"):
        await c.cancel(eid, "again")


async def test_result_accepted_publishes_and_completes(parts: Parts) -> None:
    c = parts.compute()
    eid = await bid(c)
    await c.bid_accepted(eid)
    await reach(c, eid, S.WAITING_VERIFICATION)
    await c.result_accepted(eid)
    ex = await reach(c, eid, S.COMPLETED)
    await quiet(c)
    assert ex.published == StorageSpec()
    assert (await states(parts.store, eid))[-3:] == [S.RESULT_ACCEPTED, S.PUBLISHING, S.COMPLETED]
    assert await callbacks(parts.store) == ["on_run_complete", "on_publish_complete"]
    assert not parts.runner.work_dir(eid).exists()
    with pytest.raises(InvalidTransition):
        await c.result_accepted(eid)


async def test_result_rejected_only_from_waiting_verification(parts: Parts) -> None:
    c = parts.compute()
    created = await bid(c)
    with pytest.raises(
        InvalidTransition, match="from Created to Failed: only an execution in WaitingVerification"
    ):
        await c.result_rejected(created, "no")
    with pytest.raises(InvalidTransition, match="from Created to ResultAccepted"):
        await c.result_accepted(created)
    eid = await bid(c)
    await c.bid_accepted(eid)
    await reach(c, eid, S.WAITING_VERIFICATION)
    ex = await c.result_rejected(eid, "differs")
    assert (ex.state, ex.comment) == (S.FAILED, "result rejected: differs")
    assert not parts.runner.work_dir(eid).exists()


async def test_a_failed_publish_fails_the_execution(parts: Parts) -> None:
    parts.publishers[Publisher.NOOP] = BrokenPublisher()
    c = parts.compute()
    eid = await bid(c)
    await c.bid_accepted(eid)
    await reach(c, eid, S.WAITING_VERIFICATION)
    await c.result_accepted(eid)
    ex = await reach(c, eid, S.FAILED)
    await quiet(c)
    assert ex.comment == "publishing failed: the publisher is broken" and not ex.retryable
    assert await callbacks(parts.store) == ["on_run_complete", "on_compute_failure"]


async def test_a_failed_run_is_reported(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(error="image not found"))
    c = parts.compute()
    eid = await bid(c)
    await c.bid_accepted(eid)
    ex = await reach(c, eid, S.FAILED)
    await quiet(c)
    assert ex.run_output is not None and ex.run_output.runner_error == "image not found"
    assert await callbacks(parts.store) == ["on_compute_failure"]
    assert len(await parts.store.executions()) == 1  # not owned: the requester decides about retries


# -- jobs this node owns ---------------------------------------------------------------------------
async def owned_done(c: Compute, job_id: str, count: int) -> list[Execution]:
    async def done() -> bool:
        got = await c.store.executions(job_id=job_id)
        return len(got) >= count and all(e.state.is_terminal for e in got)

    await until(c, done)
    await quiet(c)
    return sorted(await c.store.executions(job_id=job_id), key=lambda e: e.attempt)


async def test_an_owned_job_retries_a_retryable_failure_then_completes(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = Flaky(failures=1)
    c = parts.compute()
    job, [first] = await c.submit(JOB)
    got = await owned_done(c, job.id, 2)
    assert [(e.attempt, e.state) for e in got] == [(0, S.FAILED), (1, S.COMPLETED)]
    assert got[0].id == first.id and got[0].retryable
    assert await callbacks(parts.store) == []  # owned: no requester to call


async def test_an_owned_job_keeps_every_step_in_fewer_writes(parts: Parts) -> None:
    """Stored, made and accepted in one write; proposal, verdict and Publishing in another: the history,
    the events and the store's commits show it."""
    c = parts.compute()
    with c.events.subscribe() as sub:
        commits = parts.store.commits
        job, [ex] = await c.submit(JOB)
        [done] = await owned_done(c, job.id, 1)
        events = [e.data["State"] for e in list(sub.pending) if e.kind == "execution"]
    every = [
        S.CREATED, S.BID_ACCEPTED, S.RUNNING, S.WAITING_VERIFICATION, S.RESULT_ACCEPTED, S.PUBLISHING, S.COMPLETED,
    ]  # fmt: skip
    assert done.state is S.COMPLETED and await states(parts.store, ex.id) == every
    assert events == [s.value for s in every]
    assert parts.store.commits - commits == 4  # the job with its execution, Running, the verdict, Completed
    assert (await parts.store.get_job(job.id)).state is JobState.COMPLETED


async def test_an_owned_job_stops_retrying_after_max_retries(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = Flaky(failures=10)
    c = parts.compute()
    job, _ = await c.submit(JOB)
    got = await owned_done(c, job.id, 3)  # no task left: a fourth attempt would exist by now
    assert [(e.attempt, e.state) for e in got] == [(0, S.FAILED), (1, S.FAILED), (2, S.FAILED)]


async def test_an_owned_job_does_not_retry_a_final_failure(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(error="out of memory"))
    c = parts.compute()
    job, _ = await c.submit(JOB)
    [ex] = await owned_done(c, job.id, 1)
    assert ex.state is S.FAILED and not ex.retryable


async def test_cancel_job_cancels_every_execution(parts: Parts) -> None:
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(delay=30))
    parts.decider.shards = 2
    c = parts.compute()
    job, made = await c.submit(JOB)
    await reach(c, made[0].id, S.RUNNING)
    cancelled = await c.cancel_job(job.id)
    assert {e.id for e in cancelled} == {e.id for e in made}
    assert all(e.state is S.CANCELLED for e in await parts.store.executions(job_id=job.id))
    assert (await parts.store.get_job(job.id)).cancelled and not c.tasks


# -- restart and drain ------------------------------------------------------------------------------
async def left_in(parts: Parts, state: ExecutionState, owned: bool = False) -> Execution:
    """An execution a crashed node left in `state`, moved there through the lifecycle."""
    await parts.store.put_job(JobRecord(JOB.id, JOB.model_dump_json(by_alias=True), owned))
    eid = f"e-{state.value}-{owned}"
    path = [S.BID_ACCEPTED, S.RUNNING, S.WAITING_VERIFICATION, S.RESULT_ACCEPTED, S.PUBLISHING]
    ex = Execution(eid, JOB.id, 0, usage=USAGE, owned=owned, callback_url="" if owned else CALLBACK)
    await parts.store.create(ex, "bid made")
    for step in path[: path.index(state) + 1] if state in path else []:
        await parts.store.transition(eid, step, "before the crash")
    parts.runner.results_dir(eid).mkdir(parents=True, exist_ok=True)  # what the run left on disk
    return await parts.store.get(eid)


@pytest.mark.parametrize(
    ("state", "owned", "live", "final", "comment"),
    [
        (S.CREATED, False, False, S.CANCELLED, f"{RESTART_REASON} before the bid was accepted"),
        (S.BID_ACCEPTED, False, False, S.WAITING_VERIFICATION, "result proposed"),
        (S.RUNNING, False, False, S.FAILED, f"{RESTART_REASON} while it ran; its workload was gone"),
        (S.RUNNING, False, True, S.FAILED, f"{RESTART_REASON} while it ran"),
        (S.WAITING_VERIFICATION, False, False, S.WAITING_VERIFICATION, "before the crash"),
        (S.WAITING_VERIFICATION, True, False, S.COMPLETED, "results published"),
        (S.RESULT_ACCEPTED, False, False, S.COMPLETED, "results published"),
        (S.PUBLISHING, False, False, S.COMPLETED, "results published"),
    ],
    ids=lambda v: v.value if isinstance(v, ExecutionState) else str(v)[:12],
)
async def test_reconcile_brings_each_active_state_to_a_true_one(
    parts: Parts, state: ExecutionState, owned: bool, live: bool, final: ExecutionState, comment: str
) -> None:
    ex = await left_in(parts, state, owned)
    c = parts.compute()  # the node after its restart
    await c.reconcile({ex.id} if live else set())
    got = await reach(c, ex.id, final)
    assert got.comment == comment
    if state is S.PUBLISHING:  # the publish resumes where it stopped
        assert (await states(parts.store, ex.id))[-3:] == [S.PUBLISHING, S.PUBLISHING, S.COMPLETED]


async def test_a_cancelled_jobs_executions_never_start_after_a_restart(parts: Parts) -> None:
    """The crash came after the job was marked cancelled, before its queued copies were."""
    queued = await left_in(parts, S.BID_ACCEPTED, owned=True)
    await parts.store.cancel_job(JOB.id)
    c = parts.compute()
    await c.reconcile(set())
    got = await parts.store.get(queued.id)
    assert got.state is S.CANCELLED and got.comment == "cancelled: job cancelled"
    assert not c.tasks and not c.scheduler.queued


async def test_reconcile_retries_an_owned_execution_that_was_running(parts: Parts) -> None:
    ex = await left_in(parts, S.RUNNING, owned=True)
    c = parts.compute()
    await c.reconcile(set())
    got = await owned_done(c, ex.job_id, 2)
    assert [(e.attempt, e.state) for e in got] == [(0, S.FAILED), (1, S.COMPLETED)]
    assert got[0].retryable


async def test_drain_cancels_active_work_but_keeps_proposed_results(parts: Parts) -> None:
    c = parts.compute()
    proposed = await bid(c)
    await c.bid_accepted(proposed)
    await reach(c, proposed, S.WAITING_VERIFICATION)
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(delay=30))
    running = await bid(c)
    await c.bid_accepted(running)
    await reach(c, running, S.RUNNING)
    pending = await bid(c)
    await c.drain(grace_s=0.0)
    assert c.draining
    assert (await parts.store.get(running)).state is S.CANCELLED
    assert (await parts.store.get(pending)).state is S.CANCELLED
    assert (await parts.store.get(proposed)).state is S.WAITING_VERIFICATION
    [resp] = await c.ask_for_bid(another_job(), [0], CALLBACK)
    assert not resp.accepted and "draining" in resp.reason


async def test_a_run_that_ends_within_the_drain_grace_publishes(parts: Parts) -> None:
    """The drain waits for the publish a finished run starts, instead of cancelling it."""
    parts.executors[Engine.NOOP] = NoopExecutor(NoopConfig(delay=0.3))
    c = parts.compute()
    job, [made] = await c.submit(JOB)
    await reach(c, made.id, S.RUNNING)
    await c.drain(grace_s=20.0)
    got = await parts.store.get(made.id)
    assert got.state is S.COMPLETED, got.comment
    assert "on_publish_complete" not in await callbacks(parts.store)  # owned: nobody to call back
    assert not c.tasks
