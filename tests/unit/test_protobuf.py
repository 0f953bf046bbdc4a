"""The protobuf envelope decoder, on bodies built here field by field (no kubectl needed)."""
import pytest

from trellis.lab.apiserver import errors, protobuf


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def f(num: int, value) -> bytes:
    """One field: an int is a varint, bytes/str are length-delimited."""
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(num << 3 | 2) + varint(len(value)) + value


def envelope(api_version: str, kind: str, raw: bytes, encoding: str = "") -> bytes:
    unknown = f(1, f(1, api_version) + f(2, kind)) + f(2, raw) + f(3, encoding) + f(4, "")
    return protobuf.MAGIC + unknown


def meta(name: str, **labels) -> bytes:
    # as Go writes ObjectMeta: every non-pointer field, set or not (selfLink 4 is not in the table)
    out = f(1, name) + f(2, "") + f(3, "") + f(4, "") + f(5, "") + f(6, "") + f(7, 0) + f(8, b"")
    for k, v in labels.items():
        out += f(11, f(1, k) + f(2, v))
    return out


def test_deployment_with_zero_replicas_intorstring_and_zero_fields():
    container = f(1, "web") + f(2, "nginx") + f(6, f(3, 80) + f(4, "TCP")) + f(8, b"") + f(16, 0)
    template = f(1, meta("", app="web")) + f(2, f(2, container))
    strategy = f(1, "RollingUpdate") + f(2, f(1, f(1, 1) + f(3, "25%")) + f(2, f(1, 0) + f(2, 2)))
    spec = f(1, 0) + f(2, f(1, f(1, "app") + f(2, "web"))) + f(3, template) + f(4, strategy) + f(5, 0)
    body = envelope("apps/v1", "Deployment", f(1, meta("web", app="web")) + f(2, spec) + f(3, f(1, 0)))
    obj = protobuf.decode(body)
    assert obj["apiVersion"] == "apps/v1" and obj["kind"] == "Deployment"
    assert obj["metadata"] == {"name": "web", "labels": {"app": "web"}}  # empty strings and zero time dropped
    assert obj["spec"]["replicas"] == 0  # a pointer: zero is a value
    assert "minReadySeconds" not in obj["spec"]  # omitempty
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxUnavailable": "25%", "maxSurge": 2}
    assert obj["spec"]["template"]["spec"]["containers"] == [
        {"name": "web", "image": "nginx", "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {}}]
    assert "status" not in obj


def test_maps_of_bytes_and_quantities_negative_ints_and_inline_fields():
    secret = protobuf.decode(envelope("v1", "Secret", f(1, meta("s")) + f(2, f(1, "k") + f(2, b"\x00\xff"))
                                      + f(3, "Opaque")))
    assert secret["data"] == {"k": "AP8="} and secret["type"] == "Opaque"
    quota = protobuf.decode(envelope("v1", "ResourceQuota", f(1, meta("q")) + f(2, f(1, f(1, "cpu") + f(2, f(1, "500m"))))))
    assert quota["spec"]["hard"] == {"cpu": "500m"}
    pc = protobuf.decode(envelope("scheduling.k8s.io/v1", "PriorityClass", f(1, meta("pc")) + f(2, -5)))
    assert pc["value"] == -5
    rule = f(1, "foo.com") + f(2, f(1, f(1, f(1, "/") + f(3, "Prefix") + f(2, f(4, f(1, "svc") + f(2, f(2, 80)))))))
    ing = protobuf.decode(envelope("networking.k8s.io/v1", "Ingress", f(1, meta("i")) + f(2, f(3, rule))))
    assert ing["spec"]["rules"] == [{"host": "foo.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]


def test_an_unknown_field_with_a_value_is_rejected_by_name():
    spec = f(1, 1) + f(99, "surprise")
    with pytest.raises(errors.ApiError) as e:
        protobuf.decode(envelope("apps/v1", "Deployment", f(1, meta("web")) + f(2, spec)))
    assert e.value.code == 400 and "field 99 of DeploymentSpec" in e.value.message


def test_envelope_errors():
    with pytest.raises(errors.ApiError) as e:
        protobuf.decode(b"\x0a\x00")
    assert e.value.code == 400 and "k8s\\x00" in e.value.message
    with pytest.raises(errors.ApiError) as e:
        protobuf.decode(envelope("v1", "Binding", b""))
    assert e.value.code == 415 and "v1 Binding" in e.value.message
    with pytest.raises(errors.ApiError) as e:
        protobuf.decode(envelope("v1", "ConfigMap", f(1, meta("c")), encoding="gzip"))
    assert e.value.code == 400 and "gzip" in e.value.message
    with pytest.raises(errors.ApiError) as e:
        protobuf.decode(envelope("v1", "ConfigMap", f(1, meta("c"))[:-3] + b"\x0a\x10ab"))
    assert e.value.code == 400 and "ConfigMap could not be decoded" in e.value.message
