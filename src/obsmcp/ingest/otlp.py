"""Decode OTLP export requests (protobuf or OTLP/JSON) into Arrow tables shaped like the store's tables.

Each decoder walks the request once and appends one tuple per span / log record / data point, in the
column order of the target table (``schema.TABLES[name]``); ``_to_table`` then transposes the tuples and
builds every Arrow column in one call. A tuple per row is much cheaper than one list append per column, and
map columns are carried as dicts until the end so they can be flattened at C speed.

OTLP/JSON is walked by hand rather than through ``google.protobuf.json_format``: the OTLP spec encodes
trace and span ids as hex (``json_format`` base64-decodes them into ids of the wrong length without
complaint) and is about 18x slower than ``json.loads``. Errors carry the field path so a sender can find the
offending field.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
import time
from collections import Counter
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate, chain
from typing import Any, Literal

import pyarrow as pa
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from obsmcp.store import schema

Signal = Literal["traces", "logs", "metrics"]
Encoding = Literal["protobuf", "json"]

# A decoded row: one value per column of the target table, in schema order.
Row = tuple[Any, ...]
JSONObject = dict[str, Any]


class OTLPDecodeError(ValueError):
    """The payload is malformed. str(err) says what is wrong and where (field path), and what to do."""


@dataclass
class DecodedBatch:
    """One decoded export request.

    ``tables`` maps store table names to Arrow tables whose schema is exactly the table's
    ``arrow_schema``; only tables that received rows are present. ``accepted`` counts the spans, log
    records or metric data points in them; ``rejected`` and ``error_message`` are the OTLP partial-success
    fields to send back.
    """

    signal: Signal
    tables: dict[str, pa.Table]
    accepted: int
    rejected: int
    error_message: str = ""


def decode(signal: Signal, body: bytes, encoding: Encoding) -> DecodedBatch:
    """Decode one (already decompressed) OTLP export request into Arrow tables for the store.

    Raises OTLPDecodeError when the payload is malformed; nothing is returned for such a payload, so a
    caller never stores part of it. Items with invalid ids are dropped and counted instead (OTLP partial
    success), which the caller reports back in the export response.
    """
    if encoding == "protobuf":
        walkers = _PROTOBUF_WALKERS
    elif encoding == "json":
        walkers = _JSON_WALKERS
    else:
        raise ValueError(f"unknown OTLP encoding {encoding!r}; expected 'protobuf' or 'json'")
    if signal not in walkers:
        raise ValueError(f"unknown OTLP signal {signal!r}; expected 'traces', 'logs' or 'metrics'")
    rows_by_table, rejections = walkers[signal](body)
    tables = {name: _to_table(schema.TABLES[name], rows) for name, rows in rows_by_table.items() if rows}
    return DecodedBatch(
        signal=signal,
        tables=tables,
        accepted=sum(len(rows) for rows in rows_by_table.values()),
        rejected=rejections.count,
        error_message=rejections.message(),
    )


# --- Arrow ------------------------------------------------------------------------------------------

_INT64_MAX = 2**63 - 1


def _to_table(table: schema.Table, rows: list[Row]) -> pa.Table:
    arrow_schema = table.arrow_schema
    columns = list(zip(*rows, strict=True))
    arrays = [_column(values, field.type) for values, field in zip(columns, arrow_schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def _column(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    if arrow_type == schema.ATTRIBUTES:
        return _map_column(values, arrow_type)
    if pa.types.is_list(arrow_type):
        return _list_column(values, arrow_type)
    if pa.types.is_timestamp(arrow_type):
        return _timestamps(values, arrow_type)
    return pa.array(values, type=arrow_type)


def _map_column(dicts: Sequence[dict[str, str]], arrow_type: pa.DataType) -> pa.Array:
    # Resource and scope attributes are one dict object shared by every row of the scope: build each
    # distinct dict once and repeat it with take() rather than copy its items into every row.
    distinct = {id(d): d for d in dicts}
    if len(distinct) * 2 > len(dicts):
        return _map_array(dicts, arrow_type)
    position = {key: i for i, key in enumerate(distinct)}
    indices = pa.array(list(map(position.__getitem__, map(id, dicts))), pa.int32())
    return _map_array(list(distinct.values()), arrow_type).take(indices)


def _map_array(dicts: Sequence[dict[str, str]], arrow_type: pa.DataType) -> pa.Array:
    # Flattening the dicts at C speed and handing Arrow offsets is about 10x faster than pa.array over
    # lists of (key, value) items.
    keys = pa.array(list(chain.from_iterable(dicts)), pa.string())
    items = pa.array(list(chain.from_iterable(map(dict.values, dicts))), pa.string())
    entries = pa.StructArray.from_arrays([keys, items], fields=list(arrow_type.value_type))
    return pa.ListArray.from_arrays(_offsets(dicts), entries, type=arrow_type)


def _list_column(lists: Sequence[Sequence[Any]], arrow_type: pa.DataType) -> pa.Array:
    if not any(lists):
        # Most spans have no events or links and most points no exemplars.
        offsets = pa.array([0] * (len(lists) + 1), pa.int32())
        return pa.ListArray.from_arrays(offsets, pa.array([], arrow_type.value_type), type=arrow_type)
    flat = list(chain.from_iterable(lists))
    return pa.ListArray.from_arrays(_offsets(lists), _column(flat, arrow_type.value_type), type=arrow_type)


def _offsets(values: Sequence[Sized]) -> pa.Array:
    return pa.array(list(accumulate(map(len, values), initial=0)), pa.int32())


def _timestamps(values: Sequence[int], arrow_type: pa.DataType) -> pa.Array:
    try:
        return pa.array(values, type=arrow_type)
    except OverflowError:
        # OTLP times are fixed64, Arrow's are int64: anything past year 2262 is a sender bug; keep the row
        # rather than fail the whole request over it.
        return pa.array([min(v, _INT64_MAX) for v in values], type=arrow_type)


# --- Values shared by both encodings ----------------------------------------------------------------

UNKNOWN_SERVICE = "unknown_service"

# The exporter stores the Go enums' String() forms, not the OTLP integers.
_SPAN_KINDS = dict(enumerate(("Unspecified", "Internal", "Server", "Client", "Producer", "Consumer")))
_STATUS_CODES = dict(enumerate(("Unset", "Ok", "Error")))

# SeverityNumber -> short name, per the OTLP log data model's ranges (1-4 TRACE ... 21-24 FATAL).
_SEVERITY_TEXT = (
    "",
    *(name for name in ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL") for _ in range(4)),
)

# Lower-case severity words senders put in SeverityText when they leave SeverityNumber unset.
_SEVERITY_WORDS = {
    "trace": 1,
    "finest": 1,
    "verbose": 1,
    "debug": 5,
    "dbg": 5,
    "fine": 5,
    "info": 9,
    "information": 9,
    "informational": 9,
    "notice": 10,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "err": 17,
    "severe": 17,
    "fatal": 21,
    "critical": 21,
    "crit": 21,
    "panic": 21,
    "alert": 22,
    "emerg": 23,
    "emergency": 23,
}

_NO_EVENTS: tuple[tuple[()], tuple[()], tuple[()]] = ((), (), ())
_NO_LINKS: tuple[tuple[()], ...] = ((), (), (), ())
_NO_EXEMPLARS: tuple[tuple[()], ...] = ((), (), (), (), ())


def _service_name(resource_attributes: dict[str, str]) -> str:
    return resource_attributes.get("service.name") or UNKNOWN_SERVICE


def _severity(number: int, text: str) -> tuple[str, int]:
    if not 0 <= number <= 24:
        number = 0
    if not text:
        return _SEVERITY_TEXT[number], number
    if number == 0:
        number = _severity_number_from_text(text)
    return text, number


@lru_cache(maxsize=512)
def _severity_number_from_text(text: str) -> int:
    word = text.strip().lower()
    # "INFO2", "WARN3": the data model's sub-levels within a range.
    if len(word) > 1 and word[-1] in "1234" and word[:-1] in _SEVERITY_WORDS:
        return _SEVERITY_WORDS[word[:-1]] + int(word[-1]) - 1
    return _SEVERITY_WORDS.get(word, 0)


def _compact_json(raw: Any) -> str:
    return json.dumps(raw, separators=(",", ":"), ensure_ascii=False)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Rejections:
    """Items dropped for invalid ids, reported as OTLP partial success."""

    def __init__(self, item: str) -> None:
        self.item = item
        self.reasons: Counter[str] = Counter()
        self.first_path = ""

    @property
    def count(self) -> int:
        return sum(self.reasons.values())

    def add(self, reason: str, where: str, index: int) -> None:
        if not self.reasons:
            self.first_path = f"{where}[{index}]"
        self.reasons[reason] += 1

    def message(self) -> str:
        if not self.reasons:
            return ""
        why = ", ".join(f"{n} with {reason}" for reason, n in self.reasons.items())
        return (
            f"rejected {self.count} {self.item}: {why} (first at {self.first_path}); "
            "trace ids must be 16 bytes and span ids 8 bytes (32 and 16 hex digits in OTLP/JSON)"
        )


def _bad_ids(trace_id: bytes | str, span_id: bytes | str, parent_id: bytes | str, hex_digits: bool) -> str:
    """Why an item's ids are unacceptable, or "" when they are fine. Empty ids are allowed only where
    OTLP allows them (a log without a trace, a root span)."""
    unit = 2 if hex_digits else 1
    if len(trace_id) != 16 * unit:
        return "a trace id that is not 16 bytes"
    if len(span_id) != 8 * unit:
        return "a span id that is not 8 bytes"
    if parent_id and len(parent_id) != 8 * unit:
        return "a parent span id that is not 8 bytes"
    return ""


def _bad_log_ids(trace_id: bytes | str, span_id: bytes | str, hex_digits: bool) -> str:
    unit = 2 if hex_digits else 1
    if trace_id and len(trace_id) != 16 * unit:
        return "a trace id that is not 16 bytes"
    if span_id and len(span_id) != 8 * unit:
        return "a span id that is not 8 bytes"
    return ""


# --- Protobuf ---------------------------------------------------------------------------------------

Tables = dict[str, list[Row]]
Walker = Callable[[bytes], tuple[Tables, _Rejections]]


# Reading one KeyValue through upb costs about 1 µs (a wrapper object for the KeyValue and another for its
# AnyValue), which made attributes most of the decode time. So requests are parsed with copies of the OTLP
# messages in which every attribute list (``repeated KeyValue``) is declared ``repeated bytes``, the same wire
# encoding: each attribute arrives as its serialized KeyValue, and a repeated one (the same key and value,
# which most are) is converted once and then found in a cache, about 4x faster.


def _attribute_lists_as_bytes(messages: Any) -> None:
    key_value = "." + KeyValue.DESCRIPTOR.full_name
    for message in messages:
        if message.name == "KeyValueList":
            continue  # AnyValue keeps its real structure: log bodies and cache misses use it.
        for field in message.field:
            if field.type_name == key_value and field.label == field.LABEL_REPEATED:
                field.type = field.TYPE_BYTES
                field.ClearField("type_name")
        _attribute_lists_as_bytes(message.nested_type)


def _raw_attribute_messages() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    # Dependencies first: each file is added after the files it imports.
    for module in (common_pb2, resource_pb2, trace_pb2, logs_pb2, metrics_pb2):
        file_proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(file_proto)
        _attribute_lists_as_bytes(file_proto.message_type)
        pool.Add(file_proto)
    for request in (ExportTraceServiceRequest, ExportLogsServiceRequest, ExportMetricsServiceRequest):
        file_proto = descriptor_pb2.FileDescriptorProto()
        request.DESCRIPTOR.file.CopyToProto(file_proto)
        pool.Add(file_proto)
    return pool


_RAW_ATTRIBUTE_POOL = _raw_attribute_messages()


def _raw_attribute_class(message_type: Any) -> Any:
    return message_factory.GetMessageClass(_RAW_ATTRIBUTE_POOL.FindMessageTypeByName(message_type.DESCRIPTOR.full_name))


_TRACES_REQUEST = _raw_attribute_class(ExportTraceServiceRequest)
_LOGS_REQUEST = _raw_attribute_class(ExportLogsServiceRequest)
_METRICS_REQUEST = _raw_attribute_class(ExportMetricsServiceRequest)

# Serialized KeyValue -> (key, value as stored). Bounded by clearing it when full: the hot set (method, route,
# status, host ...) refills within one request, and clearing is cheaper than tracking recency on every hit.
_ATTRIBUTE_CACHE: dict[bytes, tuple[str, str]] = {}
_ATTRIBUTE_CACHE_ENTRIES = 16_384
# Long values (stack traces, SQL, URLs with ids) rarely repeat; caching them would only evict the hot set.
_CACHEABLE_BYTES = 200


def _pb_attrs(raw_key_values: Any) -> dict[str, str]:
    cached = _ATTRIBUTE_CACHE.get
    # dict() of pairs keeps the last of duplicate keys, which DuckDB maps require to be unique.
    return dict([cached(raw) or _pb_key_value(raw) for raw in raw_key_values])


def _pb_key_value(raw: bytes) -> tuple[str, str]:
    pair = _scalar_key_value(raw)
    if pair is None:
        try:
            key_value = KeyValue.FromString(raw)
        except DecodeError as err:
            # Attributes are parsed here rather than with the request, so report it as the request's error.
            raise OTLPDecodeError(
                f"body is not a valid OTLP protobuf request: an attribute is not a valid KeyValue ({err}); "
                "attribute keys and string values must be valid UTF-8"
            ) from None
        pair = (key_value.key, _pb_value(key_value.value))
    if len(raw) <= _CACHEABLE_BYTES:
        if len(_ATTRIBUTE_CACHE) >= _ATTRIBUTE_CACHE_ENTRIES:
            _ATTRIBUTE_CACHE.clear()
        _ATTRIBUTE_CACHE[raw] = pair
    return pair


# AnyValue field tags (field number << 3 | wire type) of the scalar kinds decoded without upb.
_STRING_TAG, _BOOL_TAG, _INT_TAG, _DOUBLE_TAG = 0x0A, 0x10, 0x18, 0x21
_unpack_double = struct.Struct("<d").unpack_from


def _scalar_key_value(raw: bytes) -> tuple[str, str] | None:
    """Decode the common attribute without upb, which is 3-4x slower for a value not in the cache.

    That is a KeyValue laid out as ``0x0A len key 0x12 len <one AnyValue field>`` with both lengths under
    128 and a string, bool, int or double value. Anything else, including valid layouts such as reordered
    or repeated fields, returns None and is left to upb, as is invalid UTF-8 (upb reports it).
    """
    size = len(raw)
    if size < 5 or raw[0] != 0x0A or raw[1] >= 0x80:
        return None
    key_end = 2 + raw[1]
    value_size = size - key_end - 2
    if not 0 < value_size < 0x80 or raw[key_end] != 0x12 or raw[key_end + 1] != value_size:
        return None
    tag, start = raw[key_end + 2], key_end + 3
    try:
        key = raw[2:key_end].decode()
        if tag == _STRING_TAG and raw[start] == size - start - 1:
            return key, raw[start + 1 :].decode()
    except (UnicodeDecodeError, IndexError):
        return None
    if tag == _INT_TAG:
        number = _varint_to_end(raw, start)
        return None if number is None else (key, str(number - (1 << 64) if number >= 1 << 63 else number))
    if tag == _DOUBLE_TAG and size - start == 8:
        return key, repr(_unpack_double(raw, start)[0])
    if tag == _BOOL_TAG and size - start == 1 and raw[start] < 2:
        return key, "true" if raw[start] else "false"
    return None


def _varint_to_end(raw: bytes, start: int) -> int | None:
    """The varint that fills raw[start:] exactly, or None."""
    number = shift = 0
    for position in range(start, min(len(raw), start + 10)):
        byte = raw[position]
        number |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return number if position == len(raw) - 1 and number < 1 << 64 else None
    return None


def _parse_protobuf(message_type: Any, body: bytes) -> Any:
    try:
        return message_type.FromString(body)
    except DecodeError as err:
        name = message_type.DESCRIPTOR.full_name
        hint = ""
        if body[:2] == b"\x1f\x8b":
            hint = " The body is gzip-compressed: send it with Content-Encoding: gzip."
        elif body.lstrip()[:1] in (b"{", b"["):
            hint = " The body looks like JSON: send it with Content-Type: application/json."
        raise OTLPDecodeError(
            f"body is not a valid protobuf {name} ({err}). Send a serialized {name} with "
            f"Content-Type: application/x-protobuf.{hint}"
        ) from None


def _pb_value(value: Any) -> str:
    """An AnyValue as the exporter stores it in a Map(String, String) column."""
    text: str = value.string_value
    if text:
        return text
    kind = value.WhichOneof("value")
    if kind == "int_value":
        return str(value.int_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return _b64(value.bytes_value)
    if kind in ("array_value", "kvlist_value"):
        return _compact_json(_pb_raw(value))
    return ""


def _pb_raw(value: Any) -> Any:
    """An AnyValue as a JSON-ready Python value, for arrays and kvlists rendered as JSON."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_pb_raw(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_raw(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return _b64(value.bytes_value)
    if kind is None or kind == "string_value_strindex":
        return None
    return getattr(value, kind)


