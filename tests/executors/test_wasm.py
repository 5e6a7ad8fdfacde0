"""WasmExecutor against real wasmtime and the WASI modules built by tests/wasm/build.sh."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from wasmtime import Config, Engine

from computenode.config import WasmConfig
from computenode.errors import ExecutionFailed, InvalidModule, JobTimeout
from computenode.executors import wasm_cache
from computenode.executors.base import ExecutionRequest, Executor, InputVolume
from computenode.executors.wasm import WasmExecutor
from computenode.executors.wasm_cache import ModuleCache
from computenode.model import ResourceUsageData, RunCommandResult, Spec, StorageSpec

MODULES = ("hello", "cat", "env", "write", "exitcode", "loop", "grow", "trap", "usehelper", "helper", "sleep")


@pytest.fixture(scope="session")
def modules(wasm_modules_dir: Path) -> Path:
    missing = [m for m in MODULES if not (wasm_modules_dir / f"{m}.wasm").is_file()]
    if missing:
        pytest.fail(f"WASM test modules missing in {wasm_modules_dir}: {missing}; run tests/wasm/build.sh")
    return wasm_modules_dir


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[WasmExecutor]:
    ex = WasmExecutor(WasmConfig(), tmp_path / "cache")
    yield ex
    await ex.aclose()


class Jobs:
    """Builds ExecutionRequests for one test, each with its own empty results dir."""

    def __init__(self, tmp_path: Path, modules: Path) -> None:
        self.tmp = tmp_path
        self.modules = modules
        self.count = 0

    def module(self, name: str, spec_name: str = "") -> InputVolume:
        return InputVolume(StorageSpec(Name=spec_name), self.modules / f"{name}.wasm", "/")

    def request(
        self,
        module: str | InputVolume,
        *params: str,
        env: dict[str, str] | None = None,
        inputs: tuple[InputVolume, ...] = (),
        outputs: list[dict[str, str]] | None = None,
        imports: tuple[InputVolume, ...] = (),
        entry_point: str = "",
        timeout_s: float = 30.0,
        memory: int = 0,
    ) -> ExecutionRequest:
        self.count += 1
        results = self.tmp / f"results-{self.count}"
        results.mkdir()
        wasm: dict[str, Any] = {
            "EntryModule": {"StorageSource": "Inline", "URL": "data:,module"},
            "EntryPoint": entry_point,
            "Parameters": list(params),
            "EnvironmentVariables": env or {},
        }
        spec = Spec.model_validate({"Engine": "Wasm", "Wasm": wasm, "outputs": outputs or []})
        return ExecutionRequest(
            execution_id=f"e{self.count}",
            job_id="j1",
            shard_index=0,
            node_id="n1",
            spec=spec,
            inputs=inputs,
            results_dir=results,
            resources=ResourceUsageData(memory=memory),
            timeout_s=timeout_s,
            entry_module=self.module(module) if isinstance(module, str) else module,
            import_modules=imports,
        )


@pytest.fixture
def jobs(tmp_path: Path, modules: Path) -> Jobs:
    return Jobs(tmp_path, modules)


def assert_result(req: ExecutionRequest, res: RunCommandResult, stdout: str, stderr: str, code: int) -> None:
    assert (res.stdout, res.stderr, res.exit_code, res.runner_error) == (stdout, stderr, code, "")
    assert not res.stdout_truncated and not res.stderr_truncated
    assert (req.results_dir / "stdout").read_text() == stdout
    assert (req.results_dir / "stderr").read_text() == stderr
    assert (req.results_dir / "exitCode").read_text() == str(code)


async def test_conforms_to_executor(tmp_path: Path) -> None:
    ex: Executor = WasmExecutor(WasmConfig(), tmp_path)
    assert isinstance(ex, Executor)
    await ex.aclose()


async def test_check_ready_until_closed(tmp_path: Path) -> None:
    ex = WasmExecutor(WasmConfig(), tmp_path)
    assert await ex.check() is None
    await ex.aclose()
    assert await ex.check() == "the wasm executor is closed"


async def test_hello(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("hello")
    assert_result(req, await executor.run(req), "Hello, world!\n", "", 0)
    assert sorted(p.name for p in req.results_dir.iterdir()) == ["exitCode", "stderr", "stdout"]


async def test_argv_and_env_exactly_sorted(executor: WasmExecutor, jobs: Jobs) -> None:
    env = {"ZED": "last", "ALPHA": "first", "MID": "a=b c"}
    req = jobs.request("env", "x", "y z", env=env)
    expected = "argv[0]=env\nargv[1]=x\nargv[2]=y z\nALPHA=first\nMID=a=b c\nZED=last\n"
    assert_result(req, await executor.run(req), expected, "", 0)


async def test_module_name_is_the_storage_spec_name(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request(jobs.module("env", spec_name="my-module"))
    assert_result(req, await executor.run(req), "argv[0]=my-module\n", "", 0)


async def test_cat_inputs_at_their_paths(executor: WasmExecutor, jobs: Jobs, tmp_path: Path) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "sub" / "a.txt").write_text("from a directory\n")
    (tmp_path / "inline.txt").write_text("an inline file\n")
    (tmp_path / "download").mkdir()
    (tmp_path / "download" / "data.csv").write_text("x,y\n1,2\n")
    inputs = (
        InputVolume(StorageSpec(), tmp_path / "dir", "/inputs"),
        InputVolume(StorageSpec(), tmp_path / "inline.txt", "/config/inline.txt"),
        # A URL download shows the file itself at its path (Bacalhau v0.3.23 WASM).
        InputVolume(
            StorageSpec(), tmp_path / "download", "/data.csv", host_file=tmp_path / "download" / "data.csv"
        ),
    )
    req = jobs.request("cat", "/inputs/sub/a.txt", "/config/inline.txt", "/data.csv", inputs=inputs)
    assert_result(req, await executor.run(req), "from a directory\nan inline file\nx,y\n1,2\n", "", 0)


async def test_inputs_are_read_only(executor: WasmExecutor, jobs: Jobs, tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("original\n")
    inputs = (InputVolume(StorageSpec(), tmp_path / "in", "/inputs"),)
    for target in ("/inputs/a.txt", "/inputs/new.txt", "/new.txt"):
        req = jobs.request("write", target, "changed", inputs=inputs)
        assert_result(req, await executor.run(req), "", f"write: {target}: Operation not permitted\n", 1)
    assert (tmp_path / "in" / "a.txt").read_text() == "original\n"
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.txt"]


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("/etc/passwd", "No such file or directory"),
        ("/../etc/passwd", "Operation not permitted"),
        ("/outputs/../../etc/passwd", "Operation not permitted"),
        ("../../etc/passwd", "Operation not permitted"),
    ],
)
async def test_reading_outside_the_preopens_fails(
    executor: WasmExecutor, jobs: Jobs, path: str, error: str
) -> None:
    req = jobs.request("cat", path, outputs=[{"Name": "outputs", "path": "/outputs"}])
    assert_result(req, await executor.run(req), "", f"cat: {path}: {error}\n", 1)


async def test_write_output_at_its_path(executor: WasmExecutor, jobs: Jobs) -> None:
    # Mounted at the output's path; Bacalhau v0.3.23 used its Name (docs/wasm-executor.md).
    req = jobs.request(
        "write", "/work/out/result.txt", "hi there", outputs=[{"Name": "res", "path": "/work/out"}]
    )
    assert_result(req, await executor.run(req), "wrote /work/out/result.txt\n", "", 0)
    assert (req.results_dir / "res" / "result.txt").read_text() == "hi there\n"
    assert sorted(p.name for p in req.results_dir.iterdir()) == ["exitCode", "res", "stderr", "stdout"]


@pytest.mark.parametrize("code", [0, 7, 125])
async def test_exit_code_from_proc_exit(executor: WasmExecutor, jobs: Jobs, code: int) -> None:
    req = jobs.request("exitcode", env={"EXIT_CODE": str(code)})
    assert_result(req, await executor.run(req), "", f"exiting with {code}\n", code)


async def test_exit_code_past_125_is_refused_by_wasmtime(executor: WasmExecutor, jobs: Jobs) -> None:
    # wasmtime's WASI refuses proc_exit codes outside [0, 126) (docs/wasm-executor.md).
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(jobs.request("exitcode", env={"EXIT_CODE": "200"}))
    assert info.value.reason == "exit with invalid exit status outside of [0..126)"
    assert info.value.result is not None and info.value.result.stderr == "exiting with 200\n"


async def test_memory_limit_holds(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("grow", "64", memory=32 * 2**20)
    res = await executor.run(req)
    # Linear memory also holds the stack and data, so the failure comes a little before 32 MiB.
    m = re.fullmatch(r"allocation failed after (\d+) MiB\n", res.stdout)
    assert m and 24 <= int(m.group(1)) < 32, res.stdout
    assert (res.exit_code, res.stderr, res.runner_error) == (5, "", "")


async def test_memory_below_the_limit(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("grow", "16", memory=32 * 2**20)
    assert_result(req, await executor.run(req), "allocated 16 MiB\n", "", 0)


async def test_timeout_interrupts_an_infinite_loop(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("loop", timeout_s=1)
    async with asyncio.timeout(1 + 1):
        with pytest.raises(JobTimeout) as info:
            await executor.run(req)
    assert info.value.reason == "timed out after 1 s"
    assert not info.value.retryable
    res = info.value.result
    assert res is not None and res.stdout == "looping\n" and res.runner_error == "timed out after 1 s"
    assert executor.running == 0  # the worker thread ended: the module really stopped


async def wait_for_file(path: Path, text: str) -> None:
    async with asyncio.timeout(10):
        while not (path.exists() and path.read_text() == text):
            await asyncio.sleep(0.01)


async def test_cancel_stops_an_infinite_loop(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("loop", timeout_s=600)
    task = asyncio.create_task(executor.run(req))
    await wait_for_file(req.results_dir / "stdout", "looping\n")
    task.cancel()
    async with asyncio.timeout(1):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert executor.running == 0
    assert (req.results_dir / "stdout").read_text() == "looping\n"  # partial output kept


async def test_timeout_in_a_host_call_still_returns(executor: WasmExecutor, jobs: Jobs) -> None:
    # A WASI sleep is outside wasm code, where epochs cannot reach: the run is left behind.
    req = jobs.request("sleep", "3", timeout_s=0.5)
    with pytest.raises(JobTimeout) as info:
        await executor.run(req)
    assert info.value.result is not None and info.value.result.stdout == "sleeping\n"


async def test_trap_keeps_output(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("trap")
    with pytest.raises(ExecutionFailed) as info:
        await executor.run(req)
    reason = "wasm trap: wasm `unreachable` instruction executed"
    assert type(info.value) is ExecutionFailed and info.value.reason == reason
    res = info.value.result
    assert res is not None and (res.stdout, res.runner_error) == ("before the trap\n", reason)
    assert (req.results_dir / "stdout").read_text() == "before the trap\n"


async def test_import_module_linked_by_name(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("usehelper", imports=(jobs.module("helper", spec_name="helper"),))
    assert_result(req, await executor.run(req), "6 * 7 = 42\n", "", 0)


async def test_import_module_name_defaults_to_file_stem(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("usehelper", imports=(jobs.module("helper"),))
    assert_result(req, await executor.run(req), "6 * 7 = 42\n", "", 0)


async def test_missing_import_is_named(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("usehelper", imports=(jobs.module("helper", spec_name="other"),))
    with pytest.raises(InvalidModule) as info:
        await executor.run(req)
    assert info.value.reason == (
        "module usehelper imports helper::mul, provided neither by WASI nor by the import modules (given: other)"
    )
    assert (req.results_dir / "stdout").read_text() == ""  # checked before anything ran


async def test_missing_entry_point(executor: WasmExecutor, jobs: Jobs) -> None:
    with pytest.raises(InvalidModule) as info:
        await executor.run(jobs.request("hello", entry_point="main2"))
    assert info.value.reason == (
        "function 'main2' required but no WASM export with that name was found in module hello "
        "(exports: _start, memory)"
    )


async def test_entry_point_with_parameters(executor: WasmExecutor, jobs: Jobs) -> None:
    with pytest.raises(InvalidModule) as info:
        await executor.run(jobs.request("helper", entry_point="mul"))
    assert info.value.reason == (
        "export 'mul' of module helper must be a function with no parameters and no results, "
        "but is a function (i32, i32) -> (i32)"
    )


async def test_broken_module(executor: WasmExecutor, jobs: Jobs, tmp_path: Path) -> None:
    (tmp_path / "broken.wasm").write_bytes(b"\0asm\x01\0\0\0garbage")
    entry = InputVolume(StorageSpec(), tmp_path / "broken.wasm", "/")
    with pytest.raises(InvalidModule) as info:
        await executor.run(jobs.request(entry))
    assert info.value.reason.startswith("the entry module broken.wasm is not a valid WASM module: ")


async def test_module_directory_needs_exactly_one_wasm(
    executor: WasmExecutor, jobs: Jobs, tmp_path: Path
) -> None:
    d = tmp_path / "mods"
    d.mkdir()
    (d / "README").write_text("not a module")
    (d / "main.wasm").write_bytes((jobs.modules / "hello.wasm").read_bytes())
    req = jobs.request(InputVolume(StorageSpec(), d, "/"))
    assert_result(req, await executor.run(req), "Hello, world!\n", "", 0)
    (d / "other.wasm").write_bytes(b"")
    with pytest.raises(InvalidModule) as info:
        await executor.run(jobs.request(InputVolume(StorageSpec(Name="mods"), d, "/")))
    assert info.value.reason == (
        "the module directory mods should hold exactly one .wasm file but holds 2 (main.wasm, other.wasm)"
    )


async def test_cache_hit_skips_compilation(executor: WasmExecutor, jobs: Jobs, tmp_path: Path) -> None:
    for _ in range(2):
        req = jobs.request("hello")
        assert_result(req, await executor.run(req), "Hello, world!\n", "", 0)
    assert (executor.cache.compilations, executor.cache.memory_hits) == (1, 1)
    # Another executor (a restarted node) finds the compiled artifact on disk.
    again = WasmExecutor(WasmConfig(), tmp_path / "cache")
    try:
        req = jobs.request("hello")
        assert_result(req, await again.run(req), "Hello, world!\n", "", 0)
        assert (again.cache.compilations, again.cache.disk_hits) == (0, 1)
    finally:
        await again.aclose()


async def test_stream_cap_and_inline_truncation(jobs: Jobs, tmp_path: Path) -> None:
    ex = WasmExecutor(WasmConfig(stream_cap=3000), tmp_path / "cache")
    try:
        (tmp_path / "big.txt").write_bytes(b"0123456789" * 500)
        inputs = (InputVolume(StorageSpec(), tmp_path / "big.txt", "/big.txt"),)
        req = jobs.request("cat", "/big.txt", inputs=inputs)
        res = await ex.run(req)
    finally:
        await ex.aclose()
    assert (req.results_dir / "stdout").read_bytes() == (b"0123456789" * 500)[:3000]
    assert res.stdout == ("0123456789" * 500)[:2048] and res.stdout_truncated
    assert res.exit_code == 0


async def test_concurrent_runs_do_not_block_the_loop(executor: WasmExecutor, jobs: Jobs) -> None:
    reqs = [jobs.request("env", str(i)) for i in range(4)]
    results = await asyncio.gather(*(executor.run(r) for r in reqs))
    assert [r.stdout for r in results] == [f"argv[0]=env\nargv[1]={i}\n" for i in range(4)]


def epoch_engine() -> Engine:
    config = Config()
    config.epoch_interruption = True
    return Engine(config)


def test_cache_evicts_least_recently_used(
    tmp_path: Path, modules: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wasm_cache, "TOUCH_EVERY_S", 0.0)  # the mtimes below are set by hand
    cache = ModuleCache(epoch_engine(), tmp_path / "c", 1 << 40)
    wasm = {m: (modules / f"{m}.wasm").read_bytes() for m in ("hello", "env", "cat")}
    artifact = {m: tmp_path / "c" / (hashlib.sha256(b).hexdigest() + ".cwasm") for m, b in wasm.items()}
    for i, m in enumerate(wasm):
        cache.load(wasm[m])
        os.utime(artifact[m], (1000 + i, 1000 + i))  # used in the order hello, env, cat
    cache.load(wasm["hello"])  # a hit makes hello the most recently used
    assert (cache.compilations, cache.hits) == (3, 1)
    cache.max_bytes = artifact["hello"].stat().st_size + artifact["cat"].stat().st_size
    assert cache.evict() == 1
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == sorted(
        artifact[m].name for m in ("hello", "cat")
    )


def test_a_hit_touches_the_artifact_at_most_once_a_minute(tmp_path: Path, modules: Path) -> None:
    cache = ModuleCache(epoch_engine(), tmp_path / "c", 1 << 40)
    wasm = (modules / "hello.wasm").read_bytes()
    cache.load(wasm)
    artifact = tmp_path / "c" / (hashlib.sha256(wasm).hexdigest() + ".cwasm")
    os.utime(artifact, (1000, 1000))
    for _ in range(3):
        cache.load(wasm)
    assert cache.memory_hits == 3
    assert artifact.stat().st_mtime == 1000  # within TOUCH_EVERY_S of the load: no utime per hit


def test_cache_recompiles_a_corrupt_artifact(tmp_path: Path, modules: Path) -> None:
    engine = epoch_engine()
    wasm = (modules / "hello.wasm").read_bytes()
    ModuleCache(engine, tmp_path / "c", 1 << 30).load(wasm)
    artifact = tmp_path / "c" / (hashlib.sha256(wasm).hexdigest() + ".cwasm")
    artifact.write_bytes(b"not an artifact")
    fresh = ModuleCache(engine, tmp_path / "c", 1 << 30)
    fresh.load(wasm)
    assert (fresh.compilations, fresh.disk_hits) == (1, 0)
    assert artifact.read_bytes() != b"not an artifact"


def ticker_cpu_s(executor: WasmExecutor) -> float:
    ticker = executor._ticker
    assert ticker is not None and ticker.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ticker.ident))


async def wait_parked(executor: WasmExecutor) -> None:
    async with asyncio.timeout(10):
        while not executor.ticker_parked:
            await asyncio.sleep(0.01)


async def test_epoch_ticker_parks_when_no_run_is_active(executor: WasmExecutor, jobs: Jobs) -> None:
    req = jobs.request("hello")
    await executor.run(req)
    await wait_parked(executor)
    ticks, cpu = executor.ticks, ticker_cpu_s(executor)
    await asyncio.sleep(0.5)  # 50 epochs at 100 Hz, were it still ticking
    assert executor.ticks == ticks
    assert ticker_cpu_s(executor) - cpu < 0.001  # parked in a wait: no wake-ups at all
    # The next run wakes it: a module that never returns still times out.
    with pytest.raises(JobTimeout):
        await executor.run(jobs.request("loop", timeout_s=0.5))
    assert executor.ticks > ticks
    await wait_parked(executor)


async def test_run_threads_are_reused(executor: WasmExecutor, jobs: Jobs) -> None:
    for _ in range(5):
        req = jobs.request("hello")
        assert_result(req, await executor.run(req), "Hello, world!\n", "", 0)
    assert executor.pool.started == 1
    assert executor.pool.threads == 1


async def test_a_run_left_behind_does_not_starve_the_pool(tmp_path: Path, jobs: Jobs) -> None:
    executor = WasmExecutor(WasmConfig(), tmp_path / "cache", workers=1)
    try:
        with pytest.raises(JobTimeout):
            await executor.run(jobs.request("sleep", "3", timeout_s=0.5))
        req = jobs.request("hello")  # the one pool thread is still in the sleep: another one runs it
        assert_result(req, await executor.run(req), "Hello, world!\n", "", 0)
        assert executor.pool.started == 2
    finally:
        await executor.aclose()


async def test_a_module_given_as_bytes_is_not_read_from_disk(executor: WasmExecutor, jobs: Jobs) -> None:
    data = (jobs.modules / "env.wasm").read_bytes()
    volume = InputVolume(StorageSpec(), jobs.tmp / "never-written" / "data", "/", data=data)
    req = jobs.request(volume, "x")
    assert_result(req, await executor.run(req), "argv[0]=data\nargv[1]=x\n", "", 0)


async def test_runs_without_inputs_share_one_root(executor: WasmExecutor, jobs: Jobs, tmp_path: Path) -> None:
    outputs = [{"Name": "outputs", "path": "/outputs"}]
    for _ in range(3):
        req = jobs.request("cat", "/etc/passwd", outputs=outputs)
        assert_result(req, await executor.run(req), "", "cat: /etc/passwd: No such file or directory\n", 1)
    roots = tmp_path / "cache" / "roots"
    assert [p.name.startswith("shared-") for p in roots.iterdir()] == [True]
    assert [p.name for p in next(roots.iterdir()).iterdir()] == ["outputs"]
