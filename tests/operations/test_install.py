"""docs/OPERATIONS.md's "From nothing to a running service", followed in a throwaway root.

systemd cannot run here: the unit is checked with systemd-analyze verify and the installed
entry point is started by hand with the config `config init` wrote, as ExecStart would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.operations.daemon import REPO, free_port

SYSTEM_CONFIG = "/etc/computenode/computenode.yaml"


def _env() -> dict[str, str]:
    # Nothing of this checkout or of the test bed's COMPUTENODE_* may reach the installed node.
    return {k: v for k, v in os.environ.items() if not k.startswith("COMPUTENODE_") and k != "PYTHONPATH"}


def _run(*cmd: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, cwd=cwd, env=_env(), timeout=300
    )
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv under tmp holding the wheel built from this checkout; its bin/computenode."""
    tmp = tmp_path_factory.mktemp("install")
    # Build from a copy: pip wheel leaves build/ and *.egg-info in the source tree.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("computenode", "config", "systemd"):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp / "dist", src, cwd=tmp)
    [wheel] = (tmp / "dist").glob("computenode-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "computenode/data/computenode.yaml" in names and "computenode/data/computenode.service" in names

    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp)
    py = venv / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel, cwd=tmp)
    # The dependencies come from the test's own venv (a path line, so its editable computenode
    # finder is not loaded): no network, and computenode itself only from the wheel.
    site = Path(
        _run(py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp).stdout.strip()
    )
    (site / "test-deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    where = _run(py, "-c", "import computenode.cli; print(computenode.cli.__file__)", cwd=tmp).stdout
    assert where.startswith(str(site)), where
    return venv / "bin" / "computenode"


def test_config_init_writes_the_documented_config(installed: Path, tmp_path: Path) -> None:
    path = tmp_path / "etc" / "computenode" / "computenode.yaml"
    done = _run(installed, "config", "init", path, cwd=tmp_path)
    assert str(path) in done.stdout
    assert path.read_text() == (REPO / "config" / "computenode.yaml").read_text()
    again = subprocess.run(
        [str(installed), "config", "init", str(path)], capture_output=True, text=True, env=_env()
    )
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr
    _run(installed, "config", "init", "--force", path, cwd=tmp_path)
    _run(installed, "config", "validate", path, cwd=tmp_path)


def test_systemd_install_points_at_the_installed_script(installed: Path, tmp_path: Path) -> None:
    printed = _run(installed, "systemd", "install", "--print-unit", cwd=tmp_path).stdout
    assert f"ExecStart={installed} run --config {SYSTEM_CONFIG}\n" in printed
    assert not (tmp_path / "etc").exists()
    _run(installed, "systemd", "install", "--root", tmp_path, cwd=tmp_path)
    unit = tmp_path / "etc" / "systemd" / "system" / "computenode.service"
    assert unit.read_text() == printed
    template = (REPO / "systemd" / "computenode.service").read_text()
    assert printed.replace(str(installed), "/usr/local/bin/computenode") == template
    if shutil.which("systemd-analyze"):  # installed by scripts/testbed.sh (APT_TOOLS)
        out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_walkthrough_runs_the_installed_node(installed: Path, tmp_path: Path) -> None:
    """config init, systemd install, then what ExecStart runs, with a tmp data_dir and port."""
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    cwd.mkdir()
    config = root / SYSTEM_CONFIG.lstrip("/")
    _run(installed, "config", "init", config, cwd=cwd)
    _run(installed, "systemd", "install", "--root", root, cwd=cwd)
    url = f"http://127.0.0.1:{free_port()}"
    log = tmp_path / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(installed), "run", "--config", str(config), "--data-dir", str(tmp_path / "data"),
             "--listen", url.removeprefix("http://")],
            cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        ready: httpx.Response | None = None
        while ready is None:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                ready = httpx.get(url + "/readyz", timeout=2)
            except httpx.HTTPError:
                pass
            if ready is None or ready.json().get("status") == "starting":
                ready = None
                time.sleep(0.2)
        # No kubo at the default storage.ipfs.api here: degraded, yet WASM jobs can run.
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] in ("ok", "degraded")
        assert ready.json()["checks"]["wasm"]["ok"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()
    assert list(cwd.iterdir()) == []  # nothing written to the current directory
    assert (tmp_path / "data" / "computenode.db").exists()
