#!/usr/bin/python3
"""Differential test of the JSON codec against python3-protobuf's json_format.

Usage: json_oracle.py <json_roundtrip binary> <source dir>

Python stubs of the contracts are generated into a temporary directory with
Debian's protoc (as tests/integration/python/stubs.py does, without the gRPC
plugin). For several contract and well-known types, random messages are
converted both ways, by json_roundtrip (our codec, see json_roundtrip.c) and
by json_format, and compared as parsed JSON values and as messages:

  1. binary -> our JSON            == json_format.MessageToJson (also with
     proto names, and with defaults emitted);
  2. json_format's JSON -> ours    -> binary, re-parsed by Python == original;
  3. our JSON -> json_format.Parse == original;
then hand-written non-canonical inputs must give the same message on both
sides, and invalid inputs must be rejected by both.

Environment: JSON_ORACLE_SEED (default: random, printed), JSON_ORACLE_COUNT
(messages per type, default 150).
"""

import base64
import glob
import importlib
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

from google.protobuf import descriptor as pbd
from google.protobuf import json_format
from google.protobuf import symbol_database
from google.protobuf import any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2
from google.protobuf import wrappers_pb2

PROTOC = os.environ.get("PROTOC", "/usr/bin/protoc")
INCLUDE_DIRS = ["/usr/share/gocode/src/github.com/gogo/googleapis", "/usr/share/grpc-proto",
                "/usr/include"]
EXTRA_PROTOS = ["google/api/annotations.proto", "google/api/http.proto",
                "google/rpc/status.proto", "google/rpc/error_details.proto"]

# Contract and well-known types under test.
TYPES = [
    "analytics.v1.Event", "analytics.v1.TrackEventsRequest", "analytics.v1.TrackEventsResponse",
    "analytics.v1.SearchEventsRequest", "analytics.v1.SearchEventsResponse",
    "analytics.v1.EventResult", "analytics.v1.ImportEventsResponse", "analytics.v1.Metric",
    "analytics.v1.MetricBucket", "analytics.v1.MetricSeries", "analytics.v1.MetricData",
    "analytics.v1.GetMetricDataRequest", "analytics.v1.Report", "analytics.v1.ReportFile",
    "analytics.v1.Alert", "analytics.v1.AlertHistoryEntry", "analytics.v1.AnalyticsUpdate",
    "analytics.v1.MetricUpdate", "analytics.v1.StreamMetricRequest",
    "google.protobuf.Value", "google.protobuf.Struct", "google.protobuf.ListValue",
    "google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.Any",
    "google.protobuf.Empty", "google.protobuf.DoubleValue", "google.protobuf.FloatValue",
    "google.protobuf.Int64Value", "google.protobuf.UInt64Value", "google.protobuf.Int32Value",
    "google.protobuf.UInt32Value", "google.protobuf.BoolValue", "google.protobuf.StringValue",
    "google.protobuf.BytesValue", "google.rpc.Status",
    # proto2: optional fields with has_ flags, closed enums, nested messages.
    "google.protobuf.FieldDescriptorProto", "google.protobuf.DescriptorProto",
]

# Types an Any in a random message may carry.
ANY_PAYLOADS = ["analytics.v1.Event", "analytics.v1.EventResult", "google.protobuf.Timestamp",
                "google.protobuf.Duration", "google.protobuf.Value", "google.protobuf.Struct",
                "google.protobuf.DoubleValue", "google.protobuf.Empty", "google.rpc.BadRequest",
                "google.protobuf.Any"]

