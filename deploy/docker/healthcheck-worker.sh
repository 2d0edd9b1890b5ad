#!/bin/bash
# Docker HEALTHCHECK of the worker images (no curl in the image): exits 0
# when the worker serves /metrics (HTTP 200) on HALFTIME_METRICS_PORT (9465).
set -eu
port=${HALFTIME_METRICS_PORT:-9465}
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
read -r -t 5 status <&3
case "$status" in
  "HTTP/1."?" 200"*) exit 0 ;;
  *) echo "worker /metrics: ${status:-no answer}" >&2; exit 1 ;;
esac
