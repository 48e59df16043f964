#!/bin/bash
# server.properties from the KAFKA_* environment, as the official image does
# (KAFKA_LOG_DIRS=/x -> log.dirs=/x; "__" stands for "_", "___" for "-"), then the storage is
# formatted once with CLUSTER_ID and the broker runs in the foreground.
set -euo pipefail
config=/opt/kafka/config/server.properties
: > "$config"
while IFS='=' read -r name value; do
  case "$name" in
    KAFKA_HEAP_OPTS|KAFKA_OPTS|KAFKA_JVM_OPTS) continue ;;
    KAFKA_*)
      key=${name#KAFKA_}
      key=${key//___/-}
      key=${key//__/@}
      key=${key//_/.}
      key=${key//@/_}
      echo "${key,,}=${value}" >> "$config"
      ;;
  esac
done < <(env)
grep -q '^log.dirs=' "$config" || echo "log.dirs=/var/lib/kafka/data" >> "$config"
log_dir=$(sed -n 's/^log.dirs=//p' "$config" | cut -d, -f1)

run_java() {
  # shellcheck disable=SC2086  # the options are words
  exec_or_run=${1}; shift
  $exec_or_run java ${KAFKA_HEAP_OPTS} ${KAFKA_OPTS:-} -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp "/opt/kafka/libs/*" "$@"
}
if [ ! -f "$log_dir/meta.properties" ]; then
  run_java command kafka.tools.StorageTool format --cluster-id "$CLUSTER_ID" --config "$config" >/dev/null
fi
run_java exec kafka.Kafka "$config"