def _pb_traces(body: bytes) -> tuple[Tables, _Rejections]:
    request = _parse_protobuf(_TRACES_REQUEST, body)
    rows: list[Row] = []
    rejections = _Rejections("spans")
    for ri, resource_spans in enumerate(request.resource_spans):
        resource_attrs = _pb_attrs(resource_spans.resource.attributes)
        for si, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope
            context = (_service_name(resource_attrs), resource_attrs, scope.name, scope.version)
            where = f"resourceSpans[{ri}].scopeSpans[{si}].spans"
            _pb_spans(scope_spans.spans, context, rows, rejections, where)
    return {schema.TRACES.name: rows}, rejections


def _pb_spans(
    spans: Any, context: tuple[str, dict[str, str], str, str], rows: list[Row], rej: _Rejections, where: str
) -> None:
    service, resource_attrs, scope_name, scope_version = context
    append = rows.append
    for i, span in enumerate(spans):
        trace_id, span_id, parent_id = span.trace_id, span.span_id, span.parent_span_id
        if len(trace_id) != 16 or len(span_id) != 8 or (parent_id and len(parent_id) != 8):
            rej.add(_bad_ids(trace_id, span_id, parent_id, False), where, i)
            continue
        start, end, status = span.start_time_unix_nano, span.end_time_unix_nano, span.status
        events = _pb_events(span.events) if span.events else _NO_EVENTS
        links = _pb_links(span.links) if span.links else _NO_LINKS
        append(
            (
                start,
                trace_id.hex(),
                span_id.hex(),
                parent_id.hex(),
                span.trace_state,
                span.name,
                _SPAN_KINDS.get(span.kind, "Unspecified"),
                service,
                resource_attrs,
                scope_name,
                scope_version,
                _pb_attrs(span.attributes),
                end - start if end > start else 0,
                _STATUS_CODES.get(status.code, "Unset"),
                status.message,
                *events,
                *links,
            )
        )