# Non-canonical but valid inputs: both parsers must accept them and agree.
SAME_MEANING = [
    ("analytics.v1.EventResult", '{"skewMs": 5, "index": "7"}'),
    ("analytics.v1.EventResult", '{"index": 7.0, "skewMs": "-9223372036854775808"}'),
    ("analytics.v1.EventResult", '{"index": 1e2, "status": 2}'),
    ("analytics.v1.EventResult", '{"status": "REJECTED", "event_id": "x", "stored_timestamp": null}'),
    ("analytics.v1.EventResult", '{"status": 77}'),
    ("analytics.v1.AnalyticsUpdate", '{"sequence": 9007199254740993}'),
    ("analytics.v1.AnalyticsUpdate", '{"sequence": "18446744073709551615", "event": {}}'),
    ("analytics.v1.AnalyticsUpdate", '{"event": null, "aggregates": {"at": "1970-01-01T00:00:00Z"}}'),
    ("analytics.v1.ReportFile", '{"data": "-_8"}'),
    ("analytics.v1.ReportFile", '{"data": "+/8="}'),
    ("analytics.v1.ReportFile", '{"data": "YQ"}'),
    ("analytics.v1.ReportFile", '{"data": "YWJj", "content_type": "text/csv"}'),
    ("analytics.v1.Event", '{"timestamp": "2024-02-29T23:59:59.5+05:30"}'),
    ("analytics.v1.Event", '{"timestamp": "2024-02-29T23:59:59.123456-00:01"}'),
    ("analytics.v1.Event", '{"timestamp": "0001-01-01T00:00:00Z", "sentAt": "9999-12-31T23:59:59.999999999Z"}'),
    ("analytics.v1.Event", '{"event_id": "x", "session_id": "s", "received_at": "1970-01-01T00:00:00.000000001Z"}'),
    ("analytics.v1.Event", '{"context": null, "eventId": null, "properties": {}}'),
    ("analytics.v1.Event", '{"properties": {"n": 1, "f": 1.5, "s": "x", "b": true, "z": null, "l": [1, [2], {}], "o": {"p": {}}}}'),
    ("analytics.v1.Event", '{"eventName": "\\u00e9\\ud834\\udd1e\\u2028\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001"}'),
    ("analytics.v1.MetricBucket", '{"value": "1.5", "rate": null, "percentiles": {"p": "-Infinity", "q": "NaN", "r": 1e308}}'),
    ("analytics.v1.MetricBucket", '{"value": 0, "rate": "1e-300"}'),
    ("analytics.v1.Alert", '{"condition": null, "cooldown": 300, "threshold": "Infinity"}'),
    ("analytics.v1.Alert", '{"condition": [1, "a", null, {"b": false}], "enabled": false}'),
    ("analytics.v1.Metric", '{"filters": [{"value": {"x": [1]}}], "variables": {"a": "b", "c": ""}}'),
    ("google.protobuf.Duration", '"1.000340012s"'),
    ("google.protobuf.Duration", '"-0.5s"'),
    ("google.protobuf.Duration", '"315576000000s"'),
    ("google.protobuf.Duration", '"-315576000000.999999999s"'),
    ("google.protobuf.DoubleValue", '1e2'),
    ("google.protobuf.DoubleValue", '"-1.25"'),
    ("google.protobuf.FloatValue", '3.4028234663852886e38'),
    ("google.protobuf.FloatValue", '"1e-45"'),
    ("google.protobuf.Int64Value", '"-9223372036854775808"'),
    ("google.protobuf.UInt64Value", '18446744073709551'),
    ("google.protobuf.UInt32Value", '4294967295'),
    ("google.protobuf.Int32Value", '"-2147483648"'),
    ("google.protobuf.BoolValue", 'false'),
    ("google.protobuf.StringValue", '""'),
    ("google.protobuf.BytesValue", '"AAEC_w"'),
    ("google.protobuf.Value", 'null'),
    ("google.protobuf.Value", '[[[[]]], {}]'),
    ("google.protobuf.ListValue", '[]'),
    ("google.protobuf.Struct", '{"a": {"b": null}}'),
    ("google.protobuf.Any", '{}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/google.protobuf.Timestamp", "value": "2020-01-01T00:00:00+01:00"}'),
    ("google.protobuf.Any", '{"eventId": "x", "@type": "type.googleapis.com/analytics.v1.Event"}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/google.protobuf.Any", "value": {"@type": "type.googleapis.com/google.protobuf.Int32Value", "value": "5"}}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/google.protobuf.Empty"}'),
    ("google.rpc.Status", '{"code": 3, "message": "bad", "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": "a", "description": "b"}]}]}'),
    ("google.protobuf.FieldDescriptorProto", '{"name": "x", "label": "LABEL_REPEATED", "type": 9, "options": {"packed": false}}'),
]

