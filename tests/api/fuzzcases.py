"""Fuzz cases for the job-taking endpoints, and the rules every answer to them must keep.

Pure and synchronous, so tests/api/test_fuzz.py builds the cases in a thread, off its event loop.
Cases start from valid seeds (examples/*.yaml, tests/examples/seed-002-submit.json and small Noop
jobs) and are mutated two ways: a seeded `random.Random` mutator that knows the v1beta1 fields
(computenode/model/job.py) and their odd values, then serialises as JSON or YAML and sometimes
damages the bytes; and hypothesis strategies that build whole specs from the same odd values.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.requester.keys import client_id, pkcs1_b64, sign

ROOT = Path(__file__).resolve().parents[2]
JOBS, BID, SUBMIT = "/api/v1/jobs", "/api/v1/compute/ask_for_bid", "/requester/submit"

# The only 400 messages that may name no field: they are about the whole body, not one field of it
# (computenode/model/parse.py, computenode/api/http.py, computenode/api/signatures.py).
WHOLE_DOCUMENT_MESSAGES = (
    "body is not JSON",
    "body must be a JSON object",
    "job is neither JSON nor YAML",
    "job is not UTF-8 text",
    "job does not parse:",
    "a job must be an object, got",
    "job is nested more than",
    "job is nested too deeply",
    "YAML aliases are not accepted",
    "request body is not UTF-8",
    "request body must be a JSON object",
    "request body is not valid JSON",
    "request body has the key",
    "request body is nested too deeply",
    "request body has data after its JSON object",
)

HELLO_WASM = (
    "data:application/wasm;base64,AGFzbQEAAAABDAJgBH9/f38Bf2AAAAIjARZ3YXNpX3NuYXBzaG90X3ByZXZpZXcxCGZkX3dyaXRlAAAD"
    "AgEBBQMBAAEHEwIGbWVtb3J5AgAGX3N0YXJ0AAEKHQEbAEEAQRA2AgBBBEEQNgIAQQFBAEEBQQgQABoLCxYBAEEQCxBoZWxsbyBmcm9tIHdh"
    "c20KABIEbmFtZQELAQAIZmRfd3JpdGU="
)


def _tar_b64() -> str:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("main.py")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"print"))
    return base64.b64encode(buf.getvalue()).decode()


# -- odd values ------------------------------------------------------------------------------------
NUMBERS: list[Any] = [
    0, 1, -1, 2, 7, 999, 1000, 1001, 2**31, 2**53 + 1, 2**63, 2**64, 10**30, 10**400, -(10**20),
    0.5, -0.0, 1.5, 1e308, -1e308, 1e-320, math.nan, math.inf, -math.inf,
]  # fmt: skip
STRINGS: list[Any] = [
    "", " ", "\t\n", "a", "x" * 300, "y" * 70_000, "é", "日本語", "\u202eevil", "\x00", "\ud800", "🐟",
    "null", "true", "0", "-1", "1e999", "NaN", "Infinity", "{}", "[]", "${HOME}", "%s%n", "'; DROP TABLE jobs;--",
]  # fmt: skip
QUANTITIES: list[Any] = [
    "1e999", "-1", "1.5Gi", "abc", "100m", "0", "0.0001", "1", "64", "1000001", "1e6", "1e-9", "1Ki", "1KiB",
    "100mb", "2 Gi", " 1 ", "1.5.5", "+3", "--1", ".5", "5.", "1e30", "1e31", "9" * 65, "1Qi", "1m1", "0x10",
    "∞", "١", 5, 0.25, -2, 10**40, True,
]  # fmt: skip
PATHS: list[Any] = [
    "/inputs", "/outputs", "/", "/proc", "/proc/self", "/sys/x", "/dev", "//proc", "/./proc", "/a/../proc",
    "../", "..", "relative", "", "/inputs/../../etc", "/\x00", "C:\\x", "/" + "d/" * 200, "/日本",
]  # fmt: skip
URLS: list[Any] = [
    HELLO_WASM, "data:,hello", "data:application/gzip;base64,AAAA", "data:;base64,!!!", "data:",
    "http://127.0.0.1:9/x", "https://127.0.0.1:9/", "file:///etc/passwd", "ftp://x", "javascript:1",
    "http://[::1", "http://" + "a" * 300, "",
]  # fmt: skip
CIDS: list[Any] = [
    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",
    "", "not-a-cid", "../../etc", "Qm" + "1" * 100,
]  # fmt: skip
IMAGES: list[Any] = [
    "computenode-test/busybox:latest", "busybox", "", "UPPER/Case", "a" * 300, "host:99999/x",
    "x@sha256:zz", "../x", ":latest", "localhost:5000/a/b:c", "x@sha256:" + "a" * 64, "-x", "a//b",
]  # fmt: skip
ENUMS: dict[str, list[Any]] = {
    "engine": ["Noop", "noop", " NOOP ", "Docker", "Wasm", "Language", "PythonWasm", "", "bogus", 0],
    "verifier": ["Noop", "Deterministic", "deterministic", "", "bogus"],
    "publisher": ["Noop", "Ipfs", "Filecoin", "Estuary", "Local", "", "bogus"],
    "storagesource": [
        "IPFS", "URLDownload", "FilecoinUnsealed", "Filecoin", "Estuary", "Inline", "LocalDirectory", "", "s3",
    ],
    "type": ["None", "Full", "HTTP", "", "bogus"],
    "operator": ["in", "notin", "exists", "!", "=", "==", "!=", "gt", "lt", "GT", ">", "<", "~=", "", "DoesNotExist"],
    "apiversion": ["V1beta1", "V1alpha1", "", "v2"],
    "eventname": ["Created", "bogus"],
}  # fmt: skip
BY_FIELD: dict[str, list[Any]] = {
    "cpu": QUANTITIES,
    "memory": QUANTITIES,
    "disk": QUANTITIES,
    "gpu": ["0", "1", "-1", "1.5", "abc", "9" * 30, 3, -3],
    "path": PATHS,
    "sourcepath": PATHS,
    "url": URLS,
    "cid": CIDS,
    "image": IMAGES,
    "entrypoint": [[], [""], ["echo"], "echo", [1, 2], None, ["_start"], "_start", "", "nope"],
    "environmentvariables": [["A=1"], ["=x"], ["noeq"], {"A": "1"}, {"A": 1}, [], None],
    "parameters": [[], ["a"], [1], "a", None],
    "key": ["", "env", "a/b/c", "UPPER", "x" * 70, "example.com/env", "-bad", "ex_ample.com/x"],
    "values": [[], ["test"], ["1"], ["a b"], ["-5"], ["x" * 70], [1], None, "test"],
    "concurrency": [0, 1, 2, 3, 16, 17, -1, 10**30, "1", None, 1.5],
    "confidence": [0, 1, 5, -1],
    "minbids": [0, 1, -1],
    "batchsize": [0, 1, 2, -1, 10**30],
    "shardstotal": [0, 1, 1000, 1001, -1],
    "timeout": [0, 1, 30, 1e308, -1, "30", "30s", math.nan, math.inf, 2**70],
    "globpattern": ["/inputs/*", "**", "[", "/inputs/[!", "", "../*", "*" * 200],
    "globpatternbasepath": ["/inputs", "", "/", "../"],
    "name": ["outputs", "", ".", "..", "a/b", "stdout", "exitCode", "x\x00", "data"],
    "id": ["", "x", "a" * 1000, "../../etc", "6f3a2c6e-1c4b-4e0d-a9b0-0e2f4f1f9d11"],
    "clientid": ["", "c", "x" * 64],
    "createdat": ["2023-01-01T00:00:00Z", "garbage", 0, -1e20, "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", 1e20],
    "annotations": [["a"], [""], [1], "a", None, ["x"] * 1001],
    "domains": [["example.com"], [""], "x", None],
    "donottrack": [True, False, "yes", 1, None],
    "deterministicexecution": [True, "no"],
    "metadata": [{}, {"a": "b"}, {"a": 1}, [], None],
    "inputs": [[], None, {}, "x"],
    "outputs": [[], None, {}, "x", [{"Name": "outputs", "path": "/outputs"}] * 2],
    "nodeselectors": [[], None, [{"Key": "env", "Operator": "=", "Values": ["test"]}]],
    **ENUMS,
}  # fmt: skip
KEY_NAMES = [
    "Spec", "spec", "SPEC", "Engine", "Docker", "Wasm", "Resources", "inputs", "Inputs", "outputs", "Deal",
    "Sharding", "NodeSelectors", "Network", "Metadata", "ID", "APIVersion", "x", "", "__proto__", "é",
]  # fmt: skip


# -- seeds -----------------------------------------------------------------------------------------
def seeds() -> list[dict[str, Any]]:
    """Valid job documents: the examples, the v0.3 submit envelope and Noop jobs of every shape."""
    docs: list[dict[str, Any]] = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        docs.append(yaml.safe_load(path.read_text()))
    docs.append(json.loads((ROOT / "examples" / "seed-002-submit.json").read_text()))
    noop: dict[str, Any] = {"APIVersion": "V1beta1", "Spec": {"Engine": "Noop"}}
    full = {
        "APIVersion": "V1beta1",
        "Metadata": {"ClientID": "fuzz"},
        "Spec": {
            "Engine": "Noop",
            "Verifier": "Noop",
            "Publisher": "Noop",
            "Resources": {"CPU": "100m", "Memory": "64Mi", "Disk": "10Mi", "GPU": ""},
            "Network": {"Type": "None"},
            "Timeout": 30,
            "inputs": [
                {"StorageSource": "Inline", "Name": "data", "URL": "data:,hello", "path": "/inputs/x"}
            ],
            "outputs": [{"Name": "outputs", "path": "/outputs"}],
            "Annotations": ["fuzz"],
            "NodeSelectors": [{"Key": "env", "Operator": "in", "Values": ["test"]}],
            "DoNotTrack": False,
        },
        "Deal": {"Concurrency": 1, "Confidence": 0, "MinBids": 0},
    }
    sharded = copy.deepcopy(full)
    sharded["Spec"]["Sharding"] = {
        "GlobPattern": "/inputs/*",
        "BatchSize": 1,
        "GlobPatternBasePath": "/inputs",
    }
    sharded["Spec"]["ExecutionPlan"] = {"ShardsTotal": 1}
    wasm_noop_ish = {
        "Spec": {
            "Engine": "Wasm",
            "Wasm": {
                "EntryModule": {"StorageSource": "Inline", "Name": "m.wasm", "URL": HELLO_WASM},
                "EntryPoint": "_start",
                "Parameters": [],
                "EnvironmentVariables": {},
                "ImportModules": [],
            },
            "Timeout": 10,
        }
    }
    flat = {"ID": "", "ClientID": "c", "CreatedAt": "2023-01-01T00:00:00Z", "Spec": {"Engine": "Noop"}}
    return [*docs, noop, full, sharded, wasm_noop_ish, flat]


# -- the mutator -----------------------------------------------------------------------------------
def _paths(value: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*at, i))


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        value = value[p]
    return value


class Mutator:
    """Seeded, field-aware mutations of job documents and their bytes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def junk(self, depth: int = 0) -> Any:
        """A value of any JSON type, odd ones preferred."""
        r = self.rng
        kind = r.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return r.choice(NUMBERS)
        if kind in (3, 4):
            return r.choice(STRINGS + QUANTITIES + PATHS + IMAGES)
        if kind == 5:
            return [self.junk(depth + 1) for _ in range(r.randrange(4))]
        if kind == 6:
            return {r.choice(KEY_NAMES): self.junk(depth + 1) for _ in range(r.randrange(4))}
        return self.nest(r.randrange(5, 40), r.choice([[], {}, "x", 1]))

    def nest(self, levels: int, inner: Any) -> Any:
        for _ in range(levels):
            inner = [inner] if self.rng.random() < 0.5 else {"Spec": inner}
        return inner

    def value_for(self, key: Any) -> Any:
        """An odd value that fits the field named `key` most of the time."""
        known = BY_FIELD.get(key.lower()) if isinstance(key, str) else None
        if known and self.rng.random() < 0.7:
            return copy.deepcopy(self.rng.choice(known))
        return self.junk()

    def mutate(self, doc: Any, rounds: int) -> Any:
        doc = copy.deepcopy(doc)
        for _ in range(rounds):
            doc = self._once(doc)
        return doc

    def _once(self, doc: Any) -> Any:
        r = self.rng
        paths = list(_paths(doc))
        path = r.choice(paths)
        if not path:
            return (
                r.choice([doc, self.junk(), [doc], {"Job": doc}, {"data": doc}]) if r.random() < 0.1 else doc
            )
        parent, key = _get(doc, path[:-1]), path[-1]
        op = r.randrange(10)
        if op == 0:  # drop the key or the element
            del parent[key]
        elif op in (1, 2, 3):  # a value that is odd for this field
            parent[key] = self.value_for(key)
        elif op == 4:  # another type
            parent[key] = self.junk()
        elif op == 5 and isinstance(parent, dict) and isinstance(key, str):  # the key in another case
            parent[r.choice([key.lower(), key.upper(), key.swapcase()])] = copy.deepcopy(parent[key])
        elif op == 6 and isinstance(parent, dict):  # an unknown or misplaced key
            parent[r.choice(KEY_NAMES)] = self.junk()
        elif op == 7:  # buried deep
            parent[key] = self.nest(r.randrange(1, 45), parent[key])
        elif op == 8 and isinstance(parent, dict) and r.random() < 0.3:  # a key YAML keeps as a number
            parent[r.choice([1, 0, -1, 1.5, None, True])] = self.junk()
        elif op == 8 and isinstance(parent, list):  # duplicated elements
            parent.extend(copy.deepcopy(parent[key]) for _ in range(r.choice([1, 2, 1000])))
        else:  # a field of the job's shape, given an odd value
            target = r.choice(list(BY_FIELD))
            if isinstance(parent, dict):
                parent[target] = self.value_for(target)
        return doc

    def serialise(self, doc: Any) -> bytes:
        r = self.rng
        if r.random() < 0.2:
            try:
                text = yaml.safe_dump(doc, allow_unicode=r.random() < 0.5, sort_keys=False)
            except (yaml.YAMLError, RecursionError):
                text = json.dumps(doc)
            raw = text.encode("utf-8", "surrogatepass")
        else:
            raw = json.dumps(doc, ensure_ascii=r.random() < 0.7).encode("utf-8", "surrogatepass")
        return self.damage(raw) if r.random() < 0.25 else raw

    def damage(self, raw: bytes) -> bytes:
        """Byte-level harm: truncation, flipped or inserted bytes, invalid UTF-8, repeated spans."""
        r, data = self.rng, bytearray(raw)
        for _ in range(r.randrange(1, 4)):
            n = len(data)
            op = r.randrange(7)
            i = r.randrange(n + 1)
            if op == 0:
                del data[i:]
            elif op == 1 and n:
                data[min(i, n - 1)] ^= 1 << r.randrange(8)
            elif op == 2:
                data[i:i] = r.choice(
                    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf", b"\x80\x80"]
                )
            elif op == 3:
                data[i:i] = bytes(r.randrange(256) for _ in range(r.randrange(1, 16)))
            elif op == 4:
                j = r.randrange(i, n + 1)
                data[i:i] = data[i:j] * r.randrange(1, 4)
            elif op == 5:
                j = r.randrange(i, n + 1)
                del data[i:j]
            else:
                data[i:i] = r.choice(
                    [b"{", b"}", b"[", b"]", b'"', b",", b":", b"&a ", b"*a", b"!!binary ", b"\t"]
                )
        return bytes(data)