def _pb_events(events: Any) -> tuple[list[int], list[str], list[dict[str, str]]]:
    return (
        [e.time_unix_nano for e in events],
        [e.name for e in events],
        [_pb_attrs(e.attributes) for e in events],
    )


def _pb_links(links: Any) -> tuple[list[str], list[str], list[str], list[dict[str, str]]]:
    return (
        [link.trace_id.hex() for link in links],
        [link.span_id.hex() for link in links],
        [link.trace_state for link in links],
        [_pb_attrs(link.attributes) for link in links],
    )


def _pb_logs(body: bytes) -> tuple[Tables, _Rejections]:
    request = _parse_protobuf(_LOGS_REQUEST, body)
    rows: list[Row] = []
    rejections = _Rejections("log records")
    now = time.time_ns()
    for ri, resource_logs in enumerate(request.resource_logs):
        resource_attrs = _pb_attrs(resource_logs.resource.attributes)
        service = _service_name(resource_attrs)
        for si, scope_logs in enumerate(resource_logs.scope_logs):
            scope = scope_logs.scope
            # ResourceSchemaUrl .. ScopeAttributes are adjacent columns, the same for every record here.
            context = (
                resource_logs.schema_url,
                resource_attrs,
                scope_logs.schema_url,
                scope.name,
                scope.version,
                _pb_attrs(scope.attributes),
            )
            where = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords"
            _pb_log_records(scope_logs.log_records, service, context, now, rows, rejections, where)
    return {schema.LOGS.name: rows}, rejections