# Invalid inputs both must reject.
BOTH_REJECT = [
    ("analytics.v1.EventResult", '{"index": 1.5}'),
    ("analytics.v1.EventResult", '{"index": "1.5"}'),
    ("analytics.v1.EventResult", '{"index": 2147483648}'),
    ("analytics.v1.EventResult", '{"index": true}'),
    ("analytics.v1.EventResult", '{"skewMs": 9223372036854775808}'),
    ("analytics.v1.EventResult", '{"skewMs": "9223372036854775808"}'),
    ("analytics.v1.EventResult", '{"status": "NOPE"}'),
    ("analytics.v1.EventResult", '{"violations": [null]}'),
    ("analytics.v1.AnalyticsUpdate", '{"sequence": "-1"}'),
    ("analytics.v1.AnalyticsUpdate", '{"sequence": "18446744073709551616"}'),
    ("analytics.v1.AnalyticsUpdate", '{"event": {}, "aggregates": {}}'),
    ("analytics.v1.Event", '{"timestamp": "2024-01-01T00:00:00"}'),
    ("analytics.v1.Event", '{"timestamp": "2024-13-01T00:00:00Z"}'),
    ("analytics.v1.Event", '{"timestamp": "2024-01-01t00:00:00Z"}'),
    ("analytics.v1.Event", '{"timestamp": 5}'),
    ("analytics.v1.Event", '{"timestamp": "2024-01-01T00:00:00.1234567891Z"}'),
    ("analytics.v1.Event", '{"eventName": 5}'),
    ("analytics.v1.Event", '{"unknownField": 1}'),
    ("analytics.v1.Event", '{"eventId": "a", "eventId": "b"}'),
    ("analytics.v1.Event", '{"properties": []}'),
    ("analytics.v1.Event", '{"eventId": '),
    ("analytics.v1.TrackEventsRequest", '{"events": [null]}'),
    ("analytics.v1.TrackEventsRequest", '{"events": {}}'),
    ("analytics.v1.MetricBucket", '{"value": "abc"}'),
    ("analytics.v1.MetricBucket", '{"percentiles": {"p": null}}'),
    ("analytics.v1.MetricBucket", '{"value": "nan"}'),
    ("analytics.v1.Alert", '{"enabled": "true"}'),
    ("google.protobuf.FloatValue", '1e39'),
    ("google.protobuf.Duration", '"1"'),
    ("google.protobuf.Duration", '"315576000001s"'),
    ("google.protobuf.Any", '{"eventId": "x"}'),
    ("google.protobuf.Any", '{"@type": "type.googleapis.com/no.such.Type"}'),
    ("google.protobuf.FieldDescriptorProto", '{"label": "LABEL_NOPE"}'),
]


class Failure(Exception):
    pass


def generate_stubs(src, out_dir):
    proto_dir = os.path.join(os.path.abspath(src), "proto")
    protos = sorted(os.path.relpath(p, proto_dir)
                    for p in glob.glob(os.path.join(proto_dir, "analytics", "v1", "*.proto")))
    cmd = [PROTOC, "-I" + proto_dir] + ["-I" + d for d in INCLUDE_DIRS]
    cmd += ["--python_out=" + out_dir] + protos + EXTRA_PROTOS
    res = subprocess.run(cmd, cwd=proto_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         universal_newlines=True)
    if res.returncode:
        raise Failure("protoc failed:\n" + res.stdout)
    # Google's namespace package: never create google/__init__.py here.
    sys.path.insert(0, out_dir)
    importlib.invalidate_caches()
    for p in protos:
        importlib.import_module(p[:-len(".proto")].replace("/", ".") + "_pb2")
    for p in EXTRA_PROTOS:
        importlib.import_module(p[:-len(".proto")].replace("/", ".") + "_pb2")


