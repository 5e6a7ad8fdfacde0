"""Properties: parse(emit(job)) == job for generated jobs; no input raises anything but SpecError."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from computenode.errors import SpecError
from computenode.model import (
    Deal,
    Engine,
    Job,
    JobExecutionPlan,
    JobShardingConfig,
    JobSpecDocker,
    JobSpecWasm,
    LabelSelectorRequirement,
    Metadata,
    Network,
    NetworkConfig,
    Operator,
    Publisher,
    ResourceUsageConfig,
    Spec,
    StorageSource,
    StorageSpec,
    SubmitEnvelope,
    Verifier,
    parse_job,
)
from computenode.model.quantity import format_bytes, format_cpu

text = st.text(max_size=20)
short_lists = {"max_size": 4}
label = st.from_regex(r"\A[a-z0-9]([a-z0-9._-]{0,10}[a-z0-9])?\Z")


def make(model: type) -> Any:
    # Not st.builds(Model): hypothesis reads the aliases off pydantic's signature and invents values
    # for "required" alias parameters it thinks are missing.
    return lambda **kw: model(**kw)


storage_specs = st.builds(
    make(StorageSpec),
    storage_source=st.none() | st.sampled_from(StorageSource),
    name=text, cid=text, url=text, source_path=text, path=text,
    metadata=st.dictionaries(text, text, max_size=3),
)  # fmt: skip

resources = st.builds(
    make(ResourceUsageConfig),
    cpu=st.just("") | st.integers(0, 64_000).map(lambda m: format_cpu(m / 1000)),
    memory=st.just("") | st.integers(0, 2**45).map(format_bytes),
    disk=st.just("") | st.sampled_from(["1GB", "100mb", "512", "2Gi"]),
    gpu=st.just("") | st.integers(0, 8).map(str),
)


@st.composite
def selectors(draw: st.DrawFn) -> LabelSelectorRequirement:
    op = draw(st.sampled_from(Operator))
    if op in (Operator.IN, Operator.NOT_IN):
        values = draw(st.lists(label, min_size=1, max_size=3))
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        values = []
    elif op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        values = [str(draw(st.integers(0, 10**6)))]
    else:
        values = [draw(label)]
    return LabelSelectorRequirement(key=draw(label), operator=op, values=values)


@st.composite
def deals(draw: st.DrawFn) -> Deal:
    concurrency = draw(st.integers(0, 10))
    return Deal(concurrency=concurrency, confidence=draw(st.integers(0, max(concurrency, 1))),
                min_bids=draw(st.integers(0, 10)))  # fmt: skip


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    engine = draw(st.sampled_from([Engine.DOCKER, Engine.WASM, Engine.NOOP, Engine.LANGUAGE]))
    image = draw(text.filter(bool)) if engine is Engine.DOCKER else draw(text)
    module = (
        draw(storage_specs.filter(lambda s: not s.is_empty())) if engine is Engine.WASM else StorageSpec()
    )
    return Spec(
        engine=engine,
        verifier=draw(st.sampled_from(Verifier)),
        publisher=draw(st.none() | st.sampled_from(Publisher)),
        docker=JobSpecDocker(
            image=image,
            entrypoint=draw(st.lists(text, **short_lists)),
            environment_variables=draw(st.lists(st.builds("{}={}".format, label, text), **short_lists)),
            working_directory=draw(text),
        ),
        wasm=JobSpecWasm(
            entry_module=module,
            entry_point=draw(text),
            parameters=draw(st.lists(text, **short_lists)),
            environment_variables=draw(st.dictionaries(text, text, max_size=3)),
            import_modules=draw(st.lists(storage_specs, max_size=2)),
        ),  # fmt: skip
        resources=draw(resources),
        network=NetworkConfig(
            type=draw(st.sampled_from(Network)), domains=draw(st.lists(text, **short_lists))
        ),
        timeout=draw(st.floats(0, 1e9, allow_nan=False)),
        inputs=draw(st.lists(storage_specs, max_size=3)),
        contexts=draw(st.lists(storage_specs, max_size=2)),
        outputs=draw(st.lists(storage_specs, max_size=3)),
        annotations=draw(st.lists(text, **short_lists)),
        node_selectors=draw(st.lists(selectors(), max_size=3)),
        sharding=JobShardingConfig(
            glob_pattern=draw(text), batch_size=draw(st.integers(0, 1000)), base_path=draw(text)
        ),
        do_not_track=draw(st.booleans()),
        execution_plan=JobExecutionPlan(shards_total=draw(st.integers(0, 1000))),
        deal=draw(deals()),
    )


jobs = st.builds(
    make(Job),
    api_version=st.just("V1beta1"),
    metadata=st.builds(
        make(Metadata), id=text, client_id=text, created_at=st.none() | st.datetimes(timezones=st.just(UTC))
    ),  # fmt: skip
    spec=specs(),
)

SLOW = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SLOW
@given(jobs)
def test_json_round_trip(job: Job) -> None:
    assert parse_job(json.dumps(job.to_wire())) == job


@SLOW
@given(jobs)
def test_yaml_round_trip(job: Job) -> None:
    # Double-quoted style: PyYAML's plain style does not round-trip every character (U+0085 is a
    # line break in YAML 1.1). The plain form is covered by the examples' tests.
    assert parse_job(yaml.safe_dump(job.to_wire(), default_style='"')) == job


@SLOW
@given(jobs, text)
def test_envelope_round_trip(job: Job, client_id: str) -> None:
    doc = {"data": {"ClientID": client_id, "Job": job.to_wire()}, "signature": "s", "client_public_key": "k"}
    parsed = parse_job(json.dumps(doc))
    assert parsed.spec == job.spec
    assert parsed.metadata.client_id == (job.metadata.client_id or client_id)
    assert SubmitEnvelope.model_validate(doc).data.job == job


@SLOW
@given(jobs)
def test_emitting_is_stable(job: Job) -> None:
    wire = job.to_wire()
    assert parse_job(json.dumps(wire)).to_wire() == wire


def only_spec_errors(raw: bytes | str) -> None:
    try:
        parse_job(raw)
    except SpecError as exc:
        assert exc.errors and all(isinstance(f, str) and isinstance(m, str) for f, m in exc.errors)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes(raw: bytes) -> None:
    only_spec_errors(raw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text(raw: str) -> None:
    only_spec_errors(raw)


# Keys the model knows, in random case, so generated documents reach deep into the model.
KNOWN = sorted({"APIVersion", "Metadata", "ID", "ClientID", "CreatedAt", "Spec", "Engine", "Verifier", "Publisher",
         "Docker", "Image", "Entrypoint", "EnvironmentVariables", "Wasm", "EntryModule", "Parameters",
         "ImportModules", "Resources", "CPU", "Memory", "Disk", "GPU", "Network", "Type", "Domains", "Timeout",
         "inputs", "outputs", "Contexts", "StorageSource", "Name", "CID", "URL", "path", "Annotations",
         "NodeSelectors", "Key", "Operator", "Values", "Sharding", "BatchSize", "GlobPattern", "Deal",
         "Concurrency", "Confidence", "ExecutionPlan", "ShardsTotal", "data", "Job", "Language", "JobContext"})  # fmt: skip
keys = st.sampled_from(KNOWN).flatmap(lambda k: st.sampled_from([k, k.lower(), k.upper()])) | st.text(
    max_size=5
)
scalars = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
           | st.sampled_from(["Docker", "wasm", "IPFS", "in", "100m", "1Gi", "", "=", "x=y"]))  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=5),
    max_leaves=40,
)


def _spec_like(spec: dict[str, Any]) -> dict[str, Any]:
    return {"Spec": spec}


@settings(max_examples=300, deadline=None)
@given(json_values | st.dictionaries(keys, json_values).map(_spec_like))
def test_arbitrary_json(doc: Any) -> None:
    only_spec_errors(json.dumps(doc))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(keys, json_values).map(_spec_like))
def test_arbitrary_yaml(doc: Any) -> None:
    only_spec_errors(yaml.safe_dump(doc))
