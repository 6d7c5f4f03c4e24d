"""The packaging in deploy/ and the Dockerfile: checked by the real tools where this machine has them
(systemd-analyze, the Kubernetes API schema), and run with the binary, the settings and the command
lines they give it (a real Redis where they scale out), so a file that starts nothing fails here.

The container image itself is not built: these machines have neither a Docker daemon nor a registry.
What the image runs (its ENTRYPOINT and CMD with the binary it copies) is run instead.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import kubernetes_validate
import pytest
import yaml

from harness import HERALD_BIN, WAIT, RawClient, free_port
import pusher

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
K8S = os.path.join(DEPLOY, "kubernetes")
UNIT = os.path.join(DEPLOY, "systemd", "herald.service")
# The oldest Kubernetes the manifests are for: the preStop sleep action is on by default from 1.30.
KUBERNETES_VERSION = "1.30.0"
# How long Herald drains after SIGTERM before it exits (SHUTDOWN_GRACE in src/server/mod.rs).
HERALD_DRAIN_S = 5


# --- running what a file describes ---------------------------------------------------------------


def clean_env(extra):
    """The caller's environment without anything Herald reads, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERB_", "REDIS_", "HERALD_"))}
    env.update(extra)
    return env


class Process:
    """A Herald started from an argument list; fails the test if it does not answer /up in time."""

    def __init__(self, argv, env, port, workdir):
        self.port = port
        self.log_path = os.path.join(workdir, f"herald-{port}.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=workdir, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.output()}"
            try:
                self.up()
                return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no /up within 30 s:\n{self.output()}"
            time.sleep(0.1)

    def up(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/up", timeout=2) as r:
            assert r.status == 200
            return json.loads(r.read())

    def output(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-10000:].decode("utf-8", "replace")

    def stop_within(self, seconds):
        """SIGTERM, then the exit code; fails if the process outlives `seconds`."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(f"still running {seconds} s after SIGTERM:\n{self.output()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def workdir():
    path = tempfile.mkdtemp(prefix="herald-packaging-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def processes():
    started = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def redis_url():
    """A real redis-server on a free loopback port."""
    assert shutil.which("redis-server"), "redis-server is required (scripts/test installs it)"
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def delivered(publish_port, subscribe_port, app_id, key, secret, channel):
    """An event published through one node's HTTP API with these credentials reaches a client of the other."""
    client = RawClient(f"ws://127.0.0.1:{subscribe_port}/app/{key}?protocol=7&client=py&version=1")
    try:
        client.subscribe(channel)
        sdk = pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=publish_port, ssl=False)
        sdk.trigger(channel, "packaged", {"n": 1})
        message = client.next_on(channel)
        assert message["event"] == "packaged" and json.loads(message["data"]) == {"n": 1}, message
    finally:
        client.close()


def closed_with_4200_on_sigterm(process, app_key, stop_within):
    client = RawClient(f"ws://127.0.0.1:{process.port}/app/{app_key}?protocol=7&client=py&version=1")
    process.proc.send_signal(signal.SIGTERM)
    assert client.closed_with() == 4200
    assert process.proc.wait(timeout=stop_within) == 0, process.output()


# --- systemd -------------------------------------------------------------------------------------


def unit_settings(path=UNIT):
    settings = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            name, value = line.split("=", 1)
            settings.setdefault(name, []).append(value)
    return settings


def verify_unit(text, workdir):
    """systemd-analyze verify's complaints about a unit (it exits 0 on unknown keys, so read stderr)."""
    path = os.path.join(workdir, "herald.service")
    with open(path, "w") as f:
        f.write(text)
    run = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True, timeout=60)
    return run.returncode, run.stderr.strip()


needs_systemd = pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")


@needs_systemd
def test_the_systemd_unit_verifies_without_a_warning(workdir):
    # verify insists that ExecStart's binary exists: point it at the one under test, nothing else changes.
    text = open(UNIT).read().replace("/usr/local/bin/herald", HERALD_BIN)
    assert verify_unit(text, workdir) == (0, "")
    # The check above can fail: a misspelt setting is reported.
    code, complaints = verify_unit(text.replace("ProtectSystem=strict", "ProtectSystm=strict"), workdir)
    assert "ProtectSystm" in complaints, (code, complaints)


