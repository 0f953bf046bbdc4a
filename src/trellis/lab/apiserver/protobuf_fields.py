"""Field numbers of the Kubernetes messages whose protobuf bodies the lab API decodes.

Each message maps field number -> (JSON name, kind). Kinds: ``s`` string, ``i``
integer, ``b`` bool, ``bytes`` (base64 in JSON), ``q`` resource.Quantity, ``ios``
IntOrString, ``time`` metav1.Time, ``map:<kind>`` map<string, kind>, a message
name, ``[kind]`` repeated, ``inline:<message>`` (an embedded struct whose fields
JSON puts in the parent), ``skip`` (status: a created object's status is the
server's to write). A trailing ``?`` marks a pointer field, where 0 and false are
values to keep. Numbers are those of k8s.io/api and k8s.io/apimachinery
``generated.proto``; only the fields an object created from kubectl needs are
listed, and protobuf.py rejects any other field that carries a value.
"""
from __future__ import annotations

S, I, B = "s", "i", "b"
MAP_S = "map:s"

_META = {
    "ObjectMeta": {1: ("name", S), 2: ("generateName", S), 3: ("namespace", S), 5: ("uid", S),
                   6: ("resourceVersion", S), 7: ("generation", I), 8: ("creationTimestamp", "time"),
                   10: ("deletionGracePeriodSeconds", "i?"), 11: ("labels", MAP_S),
                   12: ("annotations", MAP_S), 13: ("ownerReferences", "[OwnerReference]"),
                   14: ("finalizers", "[s]")},
    "OwnerReference": {5: ("apiVersion", S), 1: ("kind", S), 3: ("name", S), 4: ("uid", S),
                       6: ("controller", "b?"), 7: ("blockOwnerDeletion", "b?")},
    "LabelSelector": {1: ("matchLabels", MAP_S), 2: ("matchExpressions", "[LabelSelectorRequirement]")},
    "LabelSelectorRequirement": {1: ("key", S), 2: ("operator", S), 3: ("values", "[s]")},
}

