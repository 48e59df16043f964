"""The ``flywheel`` command: the operator's front door to a running Flywheel deployment."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import json
import logging
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlencode

import typer
from aiokafka.errors import KafkaConnectionError, KafkaError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from flywheel.cli import kafka
from flywheel.cli.events import prepare
from flywheel.cli.filters import FilterError, matches, parse_filters
from flywheel.cli.maturity import maturity_view
from flywheel.cli.rebuilds import rebuild_result, version_of_run
from flywheel.cli.registry import champion_of, model_names
from flywheel.cli.remote import CliError, NotFound, call
from flywheel.cli.render import event_line, lineage_tree, rollouts_table, steps_table, tree, why_timeline
from flywheel.cli.settings import SERVICES, CliSettings
from flywheel.schemas import TOPICS, Topic

app = typer.Typer(
    help="Flywheel: operate the event-driven ML loop from a terminal.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
rollout_app = typer.Typer(help="Rollouts in serving.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])
MAX_PROBLEMS = 20
PROGRESS_FROM = 200  # events; fewer are sent before a bar could be read


def expected_failures(command: F) -> F:
    """Turn expected failures (unreachable service, refusal, bad input) into one line and exit 1."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        except KafkaConnectionError:
            servers = settings().kafka.bootstrap_servers
            err.print(f"[bold red]error:[/] cannot reach Kafka at {servers}", highlight=False, soft_wrap=True)
        except KafkaError as exc:
            servers = settings().kafka.bootstrap_servers
            err.print(f"[bold red]error:[/] Kafka at {servers}: {exc!r}", highlight=False, soft_wrap=True)
        except (LookupError, FilterError, OSError) as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)

    return run  # type: ignore[return-value]


_settings: list[CliSettings] = []


def settings() -> CliSettings:
    if not _settings:
        _settings.append(CliSettings())
    return _settings[0]


@app.callback()
def main(
    host: Annotated[
        str | None,
        typer.Option(help="Talk to the deployment on this host: every service URL and Kafka, default ports."),
    ] = None,
) -> None:
    """Flywheel: operate the event-driven ML loop from a terminal.

    Where the deployment is comes from FLYWHEEL_* variables (FLYWHEEL_KAFKA_BOOTSTRAP_SERVERS,
    FLYWHEEL_REGISTRY_URL, ...), the local stack by default, or --host for all at once.
    """
    # aiokafka logs each failed connection attempt; the CLI reports the failure once, in one line.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    _settings.clear()
    _settings.append(CliSettings().on_host(host) if host else CliSettings())


def topic_named(name: str) -> Topic:
    if name not in TOPICS:
        raise CliError(f"no topic {name!r} in the catalogue; `flywheel topics` lists them")
    return TOPICS[name]


# ---------------------------------------------------------------- status


def _probe_service(name: str) -> dict[str, Any]:
    cfg = settings()
    url = cfg.url(name)
    try:
        health = _health(url, cfg.http_timeout_s)
        spec = call(name, "GET", f"{url}/openapi.json", timeout=cfg.http_timeout_s)
        version = spec.get("info", {}).get("version", "?") if isinstance(spec, dict) else "?"
    except CliError as exc:
        return {"health": "unreachable", "version": "", "detail": str(exc)}
    checks = health.get("checks", {})
    down = ", ".join(f"{k}: {v}" for k, v in checks.items() if v != "ok")
    return {"health": health.get("status", "?"), "version": version, "detail": down or url}