@needs_systemd
def test_the_systemd_unit_is_hardened(workdir):
    def exposure_within(path, threshold):
        run = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", f"--threshold={threshold}", path],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return run.returncode == 0, run.stdout[-300:]

    # systemd's scale is 0 (locked down) to 10 (unprotected); 2.0 or less is what it calls "OK".
    ok, report = exposure_within(UNIT, 20)
    assert ok, report
    settings = unit_settings()
    for name in ["DynamicUser", "NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices"]:
        assert settings.get(name) == ["yes"], name
    assert settings["ProtectSystem"] == ["strict"]
    assert int(settings["LimitNOFILE"][0]) >= 65536
    assert settings["Restart"] == ["on-failure"]
    # The same check rejects a unit without the hardening.
    bare = os.path.join(workdir, "bare.service")
    with open(bare, "w") as f:
        f.write(f"[Service]\nExecStart={HERALD_BIN} start\n")
    assert not exposure_within(bare, 20)[0]


def test_the_systemd_command_line_starts_reloads_and_stops(workdir, processes):
    settings = unit_settings()
    argv = shlex.split(settings["ExecStart"][0])
    assert argv[0] == "/usr/local/bin/herald" and argv[1] == "start", argv
    config_index = argv.index("--config") + 1
    assert argv[config_index] == "/etc/herald/herald.toml"
    port = free_port()
    config = os.path.join(workdir, "herald.toml")
    with open(config, "w") as f:
        f.write(f'[server]\nhost = "127.0.0.1"\nport = {port}\n\n[[apps]]\nid = "1"\nkey = "unit-key"\nsecret = "s"\n')
    argv[0], argv[config_index] = HERALD_BIN, config
    herald = Process(argv, clean_env({}), port, workdir)
    processes.append(herald)
    assert herald.up() == {"health": "OK"}

    # ExecReload is SIGHUP: an app added to the file is served, the process stays.
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    with open(config, "a") as f:
        f.write('\n[[apps]]\nid = "2"\nkey = "added-key"\nsecret = "t"\n')
    herald.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while True:
        try:
            RawClient(f"ws://127.0.0.1:{port}/app/added-key?protocol=7&client=py&version=1").close()
            break
        except AssertionError:
            assert time.monotonic() < deadline, "the app added before SIGHUP was not served"
            time.sleep(0.2)
    assert herald.proc.poll() is None
    # `--log-format json`: what it logged (the reload) is JSON, one object per line.
    lines = [line for line in herald.output().splitlines() if line.startswith("{")]
    assert any("SIGHUP" in json.loads(line)["fields"]["message"] for line in lines), herald.output()

    # `systemctl stop` is SIGTERM; it must be done well inside TimeoutStopSec.
    timeout_stop = int(settings["TimeoutStopSec"][0].rstrip("s"))
    assert timeout_stop >= HERALD_DRAIN_S + 5
    closed_with_4200_on_sigterm(herald, "unit-key", timeout_stop)


# --- Kubernetes ----------------------------------------------------------------------------------


def manifests():
    """Every object the kustomization lists, by kind."""
    kustomization = yaml.safe_load(open(os.path.join(K8S, "kustomization.yaml")))
    listed = kustomization["resources"]
    on_disk = sorted(f for f in os.listdir(K8S) if f.endswith(".yaml") and f != "kustomization.yaml")
    assert sorted(listed) == on_disk, "every manifest is in kustomization.yaml, and only those"
    objects = {}
    for name in listed:
        for doc in yaml.safe_load_all(open(os.path.join(K8S, name))):
            objects[doc["kind"]] = doc
    return objects