_CORE = {
    "Namespace": {1: ("metadata", "ObjectMeta"), 2: ("spec", "NamespaceSpec"), 3: ("status", "skip")},
    "NamespaceSpec": {1: ("finalizers", "[s]")},
    "ConfigMap": {1: ("metadata", "ObjectMeta"), 2: ("data", MAP_S), 3: ("binaryData", "map:bytes"),
                  4: ("immutable", "b?")},
    "Secret": {1: ("metadata", "ObjectMeta"), 2: ("data", "map:bytes"), 3: ("type", S),
               4: ("stringData", MAP_S), 5: ("immutable", "b?")},
    "ServiceAccount": {1: ("metadata", "ObjectMeta"), 2: ("secrets", "[ObjectReference]"),
                       3: ("imagePullSecrets", "[LocalObjectReference]"),
                       4: ("automountServiceAccountToken", "b?")},
    "ObjectReference": {1: ("kind", S), 2: ("namespace", S), 3: ("name", S), 4: ("uid", S),
                        5: ("apiVersion", S), 6: ("resourceVersion", S), 7: ("fieldPath", S)},
    "LocalObjectReference": {1: ("name", S)},
    "Service": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ServiceSpec"), 3: ("status", "skip")},
    "ServiceSpec": {1: ("ports", "[ServicePort]"), 2: ("selector", MAP_S), 3: ("clusterIP", S),
                    18: ("clusterIPs", "[s]"), 4: ("type", S), 5: ("externalIPs", "[s]"),
                    7: ("sessionAffinity", S), 8: ("loadBalancerIP", S), 9: ("loadBalancerSourceRanges", "[s]"),
                    10: ("externalName", S), 11: ("externalTrafficPolicy", S), 12: ("healthCheckNodePort", I),
                    13: ("publishNotReadyAddresses", B), 14: ("sessionAffinityConfig", "SessionAffinityConfig"),
                    19: ("ipFamilies", "[s]"), 17: ("ipFamilyPolicy", S),
                    20: ("allocateLoadBalancerNodePorts", "b?"), 21: ("loadBalancerClass", S),
                    22: ("internalTrafficPolicy", S)},
    "ServicePort": {1: ("name", S), 2: ("protocol", S), 6: ("appProtocol", S), 3: ("port", I),
                    4: ("targetPort", "ios"), 5: ("nodePort", I)},
    "SessionAffinityConfig": {1: ("clientIP", "ClientIPConfig")},
    "ClientIPConfig": {1: ("timeoutSeconds", "i?")},
    "ResourceQuota": {1: ("metadata", "ObjectMeta"), 2: ("spec", "ResourceQuotaSpec"), 3: ("status", "skip")},
    "ResourceQuotaSpec": {1: ("hard", "map:q"), 2: ("scopes", "[s]"), 3: ("scopeSelector", "ScopeSelector")},
    "ScopeSelector": {1: ("matchExpressions", "[ScopedResourceSelectorRequirement]")},
    "ScopedResourceSelectorRequirement": {1: ("scopeName", S), 2: ("operator", S), 3: ("values", "[s]")},
    "Pod": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec"), 3: ("status", "skip")},
    "PodTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodSpec")},
    "PodSpec": {20: ("initContainers", "[Container]"), 2: ("containers", "[Container]"), 3: ("restartPolicy", S),
                4: ("terminationGracePeriodSeconds", "i?"), 5: ("activeDeadlineSeconds", "i?"),
                6: ("dnsPolicy", S), 7: ("nodeSelector", MAP_S), 8: ("serviceAccountName", S),
                9: ("serviceAccount", S), 21: ("automountServiceAccountToken", "b?"), 10: ("nodeName", S),
                11: ("hostNetwork", B), 15: ("imagePullSecrets", "[LocalObjectReference]"), 16: ("hostname", S),
                17: ("subdomain", S), 19: ("schedulerName", S), 22: ("tolerations", "[Toleration]"),
                23: ("hostAliases", "[HostAlias]"), 24: ("priorityClassName", S), 25: ("priority", "i?"),
                30: ("enableServiceLinks", "b?")},
    "Container": {1: ("name", S), 2: ("image", S), 3: ("command", "[s]"), 4: ("args", "[s]"),
                  5: ("workingDir", S), 6: ("ports", "[ContainerPort]"), 19: ("envFrom", "[EnvFromSource]"),
                  7: ("env", "[EnvVar]"), 8: ("resources", "ResourceRequirements"),
                  13: ("terminationMessagePath", S), 20: ("terminationMessagePolicy", S),
                  14: ("imagePullPolicy", S), 15: ("securityContext", "SecurityContext"), 16: ("stdin", B),
                  17: ("stdinOnce", B), 18: ("tty", B)},
    "ContainerPort": {1: ("name", S), 2: ("hostPort", I), 3: ("containerPort", I), 4: ("protocol", S),
                      5: ("hostIP", S)},
    "EnvVar": {1: ("name", S), 2: ("value", S), 3: ("valueFrom", "EnvVarSource")},
    "EnvVarSource": {1: ("fieldRef", "ObjectFieldSelector"), 3: ("configMapKeyRef", "ConfigMapKeySelector"),
                     4: ("secretKeyRef", "SecretKeySelector")},
    "ObjectFieldSelector": {1: ("apiVersion", S), 2: ("fieldPath", S)},
    "ConfigMapKeySelector": {1: ("localObjectReference", "inline:LocalObjectReference"), 2: ("key", S),
                             3: ("optional", "b?")},
    "SecretKeySelector": {1: ("localObjectReference", "inline:LocalObjectReference"), 2: ("key", S),
                          3: ("optional", "b?")},
    "EnvFromSource": {1: ("prefix", S), 2: ("configMapRef", "ConfigMapEnvSource"),
                      3: ("secretRef", "SecretEnvSource")},
    "ConfigMapEnvSource": {1: ("localObjectReference", "inline:LocalObjectReference"), 2: ("optional", "b?")},
    "SecretEnvSource": {1: ("localObjectReference", "inline:LocalObjectReference"), 2: ("optional", "b?")},
    "ResourceRequirements": {1: ("limits", "map:q"), 2: ("requests", "map:q")},
    "SecurityContext": {2: ("privileged", "b?"), 4: ("runAsUser", "i?"), 8: ("runAsGroup", "i?"),
                        5: ("runAsNonRoot", "b?"), 6: ("readOnlyRootFilesystem", "b?"),
                        7: ("allowPrivilegeEscalation", "b?")},
    "Toleration": {1: ("key", S), 2: ("operator", S), 3: ("value", S), 4: ("effect", S),
                   5: ("tolerationSeconds", "i?")},
    "HostAlias": {1: ("ip", S), 2: ("hostnames", "[s]")},
}

