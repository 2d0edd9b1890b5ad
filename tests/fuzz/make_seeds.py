#!/usr/bin/python3
"""Regenerates the derived seeds of the scheduler fuzzers.

corpus/fuzz_scheduler/ holds hand-written SchedulerScript text seeds
(*.textproto, kept) and seeds derived here from hostile/requests.textproto:
one text seed per Scheduler case (hostile-*.textproto) and the same calls
in the binary record format (records-*.bin). corpus/fuzz_worker_gateway/
gets a binary GatewayScript (*.bin) beside each text seed. Run it after
editing either; needs protoc and python3-protobuf (Debian's).

    tests/fuzz/make_seeds.py
"""
import glob
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MAX_CALLS = 8  # kMaxCalls in fuzz_scheduler.cc


def main():
    with tempfile.TemporaryDirectory() as gen:
        subprocess.run(
            ["protoc", "-I" + os.path.join(ROOT, "proto"), "-I" + ROOT,
             "--python_out=" + gen,
             *glob.glob(os.path.join(ROOT, "proto/halftime/v1/*.proto")),
             os.path.join(ROOT, "tests/fuzz/fuzz_input.proto")],
            check=True)
        sys.path.insert(0, gen)
        from google.protobuf import text_format
        from tests.fuzz import fuzz_input_pb2 as fi

        cases = fi.HostileCases()
        with open(os.path.join(HERE, "hostile/requests.textproto")) as f:
            text_format.Parse(f.read(), cases)

        out = os.path.join(HERE, "corpus/fuzz_scheduler")
        for old in glob.glob(os.path.join(out, "hostile-*.textproto")) + \
                glob.glob(os.path.join(out, "records-*.bin")):
            os.remove(old)
        records = []
        for case in cases.cases:
            if not case.HasField("call") or case.HasField("grow"):
                continue
            script = fi.SchedulerScript()
            script.calls.add().CopyFrom(case.call)
            with open(os.path.join(out, f"hostile-{case.name}.textproto"),
                      "w") as f:
                f.write(f"# hostile/requests.textproto: {case.name}\n")
                f.write(text_format.MessageToString(script, as_utf8=False))
            kind = case.call.WhichOneof("request")
            if kind == "raw":
                method, body = case.call.raw.method, case.call.raw.bytes
            else:
                method = [f.name for f in fi.SchedulerCall.DESCRIPTOR
                          .oneofs_by_name["request"].fields].index(kind)
                body = getattr(case.call, kind).SerializeToString()
            records.append(struct.pack("<BH", method, len(body)) + body)
        for i in range(0, len(records), MAX_CALLS):
            name = os.path.join(out, f"records-{i // MAX_CALLS:02d}.bin")
            with open(name, "wb") as f:
                f.write(b"".join(records[i:i + MAX_CALLS]))

        gateway = os.path.join(HERE, "corpus/fuzz_worker_gateway")
        for seed in sorted(glob.glob(os.path.join(gateway, "*.textproto"))):
            script = fi.GatewayScript()
            with open(seed) as f:
                text_format.Parse(f.read(), script)
            with open(seed[:-len(".textproto")] + ".bin", "wb") as f:
                f.write(script.SerializeToString())


if __name__ == "__main__":
    main()