def _health(url: str, timeout: float) -> dict[str, Any]:
    import httpx

    try:
        response = httpx.get(f"{url}/health", timeout=timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {type(exc).__name__}") from exc
    try:
        return response.json()
    except ValueError:
        return {"status": f"HTTP {response.status_code}"}


def _probe_kafka() -> dict[str, Any]:
    cfg = settings()
    try:
        info = asyncio.run(asyncio.wait_for(kafka.cluster(cfg.kafka), cfg.http_timeout_s))
    except (KafkaError, TimeoutError, OSError) as exc:
        return {"health": "unreachable", "version": "", "detail": f"{cfg.kafka.bootstrap_servers}: {exc!r}"[:200]}
    detail = f"{cfg.kafka.bootstrap_servers} cluster={info['cluster_id']} brokers={info['brokers']}"
    # Kafka's protocol does not tell a client the server's release.
    return {"health": "ok", "version": "n/a", "detail": detail}


def _probe_minio() -> dict[str, Any]:
    import httpx

    cfg = settings()
    url = cfg.s3.endpoint_url.rstrip("/")
    try:
        response = httpx.get(f"{url}/minio/health/live", timeout=cfg.http_timeout_s)
    except httpx.HTTPError as exc:
        return {"health": "unreachable", "version": "", "detail": f"{url}: {type(exc).__name__}"}
    health = "ok" if response.status_code == 200 else f"HTTP {response.status_code}"
    return {"health": health, "version": response.headers.get("server", ""), "detail": url}


def _probe_mlflow() -> dict[str, Any]:
    import httpx

    cfg = settings()
    url = cfg.mlflow.tracking_uri.rstrip("/")
    try:
        health = httpx.get(f"{url}/health", timeout=cfg.http_timeout_s)
        login = (cfg.mlflow.username, cfg.mlflow.password.get_secret_value()) if cfg.mlflow.username else None
        version = httpx.get(f"{url}/version", timeout=cfg.http_timeout_s, auth=login)  # behind MLflow's login
    except httpx.HTTPError as exc:
        return {"health": "unreachable", "version": "", "detail": f"{url}: {type(exc).__name__}"}
    ok = health.status_code == 200
    return {
        "health": "ok" if ok else f"HTTP {health.status_code}",
        "version": version.text.strip() if version.status_code == 200 else "",
        "detail": url,
    }


def _champions() -> list[tuple[str, str]]:
    """(model, champion version) for every registered model; "unknown" where the registry cannot say."""
    cfg = settings()
    base = cfg.registry_url
    try:
        listing = call("registry", "GET", f"{base}/models", timeout=cfg.http_timeout_s)
    except NotFound:
        return [("*", "unknown (the registry has no GET /models)")]
    except CliError as exc:
        return [("*", f"unknown ({exc})")]

    def champion(name: str) -> tuple[str, str]:
        try:
            detail = call("registry", "GET", f"{base}/models/{quote(name)}", timeout=cfg.http_timeout_s)
        except CliError:
            return name, "unknown"
        return name, champion_of(detail) or "none"

    # One request per model: in parallel, so status stays quick with many models registered.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(champion, model_names(listing)))


@app.command(epilog="Example: flywheel status")
@expected_failures
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Health and version of Kafka, MinIO, MLflow and the six services, and each model's champion."""
    probes: dict[str, Callable[[], dict[str, Any]]] = {
        "kafka": _probe_kafka,
        "minio": _probe_minio,
        "mlflow": _probe_mlflow,
        **{name: functools.partial(_probe_service, name) for name in SERVICES},
    }
    with ThreadPoolExecutor(max_workers=len(probes) + 1) as pool:
        futures = {name: pool.submit(probe) for name, probe in probes.items()}
        champions_future = pool.submit(_champions)
        results = {name: f.result() for name, f in futures.items()}
        champions = champions_future.result()
    healthy = all(r["health"] == "ok" for r in results.values())
    if as_json:
        body = {"components": results, "champions": dict(champions), "healthy": healthy}
        typer.echo(json.dumps(body, indent=2))
    else:
        table = Table(title="Flywheel components", title_justify="left")
        for column in ("component", "health", "version", "detail"):
            table.add_column(column)
        for name, r in results.items():
            style = "green" if r["health"] == "ok" else "bold red"
            mark = "✓" if r["health"] == "ok" else "✗"
            table.add_row(name, Text(f"{mark} {r['health']}", style=style), r["version"], r["detail"])
        out.print(table)
        models = Table(title="Champions", title_justify="left")
        models.add_column("model")
        models.add_column("champion version")
        for name, version in champions:
            models.add_row(name, version)
        out.print(models)
    if not healthy:
        down = ", ".join(n for n, r in results.items() if r["health"] != "ok")
        raise CliError(f"not healthy: {down}")


# ---------------------------------------------------------------- topics


@app.command(epilog="Example: flywheel topics")
@expected_failures
def topics(
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue as JSON.")] = False,
) -> None:
    """The topic catalogue: each topic's event type, key, schema version, partitions and message count."""
    stats = asyncio.run(kafka.topic_stats(settings().kafka, list(TOPICS)))
    rows = []
    for name, topic in TOPICS.items():
        found = stats.get(name)
        rows.append(
            {
                "topic": name,
                "event_type": topic.event.__name__,
                "key": topic.key,
                "schema_version": topic.event.SCHEMA_VERSION,
                "partitions": found.partitions if found else None,
                "messages": found.messages if found else None,
                "description": topic.description,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    # The description only fits a wide terminal; --json and the docs always have it.
    wide = out.width >= 140
    table = Table(title=f"Topics on {settings().kafka.bootstrap_servers}", title_justify="left")
    table.add_column("topic", overflow="fold")
    table.add_column("event type", overflow="fold")
    table.add_column("key", overflow="fold")
    table.add_column("ver", no_wrap=True, min_width=3)
    table.add_column("parts", no_wrap=True, min_width=5, justify="right")
    table.add_column("messages", no_wrap=True, min_width=8, justify="right")
    if wide:
        table.add_column("description")
    for row in rows:
        missing = row["partitions"] is None
        cells = [
            row["topic"],
            row["event_type"],
            row["key"],
            row["schema_version"],
            "not created" if missing else str(row["partitions"]),
            "" if missing else f"{row['messages']:,}",
        ]
        table.add_row(*cells, *([row["description"]] if wide else []))
    out.print(table)


# ---------------------------------------------------------------- publish


@app.command(
    epilog=(
        "Examples: flywheel publish records.raw records.jsonl  ·  "
        'echo \'{"dataset": "loans", "record_id": "r1", "data": {"age": 41}}\' | flywheel publish records.raw -'
    )
)
@expected_failures
def publish(
    topic: Annotated[str, typer.Argument(help="A catalogue topic, e.g. records.raw.")],
    file: Annotated[str, typer.Argument(help="JSON object, JSON array or JSON lines; - for stdin.")] = "-",
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Send the valid items even when some are refused.")
    ] = False,
    producer: Annotated[str, typer.Option(help="The envelope's producer for wrapped payloads.")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print where each event landed, as JSON lines.")] = False,
) -> None:
    """Validate events against the topic's schema, then send them (acks=all, idempotent, keyed by the catalogue).

    A payload-only object is wrapped in a new envelope; an object with an event_type is sent as it is.
    Nothing is sent when an item is invalid, unless --skip-invalid.
    """
    target = topic_named(topic)
    text = sys.stdin.read() if file == "-" else Path(file).read_text()
    batch = prepare(target, text, producer=producer)
    for problem in batch.problems[:MAX_PROBLEMS]:
        err.print(f"[red]refused[/] {problem}", highlight=False, soft_wrap=True)
    if len(batch.problems) > MAX_PROBLEMS:
        err.print(f"... and {len(batch.problems) - MAX_PROBLEMS} more problems", highlight=False)
    refused_items = len({p.line for p in batch.problems})
    if batch.problems and not skip_invalid:
        raise CliError(
            f"refused {refused_items} of {refused_items + len(batch.events)} items "
            f"({target.event.__name__} on {topic}); nothing sent"
        )
    if not batch.events:
        raise CliError("nothing to send: the input holds no events")
    started = time.perf_counter()
    with Progress(
        TextColumn("sending"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=len(batch.events) < PROGRESS_FROM,
        transient=True,
    ) as progress:
        task = progress.add_task("send", total=len(batch.events))
        sent = asyncio.run(kafka.send(settings().kafka, target, batch.events, lambda _: progress.advance(task)))
    elapsed = time.perf_counter() - started
    if as_json:
        for s in sent:
            typer.echo(json.dumps({"event_id": str(s.event.event_id), "partition": s.partition, "offset": s.offset}))
    per_partition: dict[int, int] = {}
    for s in sent:
        per_partition[s.partition] = per_partition.get(s.partition, 0) + 1
    spread = " ".join(f"p{p}:{n}" for p, n in sorted(per_partition.items()))
    summary = f"sent {len(sent)} {target.event.__name__} to {topic} ({spread}) in {elapsed:.2f}s"
    if len(sent) == 1:
        summary += f"; event_id {sent[0].event.event_id}"
    err.print(summary, highlight=False, soft_wrap=True)
    if batch.problems:
        err.print(f"[yellow]skipped {refused_items} invalid items[/]", highlight=False)


# ---------------------------------------------------------------- tail


@app.command(
    epilog=(
        "Examples: flywheel tail alerts -f  ·  flywheel tail records.rejected --from-beginning "
        "--filter dataset=loans --filter violations.rule~range  ·  flywheel tail predictions -f --json"
    )
)
@expected_failures
def tail(
    topic: Annotated[str, typer.Argument(help="A catalogue topic, e.g. alerts.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing events as they arrive.")] = False,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="Start at the oldest message.")] = False,
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="Start this many messages back per partition.")] = 10,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="PATH OP VALUE (OP: = != ~ !~ > >= < <=) or PATH?; dotted paths; repeat to AND them.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print each event as one JSON line.")] = False,
    max_events: Annotated[
        int | None, typer.Option("--max", min=1, help="Stop after this many matching events.")
    ] = None,
) -> None:
    """Print a topic's events as they arrive; `flywheel tail alerts -f` subscribes to alerts."""
    topic_named(topic)
    parsed = parse_filters(filters or [])
    shown = 0

    def handle(message: kafka.Message) -> bool:
        nonlocal shown
        if parsed and not (message.is_json and matches(parsed, message.body)):
            return True
        shown += 1
        if as_json:
            body = message.body if message.is_json else {"not_json": message.body}
            typer.echo(json.dumps(body, separators=(",", ":")))
            sys.stdout.flush()
        else:
            out.print(event_line(message), soft_wrap=True)
        return max_events is None or shown < max_events

    def ready() -> None:
        where = "from the beginning" if from_beginning else "from now" if last == 0 else f"from {last} back"
        mode = ", following" if follow else ""
        err.print(f"reading {topic} {where}{mode} (Ctrl-C to stop)", style="dim", highlight=False)

    # Ctrl-C is how an operator ends `tail -f`: not an error.
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            kafka.tail(
                settings().kafka,
                topic,
                handle,
                from_beginning=from_beginning,
                last=last,
                follow=follow,
                on_ready=ready,
            )
        )
    if not follow and not as_json:
        err.print(f"{shown} events", style="dim", highlight=False)


