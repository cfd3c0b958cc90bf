"""k8s/ rendered and validated (no cluster can run here): every overlay renders with
`kubectl kustomize`, `kubernetes-validate --strict` accepts every core object, the KEDA objects
carry only fields KEDA documents, and the manifests are tied to the code — the dev overlay's
pods are run as containers of the project image exactly as the manifests describe them (args,
env, secrets, read-only root, user), and their probes answer on the named container ports;
the ScaledObject's stream and consumer group are the ones a running worker created."""

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import pytest
import yaml

from conftest import ROOT, eventually, run

K8S = os.path.join(ROOT, "k8s")
CORE = {"ConfigMap", "Secret", "Service", "Deployment", "StatefulSet", "NetworkPolicy",
        "PodDisruptionBudget", "HorizontalPodAutoscaler"}


def render(path):
    return [d for d in yaml.safe_load_all(run(["kubectl", "kustomize", path], timeout=60)) if d]


@pytest.fixture(scope="module")
def overlays():
    """dev, prod, and prod's base with the HPA-on-CPU component instead of KEDA."""
    tmp = tempfile.mkdtemp(prefix="llmr-k8s-")
    with open(os.path.join(tmp, "kustomization.yaml"), "w") as f:
        yaml.safe_dump({"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                        "resources": [os.path.relpath(os.path.join(K8S, "base"), tmp)],
                        "components": [os.path.relpath(os.path.join(K8S, "components", "hpa-cpu"), tmp)]}, f)
    try:
        yield {"dev": render(os.path.join(K8S, "overlays", "dev")),
               "prod": render(os.path.join(K8S, "overlays", "prod")),
               "hpa": render(tmp)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def validate(docs):
    tmp = tempfile.mkdtemp(prefix="llmr-kv-")
    try:
        files = []
        for i, d in enumerate(docs):
            files.append(os.path.join(tmp, f"{i}-{d['kind']}.yaml"))
            with open(files[-1], "w") as f:
                yaml.safe_dump(d, f)
        return subprocess.run(["kubernetes-validate", "--strict", "--quiet", *files], capture_output=True, text=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_every_overlay_renders_and_passes_strict_validation(overlays):
    for name, docs in overlays.items():
        kinds = {d["kind"] for d in docs}
        assert kinds - CORE <= {"ScaledObject", "TriggerAuthentication"}, kinds
        core = [d for d in docs if d["kind"] in CORE]
        checked = validate(core)
        assert checked.returncode == 0, f"{name}:\n{checked.stdout}\n{checked.stderr}"
        print(f"{name}: {len(core)} core objects valid ({', '.join(sorted(kinds))})")
    # The validator does reject what it should: an unknown field in a container.
    bad = next(d for d in overlays["dev"] if d["kind"] == "Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["bogus"] = 1
    assert validate([bad]).returncode != 0


def test_roles_security_and_drain_bounds(overlays):
    import tomllib
    config = tomllib.loads(open(os.path.join(K8S, "base", "config.toml")).read())
    grace_s = config["server"]["shutdown_grace_ms"] / 1000
    for name in ("dev", "prod"):
        deployments = {d["metadata"]["name"]: d for d in overlays[name] if d["kind"] == "Deployment"}
        assert set(deployments) == {f"llmrouter-{r}" for r in ("gateway", "router", "worker", "mcp-tools", "responses")}
        for d in deployments.values():
            pod = d["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            sc = c["securityContext"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
            assert pod["terminationGracePeriodSeconds"] >= grace_s + pre_stop, "the drain fits the grace period"
            assert c["resources"]["requests"] and c["resources"]["limits"]
            annotations = d["spec"]["template"]["metadata"]["annotations"]
            assert annotations["prometheus.io/port"] == str(c["ports"][0]["containerPort"])
    prod = {(d["kind"], d["metadata"]["name"]) for d in overlays["prod"]}
    assert {("PodDisruptionBudget", f"llmrouter-{r}") for r in ("gateway", "router", "worker", "mcp-tools", "responses")} <= prod
    assert not any(d["kind"] == "StatefulSet" for d in overlays["prod"]), "prod uses an external Redis"
    redis = next(d for d in overlays["dev"] if d["kind"] == "StatefulSet")
    assert "--appendonly" in redis["spec"]["template"]["spec"]["containers"][0]["args"]
    assert redis["spec"]["volumeClaimTemplates"]
    policies = [d for d in overlays["dev"] if d["kind"] == "NetworkPolicy"]
    ingress_open = [p["metadata"]["name"] for p in policies if any("from" not in rule for rule in p["spec"].get("ingress", []))]
    assert ingress_open == ["llmrouter-gateway-ingress"], "only the gateway takes ingress from anywhere"
    hpa = next(d for d in overlays["hpa"] if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llmrouter-worker"


# Fields KEDA documents (keda.sh/docs/2.16: ScaledObject spec, TriggerAuthentication spec,
# the redis-streams scaler's metadata and authentication parameters).
SCALED_OBJECT_SPEC = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
                      "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
SCALE_TARGET = {"apiVersion", "kind", "name", "envSourceContainerName"}
ADVANCED = {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig", "scalingModifiers"}
HPA_CONFIG = {"name", "behavior"}
TRIGGER = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_STREAMS_METADATA = {"address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
                          "usernameFromEnv", "password", "passwordFromEnv", "databaseIndex", "enableTLS",
                          "unsafeSsl", "stream", "consumerGroup", "pendingEntriesCount", "streamLength",
                          "lagCount", "activationLagCount"}
TRIGGER_AUTH_SPEC = {"podIdentity", "secretTargetRef", "env", "hashiCorpVault", "azureKeyVault",
                     "awsSecretManager", "gcpSecretManager", "configMapTargetRef", "boundServiceAccountToken"}
REDIS_AUTH_PARAMS = {"address", "host", "port", "username", "password", "tls", "ca", "cert", "key", "keyPassword"}


def test_keda_objects_carry_only_documented_fields(overlays):
    docs = overlays["prod"]
    so = next(d for d in docs if d["kind"] == "ScaledObject")
    ta = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    assert so["apiVersion"] == ta["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC, set(spec) - SCALED_OBJECT_SPEC
    assert set(spec["scaleTargetRef"]) <= SCALE_TARGET
    assert set(spec.get("advanced", {})) <= ADVANCED
    assert set(spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {})) <= HPA_CONFIG
    workers = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmrouter-worker")
    assert spec["scaleTargetRef"]["name"] == workers["metadata"]["name"]
    (trigger,) = spec["triggers"]
    assert set(trigger) <= TRIGGER and trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert set(meta) <= REDIS_STREAMS_METADATA, set(meta) - REDIS_STREAMS_METADATA
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    assert int(meta["lagCount"]) > 0 and int(meta["activationLagCount"]) >= 0
    assert "password" not in meta and "address" not in meta, "secrets come through the TriggerAuthentication"
    assert trigger["authenticationRef"]["name"] == ta["metadata"]["name"]
    assert set(ta["spec"]) <= TRIGGER_AUTH_SPEC
    for ref in ta["spec"]["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in REDIS_AUTH_PARAMS
        assert ref["name"] == "llmrouter-redis"


def test_copies_under_k8s_base_equal_their_sources():
    def read(*p):
        with open(os.path.join(ROOT, *p), "rb") as f:
            return f.read()
    assert read("k8s", "base", "config.toml") == read("config", "cluster.toml")
    tools = sorted(os.listdir(os.path.join(ROOT, "config", "tools")))
    assert sorted(os.listdir(os.path.join(K8S, "base", "tools"))) == tools
    for t in tools:
        assert read("k8s", "base", "tools", t) == read("config", "tools", t), t


def generated(docs, kind="Secret"):
    """Generated Secrets' decoded data, by their rendered name (with the hash) and their base name."""
    import base64
    out = {}
    for d in docs:
        if d["kind"] == kind:
            data = {k: base64.b64decode(v).decode() for k, v in d["data"].items()}
            out[d["metadata"]["name"]] = out[d["metadata"]["name"].rsplit("-", 1)[0]] = data
    return out


def env_of(container, secrets):
    """The environment a pod's container gets: its env (secret refs resolved) and envFrom."""
    env = {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secrets[ref["name"]][ref["key"]]
    for src in container.get("envFrom", []):
        env.update(secrets[src["secretRef"]["name"]])
    return env


def test_every_env_var_the_manifests_and_compose_set_is_a_real_config_key(overlays, image):
    config = open(os.path.join(K8S, "base", "config.toml")).read()
    secrets = generated(overlays["dev"], "Secret")
    names = set()
    for d in overlays["dev"] + overlays["prod"]:
        if d["kind"] == "Deployment":
            for c in d["spec"]["template"]["spec"]["containers"]:
                names |= {e["name"] for e in c.get("env", [])}
    names |= set(secrets["llmrouter-secrets"])
    compose = yaml.safe_load(open(os.path.join(ROOT, "compose.yaml")))
    names |= set(compose["x-llmrouter"]["environment"])
    for line in open(os.path.join(ROOT, "deploy", "secrets.env.example")):
        if "=" in line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    keys = sorted(n for n in names if n.startswith("LLMR__"))
    others = sorted(n for n in names if not n.startswith("LLMR__"))
    for n in others:
        assert n.startswith("OTEL_") or "${" + n in config, f"{n} is neither a config key nor read by config.toml"
    # The binary itself judges the LLMR__ keys: an unknown key fails check-config.
    args = ["docker", "run", "--rm", "-v", f"{os.path.join(K8S, 'base', 'config.toml')}:/etc/llmrouter/config.toml:ro"]
    for k in keys:
        args += ["-e", f"{k}=1" if k.endswith("_MS") else f"{k}=redis://redis:6379" if k.endswith("REDIS__URL") else f"{k}=x"]
    print(f"checked keys: {keys}; read by the config file: {others}")
    run(args + [image, "check-config"], timeout=60)
    bogus = subprocess.run(args + ["-e", "LLMR__SERVER__PORTT=1", image, "check-config"], capture_output=True,
                           text=True, timeout=60)
    assert bogus.returncode != 0 and "portt" in bogus.stderr, "an unknown key is refused"


def test_dev_pods_run_as_described_and_answer_their_probes(overlays, image):
    """Each Deployment of the dev overlay run as a container: its args, env and secrets, the
    ConfigMaps mounted where it mounts them, its user, read-only root and dropped capabilities;
    then its probes are asked on the named container port, and the ScaledObject's stream and
    consumer group must be the ones the running worker created in Redis."""
    tag = f"llmrk8s{os.getpid()}"
    docs = overlays["dev"]
    secrets = generated(docs, "Secret")
    maps = {d["metadata"]["name"].rsplit("-", 1)[0]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    tmp = tempfile.mkdtemp(prefix="llmr-pods-")
    os.chmod(tmp, 0o755)  # the pods' user reads the ConfigMaps
    for name, data in maps.items():
        os.makedirs(os.path.join(tmp, name))
        for file, text in data.items():
            with open(os.path.join(tmp, name, file), "w") as f:
                f.write(text)
        os.chmod(os.path.join(tmp, name), 0o755)
    started = []
    run(["docker", "network", "create", tag])
    try:
        redis = next(d for d in docs if d["kind"] == "StatefulSet")["spec"]["template"]["spec"]["containers"][0]
        started.append(run(["docker", "run", "-d", "--network", tag, "--network-alias", "redis", "--name", f"{tag}-redis",
                            os.environ.get("LLMR_REDIS_IMAGE", "redis:7.0-bookworm"), *redis["args"]]))
        pods = {}
        for d in docs:
            if d["kind"] != "Deployment":
                continue
            pod = d["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            args = ["docker", "run", "-d", "--network", tag, "--name", f"{tag}-{c['name']}",
                    "--user", f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}",
                    "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
            if c["securityContext"]["readOnlyRootFilesystem"]:
                args.append("--read-only")
            for m in c["volumeMounts"]:
                v = volumes[m["name"]]
                if "emptyDir" in v:
                    args += ["--tmpfs", m["mountPath"]]
                else:
                    src = os.path.join(tmp, v["configMap"]["name"].rsplit("-", 1)[0], m.get("subPath", ""))
                    args += ["-v", f"{src.rstrip('/')}:{m['mountPath']}:ro"]
            for k, v in env_of(c, secrets).items():
                args += ["-e", f"{k}={v}"]
            started.append(run(args + [image, *c["args"]]))
            pods[c["name"]] = (started[-1], c)
        for name, (cid, c) in pods.items():
            ip = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", cid])
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            for probe in ("readinessProbe", "livenessProbe"):
                get = c[probe]["httpGet"]
                url = f"http://{ip}:{ports[get['port']]}{get['path']}"

                def answers():
                    with urllib.request.urlopen(url, timeout=2) as r:
                        return r.status == 200
                try:
                    eventually(answers, 30, f"{name} {probe} {url}")
                except AssertionError:
                    print(run(["docker", "logs", cid], check=False))
                    raise
                print(f"{name}: {probe} {get['path']} answers on container port {ports[get['port']]}")
        trigger = next(d for d in overlays["prod"] if d["kind"] == "ScaledObject")["spec"]["triggers"][0]["metadata"]
        groups = run(["docker", "exec", f"{tag}-redis", "redis-cli", "XINFO", "GROUPS", trigger["stream"]])
        assert trigger["consumerGroup"] in groups.split(), f"{trigger} vs XINFO GROUPS: {groups}"
    finally:
        for cid in started:
            run(["docker", "rm", "-f", cid], check=False)
        run(["docker", "network", "rm", tag], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
