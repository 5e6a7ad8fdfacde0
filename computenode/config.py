"""Node configuration: YAML, then COMPUTENODE_<SECTION>__<KEY> environment overrides.

Checked once at the edge and frozen. Durations read as "10m", "500ms", "1h30m" or
plain seconds; sizes as "512Mi", "1GB" (binary, as job specs); CPU as "500m", "2".
Each component receives only its own section.
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from computenode.errors import SpecError
from computenode.model import Locality, ResourceUsageConfig
from computenode.model.parse import spec_error
from computenode.model.quantity import parse_bytes

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from "10m", "500ms", "1h30m", or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is not a duration")
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{value!r} is not a duration (e.g. 10m, 500ms, 1h30m)")
    return sum(float(n) * _UNIT_S[u] for n, u in parts)


def _size(value: Any) -> int:
    return parse_bytes(value if isinstance(value, int | str) else str(value))


def _network(value: Any) -> IPv4Network | IPv6Network:
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    try:
        return ip_network(str(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network in CIDR form, e.g. 127.0.0.1/32 ({exc})") from None


Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(_size)]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def default_data_dir() -> Path:
    """/var/lib/computenode for root (as the systemd unit's StateDirectory), else the user's XDG
    state directory: a node run by hand never writes into the directory it was started from."""
    if os.geteuid() == 0:
        return Path("/var/lib/computenode")
    state = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "computenode"


class NodeConfig(Section):
    id: str = ""  # empty: generated once and kept in data_dir
    labels: dict[str, str] = Field(default_factory=dict)
    data_dir: Path = Field(default_factory=default_data_dir)  # "" in a file: this default too

    @field_validator("data_dir", mode="before")
    @classmethod
    def _empty_is_default(cls, v: Any) -> Any:
        # config/computenode.yaml writes data_dir: "" (every key is listed there); Path("") would be
        # the current directory.
        return default_data_dir() if v == "" or v is None else v

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        # A relative data_dir (`make run` passes --data-dir ./var/computenode) means relative to the
        # directory the node was started from; fix it now so a later chdir cannot move it.
        return v.expanduser().absolute()


class ApiConfig(Section):
    listen: str = "127.0.0.1:1234"
    token: str = ""
    # Reads of lists, the dashboard and /metrics per second, all clients together (api/pacing.py).
    read_rate: float = Field(20.0, gt=0)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(f"{v!r} is not HOST:PORT")
        return v

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Quantities(ResourceUsageConfig):
    """cpu/memory/disk/gpu quantities in config (lower-case keys, empty = unset)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, loc_by_alias=False
    )


class CapacityConfig(Section):
    total: Quantities = Field(default_factory=Quantities)  # empty fields: 80% of the host
    job_max: Quantities = Field(default_factory=Quantities)  # empty fields: the total
    job_default: Quantities = Field(default_factory=lambda: Quantities(cpu="100m", memory="100Mi"))
    queue: Quantities = Field(default_factory=Quantities)  # empty fields: as large as the total
    host_fraction: float = Field(0.8, gt=0, le=1)


class TimeoutsConfig(Section):
    job_default: Duration = 600.0
    job_min: Duration = 0.5
    job_max: Duration = 3600.0
    bid_expiry: Duration = 180.0
    drain_grace: Duration = 30.0  # on SIGTERM, running executions get this long before they are cancelled


class JobSelectionConfig(Section):
    locality: Locality = Locality.LOCAL  # Bacalhau's default: every input already on this node
    reject_stateless_jobs: bool = False
    accept_networked_jobs: bool = False
    probe_http: str = ""
    probe_exec: str = ""
    probe_timeout: Duration = 10.0


class DockerConfig(Section):
    enabled: bool = True
    host: str = "unix:///var/run/docker.sock"
    pull_policy: Literal["if-not-present", "always", "never"] = "if-not-present"
    pull_timeout: Duration = 600.0
    stop_grace: Duration = 5.0  # SIGTERM, then SIGKILL after this long
    pids_limit: int = Field(1024, ge=1)
    user: str = ""  # e.g. "1000:1000"; empty: the image's user
    stream_cap: Size = 1 << 30  # bytes kept of stdout and of stderr each
    reap_interval: Duration = 60.0
    reap_grace: Duration = 60.0  # a container this young is never reaped


class WasmConfig(Section):
    enabled: bool = True
    cache_size: Size = 512 * 1024 * 1024  # compiled-module cache on disk, LRU-evicted
    stream_cap: Size = 1 << 30


class NoopConfig(Section):
    enabled: bool = False
    exit_code: int = 0
    delay: Duration = 0.0
    error: str = ""  # fail every run with this reason
    error_retryable: bool = False  # whether that failure is transient (owned jobs retry it)


class EnginesConfig(Section):
    docker: DockerConfig = Field(default_factory=DockerConfig)
    wasm: WasmConfig = Field(default_factory=WasmConfig)
    noop: NoopConfig = Field(default_factory=NoopConfig)


class IPFSConfig(Section):
    api: str = "/ip4/127.0.0.1/tcp/5001"
    fetch_timeout: Duration = 300.0
    cache_size: Size = 10 * 1024**3


