"""The execution lifecycle: the TRANSITIONS table, and the store enforcing it on every pair."""

from __future__ import annotations

import itertools
from collections import deque

import pytest

from computenode.errors import ComputeNodeError, StoreError
from computenode.model import ExecutionState as S
from computenode.model.enums import TRANSITIONS
from computenode.store import Execution, InvalidTransition, Store

ALL_PAIRS = list(itertools.product(S, S))


def path_to(target: S) -> list[S]:
    """The shortest chain of allowed moves from Created to `target` (Created excluded)."""
    prev: dict[S, S | None] = {S.CREATED: None}
    todo = deque([S.CREATED])
    while todo:
        state = todo.popleft()
        for nxt in sorted(TRANSITIONS[state], key=lambda s: s.value):
            if nxt not in prev:
                prev[nxt] = state
                todo.append(nxt)
    assert target in prev, f"{target.value} is unreachable from Created"
    chain: list[S] = []
    at: S | None = target
    while at is not None and at is not S.CREATED:
        chain.append(at)
        at = prev[at]
    return chain[::-1]


# -- the table itself ---------------------------------------------------------------------------
def test_every_state_has_an_entry() -> None:
    assert set(TRANSITIONS) == set(S)


def test_terminal_states_allow_nothing_and_only_they() -> None:
    assert {s for s in S if not TRANSITIONS[s]} == {S.COMPLETED, S.FAILED, S.CANCELLED}
    assert all(s.is_terminal == (not TRANSITIONS[s]) for s in S)


def test_the_table_is_what_compute_does() -> None:
    assert dict(TRANSITIONS) == {
        S.CREATED: {S.BID_ACCEPTED, S.CANCELLED},
        S.BID_ACCEPTED: {S.RUNNING, S.FAILED, S.CANCELLED},
        S.RUNNING: {S.WAITING_VERIFICATION, S.FAILED, S.CANCELLED},
        S.WAITING_VERIFICATION: {S.RESULT_ACCEPTED, S.FAILED, S.CANCELLED},
        S.RESULT_ACCEPTED: {S.PUBLISHING, S.FAILED, S.CANCELLED},
        S.PUBLISHING: {S.PUBLISHING, S.COMPLETED, S.FAILED, S.CANCELLED},
        S.COMPLETED: set(),
        S.FAILED: set(),
        S.CANCELLED: set(),
    }


def test_single_source_targets() -> None:
    """compute.py relies on these having one source (bid_accepted only from Created, ...)."""
    sources = {t: {f for f in S if t in TRANSITIONS[f]} for t in S}
    assert sources[S.CREATED] == set()  # only Store.create makes one
    assert sources[S.BID_ACCEPTED] == {S.CREATED}
    assert sources[S.RUNNING] == {S.BID_ACCEPTED}
    assert sources[S.WAITING_VERIFICATION] == {S.RUNNING}
    assert sources[S.RESULT_ACCEPTED] == {S.WAITING_VERIFICATION}
    assert sources[S.PUBLISHING] == {S.RESULT_ACCEPTED, S.PUBLISHING}  # a publish resumed on restart
    assert sources[S.COMPLETED] == {S.PUBLISHING}


def test_every_state_is_reachable_and_every_active_state_can_end() -> None:
    for state in S:
        path_to(state)
    for state in S:
        if not state.is_terminal:
            assert TRANSITIONS[state] & {S.FAILED, S.CANCELLED, S.COMPLETED}, state
            assert S.CANCELLED in TRANSITIONS[state]  # cancel and drain work from any active state


def test_may_move_to_reads_the_table() -> None:
    for old, new in ALL_PAIRS:
        assert old.may_move_to(new) == (new in TRANSITIONS[old])


def test_store_errors_are_in_the_tree() -> None:
    assert issubclass(InvalidTransition, StoreError) and issubclass(StoreError, ComputeNodeError)


# -- through the real store (the `store` fixture of tests/conftest.py) ---------------------------
@pytest.mark.parametrize(("old", "new"), ALL_PAIRS, ids=[f"{o.value}->{n.value}" for o, n in ALL_PAIRS])
async def test_store_enforces_every_pair(store: Store, old: S, new: S) -> None:
    eid = f"e-{old.value}-{new.value}"
    await store.create(Execution(eid, "j", 0))
    for step in path_to(old):
        await store.transition(eid, step, "set up")
    before = await store.get(eid)
    assert before.state is old
    if new in TRANSITIONS[old]:
        after = await store.transition(eid, new, "moved")
        assert (after.state, after.version) == (new, before.version + 1)
        assert (await store.history(eid))[-1].previous is old
    else:
        with pytest.raises(InvalidTransition) as caught:
            await store.transition(eid, new, "forbidden")
        message = str(caught.value)
        assert eid in message and f"from {old.value} to {new.value}" in message
        assert (caught.value.execution_id, caught.value.current, caught.value.new) == (eid, old, new)
        unchanged = await store.get(eid)
        assert (unchanged.state, unchanged.version) == (old, before.version)
        assert len(await store.history(eid)) == len(path_to(old)) + 1


async def test_a_stale_version_is_refused_even_for_an_allowed_move(store: Store) -> None:
    await store.create(Execution("e-v", "j", 0))
    with pytest.raises(InvalidTransition, match="from Created to BidAccepted: it changed meanwhile"):
        await store.transition("e-v", S.BID_ACCEPTED, version=2)
    assert (await store.transition("e-v", S.BID_ACCEPTED, version=1)).version == 2
