"""The launcher of `make up`: Flywheel's whole stack on one machine without Docker.

``infra/stack.py`` is its command line; each module here is one part of it:

    paths        where the checkout and the stack's directory (.stack/) are
    ports        every port, moved together by FLYWHEEL_STACK_PORT_OFFSET
    plan         how many Kafka nodes and service replicas, and the addresses every process is given
    component    one process of the stack: how to start it, how to tell it is healthy
    credentials  the stack's secrets and keys, made once per stack, and each user's login
    kafka        the KRaft nodes: jars, config, storage, health, topics
    minio        the object store: build, buckets, users
    mlflow       the tracking server: auth, webhooks, users
    services     the six services and their replicas
    processes    start and stop by pid file and process group
    commands     install, up, down, restart, status
    cli          the arguments of infra/stack.py
"""
