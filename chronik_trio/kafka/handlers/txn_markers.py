"""WriteTxnMarkers (api key 27): refused to every client.

In Kafka the transaction coordinator sends this request to partition leaders. Here the
coordinator writes markers in process (the node's write_txn_markers, reached over the
nodes' own transport when the leader is elsewhere), so a Kafka client sending it is
answered CLUSTER_AUTHORIZATION_FAILED for every partition and logged: a marker written by a
client would commit or abort another producer's transaction.
"""

from __future__ import annotations

import logging

from kio.schema.errors import ErrorCode

from ..codec import build, response_schema
from ..session import current as current_session
from .context import BrokerContext

log = logging.getLogger(__name__)

WRITE_TXN_MARKERS_KEY = 27


async def handle_write_txn_markers(body, ctx: BrokerContext, version: int):
    session = current_session()
    log.warning("WriteTxnMarkers from a client refused (principal %s, host %s): markers are written by "
                "the transaction coordinator only", session.principal, session.host)
    refused = ErrorCode.cluster_authorization_failed
    markers = [{"producer_id": m.producer_id, "topics": [
        {"name": t.name, "partitions": [{"partition_index": p, "error_code": refused} for p in t.partition_indexes]}
        for t in m.topics]} for m in body.markers]
    return build(response_schema(WRITE_TXN_MARKERS_KEY, version), markers=markers)
