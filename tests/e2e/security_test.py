"""Security end to end: TLS, mutual TLS and bearer tokens with real
halftime-scheduler, halftime-worker (and halftime-train) and halftime CLI
processes on loopback.

The certificates are made here with Python's `cryptography`: a CA with a
server certificate for 127.0.0.1/localhost and a client certificate, an
unrelated CA with its own server and client certificates, and an expired
server and an expired client certificate signed by the good CA.

Run by CTest (label e2e); by hand:
  python3 tests/e2e/security_test.py --build-dir build [-k name] [--keep]
"""
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

import cluster
from cluster import BIN, Cluster, Process, wait_for

ARGS = None

# gRPC core's own log lines ("E1129 12:00:00.000 123 file.cc:10] ...").
GRPC_LOG_LINE = re.compile(r"^[EWID]\d{4} \d\d:\d\d:\d\d", re.M)


def tiny_spec(name):
    """A job of a few seconds on one CPU thread."""
    return cluster.nano_spec(name, steps=5, checkpoint_every=2, max_restarts=0)


class Pki:
    """CAs and certificates as PEM files in `directory`. Each certificate is a
    (cert, key) pair of paths; CAs are paths."""

    def __init__(self, directory):
        from cryptography.x509.oid import ExtendedKeyUsageOID
        os.makedirs(directory, exist_ok=True)
        self.dir = directory
        now = datetime.datetime.now(datetime.timezone.utc)
        valid = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=30))
        expired = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
        good = self._ca("ca", now)
        other = self._ca("other-ca", now)
        self.ca, self.other_ca = good[2], other[2]
        self.server = self._leaf("server", good, valid, server)
        self.client = self._leaf("client", good, valid, client)
        self.other_server = self._leaf("other-server", other, valid, server)
        self.other_client = self._leaf("other-client", other, valid, client)
        self.expired_server = self._leaf("expired-server", good, expired, server)
        self.expired_client = self._leaf("expired-client", good, expired, client)

    @staticmethod
    def _key():
        from cryptography.hazmat.primitives.asymmetric import ec
        return ec.generate_private_key(ec.SECP256R1())

    def _write(self, name, data, private=False):
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        if private:
            os.chmod(path, 0o600)
        return path

    def _ca(self, name, now):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID
        key = self._key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                                f"halftime test {name}")])
        cert = (x509.CertificateBuilder()
                .subject_name(subject).issuer_name(subject)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=60))
                .not_valid_after(now + datetime.timedelta(days=60))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                               critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        path = self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        return key, subject, path

    def _leaf(self, name, ca, validity, usage):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        ca_key, ca_name, _ = ca
        key = self._key()
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(
                       NameOID.COMMON_NAME, f"halftime test {name}")]))
                   .issuer_name(ca_name)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(validity[0]).not_valid_after(validity[1])
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.DNSName("localhost")]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
        key_path = self._write(f"{name}-key.pem", key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()), private=True)
        return cert_path, key_path


def tls_flags(ca=None, cert=None):
    """--tls-ca/--tls-cert/--tls-key flags of a client or worker."""
    flags = []
    if ca:
        flags += ["--tls-ca", ca]
    if cert:
        flags += ["--tls-cert", cert[0], "--tls-key", cert[1]]
    return flags


def read(path):
    with open(path, "rb") as f:
        return f.read()


class SecureCluster(Cluster):
    """A Cluster whose scheduler may serve (m)TLS and check tokens; the test's
    own gRPC stub then uses the good client certificate and `user_token`."""

    def __init__(self, name, pki, scheduler_args=(), user_token=None):
        self.pki = pki
        self.user_token = user_token
        super().__init__(name, scheduler_args=scheduler_args)

    def start_scheduler(self):
        super().start_scheduler()
        if "--tls-cert" not in self.scheduler_args:
            return
        import grpc
        from halftime.v1 import scheduler_pb2_grpc
        credentials = grpc.ssl_channel_credentials(
            read(self.pki.ca), read(self.pki.client[1]), read(self.pki.client[0]))
        if self.user_token:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(self.user_token))
        self.channel.close()
        self.channel = grpc.secure_channel(self.address, credentials)
        self.stub = scheduler_pb2_grpc.SchedulerStub(self.channel)

    def start_unregistered_worker(self, name, extra):
        """A worker that is not expected to register: started, not waited for."""
        p = Process(
            [BIN["worker"], "--scheduler", self.address, "--metrics", "127.0.0.1:0",
             "--name", name, "--slots", "1", "--threads-per-job", "1",
             "--data-root", self.data_root, "--work-dir", os.path.join(self.dir, name),
             "--out-root", os.path.join(self.dir, "out"), "--trainer", BIN["train"],
             "--stop-grace", "5", *extra],
            os.path.join(self.dir, f"{name}.log"))
        self.workers[name] = p
        return p


