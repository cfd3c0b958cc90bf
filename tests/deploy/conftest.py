"""The compose deployment under test: the project image (deploy/build-image.sh, which makes the
base images with debootstrap when the engine cannot pull them), brought up from the repository's
compose.yaml under a per-run project name, with tests/deploy/cluster-test.toml as its config.
Every container, network and volume is removed at the end, also when a test fails."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# What each file of this suite needs on the machine. Without it the file is skipped, and said
# so loudly (a banner on stderr and pytest's skip summary); with LLMR_REQUIRE_DEPLOY_TESTS=1
# (CI sets it) its absence fails the run instead.
NEEDS = {
    "test_compose.py": ("docker", "docker-compose", "debootstrap"),
    "test_k8s.py": ("kubectl", "docker", "debootstrap"),
}
REQUIRED = os.environ.get("LLMR_REQUIRE_DEPLOY_TESTS") == "1"


def missing(tools):
    """The tools of `tools` this machine lacks (a Docker client without a running engine
    counts as no Docker)."""
    gone = [t for t in tools if shutil.which(t) is None]
    if "docker" in tools and "docker" not in gone:
        ok = subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0
        if not ok:
            gone.append("docker (the engine is not running)")
    return gone


def pytest_collection_modifyitems(config, items):
    lacking = {}
    for item in items:
        name = os.path.basename(str(item.fspath))
        if name not in lacking:
            lacking[name] = missing(NEEDS.get(name, ()))
        if lacking[name]:
            why = f"{name} needs {', '.join(lacking[name])}, which this machine lacks"
            if REQUIRED:
                raise pytest.UsageError(f"LLMR_REQUIRE_DEPLOY_TESTS=1 and {why}")
            item.add_marker(pytest.mark.skip(reason=why))
    for name, gone in lacking.items():
        if gone:
            print(f"\n*** SKIPPING the deployment tests of {name}: it needs {', '.join(gone)}, which this "
                  "machine lacks. Set LLMR_REQUIRE_DEPLOY_TESTS=1 to make this a failure (CI does). ***",
                  file=sys.stderr)

TOKEN = "deploy-test-token"
IMAGE = os.environ.get("LLMR_TEST_IMAGE", "llmrouter:test")


def run(args, timeout=180, env=None, check=True):
    p = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout.strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def eventually(check, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 — retried until the deadline
            last = e
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout}s (last: {last})")


class Compose:
    """One compose project: docker-compose with this run's name, port, secrets and config."""

    def __init__(self, image):
        self.project = f"llmrdeploy{os.getpid()}"
        self.port = free_port()
        self.tmp = tempfile.mkdtemp(prefix="llmr-deploy-")
        secrets = os.path.join(self.tmp, "secrets.env")
        with open(secrets, "w") as f:
            f.write(f"LLMR__SERVER__TOKEN={TOKEN}\n")
        self.env = {
            **os.environ,
            "LLMR_IMAGE": image,
            "LLMR_PORT": str(self.port),
            "LLMR_SECRETS_FILE": secrets,
            "LLMR_CONFIG_FILE": os.path.join(ROOT, "tests", "deploy", "cluster-test.toml"),
        }
        self.network = f"{self.project}_default"

    def dc(self, *args, timeout=180):
        return run(["docker-compose", "-p", self.project, "-f", "compose.yaml", *args], timeout, self.env)

    def ids(self, service):
        return [i for i in self.dc("ps", "-q", service).split() if i]

    def running(self, service):
        out = run(["docker", "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={self.project}",
                   "--filter", f"label=com.docker.compose.service={service}"])
        return [i for i in out.split() if i]

    def ip(self, cid):
        return run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", cid]).split()[0]

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def health(self):
        with urllib.request.urlopen(self.url("/health"), timeout=3) as r:
            return json.load(r)

    def wait_ready(self, workers, timeout=90):
        seen = []

        def ready():
            with urllib.request.urlopen(self.url("/readyz"), timeout=3) as r:
                assert r.status == 200, f"/readyz {r.status}"
            services = [s["service"] for s in self.health().get("services", [])]
            seen[:] = [services]
            return services.count("worker") >= workers and {"router", "mcp-tools", "responses"} <= set(services)
        try:
            eventually(ready, timeout, f"the cluster ready with {workers} workers")
        except AssertionError as e:
            raise AssertionError(f"{e}; services alive: {seen}; containers:\n{self.dc('ps')}") from None

    def metric(self, cid, name, **labels):
        """The sum of `name` samples matching `labels` on a container's admin /metrics."""
        with urllib.request.urlopen(f"http://{self.ip(cid)}:9090/metrics", timeout=3) as r:
            text = r.read().decode()
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def logs(self):
        return run(["docker-compose", "-p", self.project, "-f", "compose.yaml", "logs", "--no-color", "--tail", "60"],
                   120, self.env, check=False)

    def down(self):
        run(["docker-compose", "-p", self.project, "-f", "compose.yaml", "down", "-v", "--remove-orphans", "-t", "5"],
            180, self.env, check=False)


@pytest.fixture(scope="session")
def image():
    started = time.time()
    line = run(["bash", "deploy/build-image.sh", IMAGE], timeout=1800)
    print(f"\nimage {line} built in {time.time() - started:.0f}s")
    return IMAGE


@pytest.fixture(scope="session")
def cluster(image, request):
    c = Compose(image)
    started = time.time()
    try:
        c.dc("up", "-d", "--scale", "worker=1", timeout=300)
        c.wait_ready(workers=1)
        print(f"compose project {c.project} ready in {time.time() - started:.0f}s on port {c.port}")
        yield c
    finally:
        if request.session.testsfailed:
            print(c.logs())
        c.down()
        leftovers = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={c.project}"], check=False)
        assert not leftovers, f"containers left behind: {leftovers}"


def chat(url, model, text, timeout=40):
    """One chat completion; (status, seconds, content or error)."""
    started = time.time()
    try:
        r = httpx.post(url, json={"model": model, "messages": [{"role": "user", "content": text}]},
                       headers={"authorization": f"Bearer {TOKEN}"}, timeout=timeout)
        body = r.json()
        said = body["choices"][0]["message"]["content"] if r.status_code == 200 else body.get("error")
        return r.status_code, time.time() - started, said
    except httpx.TimeoutException:
        return "hung", time.time() - started, None
    except Exception as e:  # noqa: BLE001 — a broken connection is an outcome to count
        return f"error: {e}", time.time() - started, None


def load(c, model, total, concurrency, during=None, after=0):
    """Sends `total` chats at `concurrency`; once `after` are answered, runs `during()`.
    Returns the outcomes (status, seconds, content) in order."""
    done = []
    fired = [False]

    def one(i):
        out = chat(c.url("/v1/chat/completions"), model, f"req {i}")
        done.append(out)
        if during and not fired[0] and len(done) >= after:
            fired[0] = True
            during()
        return out

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(total)))
    assert fired[0] or during is None, "the fault was injected"
    return results


def tally(results):
    counts = {"requests": len(results), "ok": 0, "failed": 0, "hung": 0, "slowest_s": 0.0}
    for status, secs, _ in results:
        key = "ok" if status == 200 else "hung" if status == "hung" else "failed"
        counts[key] += 1
        counts["slowest_s"] = round(max(counts["slowest_s"], secs), 2)
    return counts