class URLConfig(Section):
    max_size: Size = 10 * 1024**3
    fetch_timeout: Duration = 600.0
    retries: int = Field(3, ge=0)
    # refuse loopback, private-range and other non-global addresses, on every redirect hop
    # and on the address actually connected to
    deny_private: bool = False
    # exceptions to deny_private: CIDRs that may be fetched anyway, e.g. 127.0.0.1/32
    allow_private: list[Network] = Field(default_factory=list)


class FilecoinUnsealedConfig(Section):
    path_template: str = ""  # e.g. /data/unsealed/{{.CID}}


class LocalDirectoryConfig(Section):
    allowed_roots: list[Path] = Field(default_factory=list)


class StorageConfig(Section):
    ipfs: IPFSConfig = Field(default_factory=IPFSConfig)
    url: URLConfig = Field(default_factory=URLConfig)
    filecoin_unsealed: FilecoinUnsealedConfig = Field(default_factory=FilecoinUnsealedConfig)
    local_directory: LocalDirectoryConfig = Field(default_factory=LocalDirectoryConfig)


class LocalPublisherConfig(Section):
    base_url: str = ""  # empty: http://<api.listen>


class IPFSPublisherConfig(Section):
    enabled: bool = True  # publish to the kubo of storage.ipfs.api (also serves Estuary jobs)


class PublishersConfig(Section):
    default: Literal["local", "ipfs", "noop"] = "local"
    ipfs: IPFSPublisherConfig = Field(default_factory=IPFSPublisherConfig)
    local: LocalPublisherConfig = Field(default_factory=LocalPublisherConfig)


class LimitsConfig(Section):
    """The most one job may ask for, in counts that each cost the node work: over one is a 400."""

    max_concurrency: int = Field(16, ge=1)  # Deal.Concurrency: copies of each shard an owned job runs
    max_shards: int = Field(1000, ge=1)  # shards once the sharding glob is applied
    max_inputs: int = Field(100, ge=1)  # inputs + contexts (+ WASM modules)
    max_outputs: int = Field(100, ge=1)  # outputs
    max_files: int = Field(100_000, ge=1)  # files in an inline tar or a fetched IPFS directory


class RetentionConfig(Section):
    keep_failed_for: Duration = 0.0  # keep results dirs of failed executions this long (debugging)
    results_max_age: Duration = 7 * 86400.0  # published local results
    # jobs whose every execution ended this long ago are deleted, files and rows, leaving a
    # tombstone (cleanup.py); 0 keeps them forever
    history_for: Duration = 30 * 86400.0
    min_free_disk: Size = 1024**3  # below this the node stops bidding


_TCP_MADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/\d+$")
_PEER_MADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/\d+/p2p/[1-9A-HJ-NP-Za-km-z]+$")


def _all_match(addrs: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for addr in addrs:
        if not pattern.match(addr):
            raise ValueError(f"{addr!r} is not {what}")
    return addrs


class NetworkConfig(Section):
    """Joining a Bacalhau v0.3.23 network over libp2p (computenode/network/, docs/network.md)."""

    enabled: bool = False
    listen: list[str] = Field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/1235"])
    # Requesters, each /ip4/HOST/tcp/PORT/p2p/<peer id>: dialled at start and redialled every 10 s.
    peers: list[str] = Field(default_factory=list)
    key_file: str = ""  # Ed25519 identity; empty: <data_dir>/libp2p.key, made once, mode 0600
    node_info_interval: Duration = Field(30.0, gt=0)
    # Offers from connected peers that are not in `peers` are refused unless this is set.
    accept_any_requester: bool = False

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        return _all_match(v, _TCP_MADDR, "a TCP multiaddr like /ip4/127.0.0.1/tcp/1235")

    @field_validator("peers")
    @classmethod
    def _peers(cls, v: list[str]) -> list[str]:
        return _all_match(v, _PEER_MADDR, "a peer multiaddr like /ip4/10.0.0.5/tcp/1235/p2p/Qm…")


class LoggingConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "text"] = "auto"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="COMPUTENODE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    node: NodeConfig = Field(default_factory=NodeConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    timeouts: TimeoutsConfig = Field(default_factory=TimeoutsConfig)
    job_selection: JobSelectionConfig = Field(default_factory=JobSelectionConfig)
    engines: EnginesConfig = Field(default_factory=EnginesConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    publishers: PublishersConfig = Field(default_factory=PublishersConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments (CLI flags) > COMPUTENODE_* environment > the YAML file.
        yaml_source = InitSettingsSource(settings_cls, init_kwargs=_FILE_DATA.get() or {})
        return init_settings, env_settings, yaml_source


# The YAML file's contents while load_settings builds Settings (the source above reads it).
_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("_FILE_DATA", default=None)


def load_settings(path: Path | str | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read YAML (when given), then the environment, then `overrides` ({"api.listen": ...}, the CLI
    flags), each winning over the one before; SpecError naming every wrong field."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise SpecError([("", f"cannot read config {path}: {exc.strerror}")]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SpecError([("", f"config {path} is not YAML: {exc}")]) from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SpecError([("", f"config {path} must be a mapping of sections")])
        data = loaded or {}
    flags: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        flags.setdefault(section, {})[key] = value
    token = _FILE_DATA.set(data)
    try:
        return Settings(**flags)
    except ValidationError as exc:
        raise spec_error(exc) from None
    finally:
        _FILE_DATA.reset(token)
