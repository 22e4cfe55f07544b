"""deploy/: the compose file and the Kubernetes manifests, validated without a Docker engine or a cluster.

- compose.yaml against the compose-spec JSON schema (bundled in the check-jsonschema wheel);
- every Kubernetes object against the Kubernetes 1.37 OpenAPI schemas in strict mode (bundled in the
  kubernetes-validate wheel). KubeRay's RayJob is a custom resource those schemas do not cover: its pod
  templates are validated as core/v1 PodTemplates and its top level against the few fields used here;
- every ``LLMFTI_*`` variable the manifests set names a real setting and loads through llmfti.config;
- every ``llmfti ...`` command line the manifests run parses with the real CLI;
- the scaled-out shape is there: object-storage URI, Redis Cluster, >= 2 agent replicas with readiness,
  a Ray job for index builds, vLLM with a LoRA module, the log drain; no credential is written in a manifest.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.37.0"
SECRET_LIKE = re.compile(r"SECRET|PASSWORD|TOKEN|API_KEYS|ACCESS_KEY", re.I)
# What a deployment supplies from its Secret: placeholders of the right shape, to load the settings.
SECRET_VALUES = {"LLMFTI_AGENT__API_KEYS": json.dumps([{"name": "app", "sha256": "0" * 64}])}

RAYJOB_SCHEMA = {  # the fields of KubeRay's ray.io/v1 RayJob this repository uses (types as in its CRD)
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["entrypoint", "rayClusterSpec"],
            "additionalProperties": False,
            "properties": {
                "entrypoint": {"type": "string", "minLength": 1},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
                "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                "rayClusterSpec": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "additionalProperties": False,
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "headGroupSpec": {
                            "type": "object", "required": ["template"], "additionalProperties": False,
                            "properties": {"rayStartParams": {"type": "object",
                                                              "additionalProperties": {"type": "string"}},
                                           "template": {"type": "object"}}},
                        "workerGroupSpecs": {"type": "array", "items": {
                            "type": "object", "required": ["groupName", "template"], "additionalProperties": False,
                            "properties": {"groupName": {"type": "string"},
                                           "replicas": {"type": "integer", "minimum": 0},
                                           "minReplicas": {"type": "integer", "minimum": 0},
                                           "maxReplicas": {"type": "integer", "minimum": 0},
                                           "rayStartParams": {"type": "object",
                                                              "additionalProperties": {"type": "string"}},
                                           "template": {"type": "object"}}}},
                    },
                },
            },
        },
    },
}


def k8s_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        out += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    return out


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec", {})
    if obj["kind"] == "RayJob":
        cluster = spec["rayClusterSpec"]
        return [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster.get("workerGroupSpecs", []))]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return [spec["template"]] if "template" in spec else []


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for t in pod_templates(obj) for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]]


def by_kind(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for _, o in k8s_objects() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def k8s_validate(obj: dict[str, Any]) -> None:
    import jsonschema
    import kubernetes_validate

    if obj["apiVersion"] == "ray.io/v1":
        jsonschema.validate(obj, RAYJOB_SCHEMA)
        for template in pod_templates(obj):
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "PodTemplate",
                                          "metadata": {"name": obj["metadata"]["name"]}, "template": template},
                                         K8S_VERSION, strict=True)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


# -- schemas ---------------------------------------------------------------------------------------

def compose_errors(doc: dict[str, Any]) -> list[str]:
    import importlib.resources

    import jsonschema

    schema = json.loads((importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
                         / "compose-spec.json").read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_spec() -> None:
    assert compose_errors(compose()) == []
    broken = copy.deepcopy(compose())
    broken["services"]["agent"]["depends_on"]["create-bucket"]["condition"] = "whenever"
    broken["services"]["agent"]["healtcheck"] = broken["services"]["agent"].pop("healthcheck")
    assert len(compose_errors(broken)) >= 2  # the validator does catch mistakes


@pytest.mark.parametrize("name, obj", k8s_objects(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_every_kubernetes_object_matches_its_schema(name: str, obj: dict[str, Any]) -> None:
    k8s_validate(obj)


def test_the_kubernetes_validator_catches_mistakes() -> None:
    import jsonschema
    import kubernetes_validate

    (agent,) = by_kind("Deployment", "llmfti-agent")
    typo = copy.deepcopy(agent)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(typo)
    (job,) = by_kind("RayJob")
    bad = copy.deepcopy(job)
    bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["cpu"] = 4
    with pytest.raises(kubernetes_validate.ValidationError):
        k8s_validate(bad)
    bad = copy.deepcopy(job)
    bad["spec"]["entrypint"] = bad["spec"].pop("entrypoint")
    with pytest.raises(jsonschema.ValidationError):
        k8s_validate(bad)


# -- settings and command lines ---------------------------------------------------------------------

def _interpolate(value: str) -> str:
    """Compose ``${VAR:-default}`` -> default; ``${VAR:?message}`` -> a placeholder of the right shape."""
    def one(match: re.Match) -> str:
        var, op, rest = match.group(1), match.group(2), match.group(3)
        if op in (":-", "-"):
            return rest
        return SECRET_VALUES.get(var, "set-by-the-operator")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, value)


def manifest_env() -> list[tuple[str, str, str]]:
    """(where, name, value) of every environment variable the manifests set for llmfti processes."""
    out: list[tuple[str, str, str]] = []
    for name, obj in k8s_objects():
        if obj["kind"] == "ConfigMap":
            out += [(f"{name}:{obj['metadata']['name']}", k, str(v)) for k, v in obj.get("data", {}).items()]
        for container in containers(obj):
            for env in container.get("env", []):
                value = env.get("value")
                if value is None and env["name"] in SECRET_VALUES:
                    value = SECRET_VALUES[env["name"]]
                out.append((f"{name}:{container['name']}", env["name"], str(value)))
    for service, spec in compose()["services"].items():
        env = spec.get("environment") or {}
        items = env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)
        out += [(f"compose.yaml:{service}", k, _interpolate(str(v))) for k, v in items]
    return out


def setting_path(variable: str) -> list[str]:
    """The settings field an LLMFTI_* variable sets (raises if none: a typo would be silently ignored)."""
    from pydantic import BaseModel

    from llmfti.config import Settings

    parts = variable.removeprefix("LLMFTI_").lower().split("__")
    model: Any = Settings
    for depth, part in enumerate(parts):
        fields = model.model_fields
        assert part in fields, f"{variable}: {part!r} is not a setting of {model.__name__} (has {sorted(fields)})"
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
        else:
            rest = parts[depth + 1:]
            assert not rest or "dict" in str(annotation), f"{variable}: {part!r} has no sub-settings {rest}"
            return parts[:depth + 1]
    raise AssertionError(f"{variable} names a settings section, not a setting")


def test_every_llmfti_variable_in_the_manifests_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from llmfti.config import load_settings

    env = [(where, k, v) for where, k, v in manifest_env() if k.startswith("LLMFTI_")]
    names = {k for _, k, _ in env}
    assert {"LLMFTI_STORAGE__URI", "LLMFTI_REDIS__CLUSTER", "LLMFTI_AGENT__GENERATOR__BACKEND"} <= names
    for _where, name, _ in env:
        setting_path(name)  # raises naming the file and the variable
    for where in sorted({w.split(":")[0] + ":" + w.split(":")[1] for w, _, _ in env}):
        for key in [k for k in list(os.environ) if k.startswith("LLMFTI_")]:
            monkeypatch.delenv(key)
        monkeypatch.delenv("LLMFTI_CONFIG", raising=False)
        for w, name, value in env:
            if w == where:
                monkeypatch.setenv(name, value)
        settings = load_settings()  # every value is valid, in every place that sets some
        if "LLMFTI_STORAGE__URI" in {n for w, n, _ in env if w == where}:
            assert settings.storage.uri.startswith("s3://") and settings.lancedb_uri.endswith("/lancedb")
            assert settings.redis.cluster


def test_a_misspelt_setting_would_be_caught() -> None:
    setting_path("LLMFTI_STORAGE__OPTIONS__ENDPOINT")  # a dict setting takes sub-keys
    with pytest.raises(AssertionError, match="not a setting"):
        setting_path("LLMFTI_REDIS__CLUSTERED")
    with pytest.raises(AssertionError, match="not a setting"):
        setting_path("LLMFTI_STORAGE_URI")


def llmfti_command_lines() -> list[tuple[str, list[str]]]:
    lines: list[tuple[str, list[str]]] = []

    def collect(where: str, words: list[str]) -> None:
        if words and words[0] == "llmfti":
            lines.append((where, words))
        elif len(words) >= 3 and words[0].endswith("sh") and words[1] == "-c":
            for segment in re.split(r";|&&|\|\|", words[2]):
                parts = shlex.split(segment) if re.search(r"\bllmfti ", segment) else []
                if "llmfti" in parts:
                    lines.append((where, parts[parts.index("llmfti"):]))

    for name, obj in k8s_objects():
        if obj["kind"] == "RayJob":
            collect(name, shlex.split(obj["spec"]["entrypoint"]))
        for container in containers(obj):
            collect(f"{name}:{container['name']}", [*container.get("command", []), *container.get("args", [])])
    for service, spec in compose()["services"].items():
        command = spec.get("command") or []
        command = shlex.split(command) if isinstance(command, str) else command
        collect(f"compose.yaml:{service}", [*(spec.get("entrypoint") or []), *command])
    return lines


def parse_cli(where: str, words: list[str]) -> None:
    """Parse ``words`` (``llmfti ...``) with the real CLI, running nothing; AssertionError if it does not parse."""
    import typer

    from llmfti.cli.main import app

    command = typer.main.get_command(app)  # typer ships its own click: duck-typed below
    args = words[1:]
    ctx = None
    while hasattr(command, "list_commands"):  # a group: descend to the subcommand
        ctx = command.make_context("llmfti", list(args), resilient_parsing=True, parent=ctx)
        sub = command.get_command(ctx, args[0])
        assert sub is not None, f"{where}: no command {args[0]!r} in {shlex.join(words)}"
        command, args = sub, args[1:]
    try:
        command.make_context(command.name or "", list(args), parent=ctx)  # parses and checks; runs nothing
    except Exception as exc:
        if not any(k.__name__ == "UsageError" for k in type(exc).__mro__):
            raise
        raise AssertionError(f"{where}: `{shlex.join(words)}` does not parse: {exc}") from exc


def test_every_llmfti_command_line_parses_with_the_real_cli() -> None:
    lines = llmfti_command_lines()
    run = {" ".join(words[1:3]) for _, words in lines}
    assert {"serve --host", "logs drain", "index build", "registry export"} <= run, run
    for where, words in lines:
        parse_cli(where, words)
    with pytest.raises(AssertionError, match="does not parse"):
        parse_cli("example", ["llmfti", "index", "build", "/docs", "--engin", "ray"])
    with pytest.raises(AssertionError, match="no command"):
        parse_cli("example", ["llmfti", "logs", "drian"])


# -- the scaled-out shape -----------------------------------------------------------------------------

def test_kubernetes_shows_the_scaled_out_shape() -> None:
    (config,) = by_kind("ConfigMap", "llmfti-config")
    assert config["data"]["LLMFTI_STORAGE__URI"].startswith("s3://")
    assert config["data"]["LLMFTI_REDIS__CLUSTER"] == "true"
    (agent,) = by_kind("Deployment", "llmfti-agent")
    assert agent["spec"]["replicas"] >= 2
    (container,) = containers(agent)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"configMapRef": {"name": "llmfti-config"}} in container["envFrom"]
    (redis,) = by_kind("StatefulSet", "redis-cluster")
    assert redis["spec"]["replicas"] >= 3 and "--cluster-enabled" in containers(redis)[0]["args"]
    (job,) = by_kind("RayJob")
    assert "--engine ray" in job["spec"]["entrypoint"]
    (vllm,) = by_kind("Deployment", "vllm")
    init, server = containers(vllm)
    assert init["args"][:3] == ["llmfti", "registry", "export"]
    assert "--enable-lora" in server["args"][0] and "--lora-modules" in server["args"][0]
    (drain,) = by_kind("CronJob")
    assert containers(drain)[0]["args"][:3] == ["llmfti", "logs", "drain"]
    assert drain["spec"]["concurrencyPolicy"] == "Forbid"


def test_compose_shows_the_scaled_out_shape() -> None:
    services = compose()["services"]
    agent = services["agent"]
    assert agent["deploy"]["replicas"] >= 2 and "/readyz" in " ".join(agent["healthcheck"]["test"])
    assert agent["environment"]["LLMFTI_STORAGE__URI"].startswith("s3://")
    assert agent["environment"]["LLMFTI_REDIS__CLUSTER"] == "true"
    assert sum("--cluster-enabled" in (s.get("command") or []) for s in services.values()) >= 3
    assert "--engine" in services["index-build"]["command"] and "ray" in services["index-build"]["command"]
    assert services["ray-worker"]["deploy"]["replicas"] >= 2
    assert "--enable-lora" in services["vllm"]["command"][0] and services["export-adapter"]["command"][1] == "registry"
    assert "logs drain" in services["log-drain"]["command"][0]


def test_no_credential_is_written_in_a_manifest() -> None:
    for name, obj in k8s_objects():
        if obj["kind"] == "ConfigMap":
            assert not [k for k in obj["data"] if SECRET_LIKE.search(k)], name
            options = json.loads(obj["data"].get("LLMFTI_STORAGE__OPTIONS", "{}"))
            assert not [k for k in options if SECRET_LIKE.search(k)], name
        for container in containers(obj):
            literal = [e["name"] for e in container.get("env", []) if SECRET_LIKE.search(e["name"]) and "value" in e]
            assert literal == [], f"{name}: {literal} must come from a Secret"
    for service, spec in compose()["services"].items():
        env = spec.get("environment") or {}
        for key, value in env.items():
            if SECRET_LIKE.search(key) or key.startswith("MINIO_ROOT"):
                assert str(value).startswith("${"), f"compose.yaml:{service}: {key} must come from the environment"
