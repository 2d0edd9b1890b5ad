#!/bin/sh
# Docker HEALTHCHECK of the scheduler image (no grpc_health_probe offline):
# exits 0 when the scheduler on this container answers an RPC through the
# halftime CLI. HALFTIME_TOKEN_FILE (a user token) is read by the CLI itself;
# TLS files come from HALFTIME_TLS_CA / HALFTIME_TLS_CERT / HALFTIME_TLS_KEY.
set -eu
set -- --server "${HALFTIME_HEALTH_ADDRESS:-127.0.0.1:50051}" --timeout 3s
if [ -n "${HALFTIME_TLS_CA:-}" ]; then set -- "$@" --tls-ca "$HALFTIME_TLS_CA"; fi
if [ -n "${HALFTIME_TLS_CERT:-}" ]; then
  set -- "$@" --tls-cert "$HALFTIME_TLS_CERT" --tls-key "${HALFTIME_TLS_KEY:?HALFTIME_TLS_KEY}"
fi
exec halftime "$@" workers >/dev/null