class Ours:
    """The json_roundtrip process."""

    def __init__(self, binary):
        self.p = subprocess.Popen([binary], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def call(self, op, type_name, data, flags="-"):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.p.stdin.write(("%s %s %s %d\n" % (op, type_name, flags, len(data))).encode())
        self.p.stdin.write(data)
        self.p.stdin.flush()
        line = self.p.stdout.readline().decode()
        if not line:
            raise Failure("json_roundtrip died (exit %s)" % self.p.wait())
        status, n = line.split()
        body = self.p.stdout.read(int(n))
        return status == "ok", body

    def close(self):
        self.p.stdin.close()
        if self.p.wait():
            raise Failure("json_roundtrip exited with %d" % self.p.returncode)


def message_class(name):
    return symbol_database.Default().GetSymbol(name)


# ---- random messages ----

FLOAT_MAX = struct.unpack("<f", bytes.fromhex("ffff7f7f"))[0]
STRING_PIECES = ["a", "Z", "0", " ", "\"", "\\", "/", "\n", "\t", "\x01", "\x1f", "\x7f", "\u00e9",
                 "\u20ac", "\u2028", "\U0001d11e", "\uffff", "{", "}", "<", "&"]


def rand_string(rng):
    return "".join(rng.choice(STRING_PIECES) for _ in range(rng.randint(0, 8)))


def rand_double(rng):
    return rng.choice([
        1.5, -2.25, 0.1, 1e300, -1e-300, 5e-324, 2.0 ** 53 + 2, 123456789.123456789,
        1 / 3, float("nan"), float("inf"), float("-inf"), 1e21, 1e-7,
        rng.uniform(-1e6, 1e6), rng.random() * 10.0 ** rng.randint(-30, 30),
        struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0],
    ])


def to_float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def rand_float(rng):
    while True:
        v = rng.choice([
            0.1, -1.5, FLOAT_MAX, -FLOAT_MAX, 1e-45, 3.4e38, 16777217.0, float("nan"),
            float("inf"), rng.uniform(-1e6, 1e6), rng.random() * 10.0 ** rng.randint(-30, 30),
            struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0],
        ])
        v = to_float32(v) if math.isfinite(v) and abs(v) <= FLOAT_MAX else v
        if v == v and v == 0 and math.copysign(1, v) < 0:
            continue  # -0.0: protobuf-c treats it as the default
        return v


def rand_scalar(rng, field, proto3):
    t = field.type
    F = pbd.FieldDescriptor
    if t in (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32):
        return rng.choice([1, -1, 2 ** 31 - 1, -2 ** 31, rng.randint(-2 ** 31, 2 ** 31 - 1)])
    if t in (F.TYPE_UINT32, F.TYPE_FIXED32):
        return rng.choice([1, 2 ** 32 - 1, rng.randint(0, 2 ** 32 - 1)])
    if t in (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64):
        return rng.choice([1, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 53 + 1, -(2 ** 53) - 1,
                           rng.randint(-2 ** 63, 2 ** 63 - 1)])
    if t in (F.TYPE_UINT64, F.TYPE_FIXED64):
        return rng.choice([1, 2 ** 64 - 1, 2 ** 63, 2 ** 53 + 1, rng.randint(0, 2 ** 64 - 1)])
    if t == F.TYPE_DOUBLE:
        v = rand_double(rng)
        return 1.0 if v == 0 else v
    if t == F.TYPE_FLOAT:
        return rand_float(rng)
    if t == F.TYPE_BOOL:
        return rng.random() < 0.7
    if t == F.TYPE_STRING:
        return rand_string(rng)
    if t == F.TYPE_BYTES:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 10)))
    if t == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        if proto3 and rng.random() < 0.1:
            return rng.choice([77, -5, 2 ** 31 - 1])  # open enum: unknown numbers survive
        return rng.choice(numbers)
    raise Failure("unexpected field type %d" % t)


def rand_json_value(rng, depth):
    kinds = ["null", "number", "string", "bool"] + (["struct", "list"] if depth < 4 else [])
    k = rng.choice(kinds)
    if k == "null":
        return None
    if k == "number":
        v = rand_double(rng)
        return v if math.isfinite(v) else 2.5
    if k == "string":
        return rand_string(rng)
    if k == "bool":
        return rng.random() < 0.5
    if k == "struct":
        return {rand_string(rng): rand_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}
    return [rand_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]