# ---------------------------------------------------------------- registry, training, serving


def _actor() -> str:
    return settings().actor or getpass.getuser()


def _champion_version(model: str) -> str:
    cfg = settings()
    detail = call("registry", "GET", f"{cfg.registry_url}/models/{quote(model)}", timeout=cfg.http_timeout_s)
    version = champion_of(detail)
    if not version:
        raise CliError(f"{model} has no champion yet; name a version")
    return version


@app.command(epilog="Examples: flywheel lineage loans-approval  ·  flywheel lineage loans-approval 3 --json")
@expected_failures
def lineage(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    version: Annotated[str | None, typer.Argument(help="Model version; default: the champion's.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the lineage as JSON.")] = False,
) -> None:
    """Why a model version exists: dataset version, code version, run, params, metrics, gates, trigger."""
    cfg = settings()
    version = version or _champion_version(model)
    url = f"{cfg.registry_url}/models/{quote(model)}/versions/{quote(version)}/lineage"
    found = call("registry", "GET", url, timeout=cfg.http_timeout_s)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out.print(lineage_tree(model, version, found))


@app.command(epilog="Examples: flywheel why loans-approval  ·  flywheel why loans-approval 3 --json")
@expected_failures
def why(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    version: Annotated[str | None, typer.Argument(help="Model version; default: the champion.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the story as JSON.")] = False,
) -> None:
    """Why a version serves, from the events: drift, request, run, gates, rollout, promotion; timed, with any hole."""
    cfg = settings()
    where = f"versions/{quote(version)}/why" if version else "why"
    url = f"{cfg.registry_url}/models/{quote(model)}/{where}"
    found = call("registry", "GET", url, timeout=max(cfg.http_timeout_s, 40.0))  # the registry reads eight topics
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out.print(why_timeline(found))