# -- cases -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Case:
    path: str
    body: bytes
    origin: str  # how the case was made, for a failure's message

    def describe(self) -> str:
        shown = self.body[:600].decode("utf-8", "backslashreplace")
        return f"{self.origin} POST {self.path} ({len(self.body)} bytes): {shown}"


def _spec_of(doc: Any) -> Any:
    """The Spec a requester payload carries: the job's, or the document itself when it has none."""
    if isinstance(doc, dict):
        for key in ("Spec", "spec", "data"):
            if key in doc:
                inner = doc[key]
                job = inner.get("Job") if key == "data" and isinstance(inner, dict) else None
                return job.get("Spec", job) if isinstance(job, dict) else inner
    return doc


class CaseMaker:
    def __init__(self, seed: int, keys: list[rsa.RSAPrivateKey]) -> None:
        self.m = Mutator(seed)
        self.rng = self.m.rng
        self.seeds = seeds()
        self.keys = keys

    def job_doc(self) -> Any:
        rounds = self.rng.choice([0, 1, 1, 2, 2, 3, 4, 6])
        return self.m.mutate(self.rng.choice(self.seeds), rounds)

    def jobs(self, doc: Any) -> Case:
        return Case(JOBS, self.m.serialise(doc), "jobs")

    def bid(self, doc: Any) -> Case:
        r = self.rng
        body: dict[str, Any] = {
            "Job": doc,
            "ShardIndexes": r.choice(
                [[0], [0], [0, 1], [], [-1], [10**20], ["0"], [True], 0, None, [0.0], [0] * 1001]
            ),
            "CallbackURL": r.choice(
                ["", "http://127.0.0.1:9/cb", "https://x", "ftp://x", 5, None, "x" * 5000]
            ),
        }
        if r.random() < 0.15:
            del body[r.choice(list(body))]
        if r.random() < 0.15:
            body = self.m.mutate(body, 1)
        if r.random() < 0.1 and isinstance(body, dict):
            body = {k.lower() if r.random() < 0.5 else k.upper(): v for k, v in body.items()}
        return Case(BID, self.m.serialise(body), "bid")

    def submit(self, doc: Any) -> Case:
        r = self.rng
        key = r.choice(self.keys)
        payload: dict[str, Any] = {"ClientID": client_id(key), "APIVersion": "V1beta1", "Spec": _spec_of(doc)}
        variant = r.randrange(12)
        if variant == 0:
            payload = {"ClientID": client_id(key), "Job": doc}
        elif variant == 1:
            payload = {"data": {"ClientID": client_id(key), "Job": doc}}
        elif variant == 2:
            payload["Context"] = r.choice(
                [_tar_b64(), "!!!", 5, "", "H4sIAAAA", base64.b64encode(b"x" * 40).decode()]
            )
        elif variant == 3:
            payload["ClientID"] = r.choice(["", "someone-else", 7, None])
        elif variant == 4:
            payload = self.m.mutate(payload, 2)
        raw = json.dumps(payload, separators=(", ", ": ")).encode("utf-8", "surrogatepass")
        sig, pub = sign(key, raw), pkcs1_b64(key)
        name = r.choice(["job_create_payload", "job_create_payload", "jobCreatePayload", "data", "payload"])
        if variant == 5:
            sig = r.choice(
                ["", "!!!", base64.b64encode(b"x" * 256).decode(), sign(r.choice(self.keys), b"other")]
            )
        elif variant == 6:
            pub = r.choice(
                ["", "!!!", base64.b64encode(b"not a key").decode(), pkcs1_b64(r.choice(self.keys))]
            )
        parts = {
            "client_public_key": json.dumps(pub),
            name: raw.decode("utf-8", "surrogatepass"),
            "signature": json.dumps(sig),
        }
        if variant == 7:  # unsigned
            del parts[r.choice(["signature", "client_public_key"])]
        elif variant == 8:
            parts["signature"] = json.dumps(self.m.junk())
        elif variant == 9:
            parts[r.choice(["Signature", "JOB_CREATE_PAYLOAD", name])] = json.dumps(self.m.junk())
        items = list(parts.items())
        r.shuffle(items)
        body = ("{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in items) + "}").encode(
            "utf-8", "surrogatepass"
        )
        if variant == 10:
            body = self.m.damage(body)
        elif variant == 11 and r.random() < 0.5:
            body = self.m.serialise(self.m.junk())
        return Case(SUBMIT, body, f"submit/{variant}")

    def case(self) -> Case:
        doc = self.job_doc()
        return self.rng.choice([self.jobs, self.jobs, self.bid, self.bid, self.submit])(doc)

    def cases(self, n: int) -> list[Case]:
        return [self.case() for _ in range(n)]


