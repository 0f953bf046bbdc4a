"""trellis' Kubernetes manifests: the bundled YAML the lab applies (CRDs, DNS, ingress) and
``render``, which builds deploy/trellis.yaml (``trellis manifests``) from ``options``,
``rbac`` and ``workloads``. Pure: no I/O beyond reading the YAML files next to this one."""
