"""One sample of the "Network" object of GET /api/v1/node, shared by the dashboard and the
`computenode status` tests: a connected and a failing configured requester, a stranger, and
two refusals. Pure data: no libp2p needed."""

from __future__ import annotations

from typing import Any

REQ_A = "QmRequesterAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAaaaaaa"
REQ_B = "QmRequesterBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBbbbbbb"
STRANGER = "12D3KooWStrangerCCCCCCCCCCCCCCCCCCCCCCCCCCCCcccccc"
SELF = "12D3KooWSelfDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDddd"
OTHER = "QmOtherEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEeeeeee"


def sample_network(dial_error: str, refusals: list[dict[str, Any]]) -> dict[str, Any]:
    """REQ_B's last dial error and the refusals are what each test checks its escaping with."""
    return {
        "PeerID": SELF,
        "Listen": ["/ip4/127.0.0.1/tcp/1235", "/ip4/10.0.0.5/tcp/1235"],
        "Peers": [
            {"Address": f"/ip4/10.0.0.1/tcp/1235/p2p/{REQ_A}", "Connected": True, "Error": ""},
            {"Address": f"/ip4/10.0.0.2/tcp/1235/p2p/{REQ_B}", "Connected": False, "Error": dial_error},
        ],
        "Connected": sorted([REQ_A, STRANGER, OTHER]),
        "AcceptAnyRequester": False,
        "Requesters": {
            REQ_A: {"Offers": 7, "Bids": 5, "Refused": 2, "Calls": 9},
            STRANGER: {"Offers": 1, "Bids": 0, "Refused": 1, "Calls": 0},
        },
        "RecentRefusals": refusals,
    }
