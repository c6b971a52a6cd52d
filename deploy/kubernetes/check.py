"""Cross-object checks of a rendered overlay that a schema cannot make (run by
tests/kubernetes.rs on `kubectl kustomize` output): every ConfigMap and Secret a pod mounts is
rendered or is the documented out-of-band session Secret; probe ports are container ports;
terminationGracePeriodSeconds covers preStop plus proxy.shutdown_grace; every Service selects
some pod template; the Services the proxy discovers are headless and serve the port it dials.
Prints one line per failed check and exits 1 if any failed."""

import re
import sys
import tomllib

import yaml

OUT_OF_BAND_SECRETS = {"mcp-fleet-session"}


def seconds(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def main(path):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    kinds = {}
    for d in docs:
        kinds.setdefault(d["kind"], []).append(d)
    failures = []
    configmaps = {c["metadata"]["name"]: c for c in kinds.get("ConfigMap", [])}
    secrets = {s["metadata"]["name"] for s in kinds.get("Secret", [])}
    workloads = kinds.get("Deployment", []) + kinds.get("StatefulSet", [])
    services = {s["metadata"]["name"]: s for s in kinds.get("Service", [])}
    for w in workloads:
        name = w["metadata"]["name"]
        pod = w["spec"]["template"]["spec"]
        labels = w["spec"]["template"]["metadata"]["labels"]
        selector = w["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in selector.items()):
            failures.append(f"{name}: selector {selector} does not match its pod labels")
        if w["kind"] == "StatefulSet" and w["spec"]["serviceName"] not in services:
            failures.append(f"{name}: serviceName {w['spec']['serviceName']} is not rendered")
        for v in pod.get("volumes", []):
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                failures.append(f"{name}: mounts ConfigMap {v['configMap']['name']}, not rendered")
            if "secret" in v:
                s = v["secret"]["secretName"]
                if s not in secrets and s not in OUT_OF_BAND_SECRETS:
                    failures.append(f"{name}: mounts Secret {s}, neither rendered nor documented")
        for c in pod["containers"]:
            ports = {p.get("name") for p in c.get("ports", [])} | {
                p["containerPort"] for p in c.get("ports", [])
            }
            for probe in ("readinessProbe", "livenessProbe"):
                if probe in c:
                    port = c[probe]["httpGet"]["port"]
                    if port not in ports:
                        failures.append(f"{name}: {probe} port {port} is not a container port")
            config = None
            for v in pod.get("volumes", []):
                if "configMap" in v and v["configMap"]["name"] in configmaps:
                    data = configmaps[v["configMap"]["name"]]["data"]
                    config = tomllib.loads(data["fleet.toml"])
            if config is None:
                failures.append(f"{name}: no fleet.toml ConfigMap mounted")
                continue
            grace = pod.get("terminationGracePeriodSeconds", 30)
            pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            pre_s = float(pre[-1]) if pre and pre[0].endswith("sleep") else 0
            drain = seconds(config.get("proxy", {}).get("shutdown_grace", "10s"))
            if grace <= pre_s + drain:
                failures.append(
                    f"{name}: terminationGracePeriodSeconds {grace} <= preStop {pre_s} + shutdown_grace {drain}"
                )
            for cat, body in config.get("categories", {}).items():
                dns = body.get("discover", {}).get("dns")
                if not dns:
                    continue
                svc_name, ns = dns.split(".")[0], dns.split(".")[1]
                svc = services.get(svc_name)
                if svc is None or svc["metadata"].get("namespace") != ns:
                    failures.append(f"{name}: category {cat} discovers {dns}: no such Service")
                    continue
                if svc["spec"].get("clusterIP") != "None":
                    failures.append(f"{name}: Service {svc_name} is not headless")
                if body["discover"]["port"] not in [p["port"] for p in svc["spec"]["ports"]]:
                    failures.append(f"{name}: Service {svc_name} has no port {body['discover']['port']}")
    for s in services.values():
        sel = s["spec"].get("selector", {})
        if not any(
            all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
            for w in workloads
        ):
            failures.append(f"Service {s['metadata']['name']}: selector {sel} matches no pod")
    for f in failures:
        print(f)
    print(f"{path}: {len(docs)} objects, {len(failures)} failed checks")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
