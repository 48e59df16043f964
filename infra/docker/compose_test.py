"""`make compose-test`: the compose deployment built without a registry, up, and the closed loop in it.

Phases (each timed; the table is printed at the end, also on failure):

    engine    a Docker engine (started here when none answers; stopped again at the end, engine.py)
    images    every image, registry-less (images.py), sizes printed; beside it Compose v2 (a
              `docker compose` plugin, or built once from the Go module proxy into .stack/bin)
    up        `docker compose up -d --wait` on ports that clash with no local stack, bound to 127.0.0.1
    health    every service's /health and MLflow's, from the host
    metrics   Prometheus' scrape targets are the compose services, and each serves /metrics
    demo      the closed-loop demo from the host against the published ports; its report
    kafka     an outside client (kcat) reads `alerts` and `predictions`: every message plain JSON
    browser   headless Chromium renders each service's /docs (Swagger UI, from assets the service
              serves itself: no CDN is reachable) and monitoring's /report; screenshots kept
    restart   `docker compose restart kafka minio` keeps the topics' messages and the objects
    down      `docker compose down -v`; dangling images removed

It fails, never skips: no engine, no image, an unhealthy service or an open loop is an error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import credentials
import images
from engine import Engine, apt_install

ROOT = images.ROOT
WORK = images.WORK
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROJECT = "flywheel-ci"
COMPOSE_MODULE, COMPOSE_VERSION = "github.com/docker/compose/v2", "v2.40.3"
COMPOSE_BIN = images.STACK / "bin" / "docker-compose"
HOST = "127.0.0.1"
# Published ports: none of them is a port of the local stacks (9092, 9000, 5000, 8001-8006 and
# those plus 100, 200, 300).
PORTS = {
    "KAFKA": 19092,
    "MINIO": 19000,
    "MINIO_CONSOLE": 19001,
    "MLFLOW": 15000,
    "INGESTION": 18001,
    "FEATURES": 18002,
    "TRAINING": 18003,
    "REGISTRY": 18004,
    "SERVING": 18005,
    "MONITORING": 18006,
}
SERVICES = ["ingestion", "features", "training", "registry", "serving", "monitoring"]
TOPICS_READ_OUTSIDE = ["alerts", "predictions"]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--virtual-time-budget=15000",  # let the page's scripts fetch and render before the capture
]
SHOTS = WORK / "screenshots"
SECRETS = WORK / "secrets"  # the deployment's credentials (make compose-secrets writes .secrets/)


def url(name: str, path: str = "") -> str:
    return f"http://{HOST}:{PORTS[name.upper()]}{path}"


def get(address: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(address, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""


class Phases:
    """Each phase's wall time, for the table at the end."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float, str]] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        print(f"\n== compose-test: {name}", flush=True)
        started = time.monotonic()
        outcome = "failed"
        try:
            yield
            outcome = "ok"
        finally:
            self.times.append((name, time.monotonic() - started, outcome))

    def print(self) -> None:
        print("\n== compose-test: phases", flush=True)
        for name, seconds, outcome in self.times:
            print(f"  {name:<10} {seconds:7.1f} s  {outcome}")
        print(f"  {'total':<10} {sum(t for _, t, _ in self.times):7.1f} s", flush=True)


# -- compose ------------------------------------------------------------------------------


