#!/usr/bin/env python3
"""A gRPC client for pachd's auth API that shares no code with pachagent.

It uses grpcio's generic unary calls with protobuf bytes encoded and decoded by hand (no generated code,
no .proto files), so a test that passes with it shows wire compatibility rather than agreement between two
halves of the same codebase.

Usage:
    python3 raw_grpc_client.py --check
        exit 0 when grpcio is importable, 3 (with instructions on stderr) when it is not.
    python3 raw_grpc_client.py HOST:PORT < calls.json
        calls.json is a JSON list of {"method": "/auth_v2.API/WhoAmI", "request": {...},
        "metadata": [["authn-token", "..."], ...]}. The calls run in order; stdout gets one JSON list with
        {"code": "OK" | "UNAUTHENTICATED" | ..., "details": "...", "response": {...} | null} per call.
"""

import json
import sys

MISSING_GRPCIO = 3

# Request fields per method: name -> (field number, type). proto3 omits fields holding their default value.
REQUESTS = {
    "/auth_v2.API/Activate": {"root_token": (1, "string")},
    "/auth_v2.API/Authenticate": {"oidc_state": (1, "string"), "id_token": (2, "string")},
    "/auth_v2.API/WhoAmI": {},
    "/auth_v2.API/GetOIDCLogin": {},
    "/auth_v2.API/GetRobotToken": {"robot": (1, "string"), "ttl": (2, "int64")},
    "/auth_v2.API/RevokeAuthToken": {"token": (1, "string")},
    "/grpc.health.v1.Health/Check": {"service": (1, "string")},
}

# Response fields per method: field number -> (name, type), with the proto3 default for absent fields.
RESPONSES = {
    "/auth_v2.API/Activate": {1: ("pach_token", "string")},
    "/auth_v2.API/Authenticate": {1: ("pach_token", "string")},
    "/auth_v2.API/WhoAmI": {1: ("username", "string"), 2: ("expiration", "timestamp")},
    "/auth_v2.API/GetOIDCLogin": {1: ("login_url", "string"), 2: ("state", "string")},
    "/auth_v2.API/GetRobotToken": {1: ("token", "string")},
    "/auth_v2.API/RevokeAuthToken": {1: ("number", "int64")},
    "/grpc.health.v1.Health/Check": {1: ("status", "enum")},
}

DEFAULTS = {"string": "", "int64": 0, "enum": 0, "timestamp": None}


def encode_varint(value):
    if value < 0:
        value += 1 << 64  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def decode_varint(buf, pos):
    result, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_request(method, fields):
    schema = REQUESTS[method]
    out = bytearray()
    for name, value in fields.items():
        number, kind = schema[name]
        if kind == "string":
            if value == "":
                continue
            data = value.encode("utf-8")
            out += encode_varint(number << 3 | 2) + encode_varint(len(data)) + data
        elif kind == "int64":
            if value == 0:
                continue
            out += encode_varint(number << 3 | 0) + encode_varint(value)
        else:
            raise ValueError("unknown request field type " + kind)
    return bytes(out)


def decode_fields(buf):
    """Wire format -> {field number: [raw values]} (varints as int, length-delimited as bytes)."""
    fields, pos = {}, 0
    while pos < len(buf):
        key, pos = decode_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = decode_varint(buf, pos)
        elif wire_type == 2:
            length, pos = decode_varint(buf, pos)
            value, pos = buf[pos:pos + length], pos + length
        elif wire_type == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire_type == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError("unsupported wire type %d" % wire_type)
        fields.setdefault(number, []).append(value)
    return fields


def as_int64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_response(method, buf):
    raw = decode_fields(buf)
    out = {}
    for number, (name, kind) in RESPONSES[method].items():
        if number not in raw:
            out[name] = DEFAULTS[kind]
            continue
        value = raw[number][-1]  # proto3: the last occurrence wins
        if kind == "string":
            out[name] = value.decode("utf-8")
        elif kind in ("int64", "enum"):
            out[name] = as_int64(value)
        elif kind == "timestamp":
            ts = decode_fields(value)
            out[name] = {
                "seconds": as_int64(ts.get(1, [0])[-1]),
                "nanos": as_int64(ts.get(2, [0])[-1]),
            }
    return out


def import_grpc():
    try:
        import grpc  # noqa: PLC0415 - imported late so --check can explain a missing module
    except ImportError as err:
        sys.stderr.write(
            "raw_grpc_client.py needs the Python package grpcio (%s).\n"
            "Install it with:  python3 -m pip install grpcio\n" % err
        )
        sys.exit(MISSING_GRPCIO)
    return grpc


def main(argv):
    if len(argv) == 2 and argv[1] == "--check":
        grpc = import_grpc()
        print(json.dumps({"grpcio": grpc.__version__}))
        return 0
    if len(argv) != 2:
        sys.stderr.write(__doc__)
        return 2
    grpc = import_grpc()
    target = argv[1]
    for scheme in ("grpc://", "http://"):
        if target.startswith(scheme):
            target = target[len(scheme):]
    calls = json.load(sys.stdin)
    results = []
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        for call in calls:
            method = call["method"]
            # No serializers: grpcio sends and returns the bytes untouched.
            stub = channel.unary_unary(method)
            request = encode_request(method, call.get("request", {}))
            metadata = [tuple(pair) for pair in call.get("metadata", [])]
            try:
                reply = stub(request, metadata=metadata, timeout=20)
                results.append({"code": "OK", "details": "", "response": decode_response(method, reply)})
            except grpc.RpcError as err:
                results.append({"code": err.code().name, "details": err.details(), "response": None})
    json.dump(results, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
