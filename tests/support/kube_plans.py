"""Plans and names the Kubernetes tests share (manifest generation and the real kube-apiserver)."""

IMAGE = "registry.example.org/nearmetal/workloads:2024.1"

EVERY_POD_SETTING = """
name: k8s-everything
workloads:
  lammps: {kind: lammps, params: {ranks: 2, atoms: 4000, steps: 100}}
  stress: {kind: stress-ng, params: {stressor: cpu, workers: 2, ops: 100}}
variants:
  bare: []
  limit-1.2: [{layer: cpu-quota, cpus: 1.2}]
  limits: [{layer: pod, resources: limits, cpu: 2, memory: 2Gi}]
  requests-only: [{layer: pod, resources: requests, cpu: 2, memory: 2Gi}]
  no-resources: [{layer: pod, resources: none}]
  kata: [{layer: pod, runtime_class: kata-qemu}]
  kata-virtiofs: [{layer: pod, runtime_class: kata-qemu-virtiofs}]
  gvisor: [{layer: pod, runtime_class: gvisor}]
  userns:
    - layer: pod
      host_users: false
      run_as_user: 1000
      run_as_non_root: true
      allow_privilege_escalation: false
      capabilities_drop: [ALL]
      seccomp: RuntimeDefault
  placed: [{layer: pod, node_selector: {node.kubernetes.io/instance-type: hpc7g.4xlarge}, nodes: [node-1, node-2]}]
  gpu: [{layer: pod, gpus: 1}]
  gpu-shared: [{layer: pod, gpu_shared: 2}]
  mig: [{layer: pod, mig_profile: 1g.5gb}]
  volumes:
    - layer: pod
      volumes:
        - {name: scratch, mount_path: /scratch, size_limit: 1Gi}
        - {name: shm, mount_path: /dev/shm, medium: Memory, size_limit: 512Mi}
        - {name: cvmfs, mount_path: /cvmfs, type: pvc, claim: cvmfs, read_only: true, mount_propagation: HostToContainer}
baseline: bare
repeats: 1
timeout: 120s
"""


def validate(doc: dict) -> None:
    """Strict OpenAPI validation, and a round trip through the official client's model for the kind (imported
    here: the unit tier uses the plans above without the kubernetes extra)."""
    import kubernetes_validate
    from kubernetes.client import ApiClient

    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    model = {"Pod": "V1Pod", "Job": "V1Job", "ConfigMap": "V1ConfigMap"}[doc["kind"]]
    obj = ApiClient()._ApiClient__deserialize(doc, model)
    assert obj.metadata.name == doc["metadata"]["name"]
