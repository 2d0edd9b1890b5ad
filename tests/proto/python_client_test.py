"""Checks the v1 API from Python: stubs generate and import, messages build,
and every service, rpc, message, field, enum and value carries a comment."""
import argparse
import glob
import os
import subprocess
import sys
import unittest

ARGS = None


def generate():
    os.makedirs(ARGS.out, exist_ok=True)
    protos = sorted(glob.glob(os.path.join(ARGS.proto_root, "halftime/v1/*.proto")))
    rel = [os.path.relpath(p, ARGS.proto_root) for p in protos]
    subprocess.run(
        [ARGS.protoc, f"-I{ARGS.proto_root}", f"--python_out={ARGS.out}",
         f"--grpc_python_out={ARGS.out}",
         f"--plugin=protoc-gen-grpc_python={ARGS.grpc_python_plugin}", *rel],
        check=True)
    descriptor_set = os.path.join(ARGS.out, "api.pb")
    subprocess.run(
        [ARGS.protoc, f"-I{ARGS.proto_root}", "--include_source_info",
         f"--descriptor_set_out={descriptor_set}", *rel], check=True)
    return descriptor_set


class PythonClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.descriptor_set = generate()
        sys.path.insert(0, ARGS.out)

    def test_stubs_import_and_messages_build(self):
        import grpc
        from halftime.v1 import job_spec_pb2, scheduler_pb2, scheduler_pb2_grpc
        from halftime.v1 import worker_gateway_pb2_grpc

        spec = job_spec_pb2.JobSpec(name="py", steps=10,
                                    precision=job_spec_pb2.PRECISION_BF16_MIXED)
        spec.model.builtin = "gpt-nano"
        spec.data.kind = job_spec_pb2.DATA_KIND_SYNTHETIC
        self.assertFalse(spec.HasField("batch_size"),
                         "optional scalars tell 'not given' from zero")
        request = scheduler_pb2.SubmitJobRequest(spec=spec, idempotency_key="k1")
        again = scheduler_pb2.SubmitJobRequest.FromString(request.SerializeToString())
        self.assertEqual(again.spec.model.builtin, "gpt-nano")
        self.assertEqual(again.spec.precision, job_spec_pb2.PRECISION_BF16_MIXED)

        channel = grpc.insecure_channel("127.0.0.1:1")
        stub = scheduler_pb2_grpc.SchedulerStub(channel)
        for rpc in ("SubmitJob", "GetJob", "ListJobs", "CancelJob", "WatchJob",
                    "ListWorkers", "GetSavings"):
            self.assertTrue(hasattr(stub, rpc), rpc)
        gateway = worker_gateway_pb2_grpc.WorkerGatewayStub(channel)
        for rpc in ("Connect", "UploadCheckpoint", "DownloadCheckpoint"):
            self.assertTrue(hasattr(gateway, rpc), rpc)
        channel.close()

    def test_every_declaration_has_a_comment(self):
        from google.protobuf import descriptor_pb2
        fds = descriptor_pb2.FileDescriptorSet()
        with open(self.descriptor_set, "rb") as f:
            fds.ParseFromString(f.read())
        missing = []
        for file in fds.file:
            comments = {tuple(loc.path): loc.leading_comments.strip()
                        for loc in file.source_code_info.location}

            def need(path, what):
                if not comments.get(tuple(path)):
                    missing.append(f"{file.name}: {what}")

            def walk_message(msg, path, prefix):
                need(path, prefix + msg.name)
                for i, field in enumerate(msg.field):
                    # oneof members are documented like fields
                    need(path + [2, i], f"{prefix}{msg.name}.{field.name}")
                for i, nested in enumerate(msg.nested_type):
                    walk_message(nested, path + [3, i], f"{prefix}{msg.name}.")

            for i, msg in enumerate(file.message_type):
                walk_message(msg, [4, i], "")
            for i, enum in enumerate(file.enum_type):
                need([5, i], enum.name)
                for j, value in enumerate(enum.value):
                    if not value.name.endswith("_UNSPECIFIED"):
                        need([5, i, 2, j], f"{enum.name}.{value.name}")
                self.assertTrue(enum.value[0].name.endswith("_UNSPECIFIED")
                                and enum.value[0].number == 0, enum.name)
            for i, service in enumerate(file.service):
                need([6, i], service.name)
                for j, method in enumerate(service.method):
                    need([6, i, 2, j], f"{service.name}.{method.name}")
        self.assertEqual(missing, [], "undocumented declarations")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--protoc", required=True)
    parser.add_argument("--grpc-python-plugin", required=True)
    parser.add_argument("--proto-root", required=True)
    parser.add_argument("--out", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest)