def compose_command() -> list[str]:
    """Compose v2: the `docker compose` plugin when there is one (>= 2.20, for `up --wait`), else a build.

    Debian ships only docker-compose 1.29 (no `--wait`). Compose v2 builds from the Go module
    proxy, though not with `go install` (its go.mod has exclude directives): download the module,
    then `go build ./cmd` inside it. The binary is kept in .stack/bin; Go's caches make a rebuild quick.
    """
    plugin = subprocess.run(["docker", "compose", "version", "--short"], capture_output=True, text=True)
    version = plugin.stdout.strip().lstrip("v").split(".")
    if plugin.returncode == 0 and len(version) >= 2 and (int(version[0]), int(version[1])) >= (2, 20):
        return ["docker", "compose"]
    if COMPOSE_BIN.exists():
        built = subprocess.run([str(COMPOSE_BIN), "version", "--short"], capture_output=True, text=True).stdout
        if built.strip().lstrip("v") == COMPOSE_VERSION.lstrip("v"):
            return [str(COMPOSE_BIN)]
    if shutil.which("go") is None:
        raise RuntimeError("neither a Compose v2 plugin nor Go to build one")
    print(f"compose: building {COMPOSE_MODULE}@{COMPOSE_VERSION} (once; cached in {COMPOSE_BIN})", flush=True)
    download = subprocess.run(
        ["go", "mod", "download", "-json", f"{COMPOSE_MODULE}@{COMPOSE_VERSION}"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    module_dir = json.loads(download.stdout)["Dir"]
    COMPOSE_BIN.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "go",
            "build",
            "-trimpath",
            "-ldflags",
            f"-s -w -X {COMPOSE_MODULE}/internal.Version={COMPOSE_VERSION}",
            "-o",
            str(COMPOSE_BIN),
            "./cmd",
        ],
        cwd=module_dir,
        env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        check=True,
    )
    return [str(COMPOSE_BIN)]


class Compose:
    def __init__(self, command: list[str], variables: dict[str, str]) -> None:
        self.command = [*command, "--project-name", PROJECT, "--file", str(COMPOSE_FILE)]
        self.env = {**os.environ, **variables, **{f"FLYWHEEL_STACK_{k}_PORT": str(v) for k, v in PORTS.items()}}
        self.env["FLYWHEEL_PUBLISH_ADDRESS"] = HOST
        self.secrets = credentials.ensure(SECRETS)  # tokens, MinIO's root password and its users' keys
        self.tokens = {p: self.secrets[credentials.token_variable(p)] for p in credentials.PRINCIPALS}
        self.env.update(self.secrets)
        self.env["FLYWHEEL_SECRETS_DIR"] = str(SECRETS)
        # The canary's latency test compares the variants' shares of answers slower than this; with
        # nine containers and the demo on a CI machine's few shared cores, 100 ms is often passed by
        # scheduling alone (a warmed candidate once measured 257 ms against the champion's 61 ms).
        # The run checks that the loop closes; answers faster than this never count as slow here.
        self.env.setdefault("FLYWHEEL_SERVING_SLOW_MS", "1000")

    def __call__(self, *args: str, capture: bool = False) -> str:
        result = subprocess.run(
            [*self.command, *args], env=self.env, cwd=ROOT, text=True, capture_output=capture, stdin=subprocess.DEVNULL
        )
        if result.returncode != 0:
            raise RuntimeError(f"`compose {' '.join(args)}` failed ({result.returncode}): {result.stderr or ''}")
        return result.stdout or ""

    def logs(self) -> None:
        subprocess.run([*self.command, "ps", "-a"], env=self.env, cwd=ROOT)
        subprocess.run([*self.command, "logs", "--no-color", "--tail", "40"], env=self.env, cwd=ROOT)


# -- checks -------------------------------------------------------------------------------


def check_health() -> None:
    for name in [*SERVICES, "mlflow"]:
        status, body = get(url(name, "/health"))
        print(f"  {name:<11} {url(name, '/health')}  {status}  {body[:60]}", flush=True)
        if status != 200:
            raise RuntimeError(f"{name} /health answered {status}")


def scrape_targets() -> list[tuple[str, str, int]]:
    """(metrics path, compose service, port) of each DNS lookup in infra/prometheus/prometheus.yml."""
    config = yaml.safe_load((ROOT / "infra/prometheus/prometheus.yml").read_text())
    return [
        (job.get("metrics_path", "/metrics"), name, lookup["port"])
        for job in config["scrape_configs"]
        for lookup in job["dns_sd_configs"]
        for name in lookup["names"]
    ]