def _param(text: str) -> tuple[str, Any]:
    """``name=value``; the value as JSON when it parses (numbers, booleans), else as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise CliError(f"--param {text!r}: expected NAME=VALUE")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def _wait_for_run(model: str, request_id: str, timeout_s: float) -> dict[str, Any]:
    """Follow the run that took up this request until it completes or fails (training GET /runs)."""
    cfg = settings()
    deadline = time.monotonic() + timeout_s
    run: dict[str, Any] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), console=err, transient=True) as progress:
        task = progress.add_task("queued", total=1.0)
        while time.monotonic() < deadline:
            url = f"{cfg.training_url}/runs?model_name={quote(model)}"
            runs = call("training", "GET", url, timeout=cfg.http_timeout_s) or []
            run = next((r for r in runs if request_id in r.get("request_ids", [])), {})
            if run:
                progress.update(task, description=f"{run.get('status')}: {run.get('stage')}")
                progress.update(task, completed=float(run.get("progress") or 0.0))
                if run.get("status") in ("completed", "failed"):
                    return run
            time.sleep(1.0)
    raise CliError(f"training run for request {request_id} not finished after {timeout_s:g}s: {run or 'not started'}")


@app.command(
    epilog=(
        "Examples: flywheel train loans --reason 'new quarter of data'  ·  "
        "flywheel train loans --param learning_rate=0.05 --wait"
    ),
)
@expected_failures
def train(
    dataset: Annotated[str, typer.Argument(help="The dataset to train on (datasets/<dataset>/).")],
    model: Annotated[str | None, typer.Option(help="Model name; default: the spec's model_name.")] = None,
    dataset_version: Annotated[str | None, typer.Option(help="A dataset version; default: the newest.")] = None,
    spec: Annotated[str | None, typer.Option(help="Model spec in datasets/<dataset>/; default: model.yaml.")] = None,
    params: Annotated[
        list[str] | None, typer.Option("--param", help="NAME=VALUE: a spec field or estimator param; repeatable.")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "requested from the CLI",
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run until it completes or fails.")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up after this many seconds.")] = 600.0,
) -> None:
    """Ask training to train a model (POST /train); with --wait, follow the run to its end."""
    cfg = settings()
    body: dict[str, Any] = {"dataset": dataset, "reason": reason}
    for name, value in (("model_name", model), ("dataset_version", dataset_version), ("model_spec", spec)):
        if value:
            body[name] = value
    if params:
        body["params"] = dict(_param(p) for p in params)
    answer = call(
        "training", "POST", f"{cfg.training_url}/train", body=body, token=cfg.token, timeout=cfg.http_timeout_s
    )
    answer = answer or {}
    name = answer.get("model_name") or model or dataset
    out.print(tree(Text(f"training {name}", style="bold"), answer or {"accepted": True}))
    if not wait:
        return
    run = _wait_for_run(name, str(answer.get("request_id", "")), timeout)
    shown = {k: run.get(k) for k in ("status", "dataset_version", "mlflow_run_id", "model_uri", "metrics", "reason")}
    style = "bold green" if run.get("status") == "completed" else "bold red"
    out.print(tree(Text(f"run {run.get('id')}", style=style), {k: v for k, v in shown.items() if v}))
    if run.get("status") != "completed":
        raise CliError(f"training {name} failed: {run.get('reason') or 'no reason given'}")


# A decision waits for the registry replica owning the model (REGISTRY_COMMAND_TIMEOUT_S, 20 s, plus its
# grace): a shorter wait would report a failure while the promotion still happens.
DECISION_TIMEOUT_S = 30.0


def decision_timeout(cfg: CliSettings) -> float:
    return max(cfg.http_timeout_s, DECISION_TIMEOUT_S)


@app.command(epilog="Example: FLYWHEEL_TOKEN=... flywheel promote loans-approval 4 --reason 'beats champion on Q3'")
@expected_failures
def promote(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Make a model version the champion (registry POST /models/{name}/promote, needs FLYWHEEL_TOKEN)."""
    cfg = settings()
    body = {"version": version, "reason": reason}
    url = f"{cfg.registry_url}/models/{quote(model)}/promote"
    answer = call("registry", "POST", url, body=body, token=cfg.token, timeout=decision_timeout(cfg))
    out.print(tree(Text(f"promoted {model} v{version}", style="bold green"), answer or {}))


