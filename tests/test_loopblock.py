"""The loop-block detector of tests/loopblock.py catches what it must and nothing else."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.loopblock import CPU_LIMIT_S, WALL_LIMIT_S, LoopBlockDetector

PLUGIN = Path(__file__).with_name("loopblock.py")


def busy(seconds: float) -> None:
    """Burn the thread's CPU for `seconds` of CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def blocking_step(seconds: float) -> None:
    await asyncio.sleep(0)
    busy(seconds)
    await asyncio.sleep(0)


def run_in_loop(callback, *args) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        asyncio.get_running_loop().call_soon(callback, *args)
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_a_cpu_busy_callback_of_100_ms_is_caught() -> None:
    with LoopBlockDetector() as detector:
        run_in_loop(busy, 0.1)
    [block] = detector.blocks
    assert block.cpu_s >= 0.1 and "busy" in block.what


def test_a_busy_task_step_names_its_coroutine() -> None:
    with LoopBlockDetector() as detector:
        asyncio.run(blocking_step(0.1))
    [block] = detector.blocks
    assert "blocking_step" in block.what and "test_loopblock.py" in block.what


def test_short_callbacks_and_sleeps_below_the_wall_bound_are_not_caught() -> None:
    # time.sleep costs no CPU: only the wall bound (WALL_LIMIT_S) can see it.
    with LoopBlockDetector() as detector:
        run_in_loop(busy, CPU_LIMIT_S / 5)
        run_in_loop(time.sleep, 0.2)
    assert detector.blocks == []


def test_a_sleep_past_the_wall_bound_is_caught() -> None:
    with LoopBlockDetector() as detector:
        run_in_loop(time.sleep, WALL_LIMIT_S + 0.1)
    [block] = detector.blocks
    assert block.wall_s > WALL_LIMIT_S and block.cpu_s < CPU_LIMIT_S


def test_the_plugin_fails_the_test_that_blocked_and_passes_the_others(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(loopblock=PLUGIN.read_text())
    pytester.makepyfile(
        test_blocks="""
        import asyncio, time

        async def test_blocks():
            end = time.thread_time() + 0.1
            while time.thread_time() < end:
                pass
            await asyncio.sleep(0)

        async def test_awaits():
            await asyncio.sleep(0.1)
        """
    )
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "loopblock", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_blocks*",
        "*event loop was blocked by 1 callback*",
        "* ms CPU, * ms wall: <Handle *",
        "*task *: test_blocks (*test_blocks.py:7) -> sleep*",
    ])  # fmt: skip
