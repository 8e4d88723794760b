"""The Kubernetes backend against a real kube-apiserver + etcd (no kubelet, no controllers, no scheduler).

The API server is built from Debian's `kubernetes` source package by scripts/build-kubernetes.sh (which
scripts/test.sh runs: ~11 minutes on 2 cores, cached); the test finds it at $NEARMETAL_TEST_KUBE_APISERVER,
/var/cache/nearmetal/kubernetes/bin/kube-apiserver or /var/cache/nearmetal/kube-apiserver, and etcd from
Debian's etcd-server. A whole node (kubelet, containerd, real pods) is tested in test_kubernetes_node.py; this
test keeps the boundary cases a real kubelet would not produce on demand. What runs for real: the server's own
validation of every generated Job (server-side dry run), creation, the watch of Job and Pod, the pending
detection, the log request, deletion by label on every exit path and `nearmetal cleanup`. Where a Pod would
need a kubelet (to start a container, to serve its log) the test stops at that boundary: it plays the job
controller and the kubelet itself — creating the Pod and writing its status — and nearmetal must report that
the log could not be read; nearmetal's own code never fakes a completed Pod.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import nearmetal_argv
from helpers import write_plan
from kube_plans import EVERY_POD_SETTING, IMAGE

from nearmetal.backends.kubernetes import RUN_LABEL, KubernetesBackend, KubernetesOptions, k8s_name
from nearmetal.plan import load_plan
from nearmetal.run.runner import Runner, schedule
from nearmetal.store import Store

# the test API server's certificate is self-signed (--cert-dir): the client is told not to verify it
pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")

# scripts/build-kubernetes.sh's (what scripts/test.sh builds), then build-kube-apiserver.sh's default
DEFAULT_APISERVERS = (
    Path("/var/cache/nearmetal/kubernetes/bin/kube-apiserver"),
    Path("/var/cache/nearmetal/kube-apiserver"),
)
TOKEN = "nearmetal-test-token"


def _apiserver_binary() -> Path | None:
    env = os.environ.get("NEARMETAL_TEST_KUBE_APISERVER")
    for path in (Path(env),) if env else DEFAULT_APISERVERS:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def kubeconfig(tmp_path_factory) -> Path:
    binary = _apiserver_binary()
    if binary is None:
        pytest.skip(
            "no kube-apiserver: build it with `bash scripts/build-kubernetes.sh` (Debian's kubernetes "
            "1.20 source, ~11 min on 2 cores) or set NEARMETAL_TEST_KUBE_APISERVER"
        )
    if shutil.which("etcd") is None:
        pytest.skip("no etcd: apt-get install -y etcd-server")
    base = tmp_path_factory.mktemp("kube")
    etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        etcd_log = open(base / "etcd.log", "wb")  # noqa: SIM115
        logs.append(etcd_log)
        procs.append(
            subprocess.Popen(
                [
                    "etcd",
                    "--data-dir",
                    str(base / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster",
                    f"default=http://127.0.0.1:{peer_port}",
                ],
                stdout=etcd_log,
                stderr=subprocess.STDOUT,
            )
        )
        subprocess.run(
            ["openssl", "genrsa", "-out", str(base / "sa.key"), "2048"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(base / "sa.key"), "-pubout", "-out", str(base / "sa.pub")],
            check=True,
            capture_output=True,
            timeout=60,
        )
        (base / "tokens.csv").write_text(f'{TOKEN},nearmetal,1000,"system:masters"\n')
        api_log = open(base / "apiserver.log", "wb")  # noqa: SIM115
        logs.append(api_log)
        procs.append(
            subprocess.Popen(
                [
                    str(binary),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={api_port}",
                    "--insecure-port=0",
                    f"--cert-dir={base / 'certs'}",
                    f"--token-auth-file={base / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    f"--service-account-key-file={base / 'sa.pub'}",
                    f"--service-account-signing-key-file={base / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/24",
                    "--enable-priority-and-fairness=false",
                ],
                stdout=api_log,
                stderr=subprocess.STDOUT,
            )
        )
        config = base / "kubeconfig"
        config.write_text(
            f"""apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: "https://127.0.0.1:{api_port}", insecure-skip-tls-verify: true}}
users:
- name: test
  user: {{token: {TOKEN}}}
contexts:
- name: test
  context: {{cluster: test, user: test, namespace: default}}