def check_metrics(compose_config: dict) -> None:
    """Every name Prometheus looks up (infra/prometheus/prometheus.yml) is a compose service serving /metrics."""
    scraped = set()
    for path, service, port in scrape_targets():
        target = f"{service}:{port}"
        spec = compose_config["services"].get(service)
        if spec is None:
            raise RuntimeError(f"prometheus target {target}: no service {service} in docker-compose.yml")
        published = {int(p["target"]): p.get("published") for p in spec.get("ports", [])}
        if port not in published:
            raise RuntimeError(f"prometheus target {target}: {service} listens on {sorted(published)}, not {port}")
        status, body = get(f"http://{HOST}:{published[port]}{path}")
        if status != 200 or "# TYPE" not in body:
            raise RuntimeError(f"prometheus target {target}: {path} answered {status} without metrics")
        print(f"  {target:<16} {path} {status}, {body.count('# TYPE')} metric families", flush=True)
        scraped.add(service)
    if missing := sorted(set(SERVICES) - scraped):
        raise RuntimeError(f"prometheus.yml does not scrape {missing}")


def check_auth(tokens: dict[str, str]) -> None:
    """A deployment, not a dev stack: a mutating call needs a token of the deployment's, with the role."""
    from flywheel.common.auth import DEV_TOKEN

    body = json.dumps({"dataset": "loans"}).encode()
    cases = [(None, 401), (DEV_TOKEN, 401), (tokens["producer"], 403)]
    for token, expected in cases:
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        request = urllib.request.Request(url("training", "/train"), data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                status = answer.status
        except urllib.error.HTTPError as error:
            status = error.code
        if status != expected:
            raise RuntimeError(f"POST /train with {'no token' if token is None else 'a token'} answered {status}")
    print("  POST /train: 401 without a token and with the dev token, 403 with the producer's")


def check_store_access(secrets: dict[str, str]) -> None:
    """Each service's MinIO key is its own: serving's cannot write datasets, ingestion's cannot list
    the model artifacts (MLflow's alone), the well-known dev password is not MinIO's."""
    from minio import Minio
    from minio.error import S3Error

    def key(user: str, secret: str) -> Minio:
        return Minio(f"{HOST}:{PORTS['MINIO']}", access_key=user, secret_key=secret, secure=False)

    def refused(call: Callable[[], object], codes: tuple[str, ...]) -> bool:
        try:
            call()
        except S3Error as error:
            return error.code in codes
        return False

    serving, ingestion = (key(u, secrets[f"FLYWHEEL_S3_{u.upper()}_SECRET"]) for u in ("serving", "ingestion"))
    checks = {
        "serving writes a dataset": lambda: serving.put_object("flywheel", "datasets/x", io.BytesIO(b"x"), 1),
        "ingestion lists model artifacts": lambda: next(iter(ingestion.list_objects("mlflow")), None),
        "the dev root password": lambda: key("flywheel", "flywheel-secret").list_buckets(),
    }
    allowed = [what for what, call in checks.items() if not refused(call, ("AccessDenied", "SignatureDoesNotMatch"))]
    if allowed:
        raise RuntimeError(f"MinIO allowed what it must refuse: {allowed}")
    print(f"  MinIO refused: {', '.join(checks)}")


def check_tracking_access(secrets: dict[str, str]) -> None:
    """MLflow answers only a login: none, a wrong one and MLflow's old default admin password get 401; a
    service's own gets in, and is no admin (it cannot make a user)."""
    import httpx

    search, create = url("mlflow", "/api/2.0/mlflow/experiments/search"), url("mlflow", "/api/2.0/mlflow/users/create")
    serving = ("serving", secrets["FLYWHEEL_MLFLOW_SERVING_PASSWORD"])
    answers = {
        "no login": httpx.get(search, params={"max_results": 1}).status_code,
        "a wrong password": httpx.get(search, params={"max_results": 1}, auth=("serving", "wrong")).status_code,
        "the old default admin": httpx.get(
            search, params={"max_results": 1}, auth=("admin", "password1234")
        ).status_code,
        "serving's login": httpx.get(search, params={"max_results": 1}, auth=serving).status_code,
        "serving making a user": httpx.post(
            create, json={"username": "x", "password": "y" * 20}, auth=serving
        ).status_code,
    }
    expected = {
        "no login": 401,
        "a wrong password": 401,
        "the old default admin": 401,
        "serving's login": 200,
        "serving making a user": 403,
    }
    if answers != expected:
        raise RuntimeError(f"MLflow answered {answers}, not {expected}")
    print(f"  MLflow: {answers}")


def run_demo(operator_token: str) -> None:
    """The closed-loop scenario of `make demo`, pointed at the published ports."""
    from rich.console import Console

    from flywheel.demo.closed_loop import report
    from flywheel.demo.scenario import Scenario, ScenarioConfig

    config = ScenarioConfig(
        bootstrap_servers=f"{HOST}:{PORTS['KAFKA']}",
        ingestion_url=url("ingestion"),
        training_url=url("training"),
        registry_url=url("registry"),
        serving_url=url("serving"),
        monitoring_url=url("monitoring"),
        # Nine containers share the machine's cores with the demo: give the loop the records and
        # the time to close on a busy CI machine too (it ends as soon as the new champion serves).
        max_drifted_records=12_000,
        timeout_s=1500.0,
        operator_token=operator_token,
    )
    console = Console(width=120)
    console.rule("[bold]Flywheel: the closed loop, inside docker compose")
    result = asyncio.run(Scenario(config, console).run())
    report(result, config, console)
    if not result.new_champion:
        raise RuntimeError("the loop did not close: no new champion after the concept change")


def read_outside(topic: str) -> int:
    """kcat (Debian's) reads the topic from the host; every message must be a JSON object."""
    result = subprocess.run(
        ["kcat", "-C", "-b", f"{HOST}:{PORTS['KAFKA']}", "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\\n"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        raise RuntimeError(f"kcat could not read {topic}: {result.stderr}")
    messages = [line for line in result.stdout.splitlines() if line.strip()]
    if not messages:
        raise RuntimeError(f"kcat read no message from {topic}")
    for line in messages:
        event = json.loads(line)
        if not isinstance(event, dict) or "event_type" not in event:
            raise RuntimeError(f"{topic}: not an event: {line[:200]}")
    print(f"  {topic:<12} {len(messages)} messages, all JSON events, e.g. {messages[-1][:100]}...", flush=True)
    return len(messages)


def render(address: str, shot: Path) -> tuple[str, float]:
    """Headless Chromium: the page's DOM after its scripts ran, and the inked share of a screenshot."""
    from PIL import Image

    browser = shutil.which("chromium")
    if browser is None:
        raise RuntimeError("chromium is missing")
    profile = WORK / "chromium-profile"
    common = [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*common, "--dump-dom", address], capture_output=True, text=True, timeout=120).stdout
    subprocess.run(
        [*common, "--window-size=1280,1000", f"--screenshot={shot}", address], capture_output=True, timeout=120
    )
    if not shot.exists():
        raise RuntimeError(f"chromium took no screenshot of {address}")
    histogram = Image.open(shot).convert("L").histogram()  # pixels per grey level, 0 (black) to 255
    inked = sum(histogram[:200]) / sum(histogram)
    return dom, inked


def check_pages() -> None:
    """/docs of every service shows its operations (Swagger UI ran); /report shows the drift report."""
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    pages = [(name, url(name, "/docs"), ['class="opblock', f"flywheel-{name}"]) for name in SERVICES]
    pages.append(("report", url("monitoring", "/report"), ["Flywheel drift report", "<svg"]))
    for name, address, expected in pages:
        dom, inked = render(address, SHOTS / f"{name}.png")
        missing = [text for text in expected if text not in dom]
        print(f"  {address:<36} {len(dom):7} bytes of DOM, {inked:6.1%} of the screenshot inked", flush=True)
        if missing or inked < 0.01:
            raise RuntimeError(f"{address} did not render: lacks {missing}, {inked:.1%} inked (see {SHOTS})")


def durable_state(compose: Compose) -> dict[str, object]:
    """What must survive a restart: every topic's end offsets and the objects in both buckets."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient
    from minio import Minio

    bootstrap = f"{HOST}:{PORTS['KAFKA']}"

    async def offsets() -> dict[str, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            topics = [topic for topic in await admin.list_topics() if not topic.startswith("__")]
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        partitions = [TopicPartition(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
        finally:
            await consumer.stop()
        return {f"{tp.topic}/{tp.partition}": end for tp, end in ends.items()}

    root = compose.secrets["MINIO_ROOT_PASSWORD"]
    client = Minio(f"{HOST}:{PORTS['MINIO']}", access_key="flywheel", secret_key=root, secure=False)
    objects = sorted(
        f"{bucket}/{item.object_name}"
        for bucket in ("flywheel", "mlflow")
        for item in client.list_objects(bucket, recursive=True)
    )
    return {"offsets": asyncio.run(offsets()), "objects": objects}


def check_restart(compose: Compose) -> None:
    before = durable_state(compose)
    compose("restart", "kafka", "minio")
    compose("up", "-d", "--wait", "--wait-timeout", "300", "kafka", "minio")
    after = retry(lambda: durable_state(compose), attempts=10)
    messages = sum(before["offsets"].values())
    if messages == 0 or not before["objects"]:
        raise RuntimeError(f"nothing to keep: {messages} messages, {len(before['objects'])} objects before the restart")
    # The services keep running, so there may be more afterwards, never less.
    lost = {k: v for k, v in before["offsets"].items() if after["offsets"].get(k, -1) < v}
    gone = sorted(set(before["objects"]) - set(after["objects"]))
    if lost or gone:
        raise RuntimeError(f"a restart lost data: offsets {lost}, objects {gone[:10]}")
    print(f"  kept {messages} messages in {len(before['offsets'])} partitions, {len(before['objects'])} objects")


def retry(call: Callable[[], dict], attempts: int) -> dict:
    for attempt in range(attempts):
        try:
            return call()
        except Exception:
            if attempt == attempts - 1:
                raise
            time.sleep(3)
    raise AssertionError("unreachable")


def image_sizes(variables: dict[str, str]) -> None:
    for variable, tag in variables.items():
        print(f"  {variable:<22} {tag:<45} {images.image_size(tag) / 1e6:7.0f} MB")


# -- the run ------------------------------------------------------------------------------


def main() -> int:
    phases = Phases()
    compose: Compose | None = None
    failed = False
    try:
        with phases.phase("engine"):
            tools = {"kcat": "kcat", "debootstrap": "debootstrap", "chromium": "chromium"}
            missing = [package for tool, package in tools.items() if shutil.which(tool) is None]
            if missing:
                apt_install(missing)
            engine = Engine(WORK / "logs" / "dockerd.log")
            engine.__enter__()
        try:
            # Compose (maybe a Go build, CPU) and the images (mostly downloads) side by side.
            with phases.phase("images"), concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                building_compose = pool.submit(compose_command)
                variables = images.build_all()
                command = building_compose.result()
                print("  " + subprocess.run([*command, "version"], capture_output=True, text=True).stdout.strip())
            compose = Compose(command, variables)
            compose_config = yaml.safe_load(compose("config", capture=True))
            try:
                with phases.phase("up"):
                    compose("up", "-d", "--wait", "--wait-timeout", "600")
                with phases.phase("health"):
                    check_health()
                with phases.phase("metrics"):
                    check_metrics(compose_config)
                with phases.phase("auth"):
                    check_auth(compose.tokens)
                    check_store_access(compose.secrets)
                    check_tracking_access(compose.secrets)
                with phases.phase("demo"):
                    run_demo(compose.tokens["operator"])
                with phases.phase("kafka"):
                    for topic in TOPICS_READ_OUTSIDE:
                        read_outside(topic)
                with phases.phase("browser"):
                    check_pages()
                with phases.phase("restart"):
                    check_restart(compose)
            except BaseException:
                failed = True
                compose.logs()
                raise
            finally:
                with phases.phase("down"):
                    compose("down", "-v", "--remove-orphans", "--timeout", "20")
                    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)
                print("\n== compose-test: images")
                image_sizes(variables)
        finally:
            engine.__exit__(None, None, None)
    except BaseException as error:
        failed = True
        print(f"\ncompose-test: FAILED: {error}", file=sys.stderr, flush=True)
    finally:
        phases.print()
    print("compose-test: " + ("FAILED" if failed else "passed"), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
