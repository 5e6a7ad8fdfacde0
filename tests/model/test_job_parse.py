"""Reading jobs: the seeds' forms, the compatibility rules, size guards and field-path errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from computenode.errors import SpecError
from computenode.model import (
    Engine,
    Job,
    Network,
    Publisher,
    StorageSource,
    SubmitEnvelope,
    Verifier,
    parse_job,
)
from computenode.model.base import MAX_LIST_ELEMENTS, MAX_SERIALIZED_BYTES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def errors_of(raw: bytes | str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as info:
        parse_job(raw)
    return info.value.errors


def docker_job(**spec: object) -> dict[str, object]:
    return {"APIVersion": "V1beta1", "Spec": {"Engine": "Docker", "Docker": {"Image": "busybox"}, **spec}}


# -- the submit envelope ---------------------------------------------------------------------------------


def test_seed_002_envelope(seed_002: bytes) -> None:
    job = parse_job(seed_002)
    assert job.api_version == "V1beta1"
    assert job.spec.engine is Engine.DOCKER
    assert job.spec.verifier is Verifier.NOOP
    assert job.spec.publisher is Publisher.ESTUARY
    assert job.spec.docker.image == "ubuntu"
    assert job.spec.docker.entrypoint == ["date"]
    assert job.spec.timeout == 1800.0
    [out] = job.spec.outputs
    assert (out.storage_source, out.name, out.path) == (StorageSource.IPFS, "outputs", "/outputs")
    assert job.spec.sharding.batch_size == 1
    assert job.spec.sharding.base_path == "/inputs"
    # Deal sits beside Spec in the seed; it lands in Spec.
    assert job.spec.deal.concurrency == 1
    # The envelope's data.ClientID fills Metadata.ClientID.
    assert job.metadata.client_id == "..."


def test_seed_002_envelope_round_trip(seed_002: bytes) -> None:
    env = SubmitEnvelope.model_validate(json.loads(seed_002))
    assert (env.signature, env.client_public_key, env.data.client_id) == ("...", "...", "...")
    again = SubmitEnvelope.model_validate(json.loads(json.dumps(env.to_wire())))
    assert again == env
    wire = env.to_wire()
    assert set(wire) == {"data", "signature", "client_public_key"}
    assert set(wire["data"]) == {"ClientID", "Job"}


def test_seed_002_job_round_trip(seed_002: bytes) -> None:
    job = parse_job(seed_002)
    assert parse_job(json.dumps(job.to_wire())) == job
    assert parse_job(yaml.safe_dump(job.to_wire())) == job


def test_emits_the_seeds_names(seed_002: bytes) -> None:
    wire = parse_job(seed_002).to_wire()
    spec = wire["Spec"]
    assert {"inputs", "outputs", "Contexts", "Sharding", "Deal", "ExecutionPlan", "NodeSelectors"} <= set(
        spec
    )
    assert set(spec["Sharding"]) == {"GlobPattern", "BatchSize", "GlobPatternBasePath"}
    assert set(spec["Resources"]) == {"CPU", "Memory", "Disk", "GPU"}
    assert spec["outputs"][0]["path"] == "/outputs"
    assert spec["Language"]["DeterministicExecution"] is False
    assert "JobContext" in spec["Language"]
    assert spec["ExecutionPlan"] == {"ShardsTotal": 0}
    assert wire["Metadata"]["ClientID"] == "..."


def test_envelope_keeps_a_jobs_own_client_id() -> None:
    doc = {"data": {"ClientID": "outer", "Job": {**docker_job(), "Metadata": {"ClientID": "inner"}}}}
    assert parse_job(json.dumps(doc)).metadata.client_id == "inner"


def test_envelope_without_client_id() -> None:
    assert parse_job(json.dumps({"data": {"Job": docker_job()}})).metadata.client_id == ""


def test_envelope_errors_name_the_job_fields() -> None:
    doc = {"data": {"ClientID": "c", "Job": docker_job(Resources={"Memory": "12 potatoes"})}}
    assert errors_of(json.dumps(doc)) == [("Spec.Resources.Memory", "'12 potatoes' is not a size")]


# -- case-insensitive keys and enums ---------------------------------------------------------------


LOWER = """
{
  "apiversion": "V1beta1",
  "spec": {
    "engine": "docker", "verifier": "deterministic", "publisher": "ipfs",
    "docker": {"image": "busybox", "entrypoint": ["cat", "/in/x"], "environmentvariables": ["A=1"]},
    "network": {"type": "http", "domains": ["example.com"]},
    "Inputs": [{"storagesource": "ipfs", "cid": "QmX", "Path": "/in"}],
    "Outputs": [{"storagesource": "ipfs", "name": "out", "Path": "/out"}],
    "nodeselectors": [{"key": "zone", "operator": "IN", "values": ["a", "b"]}]
  }
}
"""


def test_lower_case_keys_and_enums() -> None:
    job = parse_job(LOWER)
    spec = job.spec
    assert (spec.engine, spec.verifier, spec.publisher) == (
        Engine.DOCKER,
        Verifier.DETERMINISTIC,
        Publisher.IPFS,
    )
    assert spec.docker.entrypoint == ["cat", "/in/x"]
    assert spec.docker.environment_variables == ["A=1"]
    assert spec.network.type is Network.HTTP and spec.network.domains == ["example.com"]
    assert spec.inputs[0].storage_source is StorageSource.IPFS
    assert (spec.inputs[0].cid, spec.inputs[0].path) == ("QmX", "/in")
    assert (spec.outputs[0].name, spec.outputs[0].path) == ("out", "/out")
    assert spec.node_selectors[0].matches({"zone": "b"})
    wire = job.to_wire()
    assert wire["Spec"]["Engine"] == "Docker" and wire["Spec"]["inputs"][0]["path"] == "/in"
    assert parse_job(json.dumps(wire)) == job


@pytest.mark.parametrize(
    ("text", "member"),
    [
        ("docker", Engine.DOCKER),
        ("WASM", Engine.WASM),
        (" Noop ", Engine.NOOP),
        ("pythonwasm", Engine.PYTHON_WASM),
    ],
)
def test_engine_spellings(text: str, member: Engine) -> None:
    spec: dict[str, object] = {"Engine": text, "Docker": {"Image": "x"}}
    if member is Engine.WASM:
        spec["Wasm"] = {"EntryModule": {"StorageSource": "inline", "URL": "data:,x"}}
    assert parse_job(json.dumps({"Spec": spec})).spec.engine is member


def test_storage_source_spellings() -> None:
    for text, member in [("urldownload", StorageSource.URL_DOWNLOAD), ("FILECOINUNSEALED", StorageSource.FILECOIN_UNSEALED),
                         ("localdirectory", StorageSource.LOCAL_DIRECTORY), ("Inline", StorageSource.INLINE)]:  # fmt: skip
        job = parse_job(json.dumps(docker_job(inputs=[{"StorageSource": text, "path": "/i"}])))
        assert job.spec.inputs[0].storage_source is member


def test_exact_case_key_wins() -> None:
    job = parse_job(json.dumps(docker_job(inputs=[{"path": "/exact", "Path": "/folded"}])))
    assert job.spec.inputs[0].path == "/exact"


def test_yaml_form() -> None:
    text = (EXAMPLES / "hello-docker.yaml").read_text()
    job = parse_job(text)
    assert job.spec.docker.image == "computenode-test/busybox:latest"
    assert job.spec.docker.entrypoint == ["echo", "hello from docker"]
    assert parse_job(yaml.safe_dump(job.to_wire())) == job
    assert parse_job(text.encode()) == job


def test_every_example_parses() -> None:
    files = sorted(EXAMPLES.glob("*.yaml")) + sorted(EXAMPLES.glob("*.json"))
    assert len(files) >= 5
    for path in files:
        job = parse_job(path.read_bytes())
        assert parse_job(json.dumps(job.to_wire())) == job, path


# -- Job-level compatibility -----------------------------------------------------------------------


def test_deal_and_plan_at_job_level() -> None:
    doc = {**docker_job(), "Deal": {"Concurrency": 3, "Confidence": 2}, "ExecutionPlan": {"ShardsTotal": 4}}
    spec = parse_job(json.dumps(doc)).spec
    assert (spec.deal.concurrency, spec.deal.confidence, spec.execution_plan.shards_total) == (3, 2, 4)


def test_deal_and_plan_in_spec() -> None:
    doc = docker_job(Deal={"Concurrency": 2}, ExecutionPlan={"ShardsTotal": 5})
    spec = parse_job(json.dumps(doc)).spec
    assert (spec.deal.concurrency, spec.execution_plan.shards_total) == (2, 5)


def test_spec_level_deal_wins_over_job_level() -> None:
    doc = {**docker_job(Deal={"Concurrency": 2}), "Deal": {"Concurrency": 9}}
    assert parse_job(json.dumps(doc)).spec.deal.concurrency == 2


def test_job_level_deal_errors_name_a_path() -> None:
    doc = {**docker_job(), "deal": {"Concurrency": -1}}
    [(field, _)] = errors_of(json.dumps(doc))
    assert field == "Spec.Deal.Concurrency"


@pytest.mark.parametrize("key", ["ID", "id", "Id"])
def test_flat_id(key: str) -> None:
    job = parse_job(
        json.dumps({**docker_job(), key: "job-1", "ClientID": "c1", "CreatedAt": "2022-11-28T12:00:00Z"})
    )
    assert (job.id, job.metadata.client_id) == ("job-1", "c1")
    assert job.metadata.created_at is not None and job.metadata.created_at.year == 2022


def test_metadata_id() -> None:
    job = parse_job(json.dumps({**docker_job(), "Metadata": {"ID": "job-2", "ClientID": "c2"}}))
    assert (job.id, job.metadata.client_id) == ("job-2", "c2")


def test_metadata_id_wins_over_flat_id() -> None:
    assert parse_job(json.dumps({**docker_job(), "ID": "flat", "Metadata": {"id": "meta"}})).id == "meta"


def test_go_zero_time_is_unset() -> None:
    job = parse_job(json.dumps({**docker_job(), "Metadata": {"CreatedAt": "0001-01-01T00:00:00Z"}}))
    assert job.metadata.created_at is None


def test_client_status_is_ignored() -> None:
    job = parse_job(
        json.dumps({**docker_job(), "Status": {"JobState": {"Nodes": {}}}, "RequesterNodeID": "x"})
    )
    assert "Status" not in job.to_wire()


def test_nulls_are_empty() -> None:
    doc = docker_job(inputs=None, outputs=None, Annotations=None, NodeSelectors=None, Publisher="",
                     Resources={"CPU": None, "Memory": ""}, Network={"Type": "", "Domains": None})  # fmt: skip
    spec = parse_job(json.dumps(doc)).spec
    assert (spec.inputs, spec.outputs, spec.annotations, spec.node_selectors) == ([], [], [], [])
    assert spec.publisher is None and spec.network.type is Network.NONE
    assert spec.resources.to_usage().is_zero()


def test_defaults() -> None:
    job = parse_job(json.dumps(docker_job()))
    assert job.spec.verifier is Verifier.NOOP and job.spec.network.type is Network.NONE
    assert job.spec.timeout == 0.0 and job.spec.deal.concurrency == 1


# -- errors ------------------------------------------------------------------------------------------


def test_memory_garbage_names_the_field() -> None:
    assert errors_of(json.dumps(docker_job(Resources={"Memory": "12 potatoes"}))) == [
        ("Spec.Resources.Memory", "'12 potatoes' is not a size")
    ]


def test_one_error_per_wrong_field() -> None:
    doc = docker_job(
        Resources={"CPU": "lots", "Memory": "1 XB", "Disk": "-1", "GPU": "1.5"},
        Timeout="soon",
        inputs=[{"StorageSource": "floppy"}],
        Docker={"Image": "x", "EnvironmentVariables": ["NOVALUE"]},
        NodeSelectors=[{"Key": "zone", "Operator": "within", "Values": ["a"]}],
    )
    fields = [f for f, _ in errors_of(json.dumps(doc))]
    assert sorted(fields) == sorted([
        "Spec.Resources.CPU", "Spec.Resources.Memory", "Spec.Resources.Disk", "Spec.Resources.GPU",
        "Spec.Timeout", "Spec.inputs.0.StorageSource", "Spec.Docker.EnvironmentVariables",
        "Spec.NodeSelectors.0.Operator",
    ])  # fmt: skip


def test_engine_section_required() -> None:
    [(field, msg)] = errors_of(json.dumps({"Spec": {"Engine": "Docker"}}))
    assert field == "Spec" and "Docker.Image" in msg
    [(field, msg)] = errors_of(json.dumps({"Spec": {"Engine": "Wasm"}}))
    assert field == "Spec" and "Wasm.EntryModule" in msg


def test_unknown_engine_names_the_choices() -> None:
    [(field, msg)] = errors_of(json.dumps({"Spec": {"Engine": "podman"}}))
    assert field == "Spec.Engine" and "'podman'" in msg and "Docker" in msg


def test_missing_spec() -> None:
    assert errors_of("{}") == [("Spec", "Field required")]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("[1, 2]", "must be an object"),
        ("null", "must be an object, got nothing"),
        ("{ unclosed: [", "neither JSON nor YAML"),
        ("Spec: {Engine: Docker", "neither JSON nor YAML"),
    ],
)
def test_unreadable_documents(raw: bytes | str, message: str) -> None:
    [(field, msg)] = errors_of(raw)
    assert field == "" and message in msg


def test_infinite_timeout() -> None:
    [(field, _)] = errors_of('{"Spec": {"Engine": "Docker", "Docker": {"Image": "x"}, "Timeout": 1e999}}')
    assert field == "Spec.Timeout"


def test_negative_timeout() -> None:
    [(field, _)] = errors_of(json.dumps(docker_job(Timeout=-1)))
    assert field == "Spec.Timeout"


def test_confidence_above_concurrency() -> None:
    [(field, msg)] = errors_of(json.dumps(docker_job(Deal={"Concurrency": 1, "Confidence": 3})))
    assert field == "Spec.Deal" and "Confidence" in msg


# -- size guards -------------------------------------------------------------------------------------


def test_ten_megabytes_is_the_limit() -> None:
    doc = docker_job(Annotations=["x"])
    base = len(json.dumps(doc))
    at_limit = json.dumps(docker_job(Annotations=["x" * (MAX_SERIALIZED_BYTES - base + 1)]))
    assert len(at_limit) == MAX_SERIALIZED_BYTES
    assert len(parse_job(at_limit).spec.annotations[0]) > 10_000_000 - 1000
    [(field, msg)] = errors_of(at_limit + " ")
    assert field == "" and str(MAX_SERIALIZED_BYTES) in msg


def test_thousand_list_elements_is_the_limit() -> None:
    ok = docker_job(Annotations=[str(i) for i in range(MAX_LIST_ELEMENTS)])
    assert len(parse_job(json.dumps(ok)).spec.annotations) == 1000
    too_many = docker_job(Annotations=[str(i) for i in range(MAX_LIST_ELEMENTS + 1)])
    [(field, msg)] = errors_of(json.dumps(too_many))
    assert field == "Spec.Annotations" and "1001" in msg


def test_list_guard_covers_unknown_keys() -> None:
    # Bacalhau's guard counts every list, not only the typed ones.
    [(field, _)] = errors_of(json.dumps({**docker_job(), "Extra": {"Junk": list(range(1001))}}))
    assert field == "Extra.Junk"


def test_list_guard_on_nested_lists() -> None:
    doc = docker_job(Docker={"Image": "x", "Entrypoint": ["sh"] * 1001})
    [(field, _)] = errors_of(json.dumps(doc))
    assert field == "Spec.Docker.Entrypoint"


def test_model_guard_without_the_parser() -> None:
    # The pydantic models enforce the list cap themselves, for jobs built in code.
    with pytest.raises(ValueError):
        Job.model_validate(docker_job(inputs=[{"path": "/i"}] * 1001))


def test_deep_nesting_is_an_error() -> None:
    with pytest.raises(SpecError):
        parse_job("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError):
        parse_job('{"Spec": ' * 5000 + "{}" + "}" * 5000)


@pytest.mark.parametrize(
    "document",
    [
        "Metadata: {1: x}\nSpec: {Engine: Noop}",
        "Spec: {Engine: Noop, true: 2}",
        "Spec: {Engine: Noop, null: 2}",
    ],
)
def test_yaml_keys_that_are_not_strings_are_ignored(document: str) -> None:
    # Found by tests/api/test_fuzz.py: YAML keeps `1:` and `true:` as a number and a bool, and
    # Job's hoisting of flat fields called .lower() on every key of Metadata and Spec (a 500).
    assert parse_job(document).spec.engine is Engine.NOOP
