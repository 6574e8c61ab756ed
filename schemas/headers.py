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

# Hop headers: one family, set by the runtime when a record goes to a retry tier or to the dead-letter
# topic (the key and value stay the original bytes). Where it first arrived, how often it was tried, and
# the last failure; the next hop replaces them, never repeats them.
ORIGINAL_TOPIC = "x-original-topic"  # the main topic the record first arrived on
ORIGINAL_PARTITION = "x-original-partition"
ORIGINAL_OFFSET = "x-original-offset"
ORIGINAL_TIMESTAMP = "x-original-timestamp"  # epoch milliseconds
ATTEMPTS = "x-attempts"  # attempts made so far (a retry tier's copy is attempt ATTEMPTS + 1)
FIRST_FAILURE_AT = "x-first-failure-at"
LAST_FAILURE_AT = "x-last-failure-at"
EXCEPTION_CLASS = "x-exception-class"
EXCEPTION_MESSAGE = "x-exception-message"  # truncated to 1000 characters
# only on a retry tier's copy
RETRY_DUE_AT = "x-retry-due-at"  # epoch seconds; never handled before
# only on a dead letter
DLQ_CONSUMER_GROUP = "x-dlq-consumer-group"
DLQ_SERVICE = "x-dlq-service"
DLQ_SERVICE_VERSION = "x-dlq-service-version"
DLQ_HOST = "x-dlq-host"
DLQ_FAILURE_CATEGORY = "x-dlq-failure-category"
DLQ_VALUE_DROPPED = "x-dlq-value-dropped"  # set when the original value was too large to keep (why)

#: where the record first arrived: also on a private replay's copy (schemas.routes.Route.private_replay)
ORIGIN = (ORIGINAL_TOPIC, ORIGINAL_PARTITION, ORIGINAL_OFFSET, ORIGINAL_TIMESTAMP)
HOP_FAMILY = (
    *ORIGIN,
    ATTEMPTS,
    FIRST_FAILURE_AT,
    LAST_FAILURE_AT,
    EXCEPTION_CLASS,
    EXCEPTION_MESSAGE,
)
RETRY_HEADERS = (*HOP_FAMILY, RETRY_DUE_AT)
DLQ_HEADERS = (*HOP_FAMILY, DLQ_CONSUMER_GROUP, DLQ_SERVICE, DLQ_SERVICE_VERSION, DLQ_HOST, DLQ_FAILURE_CATEGORY)

# Failure categories carried in DLQ_FAILURE_CATEGORY.
CATEGORY_POISON = "poison"  # the bytes cannot be decoded or do not fit the schema
CATEGORY_PERMANENT = "permanent"  # the handler said it will never succeed
CATEGORY_RETRIES_EXHAUSTED = "retryable-exhausted"  # every retry tier failed

# Re-extraction: `postcall reextract` republishes a conversation; the extractor passes these on.
REEXTRACT_OF = "x-reextract-of"  # the original event_id
#: `postcall reextract` from the topic: who (user@host); the recorder audits the copy from it (the API
#: audits its own re-extractions and does not set it)
REEXTRACTED_BY = "x-reextracted-by"
#: `postcall reextract --redeliver`: an action whose content changed goes out under a new id that
#: supersedes the one delivered (docs/downstream.md)
REDELIVER = "x-redeliver"
#: `postcall held release`: run the flows held on this failed extraction with what there is
RUN_HELD = "x-run-held"

# Replays from a dead-letter topic.
REPLAY_COUNT = "x-replay-count"
REPLAYED_FROM = "x-replayed-from"
REPLAYED_AT = "x-replayed-at"
REPLAYED_BY = "x-replayed-by"  # who replayed: an API token's name, or user@host for the command line
# A replay marker: a record (no value) written to a dead-letter topic after one of its dead letters was
# replayed and acknowledged; `dlq list` and the store then show that dead letter as replayed.
DLQ_REPLAYED = "x-dlq-replayed"  # topic:partition:offset of the dead letter that was replayed
#: on a replay marker: `api` (the query API audited the replay itself) or `cli` (`postcall dlq replay`:
#: the recorder writes the audit row from the marker); a marker without it counts as the command line's
REPLAYED_VIA = "x-replayed-via"

# Headers a hop adds that the next hop replaces rather than repeats (keeps records from growing).
HOP_HEADERS = frozenset((*RETRY_HEADERS, *DLQ_HEADERS, DLQ_VALUE_DROPPED))