def fill_wkt(rng, msg, depth):
    """Fills a well-known type; returns False if msg is not one."""
    name = msg.DESCRIPTOR.full_name
    if name == "google.protobuf.Timestamp":
        msg.seconds = rng.choice([0, -62135596800, 253402300799,
                                  rng.randint(-62135596800, 253402300799)])
        msg.nanos = rng.choice([0, rng.randint(0, 999) * 1000000, rng.randint(0, 999999) * 1000,
                                rng.randint(0, 999999999)])
        return True
    if name == "google.protobuf.Duration":
        s = rng.choice([0, 315576000000, rng.randint(0, 315576000000), rng.randint(0, 100)])
        n = rng.choice([0, rng.randint(0, 999) * 1000000, rng.randint(0, 999999999)])
        sign = rng.choice([1, -1])
        msg.seconds, msg.nanos = sign * s, sign * n
        return True
    if name == "google.protobuf.Value":
        msg.CopyFrom(json_format.ParseDict(rand_json_value(rng, depth), struct_pb2.Value()))
        return True
    if name == "google.protobuf.Struct":
        v = rand_json_value(rng, 3)
        msg.update(v if isinstance(v, dict) else {"k": v})
        return True
    if name == "google.protobuf.ListValue":
        msg.extend([rand_json_value(rng, depth + 1) for _ in range(rng.randint(0, 3))])
        return True
    if name == "google.protobuf.Any":
        payload = rng.choice(ANY_PAYLOADS) if depth < 4 else "google.protobuf.Empty"
        inner = message_class(payload)()
        fill(rng, inner, depth + 1)
        msg.Pack(inner)
        return True
    return False


def fill(rng, msg, depth=0):
    if fill_wkt(rng, msg, depth):
        return msg
    d = msg.DESCRIPTOR
    proto3 = d.file.syntax == "proto3"
    for f in d.fields:
        required = f.label == f.LABEL_REQUIRED
        if not required and rng.random() < (0.35 if depth > 2 else 0.6):
            continue
        if f.containing_oneof is not None and msg.WhichOneof(f.containing_oneof.name):
            continue
        F = pbd.FieldDescriptor
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            kf, vf = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            for _ in range(rng.randint(0, 3)):
                key = rand_scalar(rng, kf, proto3)
                if vf.type == F.TYPE_MESSAGE:
                    fill(rng, target[key], depth + 1)
                else:
                    target[key] = rand_scalar(rng, vf, proto3)
        elif f.label == f.LABEL_REPEATED:
            target = getattr(msg, f.name)
            for _ in range(rng.randint(0, 3 if depth < 3 else 1)):
                if f.type == F.TYPE_MESSAGE:
                    if depth < 5:
                        fill(rng, target.add(), depth + 1)
                else:
                    target.append(rand_scalar(rng, f, proto3))
        elif f.type == F.TYPE_MESSAGE:
            if depth < 5 or required:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                fill(rng, sub, depth + 1)
        elif f.type == F.TYPE_GROUP:
            continue
        else:
            setattr(msg, f.name, rand_scalar(rng, f, proto3))
    return msg


# ---- comparison ----

def same(a, b, path="$"):
    """Raises Failure unless parsed JSON values a and b mean the same."""
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            raise Failure("%s: keys differ: %s vs %s" % (path, sorted(a), sorted(b)))
        for k in a:
            same(a[k], b[k], "%s.%s" % (path, k))
        return
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise Failure("%s: lengths differ: %d vs %d" % (path, len(a), len(b)))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (path, i))
        return
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        if a is not b:
            raise Failure("%s: %r vs %r" % (path, a, b))
        return
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if a == b:
            return
        # Floats: both sides print some shortest form that reads back as the
        # same float32, not necessarily the same decimal.
        # (Float denormals have so few digits that the forms differ widely.)
        if (isinstance(a, float) or isinstance(b, float)) and to_float32(a) == to_float32(b) \
                and (abs(a - b) <= 1e-6 * max(abs(a), abs(b)) or max(abs(a), abs(b)) < 1.2e-38):
            return
        raise Failure("%s: %r vs %r" % (path, a, b))
    if type(a) != type(b) or a != b:
        raise Failure("%s: %r vs %r" % (path, a, b))


def drop_nulls_missing(ours, theirs):
    """With emit_defaults we write unset messages as null; json_format's
    including_default_value_fields leaves them out."""
    if isinstance(ours, dict) and isinstance(theirs, dict):
        for k in list(ours):
            if ours[k] is None and k not in theirs:
                del ours[k]
            elif k in theirs:
                drop_nulls_missing(ours[k], theirs[k])
    elif isinstance(ours, list) and isinstance(theirs, list):
        for x, y in zip(ours, theirs):
            drop_nulls_missing(x, y)


def canon(msg):
    """A message as a comparable JSON value (Any payloads unpacked)."""
    return json.loads(json_format.MessageToJson(msg, preserving_proto_field_name=True))