def _pb_log_records(
    records: Any, service: str, context: Row, now: int, rows: list[Row], rej: _Rejections, where: str
) -> None:
    append = rows.append
    for i, record in enumerate(records):
        trace_id, span_id = record.trace_id, record.span_id
        if (trace_id and len(trace_id) != 16) or (span_id and len(span_id) != 8):
            rej.add(_bad_log_ids(trace_id, span_id, False), where, i)
            continue
        severity_text, severity_number = _severity(record.severity_number, record.severity_text)
        append(
            (
                record.time_unix_nano or record.observed_time_unix_nano or now,
                trace_id.hex(),
                span_id.hex(),
                record.flags & 0xFF,
                severity_text,
                severity_number,
                service,
                _pb_value(record.body),
                *context,
                _pb_attrs(record.attributes),
                record.event_name,
            )
        )


def _pb_metrics(body: bytes) -> tuple[Tables, _Rejections]:
    request = _parse_protobuf(_METRICS_REQUEST, body)
    tables: Tables = {table.name: [] for table in schema.METRIC_TABLES.values()}
    for resource_metrics in request.resource_metrics:
        resource_attrs = _pb_attrs(resource_metrics.resource.attributes)
        service = _service_name(resource_attrs)
        for scope_metrics in resource_metrics.scope_metrics:
            scope = scope_metrics.scope
            scope_context = (
                resource_attrs,
                resource_metrics.schema_url,
                scope.name,
                scope.version,
                _pb_attrs(scope.attributes),
                scope.dropped_attributes_count,
                scope_metrics.schema_url,
                service,
            )
            for metric in scope_metrics.metrics:
                _pb_metric(metric, (*scope_context, metric.name, metric.description, metric.unit), tables)
    return tables, _Rejections("data points")


def _pb_metric(metric: Any, prefix: Row, tables: Tables) -> None:
    kind = metric.WhichOneof("data")
    if kind is None:
        return
    decode_point, metric_columns = _PB_METRIC_TYPES[kind]
    data = getattr(metric, kind)
    tail = metric_columns(data)
    tables[schema.METRIC_TABLES[kind].name].extend(prefix + decode_point(p) + tail for p in data.data_points)


def _no_columns(data: Any) -> Row:
    return ()


def _pb_sum_columns(data: Any) -> Row:
    return (data.aggregation_temporality, data.is_monotonic)


def _pb_temporality_column(data: Any) -> Row:
    return (data.aggregation_temporality,)


def _pb_optional_double(message: Any, field: str) -> float:
    # An absent min/max/sum is unknown, not zero: NaN keeps aggregates from being skewed toward 0.
    return float(getattr(message, field)) if message.HasField(field) else math.nan


def _pb_number(message: Any) -> float:
    kind = message.WhichOneof("value")
    if kind == "as_double":
        return float(message.as_double)
    if kind == "as_int":
        return float(message.as_int)
    return math.nan


def _pb_point_head(point: Any) -> Row:
    return (_pb_attrs(point.attributes), point.start_time_unix_nano, point.time_unix_nano)


def _pb_number_point(point: Any) -> Row:
    return (*_pb_point_head(point), _pb_number(point), point.flags, *_pb_exemplars(point.exemplars))


def _pb_histogram_point(point: Any) -> Row:
    return (
        *_pb_point_head(point),
        point.count,
        _pb_optional_double(point, "sum"),
        list(point.bucket_counts),
        list(point.explicit_bounds),
        *_pb_exemplars(point.exemplars),
        point.flags,
        _pb_optional_double(point, "min"),
        _pb_optional_double(point, "max"),
    )


def _pb_exp_histogram_point(point: Any) -> Row:
    positive, negative = point.positive, point.negative
    return (
        *_pb_point_head(point),
        point.count,
        _pb_optional_double(point, "sum"),
        point.scale,
        point.zero_count,
        positive.offset,
        list(positive.bucket_counts),
        negative.offset,
        list(negative.bucket_counts),
        *_pb_exemplars(point.exemplars),
        point.flags,
        _pb_optional_double(point, "min"),
        _pb_optional_double(point, "max"),
    )


def _pb_summary_point(point: Any) -> Row:
    quantiles = point.quantile_values
    return (
        *_pb_point_head(point),
        point.count,
        point.sum,
        [q.quantile for q in quantiles],
        [q.value for q in quantiles],
        point.flags,
    )


def _pb_exemplars(exemplars: Any) -> tuple[Sequence[Any], ...]:
    if not exemplars:
        return _NO_EXEMPLARS
    return (
        [_pb_attrs(e.filtered_attributes) for e in exemplars],
        [e.time_unix_nano for e in exemplars],
        [_pb_number(e) for e in exemplars],
        [e.span_id.hex() for e in exemplars],
        [e.trace_id.hex() for e in exemplars],
    )


# --- OTLP/JSON: typed field readers -----------------------------------------------------------------

