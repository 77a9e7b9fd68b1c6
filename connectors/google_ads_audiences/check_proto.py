"""Parses Google Ads REST request bodies strictly as the proto request messages of the
Google Ads API, for the connector's tests (src/tests.rs runs it).

    python3 check_proto.py PROTOS_DIR < requests.jsonl > verdicts.jsonl

Each input line is {"message": "<name in google.ads.googleads.v25.services>", "body": {...}};
each output line is {"ok": true} or {"ok": false, "error": "..."}. The protos are compiled
with grpc_tools.protoc (PyPI grpcio-tools, installed by .ci/run), the body is parsed with
protobuf's json_format.Parse (unknown fields and bad enum values are refused), then every
field marked REQUIRED by `google.api.field_behavior` (which parsing does not enforce) is
checked, in the message and every message inside it.
"""

import json
import os
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_tools import protoc

ROOT = "google/ads/googleads/v25/services/offline_user_data_job_service.proto"
PACKAGE = "google.ads.googleads.v25.services."
FIELD_BEHAVIOR = 1052  # extend google.protobuf.FieldOptions { repeated FieldBehavior field_behavior = 1052; }
REQUIRED = 2


def varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, i


def behaviors(options_bytes):
    """The field_behavior values in a FieldOptions message's bytes."""
    out, i = [], 0
    while i < len(options_bytes):
        key, i = varint(options_bytes, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = varint(options_bytes, i)
            if number == FIELD_BEHAVIOR:
                out.append(v)
        elif wire == 2:
            n, i = varint(options_bytes, i)
            chunk = options_bytes[i : i + n]
            i += n
            if number == FIELD_BEHAVIOR:
                j = 0
                while j < len(chunk):
                    v, j = varint(chunk, j)
                    out.append(v)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError("unexpected wire type %d in field options" % wire)
    return out


def load(protos):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ads.pb")
        include = os.path.join(os.path.dirname(protoc.__file__), "_proto")
        code = protoc.main(["protoc", "-I", protos, "-I", include, "--include_imports", "--descriptor_set_out=" + out, ROOT])
        if code != 0:
            raise SystemExit("protoc failed on %s" % protos)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    required = set()
    for file in fds.file:
        pool.Add(file)

        def walk(prefix, messages):
            for m in messages:
                name = prefix + m.name
                for field in m.field:
                    if REQUIRED in behaviors(field.options.SerializeToString()):
                        required.add(name + "." + field.name)
                walk(name + ".", m.nested_type)

        walk((file.package + ".") if file.package else "", file.message_type)
    return pool, required


def missing(msg, required, path):
    for field in msg.DESCRIPTOR.fields:
        full = msg.DESCRIPTOR.full_name + "." + field.name
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
        if repeated:
            present = len(getattr(msg, field.name)) > 0
        elif field.has_presence:
            present = msg.HasField(field.name)
        else:
            present = getattr(msg, field.name) != field.default_value
        if full in required and not present:
            return "%s.%s is REQUIRED" % (path, field.name)
        if field.message_type is None or not present:
            continue
        if repeated:
            if field.message_type.GetOptions().map_entry:
                continue
            for k, item in enumerate(getattr(msg, field.name)):
                err = missing(item, required, "%s.%s[%d]" % (path, field.name, k))
                if err:
                    return err
        else:
            err = missing(getattr(msg, field.name), required, path + "." + field.name)
            if err:
                return err
    return None


def main():
    pool, required = load(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        try:
            desc = pool.FindMessageTypeByName(PACKAGE + req["message"])
            msg = message_factory.GetMessageClass(desc)()
            json_format.Parse(json.dumps(req["body"]), msg)
            err = missing(msg, required, req["message"])
            verdict = {"ok": err is None} if err is None else {"ok": False, "error": err}
        except Exception as e:  # a refusal of the parser: the body is wrong
            verdict = {"ok": False, "error": str(e)}
        print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
