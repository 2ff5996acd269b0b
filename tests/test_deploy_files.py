"""The files operators copy from: every setting the bot reads is in .env.example, and nothing else is; the compose
files start what they say (one process on SQLite, or processes that split the shards over one PostgreSQL); the
image installs pinned versions of everything it runs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import SecretStr

from bot.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = sorted(ROOT.glob("docker-compose*.yml"))
#: A stand-in for the values compose takes from the operator's .env when it reads a compose file.
OPERATOR_ENV = {"POSTGRES_PASSWORD": "s3cretPassw0rd"}


def known_settings() -> set[str]:
    return {field.alias for field in Settings.model_fields.values() if field.alias}


def test_env_example_lists_every_setting_once_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    listed = re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=(.*)$", text, flags=re.MULTILINE)
    names = [name for name, _ in listed]

    assert sorted(names) == sorted(known_settings()), "every variable of bot/settings.py, and only those"
    assert len(names) == len(set(names))
    for name, value in listed:
        field = next(field for field in Settings.model_fields.values() if field.alias == name)
        default = field.default
        if isinstance(default, SecretStr):  # DATABASE_URL: a secret only when it names a password
            default = default.get_secret_value()
        if field.is_required() or default is None:
            assert value == "", f"{name} has no default: no value in the example"
        elif isinstance(default, bool):
            assert value == str(default).lower(), name
        elif isinstance(default, int | float):
            assert float(value) == default, name
        else:  # strings, enums, and values that print as their setting (DISCORD_MEDIA_HOSTS)
            assert value == str(getattr(default, "value", default)), name


# --- docker compose ------------------------------------------------------------------------------------------


def interpolate(text: str, environment: dict[str, str]) -> str:
    """Compose's ``${NAME}``, ``${NAME:?message}`` and ``${NAME:-default}``, with a variable compose would not find
    failing the test as it would fail ``docker compose up``."""

    def value(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2), match.group(3)
        if name in environment:
            return environment[name]
        if operator == ":-":
            return rest or ""
        raise ValueError(f"${{{name}}} is not set ({rest or 'no default'})")

    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:[?-])([^}]*))?\}", value, text)


def compose(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(interpolate(path.read_text(encoding="utf-8"), OPERATOR_ENV))
    assert isinstance(document, dict)
    return document


def fluxbot_services(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = document["services"]
    return {name: service for name, service in services.items() if service.get("image") == "fluxbot"}


def test_there_is_a_sqlite_and_a_postgresql_compose_file() -> None:
    assert [path.name for path in COMPOSE_FILES] == ["docker-compose.postgres.yml", "docker-compose.yml"]


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda path: path.name)
def test_every_fluxbot_service_builds_this_image_and_sets_only_real_settings(path: Path) -> None:
    services = fluxbot_services(compose(path))
    assert services, "at least one fluxbot service"
    for name, service in services.items():
        assert service["build"] == ".", name
        assert service["env_file"] == ".env", name
        assert service["restart"] == "unless-stopped", name
        environment = service.get("environment", {})
        assert set(environment) <= known_settings(), f"{name}: a typo would be ignored by the bot"
        # What the service runs with: .env's two secrets, then the service's own variables (which win).
        settings = load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", **{k: str(v) for k, v in environment.items()})
        assert settings.metrics_listen is not None, f"{name}: the image's health check needs /healthz"


def test_the_postgresql_variant_splits_every_shard_over_processes_that_share_one_database() -> None:
    document = compose(ROOT / "docker-compose.postgres.yml")
    database = document["services"]["postgres"]
    assert database["image"] == "postgres:15"
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in database["volumes"])
    assert "pg_isready" in " ".join(database["healthcheck"]["test"])
    assert "ports" not in database, "the database is reached over the project's network only"

    processes = fluxbot_services(document)
    shards: list[int] = []
    host_ports: list[str] = []
    for name, service in processes.items():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}, name
        environment = {key: str(value) for key, value in service["environment"].items()}
        settings = load_settings(DISCORD_TOKEN="t", FLUX_API_KEY="k", **environment)
        assert settings.uses_postgresql, name
        url = urlsplit(settings.database_url.get_secret_value())
        assert (url.hostname, url.port, url.path) == ("postgres", 5432, "/" + database["environment"]["POSTGRES_DB"])
        assert url.username == database["environment"]["POSTGRES_USER"]
        assert url.password == database["environment"]["POSTGRES_PASSWORD"] == OPERATOR_ENV["POSTGRES_PASSWORD"]
        assert settings.shard_count == len(processes)
        assert settings.shard_ids is not None
        shards.extend(settings.shard_ids)
        host_ports.extend(port.rsplit(":", 1)[0] for port in service["ports"])
    assert len(processes) == 3
    assert sorted(shards) == list(range(len(processes))), "each shard run by exactly one process"
    assert len(set(host_ports)) == len(host_ports), "each process's /metrics on its own host port"
    assert set(document["volumes"]) == {"postgres-data"}


def test_the_postgresql_variant_will_not_start_without_a_password() -> None:
    text = (ROOT / "docker-compose.postgres.yml").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match=r"\$\{POSTGRES_PASSWORD\} is not set \(set POSTGRES_PASSWORD in .env\)"):
        interpolate(text, {})


# --- the image -----------------------------------------------------------------------------------------------


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9_.-]+", requirement)
    assert name, requirement
    return re.sub(r"[-_.]+", "-", name.group(0)).lower()


def test_the_image_installs_the_postgres_extra_with_every_runtime_package_pinned() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install --no-cache-dir -c constraints.txt '.[postgres]'" in dockerfile
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    installed = [*project["dependencies"], *project["optional-dependencies"]["postgres"]]
    pinned = {
        requirement_name(line): line.partition("==")[2]
        for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
        if line and not line.startswith("#")
    }
    for requirement in installed:
        assert pinned.get(requirement_name(requirement)), f"{requirement} is not pinned in constraints.txt"