_UINT64_MAX = 2**64 - 1
_INT64_MIN = -(2**63)
_UINT32_MAX = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


class _FieldError(Exception):
    """A wrong value in OTLP/JSON; the path is assembled on the way out, one nesting level at a time."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.parts = [field] if field else []

    def at(self, field: str, index: int | None = None) -> _FieldError:
        self.parts.append(field if index is None else f"{field}[{index}]")
        return self

    @property
    def path(self) -> str:
        return ".".join(reversed(self.parts))


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    text = json.dumps(value)
    return ("a string " if isinstance(value, str) else "") + (text if len(text) <= 40 else text[:37] + "...")


def _jstr(obj: JSONObject, key: str) -> str:
    value = obj.get(key)
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _FieldError(key, f"expected a string, got {_describe(value)}")


def _jint(obj: JSONObject, key: str, low: int, high: int) -> int:
    value = obj.get(key)
    if type(value) is int and low <= value <= high:
        return value
    if value is None:
        return 0
    return _parse_int(value, key, low, high)


def _parse_int(value: Any, key: str, low: int, high: int) -> int:
    # proto3 JSON writes 64-bit integers as decimal strings (JavaScript numbers lose precision past 2**53),
    # and some encoders write integral floats such as 1e9.
    number: int | None = None
    if type(value) is str and _is_decimal(value):
        number = int(value)
    elif type(value) is int:
        number = value
    elif type(value) is float and value.is_integer():
        number = int(value)
    wanted = "an integer or decimal string" if high > _UINT32_MAX else "an integer"
    if number is None:
        raise _FieldError(key, f"expected {wanted}, got {_describe(value)}")
    if not low <= number <= high:
        raise _FieldError(key, f"expected {wanted} between {low} and {high}, got {_describe(value)}")
    return number


def _is_decimal(text: str) -> bool:
    digits = text[1:] if text[:1] == "-" else text
    return digits.isdigit() and digits.isascii()


def _ju64(obj: JSONObject, key: str) -> int:
    # Inlined _jint: timestamps are the most frequent numbers, usually decimal strings.
    value = obj.get(key)
    if type(value) is str and value.isdigit() and value.isascii():
        number = int(value)
    elif type(value) is int:
        number = value
    elif value is None:
        return 0
    else:
        return _parse_int(value, key, 0, _UINT64_MAX)
    return number if 0 <= number <= _UINT64_MAX else _parse_int(value, key, 0, _UINT64_MAX)


def _ju32(obj: JSONObject, key: str) -> int:
    return _jint(obj, key, 0, _UINT32_MAX)


def _ji32(obj: JSONObject, key: str) -> int:
    return _jint(obj, key, _INT32_MIN, _INT32_MAX)


def _jenum(obj: JSONObject, key: str) -> int:
    value = obj.get(key)
    if type(value) is int:
        return value
    if value is None:
        return 0
    if type(value) is str and not _is_decimal(value):
        raise _FieldError(key, f"expected an integer, got {_describe(value)}; OTLP/JSON encodes enums as integers")
    return _parse_int(value, key, _INT32_MIN, _INT32_MAX)


def _jdouble(obj: JSONObject, key: str, default: float = 0.0) -> float:
    value = obj.get(key)
    if type(value) is float:
        return value
    if value is None:
        return default
    return _parse_double(value, key)


def _parse_double(value: Any, key: str) -> float:
    if type(value) is int or type(value) is float:
        return float(value)
    if type(value) is str:
        # proto3 JSON spells the non-finite doubles as strings; numeric strings are accepted too.
        special = _SPECIAL_DOUBLES.get(value)
        if special is not None:
            return special
        try:
            return float(value)
        except ValueError:
            pass
    raise _FieldError(key, f"expected a number, got {_describe(value)}")


def _jbool(obj: JSONObject, key: str) -> bool:
    value = obj.get(key)
    if type(value) is bool:
        return value
    if value is None:
        return False
    raise _FieldError(key, f"expected true or false, got {_describe(value)}")


def _jobject(obj: JSONObject, key: str) -> JSONObject:
    value = obj.get(key)
    if type(value) is dict:
        return value
    if value is None:
        return {}
    raise _FieldError(key, f"expected an object, got {_describe(value)}")


def _jarray(obj: JSONObject, key: str) -> list[Any]:
    value = obj.get(key)
    if type(value) is list:
        return value
    if value is None:
        return []
    raise _FieldError(key, f"expected an array, got {_describe(value)}")


def _jitems(obj: JSONObject, key: str) -> list[JSONObject]:
    """An array of objects; a non-object element is an error at its index."""
    items = _jarray(obj, key)
    for i, item in enumerate(items):
        if type(item) is not dict:
            raise _FieldError("", f"expected an object, got {_describe(item)}").at(key, i)
    return items


def _jid(obj: JSONObject, key: str) -> str:
    """A trace or span id as lowercase hex; its length is checked by the caller (partial success)."""
    value = obj.get(key)
    if value is None or value == "":
        return ""
    if type(value) is str:
        try:
            return bytes.fromhex(value).hex()
        except ValueError:
            pass
    raise _FieldError(
        key,
        f"expected a hex string, got {_describe(value)}; OTLP/JSON encodes trace and span ids as hex, not base64",
    )


def _jbytes(obj: JSONObject, key: str) -> bytes:
    value = obj.get(key)
    if value is None:
        return b""
    if type(value) is str:
        # proto3 JSON accepts standard or URL-safe base64, with or without padding.
        padded = value.replace("-", "+").replace("_", "/") + "=" * (-len(value) % 4)
        try:
            return base64.b64decode(padded, validate=True)
        except binascii.Error:
            pass
    raise _FieldError(key, f"expected a base64 string, got {_describe(value)}")


# --- OTLP/JSON: values ------------------------------------------------------------------------------


def _jvalue(value: Any) -> str:
    """An OTLP/JSON AnyValue as the exporter stores it in a Map(String, String) column."""
    if type(value) is not dict:
        if value is None:
            return ""
        raise _FieldError("", f'expected an AnyValue object such as {{"stringValue": ...}}, got {_describe(value)}')
    text = value.get("stringValue")
    if type(text) is str:
        return text
    if "intValue" in value:
        return str(_jint(value, "intValue", _INT64_MIN, _INT64_MAX))
    if "boolValue" in value:
        return "true" if _jbool(value, "boolValue") else "false"
    if "doubleValue" in value:
        return repr(_jdouble(value, "doubleValue"))
    if "bytesValue" in value:
        return _b64(_jbytes(value, "bytesValue"))
    if "arrayValue" in value or "kvlistValue" in value:
        return _compact_json(_jraw(value))
    return _jstr(value, "stringValue")


def _jraw(value: Any) -> Any:
    """An AnyValue as a JSON-ready Python value, for arrays and kvlists rendered as JSON."""
    if value is None:
        return None
    if type(value) is not dict:
        raise _FieldError("", f"expected an AnyValue object, got {_describe(value)}")
    if "arrayValue" in value:
        values = _jarray(_jobject(value, "arrayValue"), "values")
        return [_jraw_at(v, i, "arrayValue") for i, v in enumerate(values)]
    if "kvlistValue" in value:
        return _jkvlist_raw(_jobject(value, "kvlistValue"))
    if "intValue" in value:
        return _jint(value, "intValue", _INT64_MIN, _INT64_MAX)
    if "boolValue" in value:
        return _jbool(value, "boolValue")
    if "doubleValue" in value:
        return _jdouble(value, "doubleValue")
    if "bytesValue" in value:
        return _b64(_jbytes(value, "bytesValue"))
    return _jstr(value, "stringValue") if "stringValue" in value else None


def _jraw_at(value: Any, index: int, container: str) -> Any:
    try:
        return _jraw(value)
    except _FieldError as err:
        raise err.at("values", index).at(container) from None


def _jkvlist_raw(kvlist: JSONObject) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for i, kv in enumerate(_jitems(kvlist, "values")):
        try:
            raw[_jstr(kv, "key")] = _jraw_field(kv)
        except _FieldError as err:
            raise err.at("values", i).at("kvlistValue") from None
    return raw


def _jraw_field(kv: JSONObject) -> Any:
    try:
        return _jraw(kv.get("value"))
    except _FieldError as err:
        raise err.at("value") from None


def _jattrs(obj: JSONObject, key: str = "attributes") -> dict[str, str]:
    key_values = obj.get(key)
    if type(key_values) is not list:
        if key_values is None:
            return {}
        raise _FieldError(key, f"expected an array of {{key, value}} objects, got {_describe(key_values)}")
    attrs: dict[str, str] = {}
    for i, kv in enumerate(key_values):
        # Most attributes are strings: take them without the checked readers' function calls.
        if type(kv) is dict:
            name, value = kv.get("key"), kv.get("value")
            if type(name) is str and type(value) is dict:
                text = value.get("stringValue")
                if type(text) is str:
                    attrs[name] = text
                    continue
        try:
            name, text = _jkey_value(kv)
        except _FieldError as err:
            raise err.at(key, i) from None
        attrs[name] = text
    return attrs


def _jkey_value(kv: Any) -> tuple[str, str]:
    if type(kv) is not dict:
        raise _FieldError("", f"expected a {{key, value}} object, got {_describe(kv)}")
    return _jstr(kv, "key"), _jfield_value(kv, "value")


def _jfield_value(obj: JSONObject, key: str) -> str:
    try:
        return _jvalue(obj.get(key))
    except _FieldError as err:
        raise err.at(key) from None


def _parse_json(body: bytes) -> JSONObject:
    if not body.strip():
        raise OTLPDecodeError("body is empty: send an OTLP/JSON export request object")
    try:
        request = json.loads(body)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        hint = ""
        if body[:2] == b"\x1f\x8b":
            hint = " The body is gzip-compressed: send it with Content-Encoding: gzip."
        elif body.lstrip()[:1] not in (b"{", b"["):
            hint = " If it is binary protobuf, send it with Content-Type: application/x-protobuf."
        raise OTLPDecodeError(f"body is not valid JSON ({err}).{hint}") from None
    if type(request) is not dict:
        raise OTLPDecodeError(f"body must be a JSON object (an OTLP export request), got {_describe(request)}")
    return request


def _json_walker(walk: Callable[[JSONObject], tuple[Tables, _Rejections]]) -> Walker:
    def walker(body: bytes) -> tuple[Tables, _Rejections]:
        request = _parse_json(body)
        try:
            return walk(request)
        except _FieldError as err:
            raise OTLPDecodeError(
                f"{err.path}: {err.problem}. Fix the sender: the request must follow the OTLP/JSON encoding "
                "(opentelemetry-proto docs/specification.md#json-protobuf-encoding)."
            ) from None

    return walker


def _jresource(container: JSONObject) -> dict[str, str]:
    try:
        return _jattrs(_jobject(container, "resource"))
    except _FieldError as err:
        raise err.at("resource") from None


def _jscope(container: JSONObject) -> tuple[str, str, dict[str, str], int]:
    try:
        scope = _jobject(container, "scope")
        return (
            _jstr(scope, "name"),
            _jstr(scope, "version"),
            _jattrs(scope),
            _ju32(scope, "droppedAttributesCount"),
        )
    except _FieldError as err:
        raise err.at("scope") from None


# --- OTLP/JSON: traces ------------------------------------------------------------------------------


def _json_traces(request: JSONObject) -> tuple[Tables, _Rejections]:
    rows: list[Row] = []
    rejections = _Rejections("spans")
    for ri, resource_spans in enumerate(_jitems(request, "resourceSpans")):
        try:
            resource_attrs = _jresource(resource_spans)
            for si, scope_spans in enumerate(_jitems(resource_spans, "scopeSpans")):
                try:
                    scope_name, scope_version, _, _ = _jscope(scope_spans)
                    context = (_service_name(resource_attrs), resource_attrs, scope_name, scope_version)
                    where = f"resourceSpans[{ri}].scopeSpans[{si}].spans"
                    _json_spans(_jitems(scope_spans, "spans"), context, rows, rejections, where)
                except _FieldError as err:
                    raise err.at("scopeSpans", si) from None
        except _FieldError as err:
            raise err.at("resourceSpans", ri) from None
    return {schema.TRACES.name: rows}, rejections


def _json_spans(
    spans: list[JSONObject],
    context: tuple[str, dict[str, str], str, str],
    rows: list[Row],
    rej: _Rejections,
    where: str,
) -> None:
    for i, span in enumerate(spans):
        try:
            row = _json_span(span, context)
        except _FieldError as err:
            raise err.at("spans", i) from None
        if isinstance(row, str):
            rej.add(row, where, i)
        else:
            rows.append(row)


def _json_span(span: JSONObject, context: tuple[str, dict[str, str], str, str]) -> Row | str:
    """The span's row, or why its ids make it unacceptable."""
    trace_id, span_id, parent_id = _jid(span, "traceId"), _jid(span, "spanId"), _jid(span, "parentSpanId")
    bad = _bad_ids(trace_id, span_id, parent_id, True)
    if bad:
        return bad
    start, end = _ju64(span, "startTimeUnixNano"), _ju64(span, "endTimeUnixNano")
    service, resource_attrs, scope_name, scope_version = context
    status_code, status_message = _json_status(span)
    return (
        start,
        trace_id,
        span_id,
        parent_id,
        _jstr(span, "traceState"),
        _jstr(span, "name"),
        _SPAN_KINDS.get(_jenum(span, "kind"), "Unspecified"),
        service,
        resource_attrs,
        scope_name,
        scope_version,
        _jattrs(span),
        end - start if end > start else 0,
        status_code,
        status_message,
        *_json_events(span),
        *_json_links(span),
    )


