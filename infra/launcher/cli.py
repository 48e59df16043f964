"""Run Flywheel's whole stack on one machine without Docker: `make up`, `make down`, `make status`.

Kafka comes from pinned Maven Central jars run on the JVM, MinIO is built from source
with `go install` at a pinned version, MLflow runs from the project's virtualenv, and the
six services run as `python -m flywheel.<name>`. Everything it downloads, writes or runs
lives under `.stack/`: the jars, the MinIO binary, data, logs and pid files.

    python infra/stack.py install            # download and build only
    python infra/stack.py up [--only infra]  # start, wait until healthy
    python infra/stack.py status             # exit 1 when any component is unhealthy
    python infra/stack.py restart training   # after changing a service's code
    python infra/stack.py down               # stop exactly what `up` started
    python infra/stack.py env                # where the stack is: FLYWHEEL_* lines a shell or test can take
    python infra/stack.py run -- CMD ...     # CMD with that environment and the stack's admin logins
                                             # (Kafka's and MLflow's): `make demo` runs the demo so

A cluster: FLYWHEEL_STACK_BROKERS=3 (`make up BROKERS=3`) runs three KRaft nodes, each broker and
controller, one quorum of three voters; topics get replication factor 3 and min.insync.replicas 2.
FLYWHEEL_STACK_REPLICAS=2 (`make up REPLICAS=2`) runs each service twice, the second 100 ports up.
The plan is kept in .stack/data/plan.json for status and down; changing BROKERS needs a fresh .stack/data.

A second stack beside the first: FLYWHEEL_STACK_DIR=<dir> plus FLYWHEEL_STACK_PORT_OFFSET=<n>
(every port n up) or FLYWHEEL_STACK_<NAME>_PORT for one port (KAFKA, KAFKA_CONTROLLER, MINIO,
MINIO_CONSOLE, MLFLOW, INGESTION, ...).
FLYWHEEL_STACK_DATASETS_DIR=<dir> starts (or restarts) the services on another datasets
directory than the checkout's (a deployment whose features.yaml was edited, say).
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands import down, install, restart, status, up
from .credentials import admin_logins
from .plan import SHARED_ENV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["install", "up", "down", "status", "restart", "env", "run"])
    parser.add_argument("names", nargs="*", help="with restart: the components to restart; with run: the command")
    parser.add_argument("--only", choices=["infra"], help="up/status: only Kafka, MinIO and MLflow")
    args = parser.parse_args()
    if args.command == "install":
        install()
    elif args.command == "up":
        up(only_infra=args.only == "infra")
    elif args.command == "restart":
        restart(args.names)
    elif args.command == "down":
        down()
    elif args.command == "run":
        os.execvpe(args.names[0], args.names, {**os.environ, **SHARED_ENV, **admin_logins()})
    elif args.command == "env":
        print("\n".join(f"{name}={value}" for name, value in SHARED_ENV.items()))
    else:
        sys.exit(status(only_infra=args.only == "infra"))
