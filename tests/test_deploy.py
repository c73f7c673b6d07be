"""The Kubernetes manifests and the image recipe stay true to the code: valid resources,
known settings, a flow entry point that exists, every package file in the wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from config.settings import load_settings
from connectors.service.app import create_app
from connectors.service.hosting import build_context
from tests.conftest import ROOT

K8S = ROOT / "k8s"
MANIFESTS = sorted(K8S.glob("*.yaml"))


def resources() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize(
    "resource", resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}"
)
def test_manifests_are_valid_kubernetes_resources(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, "1.30.0", strict=True)


def test_a_typo_in_a_manifest_is_caught() -> None:
    statefulset = next(r for r in resources() if r["kind"] == "StatefulSet")
    statefulset["spec"]["template"]["spec"]["containers"][0]["envFrm"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(statefulset, "1.30.0", strict=True)


def test_the_manifest_settings_are_accepted_by_the_flow() -> None:
    env: dict[str, str] = {}
    for resource in resources():
        if resource["kind"] in ("ConfigMap", "Secret"):
            env.update(resource.get("data") or {})
            env.update(resource.get("stringData") or {})
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("PULSE_")})
    assert settings.log.backend == "kafka"
    assert settings.clickhouse_dsn.startswith("https://")
    assert int(env["BYTEWAX_SNAPSHOT_INTERVAL"]) > 0
    # The service listens beyond loopback, so keys are configured (else the start fails).
    assert settings.service.host == "0.0.0.0" and settings.service.api_keys


def test_the_probes_and_ports_name_the_service() -> None:
    statefulset = next(r for r in resources() if r["kind"] == "StatefulSet")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    (port,) = container["ports"]
    env: dict[str, str] = {}
    for resource in resources():
        if resource["kind"] == "ConfigMap":
            env.update(resource["data"])
    assert port["containerPort"] == int(env["PULSE_SERVICE_PORT"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    settings = load_settings(environ={})
    app = create_app(build_context(settings, hosted_by_flow=True, local_key=None))
    assert {"/healthz", "/readyz"} <= set(app.openapi()["paths"])


def test_the_container_runs_the_flow_entry_point() -> None:
    statefulset = next(r for r in resources() if r["kind"] == "StatefulSet")
    command = statefulset["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[:3] == ["python", "-m", "bytewax.run"]
    module, attribute = command[3].split(":")
    imported = __import__(module, fromlist=[attribute])
    assert callable(getattr(imported, attribute))


def test_the_wheel_the_image_installs_has_every_package_file(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300)  # fmt: skip
    (wheel,) = tmp_path.glob("feedback_pulse-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in ("dataflows", "connectors", "operators", "config"):
        for path in (ROOT / package).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".sql", ".yaml", ".json"):
                assert str(path.relative_to(ROOT)) in names, f"{path} is not in the wheel"