def _json_status(span: JSONObject) -> tuple[str, str]:
    status = _jobject(span, "status")
    if not status:
        return "Unset", ""
    try:
        return _STATUS_CODES.get(_jenum(status, "code"), "Unset"), _jstr(status, "message")
    except _FieldError as err:
        raise err.at("status") from None


def _json_events(span: JSONObject) -> tuple[Sequence[Any], ...]:
    events = _jitems(span, "events")
    if not events:
        return _NO_EVENTS
    times, names, attrs = [], [], []
    for i, event in enumerate(events):
        try:
            times.append(_ju64(event, "timeUnixNano"))
            names.append(_jstr(event, "name"))
            attrs.append(_jattrs(event))
        except _FieldError as err:
            raise err.at("events", i) from None
    return times, names, attrs


def _json_links(span: JSONObject) -> tuple[Sequence[Any], ...]:
    links = _jitems(span, "links")
    if not links:
        return _NO_LINKS
    trace_ids, span_ids, states, attrs = [], [], [], []
    for i, link in enumerate(links):
        try:
            trace_ids.append(_jid(link, "traceId"))
            span_ids.append(_jid(link, "spanId"))
            states.append(_jstr(link, "traceState"))
            attrs.append(_jattrs(link))
        except _FieldError as err:
            raise err.at("links", i) from None
    return trace_ids, span_ids, states, attrs