class SecurityTestCase(unittest.TestCase):
    """Certificates and secrets in a temporary directory of their own (not
    under the cluster's, whose files are searched for leaked tokens)."""

    def setUp(self):
        self.secrets_dir = tempfile.mkdtemp(prefix="halftime-e2e-secrets-")
        self.pki = Pki(os.path.join(self.secrets_dir, "pki"))
        self.clusters = []

    def tearDown(self):
        keep = cluster.finish(self, self.clusters, ARGS.keep)
        if keep:
            print(f"certificates kept in {self.secrets_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.secrets_dir, ignore_errors=True)

    def cluster(self, name, scheduler_args=(), user_token=None):
        c = SecureCluster(name, self.pki, scheduler_args, user_token)
        self.clusters.append(c)
        return c

    def mtls_args(self, server=None):
        cert, key = server or self.pki.server
        return ["--tls-cert", cert, "--tls-key", key, "--tls-ca", self.pki.ca]

    def secret_file(self, name, text):
        path = os.path.join(self.secrets_dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def assert_cli_refused(self, result, *needles):
        """Exit code 1 and one sentence on stderr naming the cause: no stack
        trace, no gRPC log lines."""
        err = result.stderr
        self.assertEqual(result.returncode, 1, err)
        self.assertEqual(result.stdout, "")
        self.assertNotIn("Traceback", err)
        self.assertIsNone(GRPC_LOG_LINE.search(err), f"gRPC log lines: {err!r}")
        lines = err.strip().splitlines()
        self.assertEqual(len(lines), 1, err)
        self.assertTrue(lines[0].startswith("halftime: "), err)
        for needle in needles:
            self.assertIn(needle, lines[0])
        return lines[0]

    def assert_no_token_in_files(self, directory, tokens):
        """No file under `directory` (logs, trainer logs, the database,
        outputs) holds any of `tokens`."""
        searched = 0
        for root, _, files in os.walk(directory):
            for name in files:
                data = read(os.path.join(root, name))
                searched += 1
                for token in tokens:
                    self.assertNotIn(token.encode(), data,
                                     f"a token is written to {root}/{name}")
        self.assertGreater(searched, 0)


class MutualTlsTest(SecurityTestCase):
    def test_cli_needs_the_right_ca_and_a_valid_client_certificate(self):
        import grpc
        from halftime.v1 import scheduler_pb2, scheduler_pb2_grpc
        pki = self.pki
        c = self.cluster("mtls-cli", self.mtls_args())
        good = tls_flags(pki.ca, pki.client)

        listed = c.cli(*good, "list")
        self.assertEqual(listed.returncode, 0, listed.stderr)
        self.assertIn("no jobs", listed.stdout + listed.stderr)
        spec_path = os.path.join(c.data_root, "job.yaml")
        with open(spec_path, "w") as f:
            f.write(tiny_spec("over-mtls"))
        submitted = c.cli(*good, "submit", spec_path, "-o", "json")
        self.assertEqual(submitted.returncode, 0, submitted.stderr)
        job_id = json.loads(submitted.stdout)["job"]["id"]
        self.assertEqual(c.job(job_id).spec.name, "over-mtls", "the test's TLS stub too")

        # The client trusts another CA: the scheduler's certificate fails.
        self.assert_cli_refused(c.cli(*tls_flags(pki.other_ca, pki.client), "list"),
                                "TLS handshake failed",
                                "the scheduler's certificate did not verify", "--tls-ca")
        # Client certificates the scheduler refuses: another CA's, an expired
        # one, none at all.
        for cert in (pki.other_client, pki.expired_client):
            self.assert_cli_refused(
                c.cli(*tls_flags(pki.ca, cert), "list"),
                "closed the connection during the TLS handshake",
                "refused the client certificate", "--tls-cert")
        self.assert_cli_refused(c.cli(*tls_flags(pki.ca), "list"),
                                "requires a client certificate")
        # Plaintext against TLS: the CLI and a plain gRPC client fail cleanly.
        self.assert_cli_refused(c.cli("list"), "plaintext client", "--tls-ca")
        with grpc.insecure_channel(c.address) as plain:
            began = time.time()
            with self.assertRaises(grpc.RpcError) as raised:
                scheduler_pb2_grpc.SchedulerStub(plain).ListJobs(
                    scheduler_pb2.ListJobsRequest(), timeout=20)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
            self.assertLess(time.time() - began, 15, "fails, does not hang")
        # Unusable files are named before any call is made (exit 2).
        mismatched = c.cli("--tls-ca", pki.ca, "--tls-cert", pki.client[0],
                           "--tls-key", pki.other_client[1], "list")
        self.assertEqual(mismatched.returncode, 2, mismatched.stderr)
        self.assertIn(f"--tls-key {pki.other_client[1]}: does not match the certificate",
                      mismatched.stderr)
        not_pem = c.cli("--tls-ca", spec_path, "list")
        self.assertEqual(not_pem.returncode, 2, not_pem.stderr)
        self.assertIn(f"--tls-ca {spec_path}: holds no PEM certificate", not_pem.stderr)

        # The scheduler shrugged all of that off.
        self.assertIsNone(c.scheduler.proc.poll())
        again = c.cli(*good, "get", job_id)
        self.assertEqual(again.returncode, 0, again.stderr)

        # A scheduler serving an expired certificate is refused by the CLI.
        expired = self.cluster("mtls-expired-server", self.mtls_args(pki.expired_server))
        self.assert_cli_refused(expired.cli(*good, "list"),
                                "the scheduler's certificate did not verify")
        # ... and one with a certificate of another CA too.
        stranger = self.cluster("mtls-other-server", self.mtls_args(pki.other_server))
        self.assert_cli_refused(stranger.cli(*good, "list"),
                                "the scheduler's certificate did not verify")

    def test_scheduler_names_unusable_tls_files(self):
        pki = self.pki
        data_dir = os.path.join(self.secrets_dir, "data")
        not_pem = self.secret_file("not.pem", "not a certificate\n")
        for flags, message in (
                (["--tls-cert", not_pem, "--tls-key", pki.server[1]],
                 f"--tls-cert {not_pem}: holds no PEM certificate"),
                (["--tls-cert", pki.server[0], "--tls-key", pki.client[1]],
                 f"--tls-key {pki.client[1]}: does not match the certificate in "
                 f"--tls-cert {pki.server[0]}"),
                (["--tls-cert", pki.server[0], "--tls-key", pki.server[0]],
                 f"--tls-key {pki.server[0]}: holds no unencrypted PEM private key"),
                (self.mtls_args()[:4] + ["--tls-ca", not_pem],
                 f"--tls-ca {not_pem}: holds no PEM certificate")):
            result = subprocess.run(
                [BIN["scheduler"], "--listen", "127.0.0.1:0", "--metrics", "",
                 "--data-dir", data_dir, *flags],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn(message, result.stderr)
            self.assertNotIn("cannot listen", result.stderr)

    def test_worker_over_mtls_runs_a_job_and_a_wrong_ca_worker_never_registers(self):
        from halftime.v1 import job_pb2
        pki = self.pki
        c = self.cluster("mtls-worker", self.mtls_args())
        intruder = c.start_unregistered_worker(
            "intruder", tls_flags(pki.ca, pki.other_client))
        c.start_worker("w1", extra=tls_flags(pki.ca, pki.client))
        job_id = c.submit(tiny_spec("worker-over-mtls"))
        job = c.wait_state(job_id, ["succeeded", "failed"], timeout=180)
        self.assertEqual(job.state, job_pb2.JOB_STATE_SUCCEEDED, job.failure_reason)
        self.assertEqual(job.worker, "w1")

        refused = "cannot register with the scheduler: the scheduler closed the " \
                  "connection during the TLS handshake: it refused the client certificate"
        wait_for(lambda: intruder.text().count(refused) >= 3, 60,
                 "the intruder to be refused three times")
        self.assertIsNone(intruder.proc.poll(), "it keeps retrying, not crashing")
        self.assertNotIn("registered as", intruder.text())
        workers = c.cli(*tls_flags(pki.ca, pki.client), "workers", "-o", "json")
        self.assertEqual(workers.returncode, 0, workers.stderr)
        self.assertEqual([w["name"] for w in json.loads(workers.stdout)["workers"]], ["w1"])


class TokenTest(SecurityTestCase):
    """Every RPC of the Scheduler and WorkerGateway services, as found in the
    proto descriptors, checks the bearer token and its role."""

    ROLE_OF_SERVICE = {"halftime.v1.Scheduler": "user",
                       "halftime.v1.WorkerGateway": "worker"}

    def services(self):
        import importlib
        import pkgutil
        from google.protobuf import symbol_database
        import halftime.v1
        found = {}
        for module in pkgutil.iter_modules(halftime.v1.__path__):
            if not module.name.endswith("_pb2"):
                continue
            descriptor = importlib.import_module(f"halftime.v1.{module.name}").DESCRIPTOR
            for service in descriptor.services_by_name.values():
                found[service.full_name] = service
        self.assertEqual(set(found), set(self.ROLE_OF_SERVICE),
                         "a new service needs its role here")
        database = symbol_database.Default()
        return [(service, method, database.GetSymbol(method.input_type.full_name),
                 database.GetSymbol(method.output_type.full_name))
                for service in found.values() for method in service.methods]

    @staticmethod
    def call(channel, method, request_type, response_type, metadata, timeout=10):
        """Calls `method` with an empty request; returns the status code."""
        import grpc
        path = f"/{method.containing_service.full_name}/{method.name}"
        kinds = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                 (True, False): channel.stream_unary, (True, True): channel.stream_stream}
        rpc = kinds[(method.client_streaming, method.server_streaming)](
            path, request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString)
        request = request_type()
        if method.client_streaming:
            request = iter([request])
        try:
            result = rpc(request, metadata=metadata, timeout=timeout)
            if method.server_streaming:
                list(result)
            return grpc.StatusCode.OK, ""
        except grpc.RpcError as e:
            return e.code(), e.details() or ""

    def test_every_rpc_checks_the_token_and_its_role(self):
        import grpc
        user, worker = f"u-{secrets.token_hex(12)}", f"w-{secrets.token_hex(12)}"
        wrong = f"x-{secrets.token_hex(12)}"
        token_file = self.secret_file("tokens", f"# tokens\nuser {user}\nworker {worker}\n")
        c = self.cluster("tokens", ["--token-file", token_file])
        token_of_role = {"user": user, "worker": worker}
        unauthenticated = {
            "no token": (),
            "wrong token": (("authorization", f"Bearer {wrong}"),),
            "no Bearer prefix": (("authorization", user),),
            "Basic scheme": (("authorization", f"Basic {user}"),),
            "empty token": (("authorization", "Bearer "),),
            "token prefix": (("authorization", f"Bearer {user[:-1]}"),),
            "token plus a character": (("authorization", f"Bearer {user}0"),),
            "token in another header": (("x-token", user),),
        }
        checked = []
        with grpc.insecure_channel(c.address) as channel:
            for service, method, request_type, response_type in self.services():
                name = f"{service.name}.{method.name}"
                role = self.ROLE_OF_SERVICE[service.full_name]
                other = "worker" if role == "user" else "user"
                for why, metadata in unauthenticated.items():
                    code, details = self.call(channel, method, request_type,
                                              response_type, metadata)
                    self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED,
                                     f"{name} with {why}: {details}")
                    for token in (user, worker, wrong):
                        self.assertNotIn(token, details)
                code, details = self.call(
                    channel, method, request_type, response_type,
                    (("authorization", f"Bearer {token_of_role[other]}"),))
                self.assertEqual(code, grpc.StatusCode.PERMISSION_DENIED,
                                 f"{name} with a {other} token: {details}")
                self.assertIn(f"needs a {role} token", details)
                self.assertNotIn(token_of_role[other], details)
                # The right token passes authentication (the empty request
                # may fail for its own reasons).
                code, details = self.call(
                    channel, method, request_type, response_type,
                    (("authorization", f"bearer {token_of_role[role]}"),), timeout=5)
                self.assertNotIn(code, (grpc.StatusCode.UNAUTHENTICATED,
                                        grpc.StatusCode.PERMISSION_DENIED),
                                 f"{name} with a {role} token: {details}")
                checked.append(name)
            self.assertEqual(len(checked), 11, checked)

            # Health checks (Kubernetes probes) and reflection need no token.
            identity = lambda b: b  # noqa: E731
            health = channel.unary_unary("/grpc.health.v1.Health/Check",
                                         request_serializer=identity,
                                         response_deserializer=identity)
            self.assertEqual(health(b"", timeout=10), b"\x08\x01", "SERVING")
            reflection = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=identity, response_deserializer=identity)
            listed = b"".join(reflection(iter([b"\x3a\x00"]), timeout=10))  # list_services
            self.assertIn(b"halftime.v1.Scheduler", listed)

        # The CLI: a wrong token and a worker token are refused, in words.
        wrong_file = self.secret_file("wrong-token", wrong + "\n")
        worker_file = self.secret_file("worker-token", worker + "\n")
        user_file = self.secret_file("user-token", user + "\n")
        self.assert_cli_refused(c.cli("--token-file", wrong_file, "list"),
                                "authentication failed: check --token-file")
        self.assert_cli_refused(c.cli("--token-file", worker_file, "list"),
                                "permission denied", "needs a user token")
        ok = c.cli("--token-file", user_file, "list")
        self.assertEqual(ok.returncode, 0, ok.stderr)

        c.close()
        self.assert_no_token_in_files(c.dir, (user, worker, wrong))

    def test_a_token_file_error_does_not_echo_a_token(self):
        token = f"t-{secrets.token_hex(12)}"
        # The token written before its role, by mistake.
        token_file = self.secret_file("tokens", f"user u-ok\n{token} worker\n")
        result = subprocess.run(
            [BIN["scheduler"], "--listen", "127.0.0.1:0", "--metrics", "",
             "--data-dir", os.path.join(self.secrets_dir, "data"),
             "--token-file", token_file], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(f"{token_file}:2: the first word is not a role", result.stderr)
        self.assertNotIn(token, result.stderr)


class TlsAndTokensTest(SecurityTestCase):
    def test_cli_and_worker_with_mtls_and_tokens(self):
        pki = self.pki
        user, worker = f"u-{secrets.token_hex(12)}", f"w-{secrets.token_hex(12)}"
        wrong = f"x-{secrets.token_hex(12)}"
        token_file = self.secret_file("tokens", f"user {user}\nworker {worker}\n")
        user_file = self.secret_file("user-token", user + "\n")
        worker_file = self.secret_file("worker-token", worker + "\n")
        wrong_file = self.secret_file("wrong-token", wrong + "\n")
        c = self.cluster("mtls-tokens", self.mtls_args() + ["--token-file", token_file],
                         user_token=user)
        good = tls_flags(pki.ca, pki.client)

        # Two workers with good certificates but bad tokens, one the real one.
        impostor = c.start_unregistered_worker(
            "impostor", good + ["--token-file", wrong_file])
        user_as_worker = c.start_unregistered_worker(
            "user-as-worker", good + ["--token-file", user_file])
        c.start_worker("w1", extra=good + ["--token-file", worker_file])

        spec_path = os.path.join(c.data_root, "job.yaml")
        with open(spec_path, "w") as f:
            f.write(tiny_spec("mtls-and-tokens"))
        watched = c.cli(*good, "--token-file", user_file, "submit", spec_path, "--watch")
        self.assertEqual(watched.returncode, 0, watched.stdout + watched.stderr)
        self.assertIn("succeeded", watched.stdout + watched.stderr)
        workers = c.cli(*good, "--token-file", user_file, "workers", "-o", "json")
        self.assertEqual(workers.returncode, 0, workers.stderr)
        self.assertEqual([w["name"] for w in json.loads(workers.stdout)["workers"]], ["w1"])

        self.assert_cli_refused(c.cli(*good, "list"), "authentication failed")
        self.assert_cli_refused(c.cli(*good, "--token-file", wrong_file, "list"),
                                "authentication failed: check --token-file")
        self.assert_cli_refused(c.cli(*good, "--token-file", worker_file, "list"),
                                "permission denied")
        # The token does not stand in for the client certificate.
        self.assert_cli_refused(c.cli(*tls_flags(pki.ca, pki.other_client),
                                      "--token-file", user_file, "list"),
                                "refused the client certificate")

        for process, why in (
                (impostor, "cannot register with the scheduler: authentication "
                           "failed: check --token-file (unknown bearer token)"),
                (user_as_worker, "cannot register with the scheduler: permission "
                                 "denied (check --token-file): a user token cannot")):
            wait_for(lambda: process.text().count(why) >= 2, 60,
                     f"{process.args[process.args.index('--name') + 1]} refused twice")
            self.assertIsNone(process.proc.poll(), "it keeps retrying")
            self.assertNotIn("registered as", process.text())

        c.close()
        self.assert_no_token_in_files(c.dir, (user, worker, wrong))


if __name__ == "__main__":
    ARGS, rest = cluster.main_args("tests/e2e/python-security")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
