"""Expected failures of the Kafka layer. Each carries the Kafka error code it maps to.

A `ConnectionError`-family failure (`ProtocolViolation` and subclasses) closes the client's
connection with a log line; a `KafkaError` is answered in the response with its code.
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode


class KafkaError(Exception):
    """A request-level failure answered with `error_code`."""

    error_code: ErrorCode = ErrorCode.unknown_server_error

    def __init__(self, message: str, error_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class CorruptRecords(KafkaError):
    error_code = ErrorCode.corrupt_message


class InvalidRecords(KafkaError):
    error_code = ErrorCode.invalid_record


class RecordsTooLarge(KafkaError):
    error_code = ErrorCode.message_too_large


class InvalidTopic(KafkaError):
    error_code = ErrorCode.invalid_topic_exception


class UnknownTopicOrPartition(KafkaError):
    error_code = ErrorCode.unknown_topic_or_partition


class TopicExists(KafkaError):
    error_code = ErrorCode.topic_already_exists


class InvalidPartitions(KafkaError):
    error_code = ErrorCode.invalid_partitions


class InvalidReplicationFactor(KafkaError):
    error_code = ErrorCode.invalid_replication_factor


class InvalidConfig(KafkaError):
    error_code = ErrorCode.invalid_config


class OffsetOutOfRange(KafkaError):
    error_code = ErrorCode.offset_out_of_range


class ProtocolViolation(Exception):
    """The client broke the framing or the schema: its connection is closed with a log line."""


class MalformedRequest(ProtocolViolation):
    """The bytes of a request do not decode against its schema."""


class FrameTooLarge(ProtocolViolation):
    """A size prefix larger than the node's request limit (or negative)."""


class UnsupportedApi(ProtocolViolation):
    """An api_key/version pair this broker does not implement (other than ApiVersions)."""