# --- OTLP/JSON: logs --------------------------------------------------------------------------------


def _json_logs(request: JSONObject) -> tuple[Tables, _Rejections]:
    rows: list[Row] = []
    rejections = _Rejections("log records")
    now = time.time_ns()
    for ri, resource_logs in enumerate(_jitems(request, "resourceLogs")):
        try:
            resource_attrs = _jresource(resource_logs)
            resource_schema_url = _jstr(resource_logs, "schemaUrl")
            service = _service_name(resource_attrs)
            for si, scope_logs in enumerate(_jitems(resource_logs, "scopeLogs")):
                try:
                    scope_name, scope_version, scope_attrs, _ = _jscope(scope_logs)
                    context = (
                        resource_schema_url,
                        resource_attrs,
                        _jstr(scope_logs, "schemaUrl"),
                        scope_name,
                        scope_version,
                        scope_attrs,
                    )
                    where = f"resourceLogs[{ri}].scopeLogs[{si}].logRecords"
                    records = _jitems(scope_logs, "logRecords")
                    _json_log_records(records, service, context, now, rows, rejections, where)
                except _FieldError as err:
                    raise err.at("scopeLogs", si) from None
        except _FieldError as err:
            raise err.at("resourceLogs", ri) from None
    return {schema.LOGS.name: rows}, rejections


def _json_log_records(
    records: list[JSONObject],
    service: str,
    context: Row,
    now: int,
    rows: list[Row],
    rej: _Rejections,
    where: str,
) -> None:
    for i, record in enumerate(records):
        try:
            row = _json_log_record(record, service, context, now)
        except _FieldError as err:
            raise err.at("logRecords", i) from None
        if isinstance(row, str):
            rej.add(row, where, i)
        else:
            rows.append(row)


def _json_log_record(record: JSONObject, service: str, context: Row, now: int) -> Row | str:
    """The record's row, or why its ids make it unacceptable."""
    trace_id, span_id = _jid(record, "traceId"), _jid(record, "spanId")
    bad = _bad_log_ids(trace_id, span_id, True)
    if bad:
        return bad
    severity_text, severity_number = _severity(_jenum(record, "severityNumber"), _jstr(record, "severityText"))
    observed = _ju64(record, "observedTimeUnixNano")
    return (
        _ju64(record, "timeUnixNano") or observed or now,
        trace_id,
        span_id,
        _ju32(record, "flags") & 0xFF,
        severity_text,
        severity_number,
        service,
        _jfield_value(record, "body"),
        *context,
        _jattrs(record),
        _jstr(record, "eventName"),
    )


# --- OTLP/JSON: metrics -----------------------------------------------------------------------------


def _json_metrics(request: JSONObject) -> tuple[Tables, _Rejections]:
    tables: Tables = {table.name: [] for table in schema.METRIC_TABLES.values()}
    for ri, resource_metrics in enumerate(_jitems(request, "resourceMetrics")):
        try:
            resource_attrs = _jresource(resource_metrics)
            resource_schema_url = _jstr(resource_metrics, "schemaUrl")
            for si, scope_metrics in enumerate(_jitems(resource_metrics, "scopeMetrics")):
                try:
                    scope_name, scope_version, scope_attrs, scope_dropped = _jscope(scope_metrics)
                    scope_context = (
                        resource_attrs,
                        resource_schema_url,
                        scope_name,
                        scope_version,
                        scope_attrs,
                        scope_dropped,
                        _jstr(scope_metrics, "schemaUrl"),
                        _service_name(resource_attrs),
                    )
                    for mi, metric in enumerate(_jitems(scope_metrics, "metrics")):
                        try:
                            _json_metric(metric, scope_context, tables)
                        except _FieldError as err:
                            raise err.at("metrics", mi) from None
                except _FieldError as err:
                    raise err.at("scopeMetrics", si) from None
        except _FieldError as err:
            raise err.at("resourceMetrics", ri) from None
    return tables, _Rejections("data points")


