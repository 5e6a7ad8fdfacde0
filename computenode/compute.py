"""The compute service: bids, the execution lifecycle, and jobs this node owns.

Every change is stored before it acts (persist first, act second). Each running
execution is its own task; whatever it raises ends as a terminal state, so one
execution never takes down another or the node.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
import uuid
from asyncio import FIRST_COMPLETED
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from computenode.bidding import BidDecision
from computenode.callbacks import CallbackSender
from computenode.config import LimitsConfig
from computenode.errors import ExecutionFailed, JobDeleted, Rejected
from computenode.events import TERMINAL_JOB_STATES, EventBus
from computenode.metrics import Metrics, reason_kind
from computenode.model import ExecutionState, Job, JobState, ResourceUsageData, RunCommandResult, Verifier
from computenode.rules import check_job, check_shards
from computenode.runner import Runner
from computenode.scheduler import Scheduler
from computenode.store import Execution, InvalidTransition, JobRecord, Store, Tombstone
from computenode.store.sqlite import Step

# An execution to make with its first comment and the moves that follow in the same write.
NewExecution = tuple[Execution, str, list[Step]]

log = logging.getLogger(__name__)

S = ExecutionState
RESTART_REASON = "node restarted"
ENDED_BADLY = (S.CANCELLED, S.FAILED)
# Parsed jobs kept (the executions in flight need theirs). Each is ~47 objects the garbage
# collector walks on every full collection: 1,024 of them made those stall the loop 27-47 ms
# under load, 128 keep every one under 20 ms (docs/performance.md, "Footprint").
JOB_CACHE_SIZE = 128
DIFFERS = "its result differs from the agreed result"
QUEUED_BEYOND = "queued beyond queue capacity"
# What a requester may call, by Bacalhau's names: the HTTP compute endpoint's paths and the
# libp2p protocols (/bacalhau/compute/<name>/1.0.0) both map onto the methods of these names.
CALLS = ("ask_for_bid", "bid_accepted", "bid_rejected", "result_accepted", "result_rejected", "cancel")


@dataclass(frozen=True, slots=True)
class ShardResponse:
    execution_id: str
    job_id: str
    shard_index: int
    accepted: bool
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "ExecutionID": self.execution_id,
            "JobID": self.job_id,
            "ShardIndex": self.shard_index,
            "Accepted": self.accepted,
            "Reason": self.reason,
        }


class Decider(Protocol):
    """Decides offers: the Bidder, or a fake in tests."""

    async def decide(self, job: Job) -> BidDecision: ...


StartExecution = Callable[[str, tuple[int, ...]], None]


class Compute:
    def __init__(
        self,
        *,
        node_id: str,
        store: Store,
        runner: Runner,
        scheduler_factory: Callable[[StartExecution], Scheduler],
        bidder: Decider,
        callbacks: CallbackSender,
        bid_expiry_s: float,
        limits: LimitsConfig | None = None,
        metrics: Metrics | None = None,
        max_retries: int = 2,
        keep_failed: bool = False,
        events: EventBus | None = None,
    ) -> None:
        self.node_id = node_id
        self.store = store
        self.runner = runner
        self.scheduler = scheduler_factory(self._start)
        self.bidder = bidder
        self.callbacks = callbacks
        self.bid_expiry_s = bid_expiry_s
        self.limits = limits or LimitsConfig()
        self.max_retries = max_retries
        self.metrics = metrics or Metrics()
        self.keep_failed = keep_failed  # the cleanup loop removes failed dirs after retention.keep_failed_for
        self.draining = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._jobs: dict[str, Job] = {}  # parsed jobs by ID, a bounded cache of the store's
        self.events = events or EventBus()

    def __repr__(self) -> str:
        return f"<Compute node={self.node_id} tasks={len(self.tasks)} {self.scheduler!r} draining={self.draining}>"

    async def aclose(self) -> None:
        """Cancel what still runs (a stop without a drain: start-up failed, or tests) and wait for it."""
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- jobs ---------------------------------------------------------------------------------
    async def job(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            job = Job.model_validate_json((await self.store.get_job(job_id)).job_json)
            self._cache(job)
        return job

    def _cache(self, job: Job) -> None:
        self._jobs[job.id] = job
        if len(self._jobs) > JOB_CACHE_SIZE:
            del self._jobs[next(iter(self._jobs))]  # oldest first: a long-lived node must not grow

    async def _claim(
        self,
        job: Job,
        owned: bool,
        client_id: str = "",
        requester: str = "",
        submission: str = "",
        executions: Sequence[NewExecution] = (),
    ) -> tuple[JobRecord, list[list[Execution]]]:
        """Store the job under its ID; Rejected when the ID is already another job's. The stored
        record: another job's ID only when the same signed submission was stored first. With
        `executions`, those are made in the same write when the job is (Store.claim_job_with)."""
        rec = JobRecord(
            job.id,
            job.model_dump_json(by_alias=True),
            owned,
            client_id,
            requester=requester,
            spec_hash=spec_hash(job),
            submission=submission,
        )
        try:
            stored, made = await self.store.claim_job_with(rec, executions)
        except sqlite3.IntegrityError:
            # The trigger jobs_not_tombstoned (store migration 5): the ID or the signed submission
            # is a deleted job's, deleted after this call looked it up.
            if submission and isinstance(
                tomb := await self.store.find_submission_or_tombstone(client_id, submission), Tombstone
            ):
                raise JobDeleted(tomb.id, tomb.deleted_at) from None
            raise Rejected([id_deleted(job.id)]) from None
        if (stored.owned, stored.requester, stored.spec_hash) != (owned, requester, rec.spec_hash):
            raise Rejected([id_conflict(job.id)])
        # The job just stored is `job` itself: cached without parsing its JSON back.
        self._cache(job if stored.job_json == rec.job_json else Job.model_validate_json(stored.job_json))
        return stored, made

    # -- bids ---------------------------------------------------------------------------------
    async def ask_for_bid(self, job: Job, shard_indexes: list[int], callback_url: str) -> list[ShardResponse]:
        """Bid on the offered shards. The same offer again returns the executions it made; an ID
        already used by another job (another spec or requester) is Rejected and changes nothing."""
        job = with_identity(job)
        check_job(job, self.limits)
        known = await self.store.find_job_or_tombstone(job.id)
        if isinstance(known, Tombstone):
            raise Rejected([id_deleted(job.id)])
        made: dict[int, Execution] = {}
        if known is not None:
            if (known.owned, known.requester, known.spec_hash) != (False, callback_url, spec_hash(job)):
                raise Rejected([id_conflict(job.id)])
            # A shard whose execution was cancelled or failed may be bid on again.
            live = [e for e in await self.store.executions(job_id=job.id) if e.state not in ENDED_BADLY]
            made = {e.shard_index: e for e in live}
            if all(i in made for i in shard_indexes):
                return [ShardResponse(made[i].id, job.id, i, True, "") for i in shard_indexes]
        decision = await self.bidder.decide(job)
        check_shards(decision.shards, self.limits)
        reasons = list(decision.reasons)
        if self.draining:
            reasons.append("node is draining: it takes no new work")
        if not reasons:  # a rejected offer leaves nothing behind
            await self._claim(job, owned=False, requester=callback_url)
        out = []
        for index in shard_indexes:
            if index in made:
                out.append(ShardResponse(made[index].id, job.id, index, True, ""))
                continue
            shard_reasons = list(reasons)
            if not 0 <= index < decision.shards:
                shard_reasons.append(
                    f"shard index {index} is out of range: the job has {decision.shards} shards"
                )
            out.append(await self._bid(job, index, decision.usage, shard_reasons, callback_url, owned=False))
        return out

    async def _bid(
        self,
        job: Job,
        index: int,
        usage: ResourceUsageData,
        reasons: list[str],
        callback_url: str,
        owned: bool,
        attempt: int = 0,
    ) -> ShardResponse:
        eid = "e-" + str(uuid.uuid4())
        if not reasons:
            reasons = self.scheduler.reserve(eid, usage, self.bid_expiry_s)
        self.metrics.bids.labels(
            "rejected" if reasons else "accepted", reason_kind(reasons[0]) if reasons else ""
        ).inc()
        if reasons:
            return ShardResponse("", job.id, index, False, "; ".join(reasons))
        ex = Execution(
            eid,
            job.id,
            index,
            usage=usage,
            callback_url=callback_url,
            owned=owned,
            attempt=attempt,
            bid_expires_at=time.time() + self.bid_expiry_s,
        )
        try:
            await self._create(ex, "bid made")
        except sqlite3.IntegrityError:
            # The trigger executions_not_tombstoned: retention deleted the job since it was claimed.
            self.scheduler.release(eid)
            raise Rejected([id_deleted(job.id)]) from None
        except BaseException:
            self.scheduler.release(eid)
            raise
        log.info("bid made", extra={"execution_id": eid, "job_id": job.id, "shard_index": index})
        return ShardResponse(eid, job.id, index, True, "")

    async def bid_accepted(self, execution_id: str) -> Execution:
        ex = await self._move(execution_id, S.BID_ACCEPTED, "bid accepted")
        self.scheduler.enqueue(execution_id)
        return ex

    async def bid_rejected(self, execution_id: str, justification: str) -> Execution:
        ex = await self._move_from(S.CREATED, execution_id, S.CANCELLED, f"bid rejected: {justification}")
        self.scheduler.release(execution_id)
        return ex

    async def expire_bids(self) -> None:
        for eid in self.scheduler.expired():
            self.scheduler.release(eid)
            try:
                await self._move_from(S.CREATED, eid, S.CANCELLED, "bid expired before it was accepted")
            except InvalidTransition:
                pass

    # -- running ------------------------------------------------------------------------------
    def _start(self, execution_id: str, gpus: tuple[int, ...]) -> None:
        self.tasks[execution_id] = asyncio.create_task(self._execute(execution_id, gpus), name=execution_id)

    async def _execute(self, execution_id: str, gpus: tuple[int, ...]) -> None:
        try:
            ex = await self._move(execution_id, S.RUNNING, "running")
            job = await self.job(ex.job_id)
            try:
                outcome = await self.runner.run(ex, job, gpus)
            except ExecutionFailed as exc:
                await self._fail(ex, exc.reason, exc.result, exc.retryable)
                return
            steps: list[Step] = [
                (
                    S.WAITING_VERIFICATION,
                    "result proposed",
                    {"run_output": outcome.result, "proposal": outcome.proposal},
                )
            ]
            # An owned shard run once: its result is the shard's only one, so it is verified now and
            # the verdict's moves are stored with the proposal, in one write.
            alone = ex.owned and job.spec.deal.concurrency <= 1
            if alone:
                steps += self._verdict_steps(job, ex.id, outcome.proposal)
            ex = await self._moves(execution_id, steps)
            await self.callbacks.send(
                ex.callback_url,
                "on_run_complete",
                {
                    **self._meta(ex),
                    "ResultProposal": _b64(outcome.proposal),
                    "RunCommandResult": outcome.result.to_wire(),
                },
            )
            if alone:
                await self._after_verdict(ex)
            elif ex.owned:
                await self._verify_owned(ex.job_id, ex.shard_index)
        except InvalidTransition as exc:  # cancelled meanwhile: the cancel path owns the state
            log.info(
                "execution changed under its task", extra={"execution_id": execution_id, "reason": str(exc)}
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error in execution", extra={"execution_id": execution_id})
            await self._fail_quietly(execution_id, "internal error, see node log")
        finally:
            self._forget(execution_id)
            self.scheduler.release(execution_id)

    async def _fail(
        self, ex: Execution, reason: str, result: RunCommandResult | None, retryable: bool
    ) -> None:
        result = (result or RunCommandResult()).model_copy(update={"runner_error": reason})
        if ex.owned and retryable:
            # The retry exists before this attempt is Failed, so the job never looks finished in between.
            await self._retry_owned(ex)
        # _move logs the one line of this state change, the reason as its comment.
        ex = await self._move(ex.id, S.FAILED, reason, run_output=result, retryable=retryable)
        await self.callbacks.send(ex.callback_url, "on_compute_failure", {**self._meta(ex), "Err": reason})
        if not self.keep_failed:
            await self.runner.remove(ex.id)

    async def _fail_quietly(self, execution_id: str, reason: str) -> None:
        try:
            ex = await self.store.get(execution_id)
            if not ex.state.is_terminal:
                await self._fail(ex, reason, ex.run_output, False)
        except Exception:
            log.exception("could not record failure", extra={"execution_id": execution_id})

    async def result_accepted(self, execution_id: str) -> Execution:
        ex = await self._move(execution_id, S.RESULT_ACCEPTED, "result accepted")
        self.tasks[execution_id] = asyncio.create_task(
            self._publish(execution_id), name=f"publish-{execution_id}"
        )
        return ex

    async def result_rejected(self, execution_id: str, justification: str) -> Execution:
        ex = await self._move_from(
            S.WAITING_VERIFICATION, execution_id, S.FAILED, f"result rejected: {justification}"
        )
        await self.runner.remove(execution_id)
        return ex

    async def _publish(self, execution_id: str, publishing: Execution | None = None) -> None:
        """Publish the results; `publishing`: the execution already moved to Publishing."""
        try:
            ex = publishing or await self._move(execution_id, S.PUBLISHING, "publishing")
            job = await self.job(ex.job_id)
            try:
                published = await self.runner.publish(ex, job)
            except ExecutionFailed as exc:
                await self._fail(ex, f"publishing failed: {exc.reason}", ex.run_output, exc.retryable)
                return
            ex = await self._move(execution_id, S.COMPLETED, "results published", published=published)
            await self.callbacks.send(
                ex.callback_url,
                "on_publish_complete",
                {**self._meta(ex), "PublishResult": published.to_wire()},
            )
            await self.runner.keep_logs_and_remove(execution_id)
        except InvalidTransition:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("internal error while publishing", extra={"execution_id": execution_id})
            await self._fail_quietly(execution_id, "internal error, see node log")
        finally:
            self._forget(execution_id)

    async def cancel(self, execution_id: str, justification: str) -> Execution:
        ex = await self._move(execution_id, S.CANCELLED, f"cancelled: {justification}")
        task = self.tasks.pop(execution_id, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=30)
        self.scheduler.release(execution_id)
        await self.runner.remove(execution_id)
        await self.callbacks.send(ex.callback_url, "on_cancel_complete", self._meta(ex))
        return ex

    # -- jobs owned by this node ------------------------------------------------------------
    async def submit(
        self, job: Job, client_id: str = "", submission: str = ""
    ) -> tuple[Job, list[Execution]]:
        """Run every shard of `job` here; Rejected with every reason when the node will not.

        `client_id` is set only for verified submissions (requester API); it owns the job there.
        `submission` is the digest of such a signed submission: the same one again returns the
        job it made instead of a second job, or JobDeleted (naming it) once retention deleted it.
        """
        if submission and (rec := await self.store.find_submission_or_tombstone(client_id, submission)):
            if isinstance(rec, Tombstone):
                raise JobDeleted(rec.id, rec.deleted_at)
            return await self.job(rec.id), await self.store.executions(job_id=rec.id)
        job = with_new_identity(job)  # an ID in the submission is ignored: the node names the job
        check_job(job, self.limits)
        decision = await self.bidder.decide(job)
        check_shards(decision.shards, self.limits)
        copies = max(1, job.spec.deal.concurrency)
        reasons = list(decision.reasons)
        if self.draining:
            reasons.append("node is draining: it takes no new work")
        if not reasons:  # one copy must fit the node; the whole job, the node and its queue
            reasons = self.scheduler.admit_reasons(decision.usage)
            reasons = reasons or self.scheduler.room_reasons(decision.usage.multi(copies * decision.shards))
        if reasons:
            self.metrics.bids.labels("rejected", reason_kind(reasons[0])).inc()
            raise Rejected(reasons)
        # The job and its executions (each made and accepted) are one store write.
        planned = [
            self._plan_own(job, i, decision.usage, 0) for i in range(decision.shards) for _ in range(copies)
        ]
        try:
            stored, made = await self._claim(
                job, owned=True, client_id=client_id, submission=submission, executions=planned
            )
        except BaseException:
            for ex, _, _ in planned:
                self.scheduler.release(ex.id)
            raise
        if stored.id != job.id:  # the same signed submission, sent twice at once: the first one won
            for ex, _, _ in planned:
                self.scheduler.release(ex.id)
            return await self.job(stored.id), await self.store.executions(job_id=stored.id)
        return job, [await self._owned(done) for done in made]

    def _plan_own(self, job: Job, index: int, usage: ResourceUsageData, attempt: int) -> NewExecution:
        """A new execution of a shard this node owns, its capacity reserved, to be made and
        accepted in one store write (its history still has both steps)."""
        eid = "e-" + str(uuid.uuid4())
        reasons = self.scheduler.reserve(eid, usage, self.bid_expiry_s)
        self.metrics.bids.labels(
            "rejected" if reasons else "accepted", reason_kind(reasons[0]) if reasons else ""
        ).inc()
        ex = Execution(eid, job.id, index, usage=usage, owned=True, attempt=attempt)
        if reasons:
            # The job was admitted as a whole: later shards wait in the queue past its capacity.
            return ex, QUEUED_BEYOND, [(S.BID_ACCEPTED, "accepted by this node (owner)", {})]
        ex = replace(ex, bid_expires_at=time.time() + self.bid_expiry_s)
        return ex, "bid made", [(S.BID_ACCEPTED, "bid accepted", {})]

    async def _owned(self, done: list[Execution]) -> Execution:
        """Announce an owned execution made and accepted (_plan_own) and queue it."""
        ex = done[0]
        await self._announce(done[1:], JobState.IN_PROGRESS, created=ex)
        self.scheduler.enqueue(ex.id, ex.usage)  # the reservation's usage when there is one
        return done[-1]

    async def _own(self, job: Job, index: int, usage: ResourceUsageData, attempt: int) -> Execution:
        """_plan_own, stored and queued: another attempt at a shard of a job already stored."""
        ex, made, then = self._plan_own(job, index, usage, attempt)
        try:
            done = await self.store.create_moved(ex, made, then)
        except sqlite3.IntegrityError:
            # The trigger executions_not_tombstoned: retention deleted the job since it was claimed.
            self.scheduler.release(ex.id)
            raise Rejected([id_deleted(job.id)]) from None
        except BaseException:
            self.scheduler.release(ex.id)
            raise
        return await self._owned(done)

    async def _retry_owned(self, ex: Execution) -> None:
        job_rec = await self.store.get_job(ex.job_id)
        if ex.attempt >= self.max_retries or job_rec.cancelled or self.draining:
            return
        log.info("retrying shard", extra={"job_id": ex.job_id, "shard_index": ex.shard_index})
        await self._own(await self.job(ex.job_id), ex.shard_index, ex.usage, ex.attempt + 1)

    def _verdict_steps(self, job: Job, execution_id: str, proposal: bytes) -> list[Step]:
        """The moves that follow a shard's only proposal: as _verify_owned decides with one
        execution waiting (accepted and publishing, or failed)."""
        ok = job.spec.verifier is Verifier.NOOP or self.runner.verify(
            job.spec.verifier, {execution_id: proposal}, job.spec.deal.confidence
        ).get(execution_id, False)
        if ok:
            return [(S.RESULT_ACCEPTED, "result accepted", {}), (S.PUBLISHING, "publishing", {})]
        return [(S.FAILED, f"result rejected: {DIFFERS}", {})]

    async def _after_verdict(self, ex: Execution) -> None:
        """What result_accepted (then _publish) or result_rejected do after their moves."""
        if ex.state is S.PUBLISHING:
            self.tasks[ex.id] = asyncio.create_task(self._publish(ex.id, ex), name=f"publish-{ex.id}")
        elif ex.state is S.FAILED:
            await self.runner.remove(ex.id)

    async def _verify_owned(self, job_id: str, shard_index: int) -> None:
        job = await self.job(job_id)
        shard = [e for e in await self.store.executions(job_id=job_id) if e.shard_index == shard_index]
        if any(e.state in (S.CREATED, S.BID_ACCEPTED, S.RUNNING) for e in shard):
            return  # wait for the shard's other executions
        waiting = {e.id: e.proposal for e in shard if e.state is S.WAITING_VERIFICATION}
        if job.spec.verifier is Verifier.NOOP:
            verdicts = dict.fromkeys(waiting, True)
        else:
            verdicts = self.runner.verify(job.spec.verifier, waiting, job.spec.deal.confidence)
        for eid, ok in verdicts.items():
            try:
                if ok:
                    await self.result_accepted(eid)
                else:
                    await self.result_rejected(eid, DIFFERS)
            except InvalidTransition:
                pass

    async def cancel_job(self, job_id: str) -> list[Execution]:
        """Cancel every execution of the job; marked first, so none starts again, even after a restart."""
        await self.store.get_job(job_id)  # NotFound for an unknown job
        await self.store.cancel_job(job_id)
        out = []
        for ex in await self.store.executions(job_id=job_id):
            if not ex.state.is_terminal:
                try:
                    out.append(await self.cancel(ex.id, "job cancelled"))
                except InvalidTransition:
                    pass
        await self._publish_job_state(job_id)  # a job with nothing left to cancel is Cancelled now
        return out

    # -- restart ------------------------------------------------------------------------------
    async def reconcile(self, live_on_engine: set[str]) -> None:
        """Bring every execution left active by a crash to a true state (none stays unowned)."""
        for ex in await self.store.active():
            if ex.state is S.CREATED:
                await self._move(ex.id, S.CANCELLED, f"{RESTART_REASON} before the bid was accepted")
            elif ex.state is S.BID_ACCEPTED:
                if (await self.store.get_job(ex.job_id)).cancelled:
                    await self._move(ex.id, S.CANCELLED, "cancelled: job cancelled")
                else:
                    self.scheduler.enqueue(ex.id, ex.usage)
            elif ex.state is S.RUNNING:
                gone = "" if ex.id in live_on_engine else "; its workload was gone"
                await self._fail(ex, f"{RESTART_REASON} while it ran{gone}", ex.run_output, retryable=True)
            elif ex.state in (S.RESULT_ACCEPTED, S.PUBLISHING):
                self.tasks[ex.id] = asyncio.create_task(self._publish(ex.id), name=f"publish-{ex.id}")
            elif ex.state is S.WAITING_VERIFICATION and ex.owned:
                await self._verify_owned(ex.job_id, ex.shard_index)

    async def drain(self, grace_s: float, hurry: asyncio.Event | None = None) -> None:
        """Stop bidding, let running work finish within the grace (or until `hurry` is set),
        then cancel the rest."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        hurry = hurry or asyncio.Event()
        while self.tasks and time.monotonic() < deadline and not hurry.is_set():
            hurried = asyncio.ensure_future(hurry.wait())
            try:
                left = max(0.0, deadline - time.monotonic())
                await asyncio.wait([*self.tasks.values(), hurried], timeout=left, return_when=FIRST_COMPLETED)
            finally:
                hurried.cancel()
        for ex in await self.store.active():
            if ex.state is not S.WAITING_VERIFICATION:
                try:
                    await self.cancel(ex.id, "node is shutting down")
                except InvalidTransition:
                    pass

    # -- helpers ------------------------------------------------------------------------------
    def _forget(self, execution_id: str) -> None:
        """Drop the execution's task entry if it is the calling task's: a run that ends by
        accepting its own result has already put its publish task there, which must stay
        tracked (a drain waits for it)."""
        if self.tasks.get(execution_id) is asyncio.current_task():
            del self.tasks[execution_id]

    async def _create(self, ex: Execution, comment: str) -> None:
        await self.store.create(ex, comment)
        self.events.execution(ex.id, ex.job_id, ex.shard_index, S.CREATED.value, comment)
        self.events.job(ex.job_id, JobState.IN_PROGRESS.value)

    async def _move(self, execution_id: str, new: ExecutionState, comment: str, **kw: Any) -> Execution:
        version = kw.pop("version", None)
        return await self._moves(execution_id, [(new, comment, kw)], version=version)

    async def _moves(self, execution_id: str, steps: Sequence[Step], version: int | None = None) -> Execution:
        """Store one or more transitions of an execution (one write), then announce each one."""
        done, job_now = await self.store.moves(execution_id, steps, version=version)
        await self._announce(done, job_now)
        return done[-1]

    async def _announce(
        self, done: list[Execution], job_now: JobState, created: Execution | None = None
    ) -> None:
        """Metrics and the event of each stored transition, one log line for them all (a write
        of several names each state, in order); the job's event. `created`: the execution as the
        same write made it, before `done`."""
        if created is not None:
            self.events.execution(
                created.id, created.job_id, created.shard_index, S.CREATED.value, created.comment
            )
        for ex in done:
            state = ex.state.value
            self.metrics.transitions.labels(state).inc()
            self.events.execution(ex.id, ex.job_id, ex.shard_index, state, ex.comment)
        last = done[-1]
        where: dict[str, Any] = {
            "execution_id": last.id,
            "job_id": last.job_id,
            "shard_index": last.shard_index,
        }
        if len(done) > 1 or created is not None:
            where["states"] = [ex.state.value for ex in ([created] if created else []) + done]
        log.info("execution %s", last.state.value, extra={**where, "comment": last.comment})
        if last.state.is_terminal:
            # The job's state as the move's own transaction stored it: after an execution ended the
            # job may have ended. Only a terminal state is published here; InProgress is published
            # by the moves that make it so.
            if job_now.value in TERMINAL_JOB_STATES:
                self.events.job(last.job_id, job_now.value)
        else:
            self.events.job(last.job_id, JobState.IN_PROGRESS.value)

    async def _publish_job_state(self, job_id: str) -> None:
        """The job's stored state (the store keeps it with each change), published if terminal.
        Only a terminal state is published here; InProgress is published by the moves that make
        it so, and a read that finished after a later move's must not undo it."""
        try:
            state = (await self.store.get_job(job_id)).state
        except Exception:  # the change is stored either way; only this event is lost
            log.exception("could not read the job's state for its event", extra={"job_id": job_id})
            return
        if state.value in TERMINAL_JOB_STATES:
            self.events.job(job_id, state.value)

    async def _move_from(
        self, source: ExecutionState, execution_id: str, new: ExecutionState, comment: str
    ) -> Execution:
        """_move, only from `source`: for a move TRANSITIONS allows from other states too.

        The version check makes the state check and the move one atomic step.
        """
        ex = await self.store.get(execution_id)
        if ex.state is not source:
            why = f"only an execution in {source.value} moves so"
            raise InvalidTransition(execution_id, ex.state, new, why)
        return await self._move(execution_id, new, comment, version=ex.version)

    async def wait_changed(self, timeout_s: float) -> None:
        """Wait until the next event on the bus (some execution or job changed), or the timeout."""
        with self.events.subscribe() as sub:
            await sub.get(timeout_s)

    @staticmethod
    def _meta(ex: Execution) -> dict[str, Any]:
        return {"ExecutionID": ex.id, "JobID": ex.job_id, "ShardIndex": ex.shard_index}


def spec_hash(job: Job) -> str:
    """What makes two offers of one job ID the same job: their Spec, hashed."""
    return hashlib.sha256(job.spec.model_dump_json(by_alias=True).encode()).hexdigest()


def id_conflict(job_id: str) -> str:
    return f"job ID {job_id} is already used on this node by another job (another spec or requester)"


def id_deleted(job_id: str) -> str:
    return f"job ID {job_id} named a job this node has deleted (retention.history_for): an ID is never reused"


def with_new_identity(job: Job) -> Job:
    """The job under an ID of this node's making, whatever the submission said (and its CreatedAt)."""
    meta = job.metadata.model_copy(update={"id": str(uuid.uuid4()), "created_at": datetime.now(UTC)})
    return job.model_copy(update={"metadata": meta})


def with_identity(job: Job) -> Job:
    """Give a job without an ID a UUID and a CreatedAt (Bacalhau: the requester does this)."""
    meta = job.metadata
    if meta.id and meta.created_at:
        return job
    meta = meta.model_copy(
        update={"id": meta.id or str(uuid.uuid4()), "created_at": meta.created_at or datetime.now(UTC)}
    )
    return job.model_copy(update={"metadata": meta})


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()