def test_the_kubernetes_manifests_are_valid_api_objects():
    objects = manifests()
    assert set(objects) == {"ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget"}
    for doc in objects.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    # Strict validation does catch a misspelt field.
    broken = json.loads(json.dumps(objects["Deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = broken["spec"]["template"]["spec"][
        "containers"
    ][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_objects_fit_together():
    o = manifests()
    deployment, pod = o["Deployment"], o["Deployment"]["spec"]["template"]
    labels = pod["metadata"]["labels"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}

    def selects(selector):
        return selector and all(labels.get(k) == v for k, v in selector.items())

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    assert selects(o["Service"]["spec"]["selector"])
    assert selects(o["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert all(p["targetPort"] in ports for p in o["Service"]["spec"]["ports"])
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/up" and container[probe]["httpGet"]["port"] in ports

    # Draining: out of the endpoints first (preStop), then SIGTERM's 4200 and Herald's drain, inside the grace.
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop >= 3
    assert pod["spec"]["terminationGracePeriodSeconds"] >= pre_stop + HERALD_DRAIN_S + 5
    # Never fewer replicas than serve: one disruption at a time, a new pod before an old one goes.
    assert deployment["spec"]["replicas"] >= 2
    assert o["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    # The pod runs as the image's non-root user, read-only, without capabilities.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == dockerfile_user()
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]

    # What the pod mounts and reads exists.
    env = {e["name"]: e for e in container["env"]}
    mount = container["volumeMounts"][0]["mountPath"]
    assert env["HERALD_CONFIG"]["value"] == f"{mount}/herald.toml"
    volume = pod["spec"]["volumes"][0]
    assert volume["name"] == container["volumeMounts"][0]["name"]
    assert volume["configMap"]["name"] == o["ConfigMap"]["metadata"]["name"]
    assert "herald.toml" in o["ConfigMap"]["data"]
    assert container["envFrom"][0]["secretRef"]["name"] == o["Secret"]["metadata"]["name"]


def test_the_kubernetes_pod_settings_run_the_binary_as_one_cluster(workdir, processes, redis_url):
    """Two 'pods' from the manifests' own settings, on loopback ports, sharing a real Redis."""
    o = manifests()
    container = o["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    container_port = container["ports"][0]["containerPort"]
    config_text = o["ConfigMap"]["data"]["herald.toml"]
    assert 'host = "0.0.0.0"' in config_text and f"port = {container_port}" in config_text
    # Only the addresses change: Redis is the test's, and the pods listen on loopback.
    config_text = re.sub(r'redis_url = "[^"]*"', f'redis_url = "{redis_url}"', config_text)
    config_text = config_text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"')
    config = os.path.join(workdir, "herald.toml")
    with open(config, "w") as f:
        f.write(config_text)
    secret = o["Secret"]["stringData"]

    pods = []
    for _ in range(2):
        port = free_port()
        env = {}
        for e in container["env"]:
            value = "127.0.0.1" if "valueFrom" in e else e["value"]
            value = value.replace("$(POD_IP)", env.get("POD_IP", "")).replace(f":{container_port}", f":{port}")
            env[e["name"]] = value
        env["HERALD_CONFIG"] = config
        env["REVERB_SERVER_PORT"] = str(port)
        env.update(secret)
        pod = Process([HERALD_BIN, *container["args"]], clean_env(env), port, workdir)
        processes.append(pod)
        # OK, not DEGRADED: the configured Redis is reached, so the replicas really are one cluster.
        assert pod.up() == {"health": "OK"}, pod.output()
        pods.append(pod)

    app = (secret["REVERB_APP_ID"], secret["REVERB_APP_KEY"], secret["REVERB_APP_SECRET"])
    delivered(pods[0].port, pods[1].port, *app, channel="k8s-check")
    grace = o["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    closed_with_4200_on_sigterm(pods[0], secret["REVERB_APP_KEY"], grace - container["lifecycle"]["preStop"]["sleep"]["seconds"])


# --- the Dockerfile and docker-compose -----------------------------------------------------------


def dockerfile_stages():
    stages, current = [], None
    text = open(os.path.join(ROOT, "Dockerfile")).read()
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word == "FROM":
            current = {"from": rest, "lines": []}
            stages.append(current)
        elif current is not None:
            current["lines"].append((word, rest))
    return stages


def dockerfile_user():
    final = dockerfile_stages()[-1]
    users = [rest for word, rest in final["lines"] if word == "USER"]
    return int(users[-1].split(":")[0])


def dockerfile_command():
    final = dict(dockerfile_stages()[-1]["lines"])
    return json.loads(final["ENTRYPOINT"]) + json.loads(final["CMD"])


def test_the_dockerfile_builds_from_the_context_and_runs_as_non_root(workdir, processes):
    build, final = dockerfile_stages()
    assert " AS build" in build["from"]
    assert final["from"].startswith("gcr.io/distroless/cc-debian12")
    assert dockerfile_user() != 0
    copied = [rest.split()[0] for word, rest in build["lines"] if word == "COPY"]
    ignore = [line.strip() for line in open(os.path.join(ROOT, ".dockerignore")) if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the context is what is let back in, nothing else"
    allowed = {line[1:] for line in ignore[1:] if line.startswith("!")}
    for path in copied:
        assert path in allowed and os.path.exists(os.path.join(ROOT, path)), path
    # The manifest the build stage gets is complete: every target it names is in the context.
    context = os.path.join(workdir, "context")
    os.mkdir(context)
    for path in allowed:
        (shutil.copytree if os.path.isdir(os.path.join(ROOT, path)) else shutil.copy)(
            os.path.join(ROOT, path), os.path.join(context, path)
        )
    metadata = subprocess.run(
        ["cargo", "metadata", "--locked", "--offline", "--no-deps", "--format-version", "1"],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert metadata.returncode == 0, metadata.stderr
    bins = {t["name"] for p in json.loads(metadata.stdout)["packages"] for t in p["targets"] if "bin" in t["kind"]}
    assert "herald" in bins
    assert any("--locked --bin herald" in rest for word, rest in build["lines"] if word == "RUN")

    # What the image runs, with the binary it copies.
    argv = dockerfile_command()
    assert argv[:2] == ["/usr/local/bin/herald", "start"], argv
    port = free_port()
    env = {"REVERB_SERVER_HOST": "127.0.0.1", "REVERB_SERVER_PORT": str(port)}
    env.update({"REVERB_APP_ID": "1", "REVERB_APP_KEY": "docker-key", "REVERB_APP_SECRET": "s"})
    herald = Process([HERALD_BIN, *argv[1:]], clean_env(env), port, workdir)
    processes.append(herald)
    assert herald.up() == {"health": "OK"}
    closed_with_4200_on_sigterm(herald, "docker-key", 10)  # `docker stop` waits 10 s by default


def test_the_compose_file_runs_two_nodes_as_one_server(workdir, processes, redis_url):
    compose = yaml.safe_load(open(os.path.join(DEPLOY, "docker-compose.yml")))
    services = compose["services"]
    assert services["redis"]["image"].startswith("redis:")
    nodes = {name: s for name, s in services.items() if name.startswith("herald")}
    assert len(nodes) == 2
    started = []
    for name, service in nodes.items():
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"]["dockerfile"] == "Dockerfile"
        assert os.path.exists(os.path.join(DEPLOY, service["build"]["context"], "Dockerfile"))
        env = dict(service["environment"])
        host_port, container_port = service["ports"][0].split(":")
        assert env["REVERB_SERVER_PORT"] == container_port
        assert env["REDIS_URL"] == "redis://redis:6379" and env["HERALD_NODE_URL"] == f"http://{name}:{container_port}"
        # Compose's network names become loopback addresses; everything else is the file's.
        port = free_port()
        env.update(
            REVERB_SERVER_HOST="127.0.0.1",
            REVERB_SERVER_PORT=str(port),
            REDIS_URL=redis_url,
            HERALD_NODE_URL=f"http://127.0.0.1:{port}",
        )
        node = Process([HERALD_BIN, *dockerfile_command()[1:]], clean_env(env), port, workdir)
        processes.append(node)
        assert node.up() == {"health": "OK"}, node.output()
        started.append((node, env))
    (first, env), (second, _) = started
    delivered(first.port, second.port, env["REVERB_APP_ID"], env["REVERB_APP_KEY"], env["REVERB_APP_SECRET"], "compose-check")