def _json_metric(metric: JSONObject, scope_context: Row, tables: Tables) -> None:
    kind = next((k for k in _JSON_METRIC_TYPES if metric.get(k) is not None), None)
    if kind is None:
        return
    table, decode_point, metric_columns = _JSON_METRIC_TYPES[kind]
    prefix = (*scope_context, _jstr(metric, "name"), _jstr(metric, "description"), _jstr(metric, "unit"))
    rows = tables[table.name]
    try:
        data = _jobject(metric, kind)
        tail = metric_columns(data)
        for i, point in enumerate(_jitems(data, "dataPoints")):
            try:
                rows.append(prefix + decode_point(point) + tail)
            except _FieldError as err:
                raise err.at("dataPoints", i) from None
    except _FieldError as err:
        raise err.at(kind) from None


def _json_sum_columns(data: JSONObject) -> Row:
    return (_jenum(data, "aggregationTemporality"), _jbool(data, "isMonotonic"))


def _json_temporality_column(data: JSONObject) -> Row:
    return (_jenum(data, "aggregationTemporality"),)


def _json_number(obj: JSONObject) -> float:
    if "asDouble" in obj:
        return _jdouble(obj, "asDouble")
    if "asInt" in obj:
        return float(_jint(obj, "asInt", _INT64_MIN, _INT64_MAX))
    return math.nan


def _json_point_head(point: JSONObject) -> Row:
    return (_jattrs(point), _ju64(point, "startTimeUnixNano"), _ju64(point, "timeUnixNano"))


def _json_number_point(point: JSONObject) -> Row:
    return (*_json_point_head(point), _json_number(point), _ju32(point, "flags"), *_json_exemplars(point))


def _json_histogram_point(point: JSONObject) -> Row:
    return (
        *_json_point_head(point),
        _ju64(point, "count"),
        _jdouble(point, "sum", math.nan),
        _json_u64_array(point, "bucketCounts"),
        _json_double_array(point, "explicitBounds"),
        *_json_exemplars(point),
        _ju32(point, "flags"),
        _jdouble(point, "min", math.nan),
        _jdouble(point, "max", math.nan),
    )


def _json_exp_histogram_point(point: JSONObject) -> Row:
    positive, negative = _json_buckets(point, "positive"), _json_buckets(point, "negative")
    return (
        *_json_point_head(point),
        _ju64(point, "count"),
        _jdouble(point, "sum", math.nan),
        _jint(point, "scale", _INT32_MIN, _INT32_MAX),
        _ju64(point, "zeroCount"),
        *positive,
        *negative,
        *_json_exemplars(point),
        _ju32(point, "flags"),
        _jdouble(point, "min", math.nan),
        _jdouble(point, "max", math.nan),
    )


def _json_buckets(point: JSONObject, key: str) -> tuple[int, list[int]]:
    try:
        buckets = _jobject(point, key)
        return _ji32(buckets, "offset"), _json_u64_array(buckets, "bucketCounts")
    except _FieldError as err:
        raise err.at(key) from None


def _json_summary_point(point: JSONObject) -> Row:
    quantiles, values = [], []
    for i, item in enumerate(_jitems(point, "quantileValues")):
        try:
            quantiles.append(_jdouble(item, "quantile"))
            values.append(_jdouble(item, "value"))
        except _FieldError as err:
            raise err.at("quantileValues", i) from None
    return (
        *_json_point_head(point),
        _ju64(point, "count"),
        _jdouble(point, "sum"),
        quantiles,
        values,
        _ju32(point, "flags"),
    )


def _json_u64_array(obj: JSONObject, key: str) -> list[int]:
    values = []
    for i, item in enumerate(_jarray(obj, key)):
        if type(item) is int and 0 <= item <= _UINT64_MAX:
            values.append(item)
        else:
            try:
                values.append(_parse_int(item, "", 0, _UINT64_MAX))
            except _FieldError as err:
                raise err.at(key, i) from None
    return values


def _json_double_array(obj: JSONObject, key: str) -> list[float]:
    values = []
    for i, item in enumerate(_jarray(obj, key)):
        if type(item) is float:
            values.append(item)
        else:
            try:
                values.append(_parse_double(item, ""))
            except _FieldError as err:
                raise err.at(key, i) from None
    return values


def _json_exemplars(point: JSONObject) -> tuple[Sequence[Any], ...]:
    exemplars = _jitems(point, "exemplars")
    if not exemplars:
        return _NO_EXEMPLARS
    attrs, times, values, span_ids, trace_ids = [], [], [], [], []
    for i, exemplar in enumerate(exemplars):
        try:
            attrs.append(_jattrs(exemplar, "filteredAttributes"))
            times.append(_ju64(exemplar, "timeUnixNano"))
            values.append(_json_number(exemplar))
            span_ids.append(_jid(exemplar, "spanId"))
            trace_ids.append(_jid(exemplar, "traceId"))
        except _FieldError as err:
            raise err.at("exemplars", i) from None
    return attrs, times, values, span_ids, trace_ids


# JSON member name of each metric type -> its table, its data point decoder, and its per-metric columns.
_JSON_METRIC_TYPES: dict[str, tuple[schema.Table, Callable[[JSONObject], Row], Callable[[JSONObject], Row]]] = {
    "gauge": (schema.METRICS_GAUGE, _json_number_point, _no_columns),
    "sum": (schema.METRICS_SUM, _json_number_point, _json_sum_columns),
    "histogram": (schema.METRICS_HISTOGRAM, _json_histogram_point, _json_temporality_column),
    "exponentialHistogram": (
        schema.METRICS_EXP_HISTOGRAM,
        _json_exp_histogram_point,
        _json_temporality_column,
    ),
    "summary": (schema.METRICS_SUMMARY, _json_summary_point, _no_columns),
}

# Protobuf oneof name of each metric type (also its key in schema.METRIC_TABLES) -> its data point decoder
# and its per-metric columns.
_PB_METRIC_TYPES: dict[str, tuple[Callable[[Any], Row], Callable[[Any], Row]]] = {
    "gauge": (_pb_number_point, _no_columns),
    "sum": (_pb_number_point, _pb_sum_columns),
    "histogram": (_pb_histogram_point, _pb_temporality_column),
    "exponential_histogram": (_pb_exp_histogram_point, _pb_temporality_column),
    "summary": (_pb_summary_point, _no_columns),
}

_PROTOBUF_WALKERS: dict[str, Walker] = {"traces": _pb_traces, "logs": _pb_logs, "metrics": _pb_metrics}
_JSON_WALKERS: dict[str, Walker] = {
    "traces": _json_walker(_json_traces),
    "logs": _json_walker(_json_logs),
    "metrics": _json_walker(_json_metrics),
}
