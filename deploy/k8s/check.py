#!/usr/bin/env python3
"""Offline checks of deploy/k8s that a schema validator cannot make.

Run by deploy/k8s/validate.sh (with the virtualenv's python: PyYAML comes with
kubernetes-validate; tomllib is in the standard library from Python 3.11):

    check.py --render DIR

1. Config keys. For each service, the set of config keys (dotted paths; an
   array of tables contributes `name[].key` for the union of its entries' keys)
   of the Kubernetes config — the ConfigMap's TOML merged with the Secret's TOML
   the way the services merge TRACKSTREAM_CONFIG_OVERLAY (tables key by key,
   anything else replaced) — must equal the set in deploy/docker/config/<svc>.toml
   and in deploy/local/config/<svc>.toml, with the committed Secret template
   secrets/<svc>.example.toml. An operator's own secrets/<svc>.toml (git-ignored)
   is checked only for syntax and for keys the ConfigMap sets too: it may
   configure other provider routes than the demo configs.
2. Secrets stay out of the ConfigMaps: no key naming a token, secret, password
   or credential, no URL with a password, and no key set in both files.
3. The manifests agree with the configs: the command's --config and the overlay
   path are what the volumes mount; listen ports are the containerPorts the
   probes and Services use (probes: /healthz readiness, /livez liveness); every
   Deployment is non-root with a read-only root filesystem and no capabilities,
   has requests and limits, a spread over nodes, a PodDisruptionBudget, an HPA
   (consumers: External lag metric of their group; maxReplicas at most the
   topics Job's --partitions) and a grace period at least its drain; the topics
   Job's --brokers is every service's kafka.brokers; compose mounts the docker
   configs.
4. Writes the ConfigMaps and the Secret the kustomization generates to DIR, so
   validate.sh can schema-check them with the manifests.

Every problem is printed as `<file>: <what is wrong>`; the exit status is 1 if
there is any.
"""

import argparse
import base64
import os
import re
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    sys.exit("check.py: needs Python >= 3.11 (tomllib)")
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SERVICES = ("ingest", "normalize", "detector", "notifier")
CONSUMERS = ("normalize", "detector", "notifier")
OVERLAY_ENV = "TRACKSTREAM_CONFIG_OVERLAY"  # runtime::config::OVERLAY_ENV
# Drain bounds in the code, in seconds (the grace period must cover them):
HANDLES_RELEASED_WITHIN = 15  # runtime/src/kafka/consumer/run_loop.rs
PRODUCER_FLUSH = 10  # producer.flush(10 s) in each service's lib.rs
# Key names whose values are credentials: they belong in the Secret.
SECRET_KEY = re.compile(r"secret|token|passw|credential|private", re.IGNORECASE)
URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.IGNORECASE)
KUSTOMIZATION_FIELDS = {
    "apiVersion", "kind", "namespace", "resources", "configMapGenerator",
    "secretGenerator", "images", "labels", "commonAnnotations", "patches",
    "generatorOptions", "replicas", "components",
}

problems = []


def rel(path):
    return os.path.relpath(path, ROOT)


def problem(path, message):
    problems.append(f"{rel(path)}: {message}")


