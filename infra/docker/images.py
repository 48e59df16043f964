"""`make compose-images`: every image docker-compose.yml needs, built without a container registry.

    python infra/docker/images.py          # build what is missing, print sizes, write the env file
    docker compose --env-file .stack/docker/compose.env --env-file .secrets/compose.env up -d

From the bottom up, all from Debian's packages and from what `make install` already fetched:

    flywheel-base/debian:bookworm     debootstrap --variant=minbase bookworm + docker import
                                      (the root filesystem is cached in .stack/docker/)
    flywheel-base/python:3.11         Debian's Python on it     (infra/docker/python/Dockerfile)
    flywheel-standin/kafka:<version>-<digest>  the Maven Central jars of .stack/kafka/libs on Debian's JRE,
                                      and infra/kafka/Access.java compiled here (compose's `kafka-access`);
                                      the digest of its files names the build, so a change rebuilds it
    flywheel-standin/minio:<version>  the go-built .stack/bin/minio
    flywheel-standin/prometheus:bookworm  Debian's prometheus package (the `observability` profile's
                                      Prometheus; Grafana has no stand-in)
    flywheel:latest                   the project's Dockerfile with BASE_IMAGE=flywheel-base/python

The env file names them in the variables docker-compose.yml reads (FLYWHEEL_KAFKA_IMAGE, ...).
Builds that download (apt, PyPI) get the extra CA certificates: the PEM files of
FLYWHEEL_EXTRA_CA_CERTS (a file or a folder), by default those in /usr/local/share/ca-certificates,
where Debian keeps the certificates an administrator added (e.g. a TLS-inspecting gateway's).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "infra" / "docker"
STACK = Path(os.environ.get("FLYWHEEL_STACK_DIR", ROOT / ".stack")).resolve()
WORK = STACK / "docker"
ENV_FILE = WORK / "compose.env"
ROOTFS_TAR = WORK / "debian-bookworm-minbase.tar"
KAFKA_LIBS = STACK / "kafka" / "libs"
KAFKA_ACCESS = ROOT / "infra" / "kafka" / "Access.java"
KAFKA_FORMAT = ROOT / "infra" / "kafka" / "FormatStorage.java"  # the admin's login from the environment
MINIO_BIN = STACK / "bin" / "minio"
DEBIAN_MIRROR = os.environ.get("FLYWHEEL_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEFAULT_CA_DIR = Path("/usr/local/share/ca-certificates")

DEBIAN = "flywheel-base/debian:bookworm"
PYTHON = "flywheel-base/python:3.11-bookworm"
FLYWHEEL = os.environ.get("FLYWHEEL_IMAGE", "flywheel:latest")
BUILD_STAGE = "flywheel-build-stage:latest"


def kafka_version() -> str:
    jar = next(KAFKA_LIBS.glob("kafka_2.13-*.jar"), None)
    if jar is None:
        sys.exit(f"images: no Kafka jars in {KAFKA_LIBS}; run `make install` first")
    return jar.stem.removeprefix("kafka_2.13-")


def kafka_tag() -> str:
    """The stand-in's tag: Kafka's version and the digest of what the image is made of besides the jars."""
    files = [*sorted((HERE / "kafka").iterdir()), KAFKA_ACCESS, KAFKA_FORMAT, ROOT / "infra/kafka/log4j2.properties"]
    digest = hashlib.sha256(b"".join(path.name.encode() + path.read_bytes() for path in files)).hexdigest()
    return f"flywheel-standin/kafka:{kafka_version()}-{digest[:12]}"


def minio_version() -> str:
    if not MINIO_BIN.exists():
        sys.exit(f"images: no MinIO binary at {MINIO_BIN}; run `make install` first")
    info = subprocess.run(["go", "version", "-m", str(MINIO_BIN)], capture_output=True, text=True).stdout
    for line in info.splitlines():
        fields = line.split()
        if fields[:2] == ["mod", "github.com/minio/minio"] and len(fields) >= 3:
            return fields[2].rsplit("-", 1)[-1][:12]  # the commit of the pseudo-version
    return "local"


def extra_ca_certs() -> str:
    """The PEM text of the extra CA certificates ('' when there are none)."""
    where = Path(os.environ.get("FLYWHEEL_EXTRA_CA_CERTS", DEFAULT_CA_DIR))
    files = sorted(where.rglob("*.crt")) + sorted(where.rglob("*.pem")) if where.is_dir() else [where]
    return "".join(path.read_text() for path in files if path.is_file())


# -- docker -------------------------------------------------------------------------------


def docker(*args: str, capture: bool = True, check: bool = True) -> str:
    result = subprocess.run(["docker", *args], capture_output=capture, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"`docker {' '.join(args)}` failed ({result.returncode}): {result.stderr or ''}")
    return result.stdout or ""


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).strip())


def build(tag: str, context: Path, dockerfile: Path, args: dict[str, str], log: Path, target: str = "") -> float:
    """`docker build` with the classic builder (no BuildKit frontend image to pull); its output goes to log."""
    started = time.monotonic()
    wants_ca = "ARG EXTRA_CA_CERTS" in dockerfile.read_text()
    build_args = {**args, **({"EXTRA_CA_CERTS": extra_ca_certs()} if wants_ca else {})}
    command = ["docker", "build", "--tag", tag, "--file", str(dockerfile), *(["--target", target] if target else [])]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a" if target else "w") as out:
        result = subprocess.run(
            [*command, str(context)], stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "DOCKER_BUILDKIT": "0"}
        )
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise RuntimeError(f"building {tag} failed; the end of {log}:\n{tail}")
    return time.monotonic() - started


# -- the images ---------------------------------------------------------------------------


def debian_base() -> None:
    """A Debian bookworm image from Debian's packages: debootstrap once (cached), docker import."""
    if image_exists(DEBIAN):
        return
    if not ROOTFS_TAR.exists():
        if shutil.which("debootstrap") is None:
            sys.exit("images: debootstrap is missing (apt-get install debootstrap)")
        WORK.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=WORK) as tmp:
            rootfs = Path(tmp) / "rootfs"
            subprocess.run(
                ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            # What official images leave out: downloaded packages and package lists.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for path in (rootfs / junk).glob("*"):
                    if path.is_file():
                        path.unlink()
            security = DEBIAN_MIRROR.rstrip("/") + "-security"
            (rootfs / "etc/apt/sources.list").write_text(
                f"deb {DEBIAN_MIRROR} bookworm main\n"
                f"deb {DEBIAN_MIRROR} bookworm-updates main\n"
                f"deb {security} bookworm-security main\n"
            )
            partial = ROOTFS_TAR.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."], check=True)
            partial.rename(ROOTFS_TAR)
    subprocess.run(
        ["docker", "import", "--change", 'CMD ["bash"]', str(ROOTFS_TAR), DEBIAN], check=True, stdout=subprocess.DEVNULL
    )


def assemble(name: str, files: dict[str, Path]) -> Path:
    """A build context under .stack/docker/<name>: the Dockerfile's folder plus the given files."""
    context = WORK / name
    shutil.rmtree(context, ignore_errors=True)
    shutil.copytree(HERE / name, context)
    for target, source in files.items():
        if source.is_dir():
            shutil.copytree(source, context / target)
        else:
            shutil.copy2(source, context / target)
    return context


@dataclass
class Image:
    variable: str  # the docker-compose.yml variable that names it
    tag: str
    make: callable

    def ensure(self, rebuild: bool) -> float | None:
        if image_exists(self.tag) and not rebuild:
            return None
        return self.make(self.tag)


def kafka(tag: str) -> float:
    context = assemble("kafka", {"libs": KAFKA_LIBS, "log4j2.properties": ROOT / "infra/kafka/log4j2.properties"})
    # Access.java and FormatStorage.java compiled here, on the host's JDK, rather than the image on a JDK: Java
    # runs a source file only with its compiler (jdk.compiler), which Debian's JRE lacks, and a JDK adds ~80 MB.
    if shutil.which("javac") is None:
        sys.exit("images: no javac to compile infra/kafka/Access.java (apt-get install openjdk-17-jdk-headless)")
    subprocess.run(
        [
            "javac",
            "--release",
            "17",
            "-cp",
            f"{KAFKA_LIBS}/*",
            "-d",
            str(context / "access"),
            str(KAFKA_ACCESS),
            str(KAFKA_FORMAT),
        ],
        check=True,
    )
    return build(tag, context, context / "Dockerfile", {"BASE_IMAGE": DEBIAN}, WORK / "logs" / "kafka.log")


def minio(tag: str) -> float:
    context = assemble("minio", {"minio": MINIO_BIN})
    return build(tag, context, context / "Dockerfile", {"BASE_IMAGE": DEBIAN}, WORK / "logs" / "minio.log")


def prometheus(tag: str) -> float:
    context = HERE / "prometheus"
    return build(tag, context, context / "Dockerfile", {"BASE_IMAGE": DEBIAN}, WORK / "logs" / "prometheus.log")


def python(tag: str) -> float:
    context = HERE / "python"
    return build(tag, context, context / "Dockerfile", {"BASE_IMAGE": DEBIAN}, WORK / "logs" / "python.log")


def flywheel(tag: str) -> float:
    # The build stage gets a tag of its own: untagged, `docker image prune` would take its layers
    # (the installed dependencies) and the next build would install them all again.
    args, log = {"BASE_IMAGE": PYTHON}, WORK / "logs" / "flywheel.log"
    return build(tag, ROOT, ROOT / "Dockerfile", args, log) + build(
        BUILD_STAGE, ROOT, ROOT / "Dockerfile", args, log, target="build"
    )


def images() -> list[Image]:
    return [
        Image("FLYWHEEL_KAFKA_IMAGE", kafka_tag(), kafka),
        Image("FLYWHEEL_MINIO_IMAGE", f"flywheel-standin/minio:{minio_version()}", minio),
        Image("FLYWHEEL_PROMETHEUS_IMAGE", "flywheel-standin/prometheus:bookworm", prometheus),
        Image("FLYWHEEL_PYTHON_IMAGE", PYTHON, python),
        Image("FLYWHEEL_IMAGE", FLYWHEEL, flywheel),
    ]


def build_all(rebuild_flywheel: bool = True) -> dict[str, str]:
    """Build every image (the Flywheel image always: its layers cache what did not change).

    Returns the compose variables naming them, also written to .stack/docker/compose.env.
    """
    started = time.monotonic()
    debian_base()
    print(f"images: {DEBIAN} ready in {time.monotonic() - started:.0f} s", flush=True)
    kafka_image, minio_image, prometheus_image, python_image, flywheel_image = images()

    def python_then_flywheel() -> list[tuple[Image, float | None]]:
        return [(python_image, python_image.ensure(False)), (flywheel_image, flywheel_image.ensure(rebuild_flywheel))]

    # The JRE and Prometheus downloads overlap the Python builds.
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        chain = pool.submit(python_then_flywheel)
        done = [(image, image.ensure(False)) for image in (kafka_image, minio_image, prometheus_image)]
        done += chain.result()
    for image, seconds in done:
        took = "cached" if seconds is None else f"built in {seconds:.0f} s"
        print(f"images: {image.tag:<45} {image_size(image.tag) / 1e6:7.0f} MB  {took}", flush=True)
    variables = {image.variable: image.tag for image, _ in done}
    ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
    ENV_FILE.write_text("".join(f"{key}={value}\n" for key, value in variables.items()))
    print(f"images: all built in {time.monotonic() - started:.0f} s; compose variables in {ENV_FILE}", flush=True)
    return variables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the compose variables as JSON")
    args = parser.parse_args()
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        sys.exit("images: no Docker engine answers `docker info`")
    variables = build_all()
    if args.json:
        print(json.dumps(variables))


if __name__ == "__main__":
    main()