@app.command(epilog="Example: FLYWHEEL_TOKEN=... flywheel rollback loans-approval --reason 'accuracy alert'")
@expected_failures
def rollback(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Give the champion alias back to the previous champion (registry POST /models/{name}/rollback)."""
    cfg = settings()
    body = {"reason": reason}
    url = f"{cfg.registry_url}/models/{quote(model)}/rollback"
    answer = call("registry", "POST", url, body=body, token=cfg.token, timeout=decision_timeout(cfg))
    out.print(tree(Text(f"rolled back {model}", style="bold yellow"), answer or {}))


@app.command(epilog="Example: FLYWHEEL_TOKEN=... flywheel approve loans-approval 5 --reason 'reviewed the eval report'")
@expected_failures
def approve(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    version: Annotated[str, typer.Argument(help="The version held for manual approval.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")],
) -> None:
    """Release a candidate held for manual approval (registry POST /models/{name}/versions/{v}/approve)."""
    cfg = settings()
    body = {"reason": reason}
    url = f"{cfg.registry_url}/models/{quote(model)}/versions/{quote(version)}/approve"
    answer = call("registry", "POST", url, body=body, token=cfg.token, timeout=decision_timeout(cfg))
    out.print(tree(Text(f"approved {model} v{version}", style="bold green"), answer or {}))


@rollout_app.command(
    "status", epilog="Examples: flywheel rollout status  ·  flywheel rollout status loans-approval --last 20 --json"
)
@expected_failures
def rollout_status(
    model: Annotated[str | None, typer.Argument(help="Only this model's rollouts; default: all.")] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=0, help="How many recent rollout steps to show.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print serving's answer as JSON.")] = False,
) -> None:
    """What serving is rolling out: strategy, step, candidate traffic and live figures per variant (GET /rollout)."""
    cfg = settings()
    url = f"{cfg.serving_url}/rollout"
    try:
        answer = call("serving", "GET", url, timeout=cfg.http_timeout_s)
    except NotFound as exc:
        raise CliError(f"serving at {cfg.serving_url} has no GET /rollout (404): it cannot report rollouts") from exc
    if not isinstance(answer, dict) or not {"active", "recent"} <= set(answer):
        # An answer in a shape this CLI does not know: show it as it is rather than guess.
        if as_json:
            typer.echo(json.dumps(answer, indent=2))
        else:
            out.print(tree(Text("rollout", style="bold"), answer))
        return
    active = [r for r in answer["active"] if model in (None, r.get("model_name"))]
    recent = [e for e in answer["recent"] if model in (None, e.get("model_name"))][-last:] if last else []
    if as_json:
        typer.echo(json.dumps({"active": active, "recent": recent}, indent=2))
        return
    out.print(rollouts_table(active) if active else Text("no rollout in progress", style="dim"))
    if recent:
        out.print(steps_table(recent))


@app.command(epilog="Example: flywheel version")
def version() -> None:
    """Print Flywheel's version."""
    from importlib.metadata import version as installed

    typer.echo(installed("flywheel-cli"))


MATURITY_TIMEOUT_S = 120.0  # the registry reads MinIO, MLflow and five topics to answer


@app.command(
    epilog="Examples: flywheel maturity  ·  flywheel maturity loans-approval --json  ·  "
    "flywheel maturity --since 2026-12-01T00:00:00Z"
)
@expected_failures
def maturity(
    model: Annotated[str | None, typer.Argument(help="One registered model; default: the whole deployment.")] = None,
    since: Annotated[str | None, typer.Option(help="Only evidence from this time on (ISO 8601).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the registry's report as JSON.")] = False,
) -> None:
    """The MLOps maturity level (0-3) this deployment meets per area, each criterion with its evidence."""
    cfg = settings()
    query = urlencode({k: v for k, v in (("model", model), ("since", since)) if v})
    url = f"{cfg.registry_url}/maturity" + (f"?{query}" if query else "")
    found = call("registry", "GET", url, timeout=max(cfg.http_timeout_s, MATURITY_TIMEOUT_S))
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    out.print(maturity_view(found))


def _wait_for_version(model: str, run_id: str, timeout_s: float) -> dict[str, Any]:
    """The registry's description of the model once the version made by ``run_id`` is registered."""
    cfg = settings()
    deadline = time.monotonic() + timeout_s
    while True:
        detail = call("registry", "GET", f"{cfg.registry_url}/models/{quote(model)}", timeout=cfg.http_timeout_s)
        if version_of_run(detail, run_id) is not None:
            return detail
        if time.monotonic() > deadline:
            raise CliError(f"run {run_id} of {model} is not registered after {timeout_s:g}s")
        time.sleep(1.0)


@app.command(
    epilog="Examples: flywheel rebuild loans-approval 3  ·  flywheel rebuild loans-approval 3 --force --json",
)
@expected_failures
def rebuild(
    model: Annotated[str, typer.Argument(help="A registered model name.")],
    version: Annotated[str, typer.Argument(help="The version to rebuild from its lineage.")],
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when the running code differs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds.")] = 600.0,
) -> None:
    """Retrain a version from exactly its recorded inputs and code; say whether metrics and model are equal.

    The rebuilt version is registered tagged ``rebuild_of`` (status ``rebuild``): it never serves, nor moves the
    champion. Exit status 2 when the rebuild differs from the original.
    """
    cfg = settings()
    body = {"model_name": model, "version": version, "force": force, "reason": f"rebuild by {_actor()}"}
    answer = call(
        "training", "POST", f"{cfg.training_url}/rebuild", body=body, token=cfg.token, timeout=cfg.http_timeout_s
    )
    answer = answer or {}
    started = time.monotonic()
    run = _wait_for_run(model, str(answer.get("request_id", "")), timeout)
    if run.get("status") != "completed":
        raise CliError(f"rebuild of {model} v{version} failed: {run.get('reason') or 'no reason given'}")
    detail = _wait_for_version(model, str(run.get("mlflow_run_id")), max(5.0, timeout - (time.monotonic() - started)))
    rebuilt = version_of_run(detail, str(run.get("mlflow_run_id")))
    result = rebuild_result(model, rebuilt or {}, detail.get("champion"))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        equal = bool(result["comparison"].get("equal"))
        verdict = "equal" if equal else "DIFFERENT"
        style = "bold green" if equal else "bold yellow"
        label = Text(f"{model} v{result['version']}: rebuild of v{version}, {verdict}", style=style)
        out.print(tree(label, result, first=("comparison",)))
    if not result["comparison"].get("equal"):
        raise typer.Exit(2)


__all__ = ["app"]