# ---------------------------------------------------------------- loading


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate mapping keys (PyYAML keeps the last
    one silently; kubectl refuses them)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *anchor`: its keys may be overridden on purpose
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_yaml(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
    except (OSError, yaml.YAMLError) as e:
        problem(path, f"cannot read: {e}")
        return []


def load_toml(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        problem(path, f"cannot read: {e}")
        return None


# ---------------------------------------------------------------- config keys


def merge(base, overlay):
    """runtime::config's merge: tables key by key, anything else replaced."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def keys(table, prefix=""):
    """Dotted key paths of a TOML table. A table contributes its keys (an empty
    one itself); an array of tables contributes `name[].key` for every key any
    entry has; any other value (arrays of scalars included) is a leaf."""
    out = set()
    for name, value in table.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            out |= keys(value, path) or {path}
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            inner = set()
            for entry in value:
                inner |= keys(entry, path + "[]")
            out |= inner or {path + "[]"}
        else:
            out.add(path)
    return out


def typed(table, prefix=""):
    """{path: set of TOML value types} over the same paths as keys()."""
    out = {}
    for name, value in table.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict) and value:
            for k, v in typed(value, path).items():
                out.setdefault(k, set()).update(v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for entry in value:
                for k, v in typed(entry, path + "[]").items():
                    out.setdefault(k, set()).update(v)
        else:
            out.setdefault(path, set()).add(type(value).__name__)
    return out


def leaves(table, prefix=""):
    """(path, value) of every scalar, arrays walked."""
    for name, value in table.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, dict):
            yield from leaves(value, path)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, dict):
                    yield from leaves(v, f"{path}[{i}]")
                else:
                    yield f"{path}[{i}]", v
        else:
            yield path, value


def compare_keys(label, have, reference_path, reference):
    """`have` and `reference` are typed() maps: the key sets must be equal, and
    a key in both must hold the same TOML types (a number where the reference
    has a duration string would not load)."""
    for key in sorted(reference.keys() - have.keys()):
        problems.append(f"{label}: key `{key}` is missing ({rel(reference_path)} has it)")
    for key in sorted(have.keys() - reference.keys()):
        problems.append(f"{label}: key `{key}` is not in {rel(reference_path)}")
    for key in sorted(have.keys() & reference.keys()):
        if have[key] != reference[key]:
            problems.append(f"{label}: key `{key}` is {'/'.join(sorted(have[key]))}, "
                            f"but {'/'.join(sorted(reference[key]))} in {rel(reference_path)}")


def check_service_keys(svc, cm_path, cm, secret_paths):
    docker_path = os.path.join(ROOT, "deploy/docker/config", f"{svc}.toml")
    local_path = os.path.join(ROOT, "deploy/local/config", f"{svc}.toml")
    docker, local = load_toml(docker_path), load_toml(local_path)
    if docker is None or local is None or cm is None:
        return
    compare_keys(rel(docker_path), typed(docker), local_path, typed(local))
    for path, value in leaves(cm):
        if SECRET_KEY.search(path):
            problem(cm_path, f"key `{path}` looks like a credential: it belongs in the Secret")
        if isinstance(value, str) and URL_PASSWORD.search(value):
            problem(cm_path, f"`{path}` holds a URL with a password: put it in the Secret")
    for secret_path in secret_paths or [None]:
        secret = load_toml(secret_path) if secret_path else {}
        if secret is None:
            continue
        label = rel(cm_path) + (f" + {rel(secret_path)}" if secret_path else "")
        for key in sorted(keys(cm) & keys(secret)):
            problem(secret_path, f"key `{key}` is also set in {rel(cm_path)} (the Secret's value would win)")
        if secret_path and not secret_path.endswith(".example.toml"):
            continue  # an operator's own file may configure other providers
        merged = typed(merge(cm, secret))
        compare_keys(label, merged, docker_path, typed(docker))
        compare_keys(label, merged, local_path, typed(local))


# ---------------------------------------------------------------- manifests


def duration_seconds(text):
    total = 0.0
    for number, unit in re.findall(r"(\d+)\s*(ms|s|m|h|d)", text or ""):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    return total


def listen_port(path, svc, config, key):
    section, _, name = key.rpartition(".")
    value = config.get(section, {}).get(name) if section else config.get(name)
    if not isinstance(value, str) or ":" not in value:
        problem(path, f"`{key}` must be host:port (got {value!r})")
        return None
    host, _, port = value.rpartition(":")
    if host not in ("0.0.0.0", "[::]"):
        problem(path, f"`{key}` = {value!r}: listen on 0.0.0.0, or kubelet probes and Services cannot reach {svc}")
    return int(port) if port.isdigit() else None


def generator_files(kust_path, entries):
    """generator name -> {key: file path}."""
    out = {}
    for entry in entries or []:
        files = {}
        for spec in entry.get("files", []):
            key, _, source = spec.partition("=") if "=" in spec else (os.path.basename(spec), "", spec)
            files[key] = os.path.join(HERE, source)
        out[entry.get("name")] = files
    return out


def secret_sources(path):
    """The files to check for a Secret file: itself if present, and its example."""
    example = re.sub(r"\.toml$", ".example.toml", path)
    found = [p for p in (path, example) if os.path.exists(p)]
    if not os.path.exists(example):
        problem(path, f"no template {rel(example)} to copy it from")
    return found


def container_mount(pod, container, directory):
    for mount in container.get("volumeMounts", []):
        if mount.get("mountPath") == directory:
            for volume in pod.get("volumes", []):
                if volume.get("name") == mount.get("name"):
                    return volume
    return None


def check_deployment(path, dep, cms, secrets, by_kind, partitions, brokers):
    svc = dep["metadata"]["name"]
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    where = f"{rel(path)} deployment/{svc}"
    containers = pod.get("containers", [])
    if len(containers) != 1:
        problems.append(f"{where}: expected one container")
        return
    c = containers[0]
    command = c.get("command", []) + c.get("args", [])
    if command[:2] != [f"trackstream-{svc}", "--config"] or len(command) < 3:
        problems.append(f"{where}: command must be trackstream-{svc} --config <file> (got {command})")
        return
    config_file = command[2]
    volume = container_mount(pod, c, os.path.dirname(config_file))
    cm_name = (volume or {}).get("configMap", {}).get("name")
    cm_path = cms.get(cm_name, {}).get(os.path.basename(config_file))
    if not cm_path:
        problems.append(f"{where}: {config_file} is not a file of a generated ConfigMap mounted at {os.path.dirname(config_file)}")
        return
    cm = load_toml(cm_path)
    if cm is None:
        return

    secret_paths = []
    overlay = next((e.get("value") for e in c.get("env", []) if e.get("name") == OVERLAY_ENV), None)
    if overlay:
        volume = container_mount(pod, c, os.path.dirname(overlay))
        secret = (volume or {}).get("secret", {})
        key = next((i["key"] for i in secret.get("items", []) if i.get("path") == os.path.basename(overlay)), None)
        source = secrets.get(secret.get("secretName"), {}).get(key)
        if not source:
            problems.append(f"{where}: {OVERLAY_ENV}={overlay} is not a key of a generated Secret mounted there")
        else:
            secret_paths = secret_sources(source)
            if secret.get("defaultMode") is None or secret["defaultMode"] & 0o007:
                problems.append(f"{where}: the Secret volume must not be world-readable (defaultMode 0440)")
    check_service_keys(svc, cm_path, cm, secret_paths)
    full = cm
    for secret_path in secret_paths[:1]:
        full = merge(cm, load_toml(secret_path) or {})

    # Ports and probes.
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    listeners = {"admin": "admin.listen"}
    if svc == "ingest":
        listeners["http"] = "http.listen"
    if svc == "notifier":
        listeners["grpc"] = "grpc.listen"
        listeners["http"] = "web.listen"
    for port_name, key in listeners.items():
        port = listen_port(cm_path, svc, full, key)
        if port is not None and ports.get(port_name) != port:
            problems.append(f"{where}: containerPort `{port_name}` is {ports.get(port_name)}, but {rel(cm_path)} `{key}` listens on {port}")
    if full.get("admin", {}).get("log_format") != "json":
        problem(cm_path, "`admin.log_format` should be \"json\" in a cluster")
    for probe, route in (("readinessProbe", "/healthz"), ("livenessProbe", "/livez"), ("startupProbe", "/livez")):
        get = c.get(probe, {}).get("httpGet", {})
        if get.get("path") != route or get.get("port") not in ("admin", ports.get("admin")):
            problems.append(f"{where}: {probe} must be GET {route} on the admin port (got {get or 'none'})")

    # Hardening, resources, spread.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append(f"{where}: runAsNonRoot must be true")
    if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: needs readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []):
        problems.append(f"{where}: capabilities must drop ALL")
    for kind in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in c.get("resources", {}).get(kind, {}):
                problems.append(f"{where}: resources.{kind}.{resource} is missing")
    spread = [t.get("topologyKey") for t in pod.get("topologySpreadConstraints", [])]
    if "kubernetes.io/hostname" not in spread:
        problems.append(f"{where}: needs a topologySpreadConstraint over kubernetes.io/hostname")

    # Grace period >= the drain.
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] and len(pre_stop) > 1 else 0
    request_timeout = 0
    if svc == "ingest":
        request_timeout = duration_seconds(full.get("http", {}).get("limits", {}).get("request_timeout", "30s"))
    if svc == "notifier":
        request_timeout = duration_seconds(full.get("grpc", {}).get("request_timeout", "30s"))
    consumer = HANDLES_RELEASED_WITHIN if svc in CONSUMERS else 0
    drain = sleep + max(request_timeout, consumer) + PRODUCER_FLUSH
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if grace < drain:
        problems.append(f"{where}: terminationGracePeriodSeconds {grace} is shorter than the drain ({drain:.0f} s)")

    # PDB and HPA.
    def selects(obj):
        match = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        return match and all(labels.get(k) == v for k, v in match.items())

    if not any(selects(p) for _, p in by_kind.get("PodDisruptionBudget", [])):
        problems.append(f"{where}: no PodDisruptionBudget selects its pods")
    hpas = [(p, h) for p, h in by_kind.get("HorizontalPodAutoscaler", [])
            if h["spec"]["scaleTargetRef"].get("name") == svc and h["spec"]["scaleTargetRef"].get("kind") == "Deployment"]
    if len(hpas) != 1:
        problems.append(f"{where}: expected one HorizontalPodAutoscaler, found {len(hpas)}")
    for hpa_path, hpa in hpas:
        hwhere = f"{rel(hpa_path)} horizontalpodautoscaler/{hpa['metadata']['name']}"
        if partitions is not None and hpa["spec"].get("maxReplicas", 0) > partitions:
            problems.append(f"{hwhere}: maxReplicas {hpa['spec']['maxReplicas']} exceeds the topics' {partitions} partitions")
        metrics = hpa["spec"].get("metrics", [])
        if svc in CONSUMERS:
            group = full.get("kafka", {}).get("group_id") or f"trackstream-{svc}"
            lag = [m for m in metrics if m.get("type") == "External"
                   and m["external"]["metric"].get("selector", {}).get("matchLabels", {}).get("consumergroup") == group]
            if not lag:
                problems.append(f"{hwhere}: needs an External lag metric selecting consumergroup={group}")
        elif not any(m.get("type") == "Resource" and m["resource"].get("name") == "cpu" for m in metrics):
            problems.append(f"{hwhere}: needs a cpu Resource metric")

    kafka_brokers = full.get("kafka", {}).get("brokers")
    if brokers is not None and kafka_brokers != brokers:
        problem(cm_path, f"`kafka.brokers` = {kafka_brokers!r}, but the topics Job creates topics on {brokers!r}")
    return ports, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--render", metavar="DIR", help="write the generated ConfigMaps and Secret here")
    args = parser.parse_args()

    kust_path = os.path.join(HERE, "kustomization.yaml")
    kust = (load_yaml(kust_path) or [{}])[0]
    for field in sorted(set(kust) - KUSTOMIZATION_FIELDS):
        problem(kust_path, f"unexpected field `{field}`")
    if kust.get("namespace") != "trackstream":
        problem(kust_path, "namespace must be trackstream")
    resources = kust.get("resources", [])
    listed = {os.path.normpath(os.path.join(HERE, r)) for r in resources}
    for name in sorted(os.listdir(HERE)):
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" \
                and os.path.join(HERE, name) not in listed:
            problem(os.path.join(HERE, name), "is not listed in kustomization.yaml's resources")
    by_kind = {}
    for path in sorted(listed):
        if not os.path.exists(path):
            problem(kust_path, f"resource {rel(path)} does not exist")
            continue
        for doc in load_yaml(path):
            by_kind.setdefault(doc.get("kind"), []).append((path, doc))
            if doc.get("metadata", {}).get("namespace") not in (None, "trackstream"):
                problem(path, f"{doc['kind']}/{doc['metadata'].get('name')}: namespace is set by the kustomization")

    cms = generator_files(kust_path, kust.get("configMapGenerator"))
    secrets = generator_files(kust_path, kust.get("secretGenerator"))
    for name, files in list(cms.items()) + list(secrets.items()):
        for key, path in files.items():
            if not os.path.exists(path) and not (name in secrets and os.path.exists(re.sub(r"\.toml$", ".example.toml", path))):
                problem(kust_path, f"{name}: file {rel(path)} does not exist")

    # The topics Job: where and how many partitions.
    brokers = partitions = None
    jobs = [(p, j) for p, j in by_kind.get("Job", []) if j["metadata"]["name"] == "topics"]
    if not jobs:
        problem(kust_path, "no topics Job")
    for path, job in jobs:
        command = [a for c in job["spec"]["template"]["spec"]["containers"] for a in c.get("command", []) + c.get("args", [])]
        if command[:3] != ["trackstream", "topics", "create"]:
            problem(path, f"the topics Job must run `trackstream topics create` (got {command})")
        options = dict(a[2:].split("=", 1) for a in command if a.startswith("--") and "=" in a)
        brokers = options.get("brokers")
        partitions = int(options["partitions"]) if options.get("partitions", "").isdigit() else None
        if brokers is None or partitions is None:
            problem(path, "the topics Job needs --brokers=... and --partitions=N")

    deployments = by_kind.get("Deployment", [])
    names = sorted(d["metadata"]["name"] for _, d in deployments)
    if names != sorted(SERVICES):
        problem(kust_path, f"expected the Deployments {sorted(SERVICES)}, found {names}")
    pods = {}
    for path, dep in deployments:
        result = check_deployment(path, dep, cms, secrets, by_kind, partitions, brokers)
        if result:
            pods[dep["metadata"]["name"]] = result
    for path, service in by_kind.get("Service", []):
        selector = service["spec"].get("selector", {})
        matched = [ports for ports, labels in pods.values() if all(labels.get(k) == v for k, v in selector.items())]
        if not matched:
            problem(path, f"service/{service['metadata']['name']} selects no Deployment's pods")
        for port in service["spec"].get("ports", []):
            if not any(port.get("targetPort") in ports or port.get("targetPort") in ports.values() for ports in matched):
                problem(path, f"service/{service['metadata']['name']}: targetPort {port.get('targetPort')} is not a container port")
    if sorted(s["metadata"]["name"] for _, s in by_kind.get("Service", [])) != ["ingest", "notifier"]:
        problem(kust_path, "expected Services for ingest (HTTP) and notifier (gRPC)")

    # compose mounts the configs its commands name.
    compose_path = os.path.join(ROOT, "deploy/docker/compose.yaml")
    for name, service in ((load_yaml(compose_path) or [{}])[0].get("services") or {}).items():
        command = service.get("command") or []
        if "--config" in command:
            target = command[command.index("--config") + 1]
            if "./config:/etc/trackstream:ro" not in service.get("volumes", []) or not target.startswith("/etc/trackstream/"):
                problem(compose_path, f"{name}: must mount ./config at /etc/trackstream (read-only) for {target}")
            elif not os.path.exists(os.path.join(ROOT, "deploy/docker/config", os.path.basename(target))):
                problem(compose_path, f"{name}: {target} has no deploy/docker/config/{os.path.basename(target)}")

    if args.render:
        namespace = kust.get("namespace", "trackstream")
        for kind, generated in (("ConfigMap", cms), ("Secret", secrets)):
            for name, files in generated.items():
                data = {}
                for key, path in files.items():
                    if kind == "Secret" and not os.path.exists(path):
                        path = re.sub(r"\.toml$", ".example.toml", path)
                    try:
                        with open(path, "rb") as f:
                            content = f.read()
                    except OSError:
                        continue
                    data[key] = base64.b64encode(content).decode() if kind == "Secret" \
                        else content.decode("utf-8")
                obj = {"apiVersion": "v1", "kind": kind,
                       "metadata": {"name": name, "namespace": namespace}, "data": data}
                if kind == "Secret":
                    obj["type"] = "Opaque"
                with open(os.path.join(args.render, f"{kind.lower()}-{name}.yaml"), "w") as f:
                    yaml.safe_dump(obj, f, sort_keys=False)

    for line in dict.fromkeys(problems):  # once each, in order
        print(line)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
