#!/bin/bash
# server.properties from the KAFKA_* environment, as the official image does
# (KAFKA_LOG_DIRS=/x -> log.dirs=/x; "__" stands for "_", "___" for "-"), then the storage is
# formatted once with CLUSTER_ID and the broker runs in the foreground.
# With FLYWHEEL_KAFKA_ADMIN_PASSWORD (not a KAFKA_* variable, so no config key) the storage is formatted
# with the admin's SCRAM-SHA-256 login: the one the brokers log in to each other with and Access.java
# makes the others with (Kafka's Admin API sets no SCRAM login through the controllers' listener).
set -euo pipefail
umask 077  # server.properties holds the admin's password
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
    -Dlog4j2.configurationFile=/opt/kafka/config/log4j2.properties -cp "/opt/kafka/libs/*:/opt/kafka/access" "$@"
}
if [ ! -f "$log_dir/meta.properties" ]; then
  # FormatStorage (infra/kafka/FormatStorage.java) adds the admin's login from the environment: on the
  # command line, any process of the host could read the password
  formatter=kafka.tools.StorageTool
  if [ -n "${FLYWHEEL_KAFKA_ADMIN_PASSWORD:-}" ]; then formatter=FormatStorage; fi
  run_java command "$formatter" format --cluster-id "$CLUSTER_ID" --config "$config" >/dev/null
fi
run_java exec kafka.Kafka "$config"
