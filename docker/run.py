"""Build agrajag's image and run the demo or the test suite in it, through the Docker SDK.

    python docker/run.py [demo|test]

For a machine with a Docker engine; everything stays inside the container, on its loopback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import docker
from docker.errors import BuildError, DockerException

REPO = Path(__file__).resolve().parents[1]
IMAGE = "agrajag:dev"
COMMANDS = {"demo": ["make", "demo"], "test": ["make", "test"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=sorted(COMMANDS), nargs="?", default="demo")
    args = parser.parse_args(argv)
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        print(f"docker/run.py: no Docker engine reachable (DOCKER_HOST or the local socket): {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        client.images.build(path=str(REPO), dockerfile="docker/Dockerfile", tag=IMAGE, rm=True)
    except BuildError as exc:
        print(f"docker/run.py: building {IMAGE} failed: {exc}", file=sys.stderr)
        return 1
    container = client.containers.run(IMAGE, COMMANDS[args.what], detach=True)
    try:
        for chunk in container.logs(stream=True, follow=True):
            sys.stdout.buffer.write(chunk)
        return int(container.wait()["StatusCode"])
    finally:
        container.remove(force=True)


if __name__ == "__main__":
    sys.exit(main())
