"""Kafka header names: CloudEvents Kafka binding, retry tiers, dead letters and replays.

Header values are UTF-8 strings; times are RFC 3339 UTC; numbers are decimal strings.
"""

from __future__ import annotations

# CloudEvents Kafka protocol binding, binary content mode (ce_ prefix, content-type for datacontenttype).
CE_ID = "ce_id"
CE_TYPE = "ce_type"
CE_SOURCE = "ce_source"
CE_SPECVERSION = "ce_specversion"
CE_TIME = "ce_time"
CE_SUBJECT = "ce_subject"
CONTENT_TYPE = "content-type"
CE_SPECVERSION_VALUE = "1.0"
JSON_CONTENT_TYPE = "application/json"

# Retry tiers: set when a record is forwarded to one of its service's delay topics.
RETRY_ATTEMPT = "x-retry-attempt"
RETRY_DUE_AT = "x-retry-due-at"
RETRY_ORIGINAL_TOPIC = "x-retry-original-topic"
RETRY_FIRST_FAILURE_AT = "x-retry-first-failure-at"
RETRY_LAST_ERROR = "x-retry-last-error"
RETRY_ORIGINAL_PARTITION = "x-retry-original-partition"
RETRY_ORIGINAL_OFFSET = "x-retry-original-offset"
RETRY_ORIGINAL_TIMESTAMP = "x-retry-original-timestamp"

# Dead letters: the original key and value are kept byte for byte; these say where and why.
DLQ_ORIGINAL_TOPIC = "x-dlq-original-topic"
DLQ_ORIGINAL_PARTITION = "x-dlq-original-partition"
DLQ_ORIGINAL_OFFSET = "x-dlq-original-offset"
DLQ_ORIGINAL_TIMESTAMP = "x-dlq-original-timestamp"
DLQ_CONSUMER_GROUP = "x-dlq-consumer-group"
DLQ_SERVICE = "x-dlq-service"
DLQ_SERVICE_VERSION = "x-dlq-service-version"
DLQ_HOST = "x-dlq-host"
DLQ_EXCEPTION_CLASS = "x-dlq-exception-class"
DLQ_EXCEPTION_MESSAGE = "x-dlq-exception-message"
DLQ_FAILURE_CATEGORY = "x-dlq-failure-category"
DLQ_ATTEMPTS = "x-dlq-attempts"
DLQ_FIRST_FAILURE_AT = "x-dlq-first-failure-at"
DLQ_LAST_FAILURE_AT = "x-dlq-last-failure-at"
DLQ_VALUE_DROPPED = "x-dlq-value-dropped"  # set when the original value was too large to keep (why)

DLQ_HEADERS = (
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_ORIGINAL_TIMESTAMP,
    DLQ_CONSUMER_GROUP,
    DLQ_SERVICE,
    DLQ_SERVICE_VERSION,
    DLQ_HOST,
    DLQ_EXCEPTION_CLASS,
    DLQ_EXCEPTION_MESSAGE,
    DLQ_FAILURE_CATEGORY,
    DLQ_ATTEMPTS,
    DLQ_FIRST_FAILURE_AT,
    DLQ_LAST_FAILURE_AT,
)

# Failure categories carried in DLQ_FAILURE_CATEGORY.
CATEGORY_POISON = "poison"  # the bytes cannot be decoded or do not fit the schema
CATEGORY_PERMANENT = "permanent"  # the handler said it will never succeed
CATEGORY_RETRIES_EXHAUSTED = "retryable-exhausted"  # every retry tier failed

# Re-extraction: `postcall reextract` republishes a conversation; the extractor passes this on.
REEXTRACT_OF = "x-reextract-of"  # the original event_id

# Replays from a dead-letter topic.
REPLAY_COUNT = "x-replay-count"
REPLAYED_FROM = "x-replayed-from"
REPLAYED_AT = "x-replayed-at"
REPLAYED_BY = "x-replayed-by"  # who replayed: an API token's name, or user@host for the command line
# A replay marker: a record (no value) written to a dead-letter topic after one of its dead letters was
# replayed and acknowledged; `dlq list` and the store then show that dead letter as replayed.
DLQ_REPLAYED = "x-dlq-replayed"  # topic:partition:offset of the dead letter that was replayed

# Headers a hop adds that the next hop replaces rather than repeats (keeps records from growing).
RETRY_HEADERS = (
    RETRY_ATTEMPT,
    RETRY_DUE_AT,
    RETRY_ORIGINAL_TOPIC,
    RETRY_FIRST_FAILURE_AT,
    RETRY_LAST_ERROR,
    RETRY_ORIGINAL_PARTITION,
    RETRY_ORIGINAL_OFFSET,
    RETRY_ORIGINAL_TIMESTAMP,
)
HOP_HEADERS = frozenset((*DLQ_HEADERS, *RETRY_HEADERS))
