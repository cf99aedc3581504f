"""Expected failures of the Kafka layer.

A `ProtocolViolation` (and subclasses) closes the client's connection with a log line; a
`KafkaError` (a chronik_trio.errors.BrokerError) is answered in the response with its code.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError


class KafkaError(BrokerError):
    """A request-level failure of the Kafka layer, answered with `error_code`."""


class CorruptRecords(KafkaError):
    error_code = ErrorCode.corrupt_message


class InvalidRecords(KafkaError):
    error_code = ErrorCode.invalid_record


class RecordsTooLarge(KafkaError):
    error_code = ErrorCode.message_too_large


class ProtocolViolation(Exception):
    """The client broke the framing or the schema: its connection is closed with a log line."""


class MalformedRequest(ProtocolViolation):
    """The bytes of a request do not decode against its schema."""


class FrameTooLarge(ProtocolViolation):
    """A size prefix larger than the node's request limit (or negative)."""


class UnsupportedApi(ProtocolViolation):
    """An api_key/version pair this broker does not implement (other than ApiVersions)."""