_APPS_BATCH = {
    "Deployment": {1: ("metadata", "ObjectMeta"), 2: ("spec", "DeploymentSpec"), 3: ("status", "skip")},
    "DeploymentSpec": {1: ("replicas", "i?"), 2: ("selector", "LabelSelector"), 3: ("template", "PodTemplateSpec"),
                       4: ("strategy", "DeploymentStrategy"), 5: ("minReadySeconds", I),
                       6: ("revisionHistoryLimit", "i?"), 7: ("paused", B), 9: ("progressDeadlineSeconds", "i?")},
    "DeploymentStrategy": {1: ("type", S), 2: ("rollingUpdate", "RollingUpdateDeployment")},
    "RollingUpdateDeployment": {1: ("maxUnavailable", "ios"), 2: ("maxSurge", "ios")},
    "Job": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec"), 3: ("status", "skip")},
    "JobTemplateSpec": {1: ("metadata", "ObjectMeta"), 2: ("spec", "JobSpec")},
    "JobSpec": {1: ("parallelism", "i?"), 2: ("completions", "i?"), 3: ("activeDeadlineSeconds", "i?"),
                7: ("backoffLimit", "i?"), 4: ("selector", "LabelSelector"), 5: ("manualSelector", "b?"),
                6: ("template", "PodTemplateSpec"), 8: ("ttlSecondsAfterFinished", "i?"),
                9: ("completionMode", S), 10: ("suspend", "b?")},
    "CronJob": {1: ("metadata", "ObjectMeta"), 2: ("spec", "CronJobSpec"), 3: ("status", "skip")},
    "CronJobSpec": {1: ("schedule", S), 8: ("timeZone", S), 2: ("startingDeadlineSeconds", "i?"),
                    3: ("concurrencyPolicy", S), 4: ("suspend", "b?"), 5: ("jobTemplate", "JobTemplateSpec"),
                    6: ("successfulJobsHistoryLimit", "i?"), 7: ("failedJobsHistoryLimit", "i?")},
}

