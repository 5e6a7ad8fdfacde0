"""Job selection: whether this node bids on an offer, with every reason when it does not."""

from computenode.bidding.bidder import STRATEGY_NAMES, BidDecision, Bidder, NodeFacts
from computenode.bidding.probes import probe_payload
from computenode.bidding.strategies import MAX_TIMEOUT_S, Verdict, effective_timeout_s

__all__ = [
    "MAX_TIMEOUT_S",
    "STRATEGY_NAMES",
    "BidDecision",
    "Bidder",
    "NodeFacts",
    "Verdict",
    "effective_timeout_s",
    "probe_payload",
]
