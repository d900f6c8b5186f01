"""The deploy files say what they mean: every one parses, the commands they run exist, the
systemd units pass systemd's own checker, and the settings they set are ones jankycron reads."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from jankycron.config import Settings

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|DSN|_KEY\b|WEBHOOK", re.IGNORECASE)


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def k8s_docs() -> list[dict]:
    return [d for f in sorted(K8S.glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text()) if d]


def containers(kind: str, name: str) -> list[dict]:
    [doc] = [d for d in k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc["spec"]["template"]["spec"]["containers"]


def test_the_procfile_has_web_worker_beat_and_release() -> None:
    procs = procfile()
    assert set(procs) == {"web", "worker", "beat", "release"}
    assert procs["web"].startswith("gunicorn 'jankycron.web:create_app()'")
    assert procs["worker"].startswith("celery -A jankycron.worker worker")
    assert "-S jankycron.beat.Beat" in procs["beat"]
    assert procs["release"] == "jankycron migrate"


def test_the_web_command_names_a_real_app_factory(tmp_path: Path) -> None:
    # What gunicorn does with 'jankycron.web:create_app()', in a clean process and folder.
    code = ("import jankycron.web as w; app = w.create_app(); "
            "print(type(app).__name__, sorted(r.rule for r in app.url_map.iter_rules()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, check=True,
                         env={"JANKYCRON_STATE_URL": f"sqlite:///{tmp_path / 's.db'}",
                              "PATH": "/usr/bin:/bin"}).stdout
    assert out.startswith("Flask") and "'/healthz'" in out and "'/metrics'" in out


def test_the_celery_entry_module_exists() -> None:
    """worker and beat run ``celery -A jankycron.worker`` (the Celery issue's entry module)."""
    for name in ("worker", "beat"):
        module = re.search(r"-A (\S+)", procfile()[name]).group(1)
        assert importlib.util.find_spec(module) is not None, f"{module} (Procfile {name})"


def test_every_yaml_and_json_file_parses() -> None:
    yamls = sorted(DEPLOY.rglob("*.yaml"))
    jsons = sorted(DEPLOY.rglob("*.json"))
    assert len(yamls) >= 6 and len(jsons) == 3
    for f in yamls:
        docs = [d for d in yaml.safe_load_all(f.read_text()) if d]
        assert docs, f
        assert all("apiVersion" in d and "kind" in d for d in docs), f
    for f in jsons:
        assert json.loads(f.read_text())["Version"] == "2012-10-17", f


def test_k8s_runs_the_procfile_commands_and_beat_is_one_active_plus_a_standby() -> None:
    [web] = containers("Deployment", "jankycron-web")
    assert web["command"][:2] == ["gunicorn", "jankycron.web:create_app()"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    [worker] = containers("Deployment", "jankycron-worker")
    assert worker["command"][:4] == ["celery", "-A", "jankycron.worker", "worker"]
    [beat_doc] = [d for d in k8s_docs() if d["metadata"]["name"] == "jankycron-beat"
                  and d["kind"] == "Deployment"]
    assert beat_doc["spec"]["replicas"] == 2  # RedBeat's lock keeps one active
    [beat] = containers("Deployment", "jankycron-beat")
    assert "jankycron.beat.Beat" in beat["command"]
    assert beat["command"][beat["command"].index("jankycron.beat.Beat") - 1] == "-S"
    [migrate] = containers("Job", "jankycron-migrate")
    assert migrate["command"] == ["jankycron", "migrate"]


def test_k8s_pods_run_as_non_root_and_take_settings_from_the_configmap_and_secret() -> None:
    for d in k8s_docs():
        if d["kind"] not in ("Deployment", "Job"):
            continue
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, d["metadata"]["name"]
        for c in pod["containers"]:
            refs = {next(iter(r)): next(iter(r.values()))["name"] for r in c["envFrom"]}
            assert refs == {"configMapRef": "jankycron-config",
                            "secretRef": "jankycron-secrets"}, d["metadata"]["name"]
            assert not c.get("env"), "settings belong in the ConfigMap or the Secret"
    [config] = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    assert not [k for k in config["data"] if SECRET_NAMES.search(k)]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl is not installed")
def test_kustomize_renders_the_manifests() -> None:
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(out.stdout) if d]
    assert kinds.count("Deployment") == 3 and "Service" in kinds and "ConfigMap" in kinds


def test_every_setting_the_deploy_files_set_is_one_jankycron_reads() -> None:
    known = set(re.findall(r'"(JANKYCRON_[A-Z_]+|SENTRY_DSN)"',
                           (ROOT / "jankycron" / "config.py").read_text()))
    example = dict(line.split("=", 1) for line in (DEPLOY / "env.example").read_text()
                   .splitlines() if line and not line.startswith("#"))
    secret = yaml.safe_load((K8S / "secret.example.yaml").read_text())["stringData"]
    [config] = [d for d in k8s_docs() if d["kind"] == "ConfigMap"]
    for where, names in (("env.example", example), ("secret.example.yaml", secret),
                         ("configmap.yaml", config["data"])):
        unknown = [n for n in names if n.startswith(("JANKYCRON_", "SENTRY")) and n not in known]
        assert not unknown, f"{where} sets settings jankycron does not read: {unknown}"
    Settings.from_env(example)  # and their values are valid
    Settings.from_env(config["data"])


def test_the_image_runs_as_a_user_and_bakes_in_no_secret() -> None:
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")  # join continued lines
    instructions = [line.split(None, 1) for line in text.splitlines()]
    assert instructions[0] == ["FROM", "python:3.11-slim"]
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert not [rest for word, rest in instructions
                if word in ("ENV", "ARG") and SECRET_NAMES.search(rest)]
    for word, rest in instructions:
        if word == "COPY":  # what it copies is in the repository
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_the_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    # The units name /opt/jankycron/.venv/bin/...; point them at this venv so that systemd can
    # check the commands exist. Templates are checked as an instance.
    venv_bin = str(Path(sys.executable).parent) + "/"
    names = []
    for unit in sorted((DEPLOY / "systemd").iterdir()):
        name = unit.name.replace("@.", "@orders.")
        (tmp_path / name).write_text(unit.read_text().replace("/opt/jankycron/.venv/bin/",
                                                              venv_bin))
        names.append(name)
    assert {"jankycron-web.service", "jankycron-worker.service",
            "jankycron-beat.service"} <= set(names)
    out = subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0 and not out.stderr.strip() and not out.stdout.strip(), \
        out.stderr + out.stdout
    assert "celery -A jankycron.worker beat -S jankycron.beat.Beat" in \
        (DEPLOY / "systemd" / "jankycron-beat.service").read_text()