def loads(data):
    return json.loads(data if isinstance(data, str) else data.decode("utf-8"))


# ---- the checks ----

def check_message(ours, name, msg):
    cls = type(msg)
    binary = msg.SerializeToString()
    theirs_text = json_format.MessageToJson(msg)

    ok, our_json = ours.call("encode", name, binary)
    if not ok:
        raise Failure("our encoder failed: %s" % our_json.decode())
    same(loads(our_json), loads(theirs_text))

    ok, j = ours.call("encode", name, binary, "p")
    if not ok:
        raise Failure("our encoder (proto names) failed: %s" % j.decode())
    same(loads(j), loads(json_format.MessageToJson(msg, preserving_proto_field_name=True)))

    ok, j = ours.call("encode", name, binary, "d")
    if not ok:
        raise Failure("our encoder (defaults) failed: %s" % j.decode())
    with_defaults = loads(j)
    theirs_defaults = loads(json_format.MessageToJson(msg, including_default_value_fields=True))
    drop_nulls_missing(with_defaults, theirs_defaults)
    same(with_defaults, theirs_defaults)

    # json_format's JSON through our decoder.
    ok, back = ours.call("decode", name, theirs_text)
    if not ok:
        raise Failure("our decoder rejected json_format's JSON: %s" % back.decode())
    parsed = cls()
    parsed.ParseFromString(back)
    same(canon(parsed), canon(msg))

    # Our JSON (and, in proto3 where it means the same, the one with
    # defaults) through json_format's parser.
    texts = [our_json]
    if msg.DESCRIPTOR.file.syntax == "proto3":
        texts.append(j)
    for text in texts:
        again = json_format.Parse(text.decode("utf-8"), cls())
        same(canon(again), canon(msg))


def check_same_meaning(ours, name, text):
    cls = message_class(name)
    theirs = json_format.Parse(text, cls())
    ok, back = ours.call("decode", name, text)
    if not ok:
        raise Failure("we reject what json_format accepts: %s" % back.decode())
    parsed = cls()
    parsed.ParseFromString(back)
    same(canon(parsed), canon(theirs))


def check_both_reject(ours, name, text):
    cls = message_class(name)
    try:
        json_format.Parse(text, cls())
    except (json_format.ParseError, ValueError, TypeError):
        pass
    else:
        raise Failure("json_format accepts it (the case is wrong)")
    ok, back = ours.call("decode", name, text)
    if ok:
        raise Failure("we accept what json_format rejects")


def main(argv):
    if len(argv) != 3:
        sys.stderr.write(__doc__)
        return 2
    binary, src = argv[1], argv[2]
    seed = int(os.environ.get("JSON_ORACLE_SEED", random.randrange(1 << 32)))
    count = int(os.environ.get("JSON_ORACLE_COUNT", "150"))
    print("json_oracle: seed %d (JSON_ORACLE_SEED=%d to repeat), %d messages per type"
          % (seed, seed, count))
    rng = random.Random(seed)
    tmp = tempfile.mkdtemp(prefix="ana-json-oracle-")
    failures = 0
    checked = 0
    try:
        generate_stubs(src, tmp)
        ours = Ours(binary)
        for name in TYPES:
            cls = message_class(name)
            for i in range(count):
                msg = fill(rng, cls())
                checked += 1
                try:
                    check_message(ours, name, msg)
                except Failure as e:
                    failures += 1
                    if failures <= 20:
                        print("FAIL %s #%d: %s\n  message: %s" % (name, i, e, json_format.MessageToJson(
                            msg, indent=None)))
        for name, text in SAME_MEANING:
            checked += 1
            try:
                check_same_meaning(ours, name, text)
            except Failure as e:
                failures += 1
                print("FAIL same meaning %s %s: %s" % (name, text, e))
        for name, text in BOTH_REJECT:
            checked += 1
            try:
                check_both_reject(ours, name, text)
            except Failure as e:
                failures += 1
                print("FAIL reject %s %s: %s" % (name, text, e))
        ours.close()
    except Failure as e:
        print("json_oracle: %s" % e)
        return 1
    finally:
        shutil.rmtree(tmp, True)
    print("json_oracle: %d checks, %d failures" % (checked, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
