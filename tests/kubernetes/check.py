"""What aigw's Kubernetes manifests must say, beyond the schemas.

Usage: check.py RENDERED_OVERLAY.yaml RENDERED_BASE.yaml NATS_VALUES.yaml
Prints every problem found and exits with 1 when there is one.
"""
import re
import sys

import yaml

ROLES = ("ingress", "dispatcher", "projector")


def seconds(text):
    """A humantime duration of whole seconds or milliseconds: 45s, 1m, 500ms."""
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*(ms|s|m|h)", text):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def main(overlay_path, base_path, nats_path):
    problems = []
    docs = [d for d in yaml.safe_load_all(open(overlay_path)) if d]
    base = [d for d in yaml.safe_load_all(open(base_path)) if d]
    nats = yaml.safe_load(open(nats_path))
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)

    env_maps = [c for c in by_kind.get("ConfigMap", []) if c["metadata"]["name"].startswith("aigw-env")]
    if len(env_maps) != 1:
        problems.append(f"expected one aigw-env ConfigMap, found {len(env_maps)}")
        env = {}
    else:
        env = env_maps[0]["data"]
    grace = seconds(env.get("AIGW_SHUTDOWN_GRACE", "25s"))
    probe_port = int(env.get("AIGW_PROBE_LISTEN", ":0").rsplit(":", 1)[1])

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    for role in ROLES:
        name = f"aigw-{role}"
        d = deployments.get(name)
        if d is None:
            problems.append(f"no Deployment {name}")
            continue
        pod = d["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        if c.get("args") != [role]:
            problems.append(f"{name}: args {c.get('args')} do not run the role {role}")
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        kill = pod.get("terminationGracePeriodSeconds", 30)
        if not kill > grace + pre_stop:
            problems.append(
                f"{name}: terminationGracePeriodSeconds {kill} is not above AIGW_SHUTDOWN_GRACE "
                f"({grace:g} s) plus the preStop pause ({pre_stop} s)"
            )
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("readinessProbe", "/ready"), ("livenessProbe", "/health")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path:
                problems.append(f"{name}: {probe} is not GET {path}")
            port = ports.get(get.get("port"), get.get("port"))
            want = 8080 if role == "ingress" else probe_port
            if port != want:
                problems.append(f"{name}: {probe} on port {port}, the role serves it on {want}")
        res = c.get("resources", {})
        if not {"cpu", "memory"} <= set(res.get("requests", {})):
            problems.append(f"{name}: resources.requests lacks cpu or memory")
        if "memory" not in res.get("limits", {}):
            problems.append(f"{name}: resources.limits lacks memory")
        names = {e["name"] for e in c.get("env", [])}
        for var in ("AIGW_DATABASE_URL",) + (("AIGW_MASTER_KEY",) if role != "projector" else ()):
            if var not in names:
                problems.append(f"{name}: {var} is not set")
        for e in c.get("env", []):
            if e["name"] in ("AIGW_ADMIN_TOKEN", "AIGW_MASTER_KEY", "AIGW_DATABASE_URL") and "value" in e:
                problems.append(f"{name}: {e['name']} is a literal value, not from a Secret")
        if role == "ingress":
            config = next((e.get("value") for e in c.get("env", []) if e["name"] == "AIGW_CONFIG"), None)
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            if config is None or config.rsplit("/", 1)[0] not in mounts:
                problems.append(f"{name}: AIGW_CONFIG does not point into a mounted volume")

    config_maps = [c for c in by_kind.get("ConfigMap", []) if "aigw.toml" in c.get("data", {})]
    if not config_maps:
        problems.append("no ConfigMap holds aigw.toml")

    pdbs = {tuple(sorted(p["spec"]["selector"]["matchLabels"].items())) for p in by_kind.get("PodDisruptionBudget", [])}
    for role in ROLES:
        key = tuple(sorted({"app.kubernetes.io/name": "aigw", "app.kubernetes.io/component": role}.items()))
        if key not in pdbs:
            problems.append(f"no PodDisruptionBudget selects the {role} pods")
    scaled = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for role in ("ingress", "dispatcher"):
        if f"aigw-{role}" not in scaled:
            problems.append(f"no HorizontalPodAutoscaler for aigw-{role}")
    for target in scaled - set(deployments):
        problems.append(f"a HorizontalPodAutoscaler scales {target}, which does not exist")

    # Secrets: only the overlay makes one; the base ships none.
    if any(d["kind"] == "Secret" for d in base):
        problems.append("the base holds a Secret: secrets belong to the overlay")
    secrets = [s["metadata"]["name"] for s in by_kind.get("Secret", [])]
    if not any(s.startswith("aigw-secrets") for s in secrets):
        problems.append("the overlay makes no aigw-secrets Secret")

    cluster = nats.get("config", {}).get("cluster", {})
    js = nats.get("config", {}).get("jetstream", {})
    if not cluster.get("enabled") or cluster.get("replicas", 0) < 3:
        problems.append("nats-values.yaml: not a cluster of at least 3")
    if not js.get("enabled") or not js.get("fileStore", {}).get("enabled"):
        problems.append("nats-values.yaml: JetStream with file storage is not enabled")
    replicas = int(env.get("AIGW_NATS_REPLICAS", "1"))
    if replicas > cluster.get("replicas", 1):
        problems.append(f"AIGW_NATS_REPLICAS={replicas} exceeds the NATS cluster's {cluster.get('replicas')} nodes")
    seeds = env.get("AIGW_NATS_URL", "").split(",")
    if len(seeds) < 2:
        problems.append("AIGW_NATS_URL lists fewer than two seeds")

    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
