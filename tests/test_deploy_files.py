"""The deployment files (Dockerfile, compose.yaml, deploy/haproxy.cfg) name what exists: files
that are there, settings the server reads, a `server` line per node. `docker compose config`
checks compose.yaml where the Compose plugin is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from bot.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SETTINGS = {name.upper() for name in Settings.model_fields}


def _images() -> dict[str, dict]:
    """Every service built from this repository: the nodes and the job workers."""
    return {name: service for name, service in COMPOSE["services"].items() if service.get("build") == "."}


def _nodes() -> dict[str, dict]:
    return {name: service for name, service in _images().items() if "command" not in service}


def test_job_workers_run_bot_worker_with_the_nodes_settings():
    workers = {name: service for name, service in _images().items() if service.get("command") == ["bot", "worker"]}
    assert workers, "compose starts no campaign job worker"
    node_environment = next(iter(_nodes().values()))["environment"]
    for name, service in workers.items():
        assert service["environment"] == node_environment, f"{name} does not share the nodes' settings"


def test_every_node_sets_only_settings_the_server_reads():
    assert len(_nodes()) >= 2
    for name, service in _images().items():
        unknown = {key for key in service["environment"] if key not in SETTINGS and not key.startswith("AWS_")}
        assert not unknown, f"{name} sets {unknown}, which the server does not read"
        assert service["environment"]["DATABASE_URL"].startswith("postgresql+asyncpg://")
        assert service["environment"]["OBJECT_STORE_URL"].startswith("s3://")
        Settings(_env_file=None, **{k.lower(): v for k, v in service["environment"].items() if k in SETTINGS})


def test_haproxy_sends_calls_to_every_node_compose_starts():
    haproxy = COMPOSE["services"]["haproxy"]
    source = haproxy["volumes"][0].split(":")[0]
    config = (ROOT / source).read_text()
    servers = re.findall(r'^\s*server\s+(\S+)\s+"\$\{(AGENT_NODE_\d+)\}"', config, re.M)
    assert {var for _, var in servers} == {k for k in haproxy["environment"] if k.startswith("AGENT_NODE_")}
    targets = {value.split(":")[0] for key, value in haproxy["environment"].items() if key.startswith("AGENT_NODE_")}
    assert targets == set(_nodes())


def test_the_dockerfile_copies_what_exists_and_runs_the_server_unprivileged():
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    assert re.search(r"^USER (?!root)\S+", text, re.M)
    assert 'CMD ["python", "server.py"]' in text and "requirements.lock" in text


def test_docker_compose_accepts_the_file():
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the Docker Compose plugin is not installed here")
    checked = subprocess.run([docker, "compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"], cwd=ROOT,
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