def hypothesis_cases(n: int, keys: list[rsa.RSAPrivateKey]) -> list[Case]:
    """`n` cases whose specs hypothesis builds field by field (derandomized: the same every run)."""
    out: list[Case] = []
    maker = CaseMaker(1, keys)

    @settings(
        max_examples=n,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(doc=job_docs(), how=st.sampled_from(["jobs", "bid", "submit"]))
    def collect(doc: dict[str, Any], how: str) -> None:
        make: Callable[[Any], Case] = getattr(maker, how)
        out.append(make(doc))

    collect()
    return out


def _odd(name: str) -> st.SearchStrategy[Any]:
    known = BY_FIELD.get(name.lower(), [])
    junk = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    return (st.sampled_from(known) | junk) if known else junk


def _section(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def job_docs() -> st.SearchStrategy[dict[str, Any]]:
    storage = _section(
        {k: _odd(k) for k in ("StorageSource", "Name", "CID", "URL", "path", "SourcePath", "Metadata")}
    )
    selector = _section({"Key": _odd("key"), "Operator": _odd("operator"), "Values": _odd("values")})
    spec = _section(
        {
            "Engine": st.sampled_from(["Noop", "Noop", "Wasm", "Docker"]) | _odd("engine"),
            "Verifier": _odd("verifier"),
            "Publisher": _odd("publisher"),
            "Docker": _section(
                {k: _odd(k) for k in ("Image", "Entrypoint", "EnvironmentVariables", "WorkingDirectory")}
            ),
            "Wasm": _section(
                {
                    "EntryModule": storage,
                    "EntryPoint": _odd("entrypoint"),
                    "Parameters": _odd("parameters"),
                    "ImportModules": st.lists(storage, max_size=3),
                }
            ),
            "Resources": _section({k: _odd(k) for k in ("CPU", "Memory", "Disk", "GPU")}),
            "Network": _section({"Type": _odd("type"), "Domains": _odd("domains")}),
            "Timeout": _odd("timeout"),
            "inputs": st.lists(storage, max_size=4),
            "outputs": st.lists(storage, max_size=4),
            "Contexts": st.lists(storage, max_size=2),
            "NodeSelectors": st.lists(selector, max_size=3),
            "Sharding": _section({k: _odd(k) for k in ("GlobPattern", "BatchSize", "GlobPatternBasePath")}),
            "Deal": _section({k: _odd(k) for k in ("Concurrency", "Confidence", "MinBids")}),
            "Annotations": _odd("annotations"),
        }
    )
    meta = _section({k: _odd(k) for k in ("ID", "ClientID", "CreatedAt")})
    return st.fixed_dictionaries(
        {"Spec": spec}, optional={"APIVersion": _odd("apiversion"), "Metadata": meta}
    )


# -- what every answer must be ---------------------------------------------------------------------
def answer_problem(case: Case, status: int, text: str) -> str:
    """Why the answer breaks the API's contract (computenode/api/http.py), or "" when it keeps it."""
    if status >= 500:
        return f"{status} answer"
    allowed = {JOBS: (201, 400, 409), BID: (200, 400, 409), SUBMIT: (200, 400, 403, 409)}[case.path]
    if status not in allowed:
        return f"status {status} is not one of {allowed}"
    try:
        body = json.loads(text)
    except ValueError:
        return "the body is not JSON"
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if status == 400:
        errors = body.get("errors")
        if not isinstance(errors, list) or not errors:
            return "a 400 without errors"
        for e in errors:
            if not isinstance(e, dict) or not isinstance(e.get("field"), str) or "message" not in e:
                return f"an error without a field: {e!r}"
            if e["field"] == "" and not str(e["message"]).startswith(WHOLE_DOCUMENT_MESSAGES):
                return f"an error about one field names none: {e!r}"
    elif status in (409, 403):
        reasons = body.get("reasons")
        if not isinstance(reasons, list) or not reasons or not all(isinstance(x, str) and x for x in reasons):
            return f"a {status} without reasons"
    return ""
