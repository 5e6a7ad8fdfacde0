"""Pure tests: raw spans, key formats, ClientIDs and refusals."""

from __future__ import annotations

import base64
import gzip
import io
import json
import tarfile

import pytest

from computenode.api.requester import job_from_payload
from computenode.api.signatures import (
    SignatureError,
    SignedPayload,
    client_id_for,
    load_public_key,
    raw_span,
    top_level_spans,
    verify,
    verify_request,
)
from computenode.errors import SpecError
from computenode.model import StorageSource
from tests.requester.keys import client_id, client_key, pkcs1_b64, sign, signed_body, spki_b64

SUBMIT = ("job_create_payload", "jobCreatePayload", "data")
SPEC = {"Engine": "Docker", "Docker": {"Image": "busybox", "Entrypoint": ["echo", "hi"]}}


def test_spans_are_the_bytes_as_sent_with_odd_whitespace_and_escapes() -> None:
    payload = ' {\n\t"b" :  [1 ,2] , "s": "caf\\u00e9 \\"q\\" \\ud83d\\ude00 \xe9" }'
    body = (
        '\r\n { "x" : 1 ,\n  "job_create_payload"\t:' + payload + ' , "y": {"job_create_payload": 2} }\n'
    ).encode()
    spans = top_level_spans(body)
    assert spans["job_create_payload"] == payload.strip().encode("utf-8")
    assert spans["x"] == b"1" and spans["y"] == b'{"job_create_payload": 2}'
    assert json.loads(spans["job_create_payload"])["s"] == 'café "q" \U0001f600 é'


def test_span_keys_match_case_insensitively_and_escaped_keys_decode() -> None:
    spans = top_level_spans(b'{"Job_Create_Payload": {"a": 1}, "sign\\u0061ture": "x"}')
    assert raw_span(spans, "job_create_payload") == ("job_create_payload", b'{"a": 1}')
    assert spans["signature"] == b'"x"'


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"a": 1, "A": 2}', "more than once"),
        (b'{"a": 1} {"b": 2}', "after its JSON object"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"a": 1,}', "expected a key"),
        (b'{"a" 1}', "expected ':'"),
        (b'{"a": [1, }', "not valid JSON"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'{"a": 1', "expected ',' or '}'"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        top_level_spans(body)


def test_empty_object_and_missing_key() -> None:
    assert top_level_spans(b" {} ") == {}
    with pytest.raises(SignatureError, match="no job_create_payload"):
        raw_span({}, "job_create_payload")


def test_pkcs1_and_spki_keys_give_the_sdk_client_id() -> None:
    key = client_key()
    for encoded in (pkcs1_b64(key), spki_b64(key)):
        assert client_id_for(load_public_key(encoded)) == client_id(key)
    # The SDK sends the SPKI PEM body minus its first 32 base64 characters: that is PKCS#1.
    assert spki_b64(key)[32:] == pkcs1_b64(key)


def test_verify_checks_signature_over_exact_bytes() -> None:
    key = client_key()
    raw = b'{"ClientID": "x",  "Spec": {}}'
    assert verify(raw, sign(key, raw), pkcs1_b64(key)) == client_id(key)
    with pytest.raises(SignatureError, match="does not match"):
        verify(raw.replace(b",  ", b", "), sign(key, raw), pkcs1_b64(key))


@pytest.mark.parametrize(
    ("sig", "pub", "why"),
    [
        ("", "k", "signature is required"),
        ("c2ln", "", "client_public_key is required"),
        ("c2ln", "not base64!", "not base64"),
        ("c2ln", base64.b64encode(b"junk").decode(), "not a DER RSA public key"),
    ],
)
def test_bad_signatures_and_keys(sig: str, pub: str, why: str) -> None:
    with pytest.raises(SignatureError, match=why):
        verify(b"{}", sig, pub)


def test_verify_request_accepts_the_sdk_body_and_decodes_the_signed_bytes() -> None:
    key = client_key()
    payload = {"ClientID": client_id(key), "APIVersion": "V1beta1", "Spec": SPEC}
    signed = verify_request(signed_body(key, payload), SUBMIT)
    assert signed.client_id == client_id(key)
    assert signed.payload == payload
    assert signed.raw == json.dumps(payload, separators=(", ", ": ")).encode()


def test_tampered_payload_is_refused() -> None:
    key = client_key()
    body = signed_body(key, {"ClientID": client_id(key), "Spec": SPEC}).replace(b"hi", b"ho")
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_request(body, SUBMIT)


def test_client_id_of_another_key_is_refused() -> None:
    key, other = client_key(0), client_key(1)
    body = signed_body(key, {"ClientID": client_id(other), "Spec": SPEC})
    with pytest.raises(SignatureError, match="ClientID does not match"):
        verify_request(body, SUBMIT)


def test_missing_client_id_is_refused() -> None:
    with pytest.raises(SignatureError, match="must contain a ClientID"):
        verify_request(signed_body(client_key(), {"Spec": SPEC}), SUBMIT)


def test_seed_002_envelope_is_verified_over_data() -> None:
    key = client_key()
    body = signed_body(key, {"ClientID": client_id(key), "Job": {"Spec": SPEC}}, name="data")
    assert verify_request(body, SUBMIT).client_id == client_id(key)


# -- payload shapes -----------------------------------------------------------------------------
def _signed(payload: dict[str, object]) -> SignedPayload:
    return SignedPayload(client_id(client_key()), b"", payload)


async def test_sdk_shape_gets_a_fresh_id_and_the_signer_as_client() -> None:
    job = await job_from_payload(_signed({"ClientID": "c", "APIVersion": "V1beta1", "Spec": SPEC}))
    assert job.metadata.client_id == client_id(client_key())
    assert job.id == "" and job.spec.docker.image == "busybox"


async def test_job_shape_drops_a_client_chosen_id() -> None:
    doc = {"ClientID": "c", "Job": {"Metadata": {"ID": "someone-elses-job", "ClientID": "z"}, "Spec": SPEC}}
    job = await job_from_payload(_signed(doc))
    assert job.id == "" and job.metadata.client_id == client_id(client_key())


async def test_data_envelope_inside_the_payload() -> None:
    job = await job_from_payload(_signed({"data": {"ClientID": "c", "Job": {"Spec": SPEC}}}))
    assert job.spec.docker.entrypoint == ["echo", "hi"]


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    return buf.getvalue()


@pytest.mark.parametrize("compress", [False, True])
async def test_context_becomes_an_inline_gzip_tar_at_job(compress: bool) -> None:
    data = gzip.compress(_tar()) if compress else _tar()
    doc = {"ClientID": "c", "Job": {"Spec": SPEC}, "Context": base64.b64encode(data).decode()}
    job = await job_from_payload(_signed(doc))
    (ctx,) = job.spec.contexts
    assert ctx.storage_source is StorageSource.INLINE and ctx.path == "/job"
    assert ctx.url.startswith("data:application/gzip;base64,")
    inner = gzip.decompress(base64.b64decode(ctx.url.split(",", 1)[1]))
    assert inner == _tar()


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"ClientID": "c"}, "job_create_payload"),
        ({"ClientID": "c", "Spec": SPEC, "Context": "%%%"}, "job_create_payload.Context"),
        ({"ClientID": "c", "Spec": {"Engine": "Docker"}}, "Spec"),
    ],
)
async def test_bad_payloads_name_the_field(doc: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as err:
        await job_from_payload(_signed(doc))
    assert any(f.startswith(field) for f, _ in err.value.errors)
