"""Calling CNI plugins the way a container runtime (libcni) does.

The network config is the first ``*.conflist``/``*.conf`` in the node's CNI
config dir. ADD runs the plugins in order, each getting the previous result as
``prevResult``; DEL runs them in reverse with the cached ADD result; CHECK runs
them in order with it. Environment: CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS,
CNI_IFNAME, CNI_ARGS (K8S_POD_*), CNI_PATH. Capabilities such as
``portMappings`` get ``runtimeConfig``.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field


class CNIError(RuntimeError):
    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"CNI {command} via plugin {plugin!r} failed (code {code}): {msg}"
                         + (f" ({details})" if details else ""))
        self.plugin, self.command, self.code, self.msg = plugin, command, code, msg


@dataclass
class Attachment:
    container_id: str
    netns_path: str
    ifname: str = "eth0"
    args: dict[str, str] = field(default_factory=dict)
    runtime_config: dict = field(default_factory=dict)


def load_netconf(conf_dir: str) -> dict:
    files = sorted(f for f in os.listdir(conf_dir) if f.endswith((".conflist", ".conf", ".json")))
    if not files:
        raise CNIError("-", "LOAD", 7, f"no network config found in {conf_dir}")
    with open(os.path.join(conf_dir, files[0])) as f:
        conf = json.load(f)
    if "plugins" not in conf:  # a single-plugin .conf
        conf = {"cniVersion": conf.get("cniVersion", "1.0.0"), "name": conf["name"], "plugins": [conf]}
    return conf


class CNIRuntime:
    def __init__(self, conf_dir: str, bin_dirs: list[str], cache_dir: str, timeout: float = 60) -> None:
        self.conf_dir, self.bin_dirs, self.cache_dir, self.timeout = conf_dir, bin_dirs, cache_dir, timeout
        os.makedirs(cache_dir, exist_ok=True)

    def not_ready(self) -> str | None:
        """Why the node's pod network is not ready (None: it is): no network config installed yet,
        as on a kubeadm node before a CNI is applied."""
        try:
            load_netconf(self.conf_dir)
        except (OSError, ValueError, KeyError, CNIError):
            return "network plugin not ready: cni config uninitialized"
        return None

    def _plugin_conf(self, netconf: dict, plugin: dict, prev: dict | None, att: Attachment) -> dict:
        conf = dict(plugin, name=netconf["name"], cniVersion=netconf.get("cniVersion", "1.0.0"))
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities") or {}
        rc = {k: v for k, v in att.runtime_config.items() if caps.get(k)}
        if rc:
            conf["runtimeConfig"] = rc
        return conf

    def _exec(self, command: str, plugin_type: str, conf: dict, att: Attachment) -> dict:
        path = next((os.path.join(d, plugin_type) for d in self.bin_dirs
                     if os.access(os.path.join(d, plugin_type), os.X_OK)), None)
        if path is None:
            raise CNIError(plugin_type, command, 7, f"plugin {plugin_type!r} not found in {self.bin_dirs}")
        env = {"CNI_COMMAND": command, "CNI_CONTAINERID": att.container_id, "CNI_NETNS": att.netns_path,
               "CNI_IFNAME": att.ifname, "CNI_PATH": ":".join(self.bin_dirs),
               "CNI_ARGS": ";".join(f"{k}={v}" for k, v in att.args.items()),
               "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
        p = subprocess.run([path], input=json.dumps(conf), capture_output=True, text=True, env=env,
                           timeout=self.timeout)
        out = p.stdout.strip()
        if p.returncode != 0:
            try:
                e = json.loads(out)
                raise CNIError(plugin_type, command, e.get("code", 999), e.get("msg", ""), e.get("details", ""))
            except ValueError:
                raise CNIError(plugin_type, command, 999, (p.stderr or out).strip()) from None
        return json.loads(out) if out else {}

    def _cache_path(self, att: Attachment) -> str:
        return os.path.join(self.cache_dir, f"{att.container_id}-{att.ifname}.json")

    def add(self, att: Attachment) -> dict:
        netconf = load_netconf(self.conf_dir)
        result = None
        done: list[dict] = []
        try:
            for plugin in netconf["plugins"]:
                conf = self._plugin_conf(netconf, plugin, result, att)
                result = self._exec("ADD", plugin["type"], conf, att)
                done.append(plugin)
        except Exception:
            # undo what was added, in reverse, so a failed ADD leaks nothing
            for plugin in reversed(netconf["plugins"]):
                try:
                    self._exec("DEL", plugin["type"], self._plugin_conf(netconf, plugin, result, att), att)
                except Exception:  # noqa: BLE001 - best effort cleanup
                    pass
            raise
        with open(self._cache_path(att), "w") as f:
            json.dump({"netconf": netconf, "result": result, "att": att.__dict__}, f)
        return result or {}

    def delete(self, att: Attachment) -> None:
        cached = None
        if os.path.exists(self._cache_path(att)):
            with open(self._cache_path(att)) as f:
                cached = json.load(f)
        netconf = cached["netconf"] if cached else load_netconf(self.conf_dir)
        prev = cached["result"] if cached else None
        errors = []
        for plugin in reversed(netconf["plugins"]):
            try:
                self._exec("DEL", plugin["type"], self._plugin_conf(netconf, plugin, prev, att), att)
            except CNIError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        try:
            os.unlink(self._cache_path(att))
        except FileNotFoundError:
            pass

    def check(self, att: Attachment) -> None:
        with open(self._cache_path(att)) as f:
            cached = json.load(f)
        netconf = cached["netconf"]
        for plugin in netconf["plugins"]:
            self._exec("CHECK", plugin["type"], self._plugin_conf(netconf, plugin, cached["result"], att), att)


def pod_ip(result: dict, ifname: str = "eth0") -> str | None:
    """The first IPv4 address of the pod's interface in a CNI result."""
    ifaces = result.get("interfaces") or []
    for ip in result.get("ips") or []:
        idx = ip.get("interface")
        if idx is not None and idx < len(ifaces) and ifaces[idx].get("name") != ifname:
            continue
        addr = ip["address"].split("/")[0]
        if ":" not in addr:
            return addr
    return None


def reference_conflist(name: str, subnet: str, data_dir: str) -> dict:
    """The lab's config for Debian's reference plugins: bridge + host-local, one subnet per node."""
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "routes": [{"dst": "0.0.0.0/0"}],
                  "dataDir": data_dir}}]}
