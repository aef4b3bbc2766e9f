"""Hand-built Protobuf wire data for the attack tests: what a client can send
that no generated serializer would produce (5,000-deep nesting, NUL bytes in
strings), and a raw-bytes unary call over grpcio."""

import grpc

VARINT, LEN = 0, 2


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload, wire=LEN):
    """One field: a bytes/str/message payload (LEN) or an int (VARINT)."""
    if wire == VARINT:
        return varint(num << 3) + varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(num << 3 | LEN) + varint(len(payload)) + payload


def deep_value(levels):
    """A google.protobuf.Value holding list_value inside list_value `levels`
    times (two messages per level: Value.list_value, ListValue.values)."""
    inner = field(3, "leaf")  # Value.string_value
    for _ in range(levels):
        inner = field(6, field(1, inner))  # Value.list_value{values: inner}
    return inner


def struct_of(*entries):
    """A google.protobuf.Struct from (key, Value bytes) pairs."""
    return b"".join(field(1, field(1, k) + field(2, v)) for k, v in entries)


def string_value(s):
    return field(3, s)


def event(name="purchase", session=None, properties=None):
    """An analytics.v1.Event with event_type "track"."""
    out = b""
    if session is not None:
        out += field(3, session)
    out += field(4, "track") + field(5, name)
    if properties is not None:
        out += field(7, properties)
    return out


def unary_raw(channel, method, body, timeout=10):
    """Calls `method` with `body` as the serialized request; returns the raw
    reply bytes or raises grpc.RpcError."""
    call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
    return call(body, timeout=timeout)


def status_details(err):
    """The grpc-status-details-bin trailer of an RpcError (b"" if none)."""
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return value
    return b""
