#!/bin/bash
# The stand-in's answer to the official image's health-check command
# `kafka-broker-api-versions.sh --bootstrap-server HOST:PORT`: sends one ApiVersions (v0)
# request and succeeds when the broker answers it without error. A KRaft broker answers only
# once it has started, so this is the same test; bash only, no JVM per check.
set -euo pipefail
server=localhost:9092
while [ $# -gt 0 ]; do
  case "$1" in --bootstrap-server) server=$2; shift 2 ;; *) shift ;; esac
done
exec 3<>"/dev/tcp/${server%:*}/${server##*:}"
# size 18 | api key 18 (ApiVersions) | version 0 | correlation id 7 | client id "flywheel" (8)
printf '\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x07\x00\x08flywheel' >&3
reply=$(timeout 5 head -c 10 <&3 | od -An -tx1 | tr -d ' \n')
exec 3<&-
# size (4 bytes) | correlation id 7 | error code 0
[ "${reply:8:12}" = "000000070000" ] || { echo "no ApiVersions answer from $server" >&2; exit 1; }
echo "$server answers ApiVersions"
