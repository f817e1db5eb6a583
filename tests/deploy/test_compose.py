"""compose.yaml and the Dockerfile, checked without a Docker engine: every variable set is
one the server (or the entrypoint, uvicorn, the PostGIS image) reads, images are pinned,
services are health-checked and started in order, and the image is built from files that
exist and are not excluded from the build context."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.processes import COMPOSE_UPSTREAMS, ENTRYPOINT, NGINX_CONF, ROOT
from tracker.config import OTHER_VARIABLES, Settings

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
TRACKERS = ("tracker-1", "tracker-2")
# Read by the entrypoint (deploy/entrypoint.sh) and uvicorn, not by tracker.config.
ENTRYPOINT_VARIABLES = {"DB_WAIT_S", "MIGRATE", "HOST", "PORT", "WORKERS"}
UVICORN_VARIABLES = {"FORWARDED_ALLOW_IPS"}
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):  # the `- NAME=value` form
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            result.append((word.upper(), rest.strip()))
    return result


def test_the_stack_has_its_services(compose: dict[str, Any]) -> None:
    assert set(services(compose)) == {"db", "redis", *TRACKERS, "proxy"}


def test_every_variable_set_is_one_something_reads(compose: dict[str, Any]) -> None:
    known = {f.metadata["env"] for f in dataclasses.fields(Settings)} | OTHER_VARIABLES
    entrypoint = ENTRYPOINT.read_text()
    for name in ENTRYPOINT_VARIABLES:
        assert "${" + name in entrypoint, f"the entrypoint does not read {name}"
    for name in TRACKERS:
        unknown = set(environment(services(compose)[name])) - (
            known | ENTRYPOINT_VARIABLES | UVICORN_VARIABLES
        )
        assert not unknown, f"{name} sets unknown variables {unknown}"
    assert set(environment(services(compose)["db"])) <= POSTGRES_IMAGE_VARIABLES


def test_the_trackers_reach_the_databases_the_stack_defines(compose: dict[str, Any]) -> None:
    db_env = environment(services(compose)["db"])
    for name in TRACKERS:
        env = environment(services(compose)[name])
        url = urlsplit(env["DATABASE_URL"])
        assert url.hostname == "db"
        assert url.username == db_env["POSTGRES_USER"]
        assert url.password == db_env["POSTGRES_PASSWORD"]
        assert url.path == "/" + db_env["POSTGRES_DB"]
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        # Required: compose refuses to start without it rather than run without an admin.
        assert re.fullmatch(r"\$\{TRACKER_ADMIN_TOKEN:\?.+\}", env["TRACKER_ADMIN_TOKEN"])


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    images = [s["image"] for s in services(compose).values() if "build" not in s]
    images += [args.split()[0] for word, args in instructions() if word == "FROM"]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, image
    db = services(compose)["db"]["image"]
    # PostgreSQL 15 with PostGIS 3 and pgRouting 3 (migration 007 creates the extension).
    assert db.startswith("pgrouting/pgrouting:15-3."), db


def test_everything_is_health_checked_and_started_in_order(compose: dict[str, Any]) -> None:
    image_checks = [args for word, args in instructions() if word == "HEALTHCHECK"]
    for name, service in services(compose).items():
        if "build" in service:
            assert image_checks, f"{name} is built from a Dockerfile without HEALTHCHECK"
        else:
            assert service["healthcheck"]["test"], name
    for name in TRACKERS:
        service = services(compose)[name]
        assert service["init"] is True  # signals reach the server; zombies are reaped
        assert service["build"] == "."
        depends = service["depends_on"]
        assert {k: v["condition"] for k, v in depends.items()} == {
            "db": "service_healthy",
            "redis": "service_healthy",
        }
    proxy = services(compose)["proxy"]
    assert set(proxy["depends_on"]) == set(TRACKERS)
    assert all(v["condition"] == "service_healthy" for v in proxy["depends_on"].values())


def test_the_proxy_runs_deploy_nginx_conf_in_front_of_both_trackers(
    compose: dict[str, Any],
) -> None:
    proxy = services(compose)["proxy"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in proxy["volumes"]}
    assert (ROOT / mounts["/etc/nginx/nginx.conf"]).resolve() == NGINX_CONF
    assert "8000:8000" in proxy["ports"]
    conf = NGINX_CONF.read_text()
    for upstream in COMPOSE_UPSTREAMS:
        host, port = upstream.split(":")
        assert host in services(compose)
        assert re.search(rf"\n\s*server {re.escape(upstream)}\b", conf)
        # The port the entrypoint serves on by default.
        assert '"${PORT:-' + port + '}"' in ENTRYPOINT.read_text()
    assert re.search(r"client_max_body_size 4m;", conf)
    assert Settings().max_body_bytes == 4 * 1024 * 1024
    declared = set(compose.get("volumes") or {})
    named = {v.split(":")[0] for s in services(compose).values() for v in s.get("volumes", [])}
    assert {v for v in named if not v.startswith(".")} <= declared


def test_the_image_runs_the_entrypoint_as_a_non_root_user_with_a_healthcheck() -> None:
    steps = instructions()
    users = [args for word, args in steps if word == "USER"]
    assert users, "no USER: the server would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    # After the last FROM: the final stage's user.
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    assert any(word == "USER" for word, _ in steps[last_from:])

    [healthcheck] = [args for word, args in steps if word == "HEALTHCHECK"]
    assert "/healthz" in healthcheck

    [entrypoint] = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    assert entrypoint == ["/app/deploy/entrypoint.sh"]
    workdir = [args for word, args in steps[last_from:] if word == "WORKDIR"][-1]
    copies = [shlex.split(args) for word, args in steps[last_from:] if word == "COPY"]
    targets = {str(Path(workdir) / c[-1]) for c in copies if not c[0].startswith("--")}
    assert "/app/deploy/entrypoint.sh" in {str(Path(t)) for t in targets}
    # COPY keeps the mode: the script must be executable in the checkout.
    assert ENTRYPOINT.stat().st_mode & 0o111


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for word, args in instructions():
        if word != "COPY":
            continue
        parts = shlex.split(args)
        if any(p.startswith("--from") for p in parts):
            continue
        for source in (p for p in parts[:-1] if not p.startswith("--")):
            path = ROOT / source
            assert path.exists(), f"COPY {source}: no such path"
            relative = path.resolve().relative_to(ROOT).as_posix()
            for pattern in ignored:
                pattern = pattern.removeprefix("**/")
                assert not fnmatch.fnmatch(relative, pattern), (
                    f"COPY {source}: excluded by .dockerignore ({pattern})"
                )
