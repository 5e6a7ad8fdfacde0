"""Drive a node with the official Bacalhau v0.3 Python SDK; run with .venv-sdk's python.

Usage: sdk_driver.py OP [ARG]; BACALHAU_API_HOST/PORT name the node, BACALHAU_DIR holds the
client key (user_id.pem, made by the SDK on first use). Prints one JSON document.
Ops: client_id | submit SPEC_JSON | wait JOB_ID | states JOB_ID | results JOB_ID |
states_raw JOB_ID | list | events JOB_ID | cancel JOB_ID | version | node_info | id | livez
Not collected by pytest (it imports the SDK, which lives only in .venv-sdk).
"""

import json
import sys
import time

from bacalhau_apiclient.api.misc_api import MiscApi
from bacalhau_apiclient.api.utils_api import UtilsApi
from bacalhau_apiclient.models.cancel_request import CancelRequest
from bacalhau_apiclient.models.state_request import StateRequest
from bacalhau_apiclient.models.version_request import VersionRequest
from bacalhau_apiclient.rest import ApiException
from bacalhau_sdk import api
from bacalhau_sdk.config import get_client_id, get_client_public_key, sign_for_client


def _out(value):
    return value.to_dict() if hasattr(value, "to_dict") else value


def submit(spec_json):
    payload = {"APIVersion": "V1beta1", "ClientID": get_client_id(), "Spec": json.loads(spec_json)}
    return api.submit(payload)


def wait(job_id, timeout_s=90.0):
    """Poll states through the SDK until the job is no longer New/InProgress."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = api.states(job_id).state
        if state.state not in ("New", "InProgress") or time.monotonic() > deadline:
            return state
        time.sleep(0.3)


def cancel(job_id):
    # The SDK 0.1.6 has no cancel helper: sign as its submit() does, send with its apiclient.
    payload = api.client.sanitize_for_serialization(
        {"ClientID": get_client_id(), "JobID": job_id, "Reason": "cancelled by the SDK driver"}
    )
    raw = json.dumps(payload, indent=None, separators=(", ", ": ")).encode("utf-8")
    req = CancelRequest(
        client_public_key=get_client_public_key(), job_cancel_payload=payload, signature=sign_for_client(raw)
    )
    return api.api_instance.cancel(req)


OPS = {
    "client_id": lambda: get_client_id(),
    "submit": submit,
    "wait": wait,
    "states": lambda job_id: api.states(job_id),
    # The SDK's own helpers swallow HTTP errors (then fail on an unbound local): call its
    # apiclient directly where the test wants the status.
    "states_raw": lambda job_id: api.api_instance.states(
        StateRequest(client_id=get_client_id(), job_id=job_id)
    ),
    "results": lambda job_id: api.results(job_id),
    "list": lambda: api.list(),
    "events": lambda job_id: api.events(job_id),
    "cancel": cancel,
    "version": lambda: MiscApi(api.client).api_serverversion(VersionRequest(client_id=get_client_id())),
    "node_info": lambda: UtilsApi(api.client).node_info(),
    "id": lambda: UtilsApi(api.client).id(),
    "livez": lambda: UtilsApi(api.client).livez(),
}


def main():
    op, args = sys.argv[1], sys.argv[2:]
    try:
        result = {"ok": True, "result": _out(OPS[op](*args))}
    except ApiException as exc:
        result = {
            "ok": False,
            "status": exc.status,
            "body": exc.body.decode() if isinstance(exc.body, bytes) else exc.body,
        }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
