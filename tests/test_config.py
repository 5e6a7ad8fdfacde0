"""config/computenode.yaml, environment overrides, field errors, `computenode config validate`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from computenode.config import Settings, load_settings, parse_duration
from computenode.errors import SpecError

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIG = ROOT / "config" / "computenode.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("COMPUTENODE_"):
            monkeypatch.delenv(key)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def fields_of(exc: SpecError) -> list[str]:
    return [field for field, _ in exc.errors]


# -- the repo's config file -------------------------------------------------------------------------


def test_repo_config_is_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded, defaults = load_settings(REPO_CONFIG), Settings()
    for section in Settings.model_fields:
        assert getattr(loaded, section) == getattr(defaults, section), section
    assert not loaded.node.data_dir.is_relative_to(tmp_path)  # never the current directory


def test_default_data_dir_root_and_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert Settings().node.data_dir == Path("/var/lib/computenode")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert Settings().node.data_dir == tmp_path / "state" / "computenode"
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().node.data_dir == tmp_path / "home" / ".local" / "state" / "computenode"
    monkeypatch.chdir(tmp_path)
    assert (
        load_settings(None, {"node.data_dir": "./var/computenode"}).node.data_dir
        == tmp_path / "var" / "computenode"
    )


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if (
            isinstance(ann, type)
            and issubclass(ann, BaseModel)
            and name not in ("total", "job_max", "job_default", "queue")
        ):
            out += _keys(ann, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def _lookup(doc: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        assert isinstance(doc, dict) and part in doc, f"{dotted} is missing from config/computenode.yaml"
        doc = doc[part]
    return doc


def test_repo_config_holds_every_option() -> None:
    doc = yaml.safe_load(REPO_CONFIG.read_text())
    keys = _keys(Settings)
    assert len(keys) > 50
    for key in keys:
        _lookup(doc, key)


def test_every_option_has_a_comment() -> None:
    for number, line in enumerate(REPO_CONFIG.read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":"):
            previous = REPO_CONFIG.read_text().splitlines()[number - 2].strip()
            assert "#" in line or previous.startswith("#"), f"line {number} has no comment: {line}"


# The keys docs/configuration.md documents, as it writes them.
FIXED = {
    "node.id": "", "api.listen": "127.0.0.1:1234", "api.token": "",
    "capacity.total": {"cpu": "", "memory": "", "disk": "", "gpu": ""},
    "capacity.job_max": {"cpu": "", "memory": "", "disk": "", "gpu": ""},
    "capacity.job_default.cpu": "100m", "capacity.job_default.memory": "100Mi",
    "timeouts.job_default": "10m", "timeouts.job_min": "500ms", "timeouts.job_max": "60m", "timeouts.bid_expiry": "3m",
    "job_selection.locality": "local", "job_selection.reject_stateless_jobs": False,
    "job_selection.accept_networked_jobs": False, "job_selection.probe_http": "", "job_selection.probe_exec": "",
    "job_selection.probe_timeout": "10s",
    "engines.docker.enabled": True, "engines.docker.host": "unix:///var/run/docker.sock",
    "engines.wasm.enabled": True, "engines.noop.enabled": False,
    "storage.ipfs.api": "/ip4/127.0.0.1/tcp/5001", "publishers.default": "local",
}  # fmt: skip


def test_fixed_keys_as_architecture_writes_them() -> None:
    doc = yaml.safe_load(REPO_CONFIG.read_text())
    for key, value in FIXED.items():
        assert _lookup(doc, key) == value, key
    assert _lookup(doc, "node.labels") == {}
    assert _lookup(doc, "node.data_dir") == ""


# -- environment ------------------------------------------------------------------------------------


def test_env_overrides_one_key_and_keeps_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path, "api: {listen: 127.0.0.1:2000, token: from-file}\nengines: {docker: {enabled: true}}\n"
    )
    monkeypatch.setenv("COMPUTENODE_API__LISTEN", "127.0.0.1:3000")
    monkeypatch.setenv("COMPUTENODE_ENGINES__DOCKER__ENABLED", "false")
    monkeypatch.setenv("COMPUTENODE_TIMEOUTS__JOB_MAX", "2h")
    monkeypatch.setenv("COMPUTENODE_NODE__LABELS", '{"zone": "a"}')
    monkeypatch.setenv("COMPUTENODE_CAPACITY__TOTAL__MEMORY", "4Gi")
    s = load_settings(path)
    assert (s.api.listen, s.api.token) == ("127.0.0.1:3000", "from-file")
    assert s.engines.docker.enabled is False and s.engines.docker.host == "unix:///var/run/docker.sock"
    assert s.timeouts.job_max == 7200.0 and s.timeouts.job_default == 600.0
    assert s.node.labels == {"zone": "a"}
    assert s.capacity.total.to_usage().memory == 4 * 2**30


def test_flags_win_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPUTENODE_API__LISTEN", "127.0.0.1:3000")
    s = load_settings(write(tmp_path, "api: {listen: 127.0.0.1:2000}\n"), {"api.listen": "127.0.0.1:4000",
                                                                         "node.data_dir": str(tmp_path)})  # fmt: skip
    assert s.api.listen == "127.0.0.1:4000" and s.node.data_dir == tmp_path


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPUTENODE_TIMEOUTS__JOB_MAX", "forever")
    with pytest.raises(SpecError) as info:
        load_settings(None)
    assert fields_of(info.value) == ["timeouts.job_max"]


# -- values -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10m", 600.0), ("500ms", 0.5), ("1h30m", 5400.0), ("30", 30.0), (45, 45.0), ("1.5s", 1.5), ("7d", 604800.0),
     ("100us", 1e-4), ("0s", 0.0)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10 minutes", "-1", "m", "1x", "1h 30m", True, -5])
def test_bad_durations(text: str | int) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_sizes_and_cpu(tmp_path: Path) -> None:
    s = load_settings(
        write(
            tmp_path,
            """