_RBAC_POLICY = {
    "Role": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]")},
    "ClusterRole": {1: ("metadata", "ObjectMeta"), 2: ("rules", "[PolicyRule]"),
                    3: ("aggregationRule", "AggregationRule")},
    "AggregationRule": {1: ("clusterRoleSelectors", "[LabelSelector]")},
    "PolicyRule": {1: ("verbs", "[s]"), 2: ("apiGroups", "[s]"), 3: ("resources", "[s]"),
                   4: ("resourceNames", "[s]"), 5: ("nonResourceURLs", "[s]")},
    "RoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"), 3: ("roleRef", "RoleRef")},
    "ClusterRoleBinding": {1: ("metadata", "ObjectMeta"), 2: ("subjects", "[Subject]"), 3: ("roleRef", "RoleRef")},
    "Subject": {1: ("kind", S), 2: ("apiGroup", S), 3: ("name", S), 4: ("namespace", S)},
    "RoleRef": {1: ("apiGroup", S), 2: ("kind", S), 3: ("name", S)},
    "PodDisruptionBudget": {1: ("metadata", "ObjectMeta"), 2: ("spec", "PodDisruptionBudgetSpec"),
                            3: ("status", "skip")},
    "PodDisruptionBudgetSpec": {1: ("minAvailable", "ios"), 2: ("selector", "LabelSelector"),
                                3: ("maxUnavailable", "ios"), 4: ("unhealthyPodEvictionPolicy", S)},
    "PriorityClass": {1: ("metadata", "ObjectMeta"), 2: ("value", "i?"), 3: ("globalDefault", B),
                      4: ("description", S), 5: ("preemptionPolicy", S)},
    "Ingress": {1: ("metadata", "ObjectMeta"), 2: ("spec", "IngressSpec"), 3: ("status", "skip")},
    "IngressSpec": {4: ("ingressClassName", S), 1: ("defaultBackend", "IngressBackend"), 2: ("tls", "[IngressTLS]"),
                    3: ("rules", "[IngressRule]")},
    "IngressBackend": {4: ("service", "IngressServiceBackend"), 3: ("resource", "TypedLocalObjectReference")},
    "IngressServiceBackend": {1: ("name", S), 2: ("port", "ServiceBackendPort")},
    "ServiceBackendPort": {1: ("name", S), 2: ("number", I)},
    "TypedLocalObjectReference": {1: ("apiGroup", S), 2: ("kind", S), 3: ("name", S)},
    "IngressTLS": {1: ("hosts", "[s]"), 2: ("secretName", S)},
    "IngressRule": {1: ("host", S), 2: ("ingressRuleValue", "inline:IngressRuleValue")},
    "IngressRuleValue": {1: ("http", "HTTPIngressRuleValue")},
    "HTTPIngressRuleValue": {1: ("paths", "[HTTPIngressPath]")},
    "HTTPIngressPath": {1: ("path", S), 3: ("pathType", S), 2: ("backend", "IngressBackend")},
}

_ACCESS = {  # authorization.k8s.io/v1 and authentication.k8s.io/v1: kubectl auth can-i / whoami, create token
    "SelfSubjectAccessReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectAccessReviewSpec"),
                                3: ("status", "skip")},
    "SelfSubjectAccessReviewSpec": {1: ("resourceAttributes", "ResourceAttributes"),
                                    2: ("nonResourceAttributes", "NonResourceAttributes")},
    "ResourceAttributes": {1: ("namespace", S), 2: ("verb", S), 3: ("group", S), 4: ("version", S),
                           5: ("resource", S), 6: ("subresource", S), 7: ("name", S)},
    "NonResourceAttributes": {1: ("path", S), 2: ("verb", S)},
    "SelfSubjectRulesReview": {1: ("metadata", "ObjectMeta"), 2: ("spec", "SelfSubjectRulesReviewSpec"),
                               3: ("status", "skip")},
    "SelfSubjectRulesReviewSpec": {1: ("namespace", S)},
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta"), 2: ("status", "skip")},
    "TokenRequest": {1: ("metadata", "ObjectMeta"), 2: ("spec", "TokenRequestSpec"), 3: ("status", "skip")},
    "TokenRequestSpec": {1: ("audiences", "[s]"), 4: ("expirationSeconds", "i?"),
                         3: ("boundObjectRef", "BoundObjectReference")},
    "BoundObjectReference": {1: ("kind", S), 2: ("apiVersion", S), 3: ("name", S), 4: ("uid", S)},
}

TABLE: dict[str, dict[int, tuple[str, str]]] = {**_META, **_CORE, **_APPS_BATCH, **_RBAC_POLICY, **_ACCESS}

# Kinds a body may carry (Unknown.typeMeta.kind) and the message of each.
KINDS = {k: k for k in ("Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "ResourceQuota", "Pod",
                        "Deployment", "Job", "CronJob", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding",
                        "PodDisruptionBudget", "PriorityClass", "Ingress", "SelfSubjectAccessReview",
                        "SelfSubjectRulesReview", "SelfSubjectReview", "TokenRequest")}