current-context: test
"""
        )
        from kubernetes import client
        from kubernetes import config as kconfig

        deadline = time.time() + 180
        while True:
            if any(p.poll() is not None for p in procs):
                raise AssertionError(
                    "etcd or kube-apiserver exited:\n" + (base / "apiserver.log").read_text()[-3000:]
                )
            try:
                api = kconfig.new_client_from_config(config_file=str(config))
                client.CoreV1Api(api).read_namespace("default")
                # what kube-controller-manager would create: the namespace's default service account
                client.CoreV1Api(api).create_namespaced_service_account(
                    "default", client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default"))
                )
                break
            except Exception:
                if time.time() > deadline:
                    raise AssertionError(
                        "kube-apiserver did not serve the default namespace in time:\n"
                        + (base / "apiserver.log").read_text()[-3000:]
                    ) from None
                time.sleep(0.5)
        yield config
    finally:
        for proc in reversed(procs):
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=15)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
        for f in logs:
            f.close()


def _apis(kubeconfig: Path):
    from kubernetes import client
    from kubernetes import config as kconfig

    api = kconfig.new_client_from_config(config_file=str(kubeconfig))
    return client.CoreV1Api(api), client.BatchV1Api(api)


def _labelled(kubeconfig: Path, run_id: str) -> list[str]:
    core, batch = _apis(kubeconfig)
    selector = f"{RUN_LABEL}={k8s_name(run_id)}"
    names = [
        f"job/{j.metadata.name}" for j in batch.list_namespaced_job("default", label_selector=selector).items
    ]
    names += [
        f"pod/{p.metadata.name}" for p in core.list_namespaced_pod("default", label_selector=selector).items
    ]
    names += [
        f"configmap/{c.metadata.name}"
        for c in core.list_namespaced_config_map("default", label_selector=selector).items
    ]
    return names


def test_the_api_server_accepts_every_generated_job(tmp_path: Path, kubeconfig: Path) -> None:
    core, batch = _apis(kubeconfig)
    version = subprocess.run(
        [str(_apiserver_binary()), "--version"], capture_output=True, text=True, timeout=30
    ).stdout.strip()
    assert version.startswith("Kubernetes v1.")
    backend = KubernetesBackend(KubernetesOptions(image=IMAGE), kubeconfig=str(kubeconfig))
    loaded = load_plan(write_plan(tmp_path, EVERY_POD_SETTING))
    runner = Runner(loaded, Store(f"sqlite:///{tmp_path / 'k.db'}"), tmp_path / "runs", backend=backend)
    accepted = 0
    for trial in schedule(loaded.cells, "sequential", 0, 0, 1, 1):
        job, config_map, _ = backend.build(runner.trial_spec(trial))
        # the server's own validation and defaulting, without storing anything
        created = batch.create_namespaced_job("default", job, dry_run="All")
        container = created.spec.template.spec.containers[0]
        assert container.args == job.spec.template.spec.containers[0].args
        assert created.spec.backoff_limit == 0
        if config_map is not None:
            core.create_namespaced_config_map("default", config_map, dry_run="All")
        accepted += 1
    assert accepted == len(loaded.cells)


def test_submission_watch_pending_detection_and_cleanup_by_label(tmp_path: Path, kubeconfig: Path) -> None:
    # no job controller runs: no Pod is ever created, and nearmetal must say so and delete what it made
    plan = write_plan(
        tmp_path,
        """
        name: k8s-no-controller
        workloads:
          lammps: {kind: lammps, params: {ranks: 2, atoms: 4000, steps: 50}}
        variants:
          bare: []
          limit: [{layer: cpu-quota, cpus: 0.8}]
        repeats: 1
        timeout: 60s
        """,
    )
    options = KubernetesOptions(image=IMAGE, pending_timeout_s=3, poll_s=1)
    backend = KubernetesBackend(options, kubeconfig=str(kubeconfig))
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    seen: list[list[str]] = []
    run_id = f"k8s-{os.getpid()}-a"

    def observe() -> None:
        deadline = time.time() + 30
        while time.time() < deadline and not seen:
            names = _labelled(kubeconfig, run_id)
            if any(n.startswith("job/") for n in names):
                seen.append(names)
            time.sleep(0.2)

    watcher = threading.Thread(target=observe, daemon=True)
    watcher.start()
    result = Runner(load_plan(plan), store, tmp_path / "runs", backend=backend, run_id=run_id).run()
    watcher.join(timeout=5)
    assert seen and any(n.startswith("configmap/") for n in seen[0]), seen
    assert [r.status for r in result.records] == ["error", "error"]
    for record in result.records:
        assert "no Pod was created" in record.error and "kube-controller-manager" in record.error
    assert _labelled(kubeconfig, run_id) == []
    trials = store.trials(run_id)
    modes = {t.variant: t.placement["kubernetes"]["resources_mode"] for t in trials}
    # fair variants: the pod without a limit asks for the limited pod's request (Burstable, same shares)
    assert modes == {"bare": "requests", "limit": "limits"}
    assert {t.placement["kubernetes"]["requests"]["cpu"] for t in trials} == {"800m"}
    assert {e["detail"]["job"] for e in store.events(run_id) if e["kind"] == "backend-job"}


def test_a_pod_that_ends_without_a_kubelet_to_serve_its_log_is_reported(
    tmp_path: Path, kubeconfig: Path
) -> None:
    # the test plays job controller and kubelet: it creates the Job's Pod and writes its final status.
    # Reading the log needs a kubelet, which does not exist: that is the boundary nearmetal must report.
    from kubernetes import client

    core, batch = _apis(kubeconfig)
    plan = write_plan(
        tmp_path,
        """
        name: k8s-boundary
        workloads:
          stress: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bare: [{layer: pod, resources: requests, cpu: 1}]
        repeats: 1
        timeout: 60s
        """,
    )
    run_id = f"k8s-{os.getpid()}-b"

    def controller_and_kubelet() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            jobs = batch.list_namespaced_job(
                "default", label_selector=f"{RUN_LABEL}={k8s_name(run_id)}"
            ).items
            if jobs:
                break
            time.sleep(0.2)
        else:
            return
        job = jobs[0]
        template = job.spec.template
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"{job.metadata.name}-x", labels=template.metadata.labels),
            spec=template.spec,
        )
        pod.spec.node_name = "nearmetal-test-node"  # no such kubelet
        created = core.create_namespaced_pod("default", pod)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        created.status = client.V1PodStatus(
            phase="Succeeded",
            qos_class="Burstable",
            host_ip="127.0.0.2",
            container_statuses=[
                client.V1ContainerStatus(
                    name="trial",
                    image=IMAGE,
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        terminated=client.V1ContainerStateTerminated(
                            exit_code=0, reason="Completed", started_at=now, finished_at=now
                        )
                    ),
                )
            ],
        )
        core.replace_namespaced_pod_status(created.metadata.name, "default", created)

    actor = threading.Thread(target=controller_and_kubelet, daemon=True)
    actor.start()
    options = KubernetesOptions(image=IMAGE, pending_timeout_s=30, poll_s=1)
    backend = KubernetesBackend(options, kubeconfig=str(kubeconfig))
    store = Store(f"sqlite:///{tmp_path / 'k.db'}")
    result = Runner(load_plan(plan), store, tmp_path / "runs", backend=backend, run_id=run_id).run()
    actor.join(timeout=5)
    record = result.records[0]
    assert record.status == "error"
    assert "ended Succeeded but its log could not be read" in record.error
    placement = store.trials(run_id)[0].placement
    assert placement["host"] == "nearmetal-test-node"
    assert placement["kubernetes"]["qos_class"] == "Burstable"
    assert placement["kubernetes"]["requests"] == {"cpu": "1"}
    # a quiet wait: one list and a watch from its resourceVersion, not a loop of calls while the pod lives
    calls = placement["kubernetes"]["api_calls"]
    assert calls["lists"] <= 2 and calls["watches"] <= 3, calls
    assert _labelled(kubeconfig, run_id) == []


def test_a_killed_runner_leaves_objects_that_cleanup_deletes_by_label(
    tmp_path: Path, kubeconfig: Path, db_url: str, run_cli
) -> None:
    plan = write_plan(
        tmp_path,
        """
        name: k8s-killed
        workloads:
          stress: {kind: stress-ng, params: {stressor: cpu, workers: 1, ops: 10}}
        variants:
          bare: []
        repeats: 1
        timeout: 60s
        kubernetes: {pending_timeout_s: 120}
        """,
    )
    env = {**os.environ, "NEARMETAL_DB": db_url, "KUBECONFIG": str(kubeconfig)}
    runner = subprocess.Popen(
        [*nearmetal_argv(), "run", str(plan), "--backend", "kubernetes", "--image", IMAGE, "-q", "--no-html"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 90
        run_id = None
        while time.time() < deadline:
            with contextlib.suppress(Exception):
                runs = Store(db_url).list_runs()
                if runs:
                    run_id = runs[0].id
                    if _labelled(kubeconfig, run_id):
                        break
            time.sleep(0.3)
        assert run_id and _labelled(kubeconfig, run_id), (
            runner.stderr.read1().decode() if runner.poll() else ""
        )
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.wait(timeout=10)
    listed = run_cli("cleanup", run_id, "--dry-run", env={"KUBECONFIG": str(kubeconfig)}, check=True).stdout
    assert "kubernetes job default/" in listed
    removed = run_cli("cleanup", run_id, env={"KUBECONFIG": str(kubeconfig)}, check=True).stdout
    assert "removed kubernetes job" in removed
    deadline = time.time() + 30
    while _labelled(kubeconfig, run_id) and time.time() < deadline:
        time.sleep(0.3)
    assert _labelled(kubeconfig, run_id) == []