capacity: {total: {cpu: "2", memory: 8Gi, disk: 100GB, gpu: "1"}, job_max: {cpu: 500m, memory: 512mb}}
retention: {min_free_disk: 2GB}
engines: {wasm: {cache_size: 1048576}}
""",
        )
    )
    total, job_max = s.capacity.total.to_usage(), s.capacity.job_max.to_usage()
    assert (total.cpu, total.memory, total.disk, total.gpu) == (2.0, 8 * 2**30, 100 * 2**30, 1)
    assert (job_max.cpu, job_max.memory) == (0.5, 512 * 2**20)
    assert s.retention.min_free_disk == 2 * 2**30 and s.engines.wasm.cache_size == 2**20


def test_one_error_per_wrong_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
api: {listen: localhost, prot: 1}
timeouts: {job_max: forever}
capacity: {total: {memory: 12 potatoes}}
engines: {docker: {pull_policy: sometimes}}
job_selection: {locality: everywhere}
logging: {level: loud}
""",
    )
    with pytest.raises(SpecError) as info:
        load_settings(path)
    assert sorted(fields_of(info.value)) == sorted([
        "api.listen", "api.prot", "timeouts.job_max", "capacity.total.memory", "engines.docker.pull_policy",
        "job_selection.locality", "logging.level",
    ])  # fmt: skip
    assert ("capacity.total.memory", "'12 potatoes' is not a size") in info.value.errors


@pytest.mark.parametrize(
    ("text", "message"),
    [("api: [1, 2\n", "is not YAML"), ("- a\n- b\n", "must be a mapping"), ("nodes: {}\n", "Extra inputs")],
)
def test_unreadable_configs(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        load_settings(write(tmp_path, text))
    assert len(info.value.errors) == 1 and message in info.value.errors[0][1]


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    # pydantic-settings' YAML source would silently use the defaults (docs/libraries.md).
    with pytest.raises(SpecError, match="cannot read config"):
        load_settings(tmp_path / "nope.yaml")


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == Settings()


def test_frozen() -> None:
    s = Settings()
    with pytest.raises(ValueError):
        s.api.listen = "x"  # type: ignore[misc]


# -- computenode config validate --------------------------------------------------------------------


def validate(path: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPUTENODE_")}
    return subprocess.run([sys.executable, "-m", "computenode.cli", "config", "validate", str(path)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)  # fmt: skip


def test_validate_repo_config(tmp_path: Path) -> None:
    done = validate(REPO_CONFIG, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok" in done.stdout and done.stderr == ""


def test_validate_bad_config(tmp_path: Path) -> None:
    done = validate(write(tmp_path, "api: {listen: nowhere}\ntimeouts: {job_min: soon}\n"), tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert "invalid configuration" in lines[0]
    assert sorted(line.strip().split(":")[0] for line in lines[1:]) == ["api.listen", "timeouts.job_min"]
    assert "Traceback" not in done.stderr


def test_validate_missing_file(tmp_path: Path) -> None:
    done = validate(tmp_path / "missing.yaml", tmp_path)
    assert done.returncode == 2 and "cannot read config" in done.stderr and "Traceback" not in done.stderr
