#!/usr/bin/python3
"""Offline validation of Remixer's Kubernetes manifests.

    validate_manifests.py --crd CRD.yaml [--repo ROOT [--dockerfile F] [--upstream T]...]
                          [--kubectl PATH] TARGET...

TARGET is a Kustomize directory (rendered with `kubectl kustomize`) or a YAML file. Every
object must be an MPIJob (kubeflow.org/v2beta1), a PersistentVolumeClaim or a Pod; each
MPIJob is checked for

  schema     the CRD's spec.versions[v2beta1].schema.openAPIV3Schema (jsonschema), plus the
             int32/int64 ranges and the uniqueness of list-map keys that the API server checks;
  fields     that no field name anywhere is unknown: the object is walked together with the
             schema; where the schema is loose (an object without properties, or marked
             x-kubernetes-preserve-unknown-fields) the field names are checked against the
             curated Kubernetes type lists below (ObjectMeta, PodSpec, Container, ...);
  operator   the rules the MPI Operator's controller enforces and the schema does not (see
             tests/k8s/crd/SOURCE.md);
  project    Remixer's own invariants: the launcher runs scripts/relaunch.sh around mpirun,
             -np = workers x slotsPerWorker, slotsPerWorker = GPUs per worker, data, run and
             upstream checkpoint paths (--set) on the shared volume, non-root pods, a
             grace period long enough to write a checkpoint, /dev/shm for NCCL;
  repo       (with --repo) that the config files, scripts and programs the manifests name
             exist in the repository (programs: an add_executable() in a CMakeLists.txt),
             that the manifests agree with the Dockerfile (user id, home, SSH port), and the
             job's effective configuration (the trainer's defaults, the config file, the
             --set overrides): the global batch divides over -np x micro-batch, no --set key
             belongs to another stage's section, the files the trainer reads (data, and the
             checkpoint a later stage starts from: autoencoder.checkpoint of stage 2,
             diffusion.checkpoint of stage 3) are on the shared volume. It also compares
             the validator's copies of the trainer's defaults and stage sections with
             train/config.c;
  handoff    (with --repo --upstream TARGET..., one per earlier stage) that every job of a
             stage that starts from an earlier stage's checkpoint (HANDOFFS: diffusion reads
             autoencoder.checkpoint from the vae job, remix reads diffusion.checkpoint from
             the diffusion job) names the final checkpoint that the upstream job of that
             stage writes: its checkpoint folder + ckpt-<train.steps>.h5, on the same claim;
             and that it has a name and a checkpoint folder apart from every upstream job's.

PersistentVolumeClaims and Pods are checked against the curated type lists only.
Exit status: 0 when everything passes, 1 when anything fails, 2 on a usage error.
Needs Debian's python3-yaml and python3-jsonschema (run with /usr/bin/python3).
"""

import argparse
import copy
import difflib
import os
import posixpath
import re
import subprocess
import sys

import jsonschema
import yaml

# ----------------------------------------------------------------------------------------
# Curated Kubernetes field names (core/v1), for the parts of a manifest that a loose schema
# does not describe, and for the kinds that have no schema here (PVC, Pod).
# Each type maps a field name to the type of its value:
#   None        a scalar, or a structure whose field names are not checked further
#   "T"         an object of curated type T
#   "[T]"       a list of objects of curated type T
#   "{}"        a map with free-form keys (labels, resource quantities)
# `--self-check` verifies every name here against the MPIJob CRD's pod template schema,
# which embeds the full PodSpec, so a typo in these lists cannot go unnoticed.
# ----------------------------------------------------------------------------------------
K8S_TYPES = {
    "ObjectMeta": {
        "name": None, "generateName": None, "namespace": None, "labels": "{}",
        "annotations": "{}", "finalizers": None, "ownerReferences": None, "uid": None,
        "resourceVersion": None, "generation": None, "creationTimestamp": None,
        "deletionTimestamp": None, "deletionGracePeriodSeconds": None,
        "managedFields": None, "selfLink": None,
    },
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {
        "activeDeadlineSeconds": None, "affinity": None,
        "automountServiceAccountToken": None, "containers": "[Container]",
        "dnsConfig": None, "dnsPolicy": None, "enableServiceLinks": None,
        "ephemeralContainers": None, "hostAliases": None, "hostIPC": None,
        "hostNetwork": None, "hostPID": None, "hostUsers": None, "hostname": None,
        "imagePullSecrets": None, "initContainers": "[Container]", "nodeName": None,
        "nodeSelector": "{}", "os": None, "overhead": "{}", "preemptionPolicy": None,
        "priority": None, "priorityClassName": None, "readinessGates": None,
        "resourceClaims": None, "resources": "ResourceRequirements", "restartPolicy": None,
        "runtimeClassName": None, "schedulerName": None, "schedulingGates": None,
        "securityContext": "PodSecurityContext", "serviceAccount": None,
        "serviceAccountName": None, "setHostnameAsFQDN": None,
        "shareProcessNamespace": None, "subdomain": None,
        "terminationGracePeriodSeconds": None, "tolerations": "[Toleration]",
        "topologySpreadConstraints": None, "volumes": "[Volume]",
    },
    "Container": {
        "args": None, "command": None, "env": "[EnvVar]", "envFrom": None, "image": None,
        "imagePullPolicy": None, "lifecycle": "Lifecycle", "livenessProbe": "Probe",
        "name": None, "ports": "[ContainerPort]", "readinessProbe": "Probe",
        "resizePolicy": None, "resources": "ResourceRequirements", "restartPolicy": None,
        "securityContext": "SecurityContext", "startupProbe": "Probe", "stdin": None,
        "stdinOnce": None, "terminationMessagePath": None,
        "terminationMessagePolicy": None, "tty": None, "volumeDevices": None,
        "volumeMounts": "[VolumeMount]", "workingDir": None,
    },
    "EnvVar": {"name": None, "value": None, "valueFrom": "EnvVarSource"},
    "EnvVarSource": {
        "configMapKeyRef": None, "fieldRef": None, "resourceFieldRef": None,
        "secretKeyRef": None,
    },
    "ContainerPort": {
        "containerPort": None, "hostIP": None, "hostPort": None, "name": None,
        "protocol": None,
    },
    "ResourceRequirements": {"claims": None, "limits": "{}", "requests": "{}"},
    "SecurityContext": {
        "allowPrivilegeEscalation": None, "appArmorProfile": None,
        "capabilities": "Capabilities", "privileged": None, "procMount": None,
        "readOnlyRootFilesystem": None, "runAsGroup": None, "runAsNonRoot": None,
        "runAsUser": None, "seLinuxOptions": None, "seccompProfile": "SeccompProfile",
        "windowsOptions": None,
    },
    "PodSecurityContext": {
        "appArmorProfile": None, "fsGroup": None, "fsGroupChangePolicy": None,
        "runAsGroup": None, "runAsNonRoot": None, "runAsUser": None,
        "seLinuxOptions": None, "seccompProfile": "SeccompProfile",
        "supplementalGroups": None, "sysctls": None, "windowsOptions": None,
    },
    "Capabilities": {"add": None, "drop": None},
    "SeccompProfile": {"localhostProfile": None, "type": None},
    "Probe": {
        "exec": "ExecAction", "failureThreshold": None, "grpc": None, "httpGet": None,
        "initialDelaySeconds": None, "periodSeconds": None, "successThreshold": None,
        "tcpSocket": "TCPSocketAction", "terminationGracePeriodSeconds": None,
        "timeoutSeconds": None,
    },
    "ExecAction": {"command": None},
    "TCPSocketAction": {"host": None, "port": None},
    "Lifecycle": {"postStart": "LifecycleHandler", "preStop": "LifecycleHandler"},
    "LifecycleHandler": {
        "exec": "ExecAction", "httpGet": None, "sleep": None, "tcpSocket": "TCPSocketAction",
    },
    "VolumeMount": {
        "mountPath": None, "mountPropagation": None, "name": None, "readOnly": None,
        "recursiveReadOnly": None, "subPath": None, "subPathExpr": None,
    },
    "Volume": {
        "name": None, "awsElasticBlockStore": None, "azureDisk": None, "azureFile": None,
        "cephfs": None, "cinder": None, "configMap": None, "csi": None,
        "downwardAPI": None, "emptyDir": "EmptyDirVolumeSource", "ephemeral": None,
        "fc": None, "flexVolume": None, "flocker": None, "gcePersistentDisk": None,
        "gitRepo": None, "glusterfs": None, "hostPath": None, "image": None, "iscsi": None,
        "nfs": None, "persistentVolumeClaim": "PersistentVolumeClaimVolumeSource",
        "photonPersistentDisk": None, "portworxVolume": None, "projected": None,
        "quobyte": None, "rbd": None, "scaleIO": None, "secret": None, "storageos": None,
        "vsphereVolume": None,
    },
    "PersistentVolumeClaimVolumeSource": {"claimName": None, "readOnly": None},
    "EmptyDirVolumeSource": {"medium": None, "sizeLimit": None},
    "Toleration": {
        "effect": None, "key": None, "operator": None, "tolerationSeconds": None,
        "value": None,
    },
    # Top-level kinds without a schema here.
    "Pod": {
        "apiVersion": None, "kind": None, "metadata": "ObjectMeta", "spec": "PodSpec",
        "status": None,
    },
    "PersistentVolumeClaim": {
        "apiVersion": None, "kind": None, "metadata": "ObjectMeta",
        "spec": "PersistentVolumeClaimSpec", "status": None,
    },
    "PersistentVolumeClaimSpec": {
        "accessModes": None, "dataSource": None, "dataSourceRef": None,
        "resources": "VolumeResourceRequirements", "selector": None,
        "storageClassName": None, "volumeAttributesClassName": None, "volumeMode": None,
        "volumeName": None,
    },
    "VolumeResourceRequirements": {"limits": "{}", "requests": "{}"},
}

# Curated list fields whose entries must differ in this key (the API server's list maps).
CURATED_LIST_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
                     "env": "name", "volumeMounts": "mountPath"}

# Where an MPIJob's schema is loose, which curated type the object there is (by path).
LOOSE_PATH_TYPES = [
    (re.compile(r"^metadata$"), "ObjectMeta"),
    (re.compile(r"\.template$"), "PodTemplateSpec"),
    (re.compile(r"\.template\.metadata$"), "ObjectMeta"),
    (re.compile(r"\.template\.spec$"), "PodSpec"),
    (re.compile(r"\.(containers|initContainers)\[\d+\]$"), "Container"),
    (re.compile(r"\.volumes\[\d+\]$"), "Volume"),
]

# Types whose curated lists the self-check compares with the CRD's embedded PodSpec
# (ObjectMeta is left out: the CRD describes only a few metadata fields).
SELF_CHECK_ROOT = "PodSpec"

INT_RANGES = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}

GPU_RESOURCE = "nvidia.com/gpu"
RELAUNCH_SCRIPT = "scripts/relaunch.sh"
TRAINER = "remixer-train"
IMAGE_ROOT = "/opt/remixer"  # where the Dockerfile puts configs/ and scripts/
MIN_GRACE_SECONDS = 120      # a checkpoint write must fit into the termination grace period
SET_KEYS_ON_VOLUME = ("data.train", "data.val", "run.dir", "checkpoint.dir",
                      "autoencoder.checkpoint", "diffusion.checkpoint")
LAUNCHER_CONTAINER = "spec.mpiReplicaSpecs.Launcher.template.spec.containers[0]"

# What the repository checks know of remixer-train's configuration (train/config.c) and of
# its checkpoint names (train/checkpoint.c): the defaults of the keys they read, and the config
# sections that belong to some stages only (setting one under another stage is an error). With
# --repo these copies are compared with the C sources (check_trainer_mirror), so they cannot
# drift unnoticed. HANDOFFS: the stages that start from the final checkpoint of an earlier
# stage's job, the key that names that checkpoint and the stage that writes it.
TRAINER_CONFIG_SOURCE = "train/config.c"
TRAINER_CHECKPOINT_SOURCE = "train/checkpoint.c"
TRAINER_DEFAULTS = {
    "stage": "vae", "run.dir": "runs/default", "checkpoint.dir": "", "data.train": "",
    "data.val": "", "autoencoder.checkpoint": "", "diffusion.checkpoint": "",
    "train.steps": "100000",
    "train.global_batch": "64", "train.micro_batch": "8",
}
STAGE_SECTIONS = {  # in the C table's order: the first matching prefix counts
    "model.": ("vae",), "autoencoder.": ("diffusion",), "dit.": ("diffusion",),
    "diffusion.checkpoint": ("remix",), "diffusion.": ("diffusion",), "remix.": ("remix",),
}
STAGE_NUMBERS = {"vae": 1, "diffusion": 2, "remix": 3}   # (for messages: "the stage-1 job")
HANDOFFS = {  # stage: (the --set key naming the checkpoint it starts from, the stage writing it)
    "diffusion": ("autoencoder.checkpoint", "vae"),   # frozen autoencoder
    "remix": ("diffusion.checkpoint", "diffusion"),   # transformer, autoencoder, schedule
}
CHECKPOINT_NAME = "ckpt-{step:08d}.h5"            # in checkpoint.dir, or run.dir
CHECKPOINT_NAME_C = '"%s/ckpt-%08" PRId64 ".h5"'  # how train/checkpoint.c writes it
# Keys whose files the trainer reads (besides the stage's HANDOFFS key): a value that comes
# from the config file (relative to the image's working directory) instead of a --set onto the
# volume finds nothing there.
KEYS_READ_FROM_VOLUME = ("data.train", "data.val")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

# mpirun (Open MPI 4) options that take arguments, and how many; others are flags.
MPIRUN_OPTION_ARGS = {
    "-np": 1, "--np": 1, "-n": 1, "--n": 1, "-c": 1,
    "-x": 1, "--bind-to": 1, "-bind-to": 1, "--map-by": 1, "-map-by": 1,
    "--rank-by": 1, "-rank-by": 1, "--mca": 2, "-mca": 2, "--gmca": 2, "-gmca": 2,
    "-wdir": 1, "--wdir": 1, "-wd": 1, "--hostfile": 1, "-hostfile": 1,
    "--machinefile": 1, "-machinefile": 1, "-H": 1, "--host": 1, "-host": 1,
    "--npernode": 1, "-npernode": 1, "--npersocket": 1, "-npersocket": 1,
    "--output-filename": 1, "--prefix": 1, "--path": 1, "--timeout": 1, "-timeout": 1,
    "--tune": 1, "-am": 1, "--am": 1,
}
NP_OPTIONS = ("-np", "--np", "-n", "--n", "-c")


class Report:
    """Collects error messages, each prefixed with where it was found."""

    def __init__(self):
        self.errors = []

    def add(self, where, message):
        self.errors.append(f"{where}: {message}")


def join(path, key):
    return f"{path}.{key}" if path else str(key)


def suggest(name, candidates):
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


# ----------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------
def load_crd_schema(crd_path, version="v2beta1"):
    with open(crd_path, encoding="utf-8") as f:
        crd = yaml.safe_load(f)
    versions = crd["spec"]["versions"]
    chosen = next((v for v in versions if v.get("name") == version), versions[0])
    return chosen["schema"]["openAPIV3Schema"]


def strip_pod_template_schema(schema):
    """A copy of the schema whose pod templates are free-form, as in CRDs generated without
    the embedded PodSpec: the field-name check must then fall back on the curated lists."""
    loose = copy.deepcopy(schema)
    replica = loose["properties"]["spec"]["properties"]["mpiReplicaSpecs"]["additionalProperties"]
    replica["properties"]["template"] = {
        "type": "object", "x-kubernetes-preserve-unknown-fields": True,
    }
    return loose


def render(target, kubectl):
    """The YAML documents of a Kustomize directory or a YAML file, with a source label."""
    if os.path.isdir(target):
        proc = subprocess.run([kubectl, "kustomize", target], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl kustomize {target} failed:\n{proc.stderr.strip()}")
        text = proc.stdout
    else:
        with open(target, encoding="utf-8") as f:
            text = f.read()
    return [d for d in yaml.safe_load_all(text) if d is not None]


# ----------------------------------------------------------------------------------------
# Schema and field names
# ----------------------------------------------------------------------------------------
def check_schema(obj, schema, where, report):
    validator = jsonschema.Draft7Validator(schema)
    for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
        path = ".".join(str(p) for p in err.absolute_path) or "(root)"
        report.add(where, f"{path}: schema: {err.message}")


def is_loose(schema):
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return True
    return (schema.get("type") == "object" and "properties" not in schema
            and "additionalProperties" not in schema)


def loose_type_for(path):
    for pattern, type_name in LOOSE_PATH_TYPES:
        if pattern.search(path):
            return type_name
    return None


def walk_schema(obj, schema, path, where, report):
    """Walks obj and its schema together: unknown field names, integer formats, list maps."""
    if is_loose(schema) and isinstance(obj, dict):
        type_name = loose_type_for(path)
        if type_name is not None:
            walk_curated(obj, type_name, path, where, report)
        elif obj:
            report.add(where, f"{path}: the schema does not describe this object and no "
                              "curated field list covers it, so its field names cannot be checked")
        return
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            sub = join(path, key)
            if props is not None and key in props:
                walk_schema(value, props[key], sub, where, report)
            elif isinstance(extra, dict):
                walk_schema(value, extra, sub, where, report)
            elif extra is True:
                continue
            else:
                report.add(where, f"{sub}: unknown field '{key}'{suggest(key, props or {})}")
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for i, value in enumerate(obj):
                walk_schema(value, items, f"{path}[{i}]", where, report)
        check_list_type(obj, schema, path, where, report)
    elif isinstance(obj, int) and not isinstance(obj, bool):
        bounds = INT_RANGES.get(schema.get("format"))
        if bounds and not bounds[0] <= obj <= bounds[1]:
            report.add(where, f"{path}: {obj} is out of range for {schema['format']}")


def check_list_type(items, schema, path, where, report):
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen = set()
        for item in items:
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                shown = ", ".join(f"{k}={v}" for k, v in zip(keys, key))
                report.add(where, f"{path}: duplicate entry with {shown}")
            seen.add(key)
    elif list_type == "set":
        seen = []
        for item in items:
            if item in seen:
                report.add(where, f"{path}: duplicate entry {item!r} in a set")
            seen.append(item)


def walk_curated(obj, type_name, path, where, report):
    """Checks field names of obj against the curated type lists."""
    if not isinstance(obj, dict):
        report.add(where, f"{path}: expected an object ({type_name})")
        return
    fields = K8S_TYPES[type_name]
    for key, value in obj.items():
        sub = join(path, key)
        if key not in fields:
            report.add(where, f"{sub}: unknown field '{key}' in {type_name}"
                              f"{suggest(key, fields)}")
            continue
        child = fields[key]
        if child is None or child == "{}" or value is None:
            continue
        if child.startswith("["):
            if not isinstance(value, list):
                report.add(where, f"{sub}: expected a list")
                continue
            for i, item in enumerate(value):
                walk_curated(item, child[1:-1], f"{sub}[{i}]", where, report)
            list_key = CURATED_LIST_KEYS.get(key)
            if list_key:
                check_list_type(value, {"x-kubernetes-list-type": "map",
                                        "x-kubernetes-list-map-keys": [list_key]},
                                sub, where, report)
        else:
            walk_curated(value, child, sub, where, report)


def self_check(schema):
    """Every curated name reachable from PodSpec must exist in the CRD's pod template."""
    problems = []
    replica = schema["properties"]["spec"]["properties"]["mpiReplicaSpecs"]["additionalProperties"]
    pod_spec = replica["properties"]["template"]["properties"]["spec"]

    def visit(node, type_name, trail):
        props = node.get("properties", {})
        for field, child in K8S_TYPES[type_name].items():
            if field not in props:
                problems.append(f"curated {type_name}.{field} ({trail}) is not in the CRD schema")
                continue
            if child is None or child == "{}":
                continue
            sub = props[field]
            if child.startswith("["):
                sub, child = sub.get("items", {}), child[1:-1]
            visit(sub, child, f"{trail}.{field}")

    visit(pod_spec, SELF_CHECK_ROOT, "template.spec")
    return problems


# ----------------------------------------------------------------------------------------
# Rules of the MPI Operator's controller (tests/k8s/crd/SOURCE.md)
# ----------------------------------------------------------------------------------------
def check_operator_rules(job, where, report):
    name = job.get("metadata", {}).get("name", "")
    spec = job.get("spec") or {}
    replicas_specs = spec.get("mpiReplicaSpecs") or {}
    for key in replicas_specs:
        if key not in ("Launcher", "Worker"):
            report.add(where, f"spec.mpiReplicaSpecs.{key}: replica type must be Launcher or Worker")
    launcher = replicas_specs.get("Launcher")
    if launcher is None:
        report.add(where, "spec.mpiReplicaSpecs.Launcher: required")
    elif launcher.get("replicas") != 1:
        report.add(where, f"spec.mpiReplicaSpecs.Launcher.replicas: must be 1, "
                          f"got {launcher.get('replicas')!r}")
    for role, rs in replicas_specs.items():
        if not isinstance(rs, dict):
            continue
        base = f"spec.mpiReplicaSpecs.{role}"
        if role == "Worker":
            r = rs.get("replicas")
            if not isinstance(r, int) or r < 1:
                report.add(where, f"{base}.replicas: must be an integer >= 1, got {r!r}")
        if rs.get("restartPolicy") not in ("Never", "OnFailure"):
            report.add(where, f"{base}.restartPolicy: must be Never or OnFailure, "
                              f"got {rs.get('restartPolicy')!r}")
        containers = ((rs.get("template") or {}).get("spec") or {}).get("containers") or []
        if not containers:
            report.add(where, f"{base}.template.spec.containers: at least one container required")
    policy = spec.get("runPolicy") or {}
    if policy.get("cleanPodPolicy") not in ("None", "Running", "All"):
        report.add(where, f"spec.runPolicy.cleanPodPolicy: must be None, Running or All, "
                          f"got {policy.get('cleanPodPolicy')!r}")
    for field, value in (("spec.slotsPerWorker", spec.get("slotsPerWorker")),
                         ("spec.runPolicy.backoffLimit", policy.get("backoffLimit")),
                         ("spec.runPolicy.ttlSecondsAfterFinished",
                          policy.get("ttlSecondsAfterFinished")),
                         ("spec.runPolicy.activeDeadlineSeconds",
                          policy.get("activeDeadlineSeconds"))):
        if isinstance(value, int) and value < 0:
            report.add(where, f"{field}: must be >= 0, got {value}")
    if spec.get("mpiImplementation", "OpenMPI") not in ("OpenMPI", "Intel", "MPICH"):
        report.add(where, "spec.mpiImplementation: must be OpenMPI, Intel or MPICH")
    if "managedBy" in policy and policy["managedBy"] not in (
            "kubeflow.org/mpi-operator", "kueue.x-k8s.io/multikueue"):
        report.add(where, "spec.runPolicy.managedBy: not a controller the operator knows")
    workers = (replicas_specs.get("Worker") or {}).get("replicas")
    last = (workers - 1) if isinstance(workers, int) and workers > 0 else 0
    host = f"{name}-worker-{last}"
    if len(host) > 63 or not DNS1035_LABEL.match(host):
        report.add(where, f"metadata.name: '{host}' (the last worker's host name) is not a "
                          "valid DNS label (lower-case letters, digits and '-', starting with "
                          "a letter, at most 63 characters)")


# ----------------------------------------------------------------------------------------
# Remixer's invariants
# ----------------------------------------------------------------------------------------
def pod_spec_of(job, role):
    rs = ((job.get("spec") or {}).get("mpiReplicaSpecs") or {}).get(role) or {}
    return (rs.get("template") or {}).get("spec") or {}


def parse_launcher_command(container):
    """Splits the launcher's command line into its parts; returns a dict or an error."""
    words = [str(w) for w in (container.get("command") or []) + (container.get("args") or [])]
    if not words:
        return None, "the launcher container has no command"
    result = {"words": words, "wrapper": words[0]}
    try:
        i = next(k for k, w in enumerate(words) if os.path.basename(w) in ("mpirun", "mpiexec"))
    except StopIteration:
        return None, "the launcher does not run mpirun"
    result["mpirun_index"] = i
    np_value = None
    k = i + 1
    while k < len(words) and words[k].startswith("-"):
        option = words[k]
        if option.startswith("--np="):
            np_value = option.split("=", 1)[1]
        if option in NP_OPTIONS and k + 1 < len(words):
            np_value = words[k + 1]
        if option == "-wdir" or option == "--wdir" or option == "-wd":
            result["wdir"] = words[k + 1] if k + 1 < len(words) else None
        k += 1 + MPIRUN_OPTION_ARGS.get(option, 0)
    result["np"] = np_value
    if k >= len(words):
        return None, "no program after the mpirun options"
    result["program"] = words[k]
    trainer_args = words[k + 1:]
    sets, positional = {}, []
    j = 0
    while j < len(trainer_args):
        w = trainer_args[j]
        if w == "--set" and j + 1 < len(trainer_args):
            key, _, value = trainer_args[j + 1].partition("=")
            sets[key] = value
            j += 2
            continue
        if w.startswith("--set="):
            key, _, value = w[len("--set="):].partition("=")
            sets[key] = value
        elif not w.startswith("-"):
            positional.append(w)
        j += 1
    result["config"] = positional[0] if positional else None
    result["sets"] = sets
    return result, None


def gpus_per_worker(spec):
    total = 0
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        value = (res.get("limits") or {}).get(GPU_RESOURCE,
                                              (res.get("requests") or {}).get(GPU_RESOURCE, 0))
        try:
            total += int(value)
        except (TypeError, ValueError):
            return None
    return total


def pvc_mounts(spec):
    """mountPath -> claimName for the PVC volumes mounted in the pod's containers."""
    claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
              for v in spec.get("volumes") or [] if v.get("persistentVolumeClaim")}
    mounts = {}
    for c in spec.get("containers") or []:
        for m in c.get("volumeMounts") or []:
            if m.get("name") in claims:
                mounts[m.get("mountPath", "")] = claims[m["name"]]
    return mounts


def under(path, root):
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def check_non_root(spec, base, where, report):
    pod_sc = spec.get("securityContext") or {}
    for c in spec.get("containers") or []:
        sc = c.get("securityContext") or {}
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        if non_root is not True or not isinstance(user, int) or user == 0:
            report.add(where, f"{base}: container '{c.get('name')}' must run as a non-root "
                              "user (runAsNonRoot: true and a non-zero runAsUser)")


def check_project_rules(job, claims, where, report):
    spec = job.get("spec") or {}
    slots = spec.get("slotsPerWorker")
    launcher = pod_spec_of(job, "Launcher")
    worker = pod_spec_of(job, "Worker")
    workers = (spec.get("mpiReplicaSpecs") or {}).get("Worker", {}).get("replicas")

    if spec.get("launcherCreationPolicy") != "WaitForWorkersReady":
        report.add(where, "spec.launcherCreationPolicy: must be WaitForWorkersReady "
                          "(mpirun needs the workers' sshd)")
    if spec.get("mpiImplementation") != "OpenMPI":
        report.add(where, "spec.mpiImplementation: the image ships Open MPI; must be OpenMPI")
    policy = spec.get("runPolicy") or {}
    for field in ("backoffLimit", "cleanPodPolicy"):
        if field not in policy:
            report.add(where, f"spec.runPolicy.{field}: must be set explicitly")
    launcher_rs = (spec.get("mpiReplicaSpecs") or {}).get("Launcher") or {}
    if launcher_rs.get("restartPolicy") != "OnFailure":
        report.add(where, "spec.mpiReplicaSpecs.Launcher.restartPolicy: must be OnFailure "
                          "(the relaunch loop runs inside the launcher pod)")

    for role, pod in (("Launcher", launcher), ("Worker", worker)):
        base = f"spec.mpiReplicaSpecs.{role}.template.spec"
        for c in pod.get("containers") or []:
            if not c.get("image"):
                report.add(where, f"{base}: container '{c.get('name')}' has no image")
        grace = pod.get("terminationGracePeriodSeconds")
        if not isinstance(grace, int) or grace < MIN_GRACE_SECONDS:
            report.add(where, f"{base}.terminationGracePeriodSeconds: must be at least "
                              f"{MIN_GRACE_SECONDS} to leave time for a checkpoint, got {grace!r}")
        check_non_root(pod, base, where, report)
        for mount_path, claim in pvc_mounts(pod).items():
            if claim not in claims:
                report.add(where, f"{base}: volume at {mount_path} uses claim '{claim}', "
                                  "which is not among the manifests' PersistentVolumeClaims")
            elif "ReadWriteMany" not in claims[claim]:
                report.add(where, f"{base}: claim '{claim}' is shared by several pods and "
                                  "must be ReadWriteMany")
        if not pvc_mounts(pod):
            report.add(where, f"{base}: the shared data volume (a PersistentVolumeClaim) "
                              "must be mounted")

    ssh_path = spec.get("sshAuthMountPath", "/root/.ssh")
    if ssh_path.startswith("/root"):
        report.add(where, "spec.sshAuthMountPath: the pods run as a non-root user; point it "
                          "at that user's ~/.ssh")

    gpus = gpus_per_worker(worker)
    if not gpus:
        report.add(where, f"spec.mpiReplicaSpecs.Worker: workers must request {GPU_RESOURCE}")
    elif slots != gpus:
        report.add(where, f"spec.slotsPerWorker: {slots} does not match the {gpus} "
                          f"{GPU_RESOURCE} per worker (one rank per GPU)")
    if not any(os.path.basename(str(((c.get("command") or []) + (c.get("args") or [""]))[0])) == "sshd"
               for c in worker.get("containers") or []):
        report.add(where, "spec.mpiReplicaSpecs.Worker: a worker container must run sshd "
                          "(mpirun starts the ranks over ssh)")
    shm = [v for v in worker.get("volumes") or []
           if (v.get("emptyDir") or {}).get("medium") == "Memory"]
    shm_names = {v.get("name") for v in shm}
    if not any(m.get("mountPath") == "/dev/shm" and m.get("name") in shm_names
               for c in worker.get("containers") or [] for m in c.get("volumeMounts") or []):
        report.add(where, "spec.mpiReplicaSpecs.Worker: /dev/shm must be an emptyDir with "
                          "medium Memory (NCCL)")

    containers = launcher.get("containers") or []
    if not containers:
        return None
    cmd, err = parse_launcher_command(containers[0])
    base = "spec.mpiReplicaSpecs.Launcher.template.spec.containers[0]"
    if err:
        report.add(where, f"{base}: {err}")
        return None
    if not cmd["wrapper"].endswith(RELAUNCH_SCRIPT) or cmd["mpirun_index"] != 1:
        report.add(where, f"{base}: the command must be {RELAUNCH_SCRIPT} followed by mpirun "
                          f"(got {' '.join(cmd['words'][:2])})")
    try:
        np_value = int(cmd["np"])
    except (TypeError, ValueError):
        np_value = None
        report.add(where, f"{base}: mpirun needs -np N, got {cmd['np']!r}")
    if np_value is not None and isinstance(workers, int) and isinstance(slots, int):
        if np_value != workers * slots:
            report.add(where, f"{base}: mpirun -np {np_value} is not Worker replicas x "
                              f"slotsPerWorker = {workers} x {slots} = {workers * slots}")
    if os.path.basename(cmd["program"]) != TRAINER:
        report.add(where, f"{base}: mpirun must run {TRAINER}, got {cmd['program']!r}")
    if not cmd["config"]:
        report.add(where, f"{base}: {TRAINER} needs a config file argument")
    mounts = pvc_mounts(worker)
    for key in SET_KEYS_ON_VOLUME:
        value = cmd["sets"].get(key)
        if value is None:
            continue
        if not value.startswith("/") or not any(under(value, m) for m in mounts):
            report.add(where, f"{base}: --set {key}={value} must be an absolute path on the "
                              f"shared volume mounted in the workers ({', '.join(mounts) or 'none'})")
    if "run.dir" not in cmd["sets"] and "checkpoint.dir" not in cmd["sets"]:
        report.add(where, f"{base}: set run.dir (or checkpoint.dir) on the shared volume, or "
                          "checkpoints die with the pod")
    if cmd.get("wdir") and not cmd["wdir"].startswith("/"):
        report.add(where, f"{base}: -wdir must be absolute")
    return cmd


def check_pod(pod, where, report):
    walk_curated(pod, "Pod", "", where, report)
    spec = pod.get("spec") or {}
    for c in spec.get("containers") or []:
        if not c.get("image"):
            report.add(where, f"spec: container '{c.get('name')}' has no image")
    check_non_root(spec, "spec", where, report)


# ----------------------------------------------------------------------------------------
# References into the repository and agreement with the Dockerfile
# ----------------------------------------------------------------------------------------
def cmake_executables(repo):
    names, files = set(), []
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if not d.startswith(("build", "."))]
        if "CMakeLists.txt" in filenames:
            path = os.path.join(dirpath, "CMakeLists.txt")
            files.append(os.path.relpath(path, repo))
            with open(path, encoding="utf-8", errors="replace") as f:
                names.update(re.findall(r"add_executable\s*\(\s*([A-Za-z0-9_.+-]+)", f.read()))
    return names, files


def repo_path(path, repo):
    """The repository file an in-image path or a relative path stands for."""
    if path.startswith(IMAGE_ROOT + "/"):
        path = path[len(IMAGE_ROOT) + 1:]
    if path.startswith("/"):
        return None
    return os.path.join(repo, path)


def dockerfile_facts(dockerfile):
    with open(dockerfile, encoding="utf-8") as f:
        text = f.read()
    facts = {}
    for key in ("REMIXER_USER", "REMIXER_UID", "SSH_PORT"):
        m = re.search(rf"^\s*ARG\s+{key}=(\S+)", text, re.M)
        facts[key] = m.group(1) if m else None
    m = re.search(r"^\s*WORKDIR\s+(\S+)\s*$", text.split("AS runtime")[-1], re.M)
    facts["WORKDIR"] = m.group(1) if m else None
    facts["text"] = text
    return facts


def check_repo_refs(job, cmd, repo, dockerfile, where, report):
    base = "spec.mpiReplicaSpecs.Launcher.template.spec.containers[0]"
    if cmd is None:
        report.add(where, f"{base}: the launcher command could not be read; repository "
                          "references not checked")
        return
    wrapper = repo_path(cmd["wrapper"], repo)
    if not cmd["wrapper"].endswith(RELAUNCH_SCRIPT):
        pass  # reported by the project rules
    elif wrapper is None or not os.path.isfile(wrapper):
        report.add(where, f"{base}: {cmd['wrapper']} does not exist in the repository "
                          f"(expected {RELAUNCH_SCRIPT})")
    elif not os.access(wrapper, os.X_OK):
        report.add(where, f"{base}: {os.path.relpath(wrapper, repo)} is not executable")
    config = cmd.get("config")
    if config:
        cfg = repo_path(config, repo)
        if cfg is None or not os.path.isfile(cfg):
            report.add(where, f"{base}: config file {config} does not exist in the repository")
    program = os.path.basename(cmd["program"])
    targets, files = cmake_executables(repo)
    if program not in targets:
        hint = ""
        if program == TRAINER:
            source = os.path.join(repo, "train", "train_main.c")
            hint = (f"; train/train_main.c {'exists' if os.path.isfile(source) else 'does not exist yet'}"
                    " and train/CMakeLists.txt must add_executable(remixer-train ...)")
        report.add(where, f"{base}: program {program} is not built by the repository: no "
                          f"add_executable({program} ...) in its {len(files)} CMakeLists.txt{hint}")

    if not dockerfile:
        return
    facts = dockerfile_facts(dockerfile)
    spec = job.get("spec") or {}
    user, uid, port = facts["REMIXER_USER"], facts["REMIXER_UID"], facts["SSH_PORT"]
    if not (user and uid and port):
        report.add(where, "Dockerfile: ARG REMIXER_USER, REMIXER_UID and SSH_PORT must be declared")
        return
    if spec.get("sshAuthMountPath") != f"/home/{user}/.ssh":
        report.add(where, f"spec.sshAuthMountPath: must be /home/{user}/.ssh, the image "
                          f"user's (Dockerfile), got {spec.get('sshAuthMountPath')!r}")
    for role in ("Launcher", "Worker"):
        pod = pod_spec_of(job, role)
        sc_user = (pod.get("securityContext") or {}).get("runAsUser")
        if str(sc_user) != uid:
            report.add(where, f"spec.mpiReplicaSpecs.{role}.template.spec.securityContext."
                              f"runAsUser: must be {uid}, the image user's id (Dockerfile)")
    for c in pod_spec_of(job, "Worker").get("containers") or []:
        command = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
        if not command or os.path.basename(command[0]) != "sshd":
            continue
        probe = ((c.get("readinessProbe") or {}).get("tcpSocket") or {}).get("port")
        if str(probe) != port:
            report.add(where, f"spec.mpiReplicaSpecs.Worker: readiness probe port {probe!r} "
                              f"is not the image's SSH port {port}")
        if "-f" in command[:-1]:
            sshd_config = command[command.index("-f") + 1]
            if sshd_config not in facts["text"]:
                report.add(where, f"spec.mpiReplicaSpecs.Worker: sshd config {sshd_config} "
                                  "is not written by the Dockerfile")
    if cmd.get("wdir") and facts["WORKDIR"] and cmd["wdir"] != facts["WORKDIR"]:
        report.add(where, f"{base}: mpirun -wdir {cmd['wdir']} differs from the image's "
                          f"WORKDIR {facts['WORKDIR']}")


# ----------------------------------------------------------------------------------------
# The trainer's effective configuration, and the hand-offs between stages (HANDOFFS)
# ----------------------------------------------------------------------------------------
def flatten(tree, prefix=""):
    """A config file's nested mappings as dotted keys ("train.steps": 100000)."""
    out = {}
    for key, value in (tree or {}).items() if isinstance(tree, dict) else ():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def job_config(job, cmd, repo):
    """What remixer-train would run with: TRAINER_DEFAULTS, then the config file, then the
    --set overrides (the last of a key wins). Returns (info, error); info holds the job's
    name, stage, values {key: (value, where it came from)}, np and worker pod spec. info is
    None when the config file cannot be read (a missing file is reported by check_repo_refs)."""
    config = cmd.get("config") if cmd else None
    path = repo_path(config, repo) if config else None
    if path is None or not os.path.isfile(path):
        return None, None
    try:
        with open(path, encoding="utf-8") as f:
            tree = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as exc:
        return None, f"config file {config} cannot be read: {exc}"
    if tree is not None and not isinstance(tree, dict):
        return None, f"config file {config} is not a mapping"
    values = {key: (value, "the trainer's default") for key, value in TRAINER_DEFAULTS.items()}
    for key, value in flatten(tree).items():
        values[key] = ("" if value is None else str(value), config)
    for key, value in cmd["sets"].items():
        values[key] = (value, "--set")
    try:
        np_value = int(cmd.get("np"))
    except (TypeError, ValueError):
        np_value = None
    info = {"name": (job.get("metadata") or {}).get("name", "?"), "config": config,
            "stage": values["stage"][0], "values": values, "np": np_value,
            "worker": pod_spec_of(job, "Worker")}
    return info, None


def config_int(info, key):
    try:
        return int(str(info["values"][key][0]))
    except (KeyError, TypeError, ValueError):
        return None


def checkpoint_dir(info):
    """Where the job's checkpoints go: checkpoint.dir, or run.dir when that is empty."""
    return info["values"]["checkpoint.dir"][0] or info["values"]["run.dir"][0]


def volume_location(path, pod):
    """(claim, path inside the claim) of an absolute path under one of the pod's PVC mounts
    (the deepest one, subPath included), or None when the path is not on such a volume."""
    if not isinstance(path, str) or not path.startswith("/"):
        return None
    claims = {v.get("name"): (v.get("persistentVolumeClaim") or {}).get("claimName")
              for v in pod.get("volumes") or [] if v.get("persistentVolumeClaim")}
    best = None
    for c in pod.get("containers") or []:
        for m in c.get("volumeMounts") or []:
            mount = m.get("mountPath") or ""
            if m.get("name") in claims and mount and under(path, mount):
                if best is None or len(mount) > len(best[0]):
                    best = (mount, claims[m["name"]], m.get("subPath") or "")
    if best is None:
        return None
    mount, claim, sub = best
    rel = posixpath.relpath(posixpath.normpath(path), posixpath.normpath(mount))
    return claim, posixpath.normpath(posixpath.join("/", sub, rel))


def check_trainer_config(info, where, report):
    """The effective configuration against the job: stage sections, the batch split over
    the ranks, the files the trainer reads on the volume."""
    base, stage, values = LAUNCHER_CONTAINER, info["stage"], info["values"]
    for key, (value, origin) in values.items():
        if origin != "--set":
            continue
        stages = next((st for prefix, st in STAGE_SECTIONS.items() if key.startswith(prefix)), None)
        if stages is not None and stage not in stages:
            report.add(where, f"{base}: --set {key}={value} belongs to stage "
                              f"{'|'.join(stages)}, but the job's stage is {stage} "
                              f"({values['stage'][1]}); remixer-train would exit 2")
    world = info["np"]
    batch, micro = config_int(info, "train.global_batch"), config_int(info, "train.micro_batch")
    if world and batch and micro and batch % (world * micro) != 0:
        hint = ""
        if batch % world == 0:
            per_rank = batch // world
            fit = max(d for d in range(1, min(micro, per_rank) + 1) if per_rank % d == 0)
            hint = f" (keep the global batch with --set train.micro_batch={fit})"
        report.add(where, f"{base}: train.global_batch {batch} ({values['train.global_batch'][1]}) "
                          f"is not divisible by -np {world} x train.micro_batch {micro} "
                          f"({values['train.micro_batch'][1]}) = {world * micro}: remixer-train "
                          f"would exit 2{hint}")
    mounts = ", ".join(pvc_mounts(info["worker"])) or "none"
    handoff = HANDOFFS.get(stage)
    for key in KEYS_READ_FROM_VOLUME + ((handoff[0],) if handoff else ()):
        value, origin = values.get(key, ("", ""))
        if not value and handoff and key == handoff[0]:
            report.add(where, f"{base}: stage {stage} starts from the final checkpoint of a "
                              f"stage-{STAGE_NUMBERS[handoff[1]]} ({handoff[1]}) job: --set "
                              f"{key} to that job's final checkpoint on the shared volume")
        elif value and origin != "--set" and volume_location(value, info["worker"]) is None:
            # (--set values are checked by the project rules, with or without --repo)
            report.add(where, f"{base}: {key} {value} (from {origin}) is not on the shared "
                              f"volume mounted in the workers ({mounts}): --set {key}=<a path "
                              "on it>")


def load_upstream(targets, kubectl, repo):
    """The jobs of the upstream targets (the earlier stages' kustomizations), for
    check_handoff: a dict with the targets, the jobs' infos, the errors met while reading them
    and the number of later-stage jobs checked against them."""
    upstream = {"targets": list(targets), "jobs": [], "errors": [], "checked": 0}
    for target in upstream["targets"]:
        try:
            docs = render(target, kubectl)
        except (RuntimeError, OSError, yaml.YAMLError) as exc:
            upstream["errors"].append(f"--upstream {target}: {exc}")
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "MPIJob":
                continue
            containers = pod_spec_of(doc, "Launcher").get("containers") or []
            cmd, _ = parse_launcher_command(containers[0]) if containers else (None, None)
            info, err = job_config(doc, cmd, repo) if cmd else (None, None)
            if err:
                upstream["errors"].append(f"--upstream {target}: {err}")
            elif info is not None:
                info["target"] = target
                upstream["jobs"].append(info)
    return upstream


def job_label(job):
    stage = job["stage"]
    return f"the stage-{STAGE_NUMBERS.get(stage, '?')} job {job['name']} ({job['target']})"


def check_handoff(info, upstream, where, report):
    """A job of a stage in HANDOFFS names, with the stage's key, the final checkpoint that the
    upstream job of the stage it starts from writes (its checkpoint folder +
    ckpt-<train.steps>.h5, on the same claim); and keeps a name and a checkpoint folder of its
    own, apart from every upstream job's."""
    handoff = HANDOFFS.get(info["stage"])
    if handoff is None:
        return
    key, source_stage = handoff
    upstream["checked"] += 1
    for err in upstream["errors"]:
        report.add(where, err)
    if upstream["errors"]:
        return
    own_dir = checkpoint_dir(info)
    own_at = volume_location(own_dir, info["worker"])
    for job in upstream["jobs"]:
        if job["name"] == info["name"]:
            report.add(where, f"metadata.name: {info['name']} is also the name of "
                              f"{job_label(job)}; applying one would replace the other")
        if own_at is not None and own_at == volume_location(checkpoint_dir(job), job["worker"]):
            report.add(where, f"{LAUNCHER_CONTAINER}: the checkpoint folder {own_dir} is also "
                              f"that of {job_label(job)}: checkpoint.resume=auto would find the "
                              f"stage-{STAGE_NUMBERS.get(job['stage'], '?')} checkpoints there "
                              "(and checkpoint.keep delete them); give each stage its own run.dir")
    sources = [j for j in upstream["jobs"] if j["stage"] == source_stage]
    if len(sources) != 1:
        report.add(where, f"--upstream {' '.join(upstream['targets'])}: stage {info['stage']} "
                          f"reads {key} from a stage-{STAGE_NUMBERS[source_stage]} job: "
                          f"expected one MPIJob of stage {source_stage}, found {len(sources)}")
        return
    source = sources[0]
    steps = config_int(source, "train.steps")
    source_dir = checkpoint_dir(source)
    final = posixpath.join(source_dir, CHECKPOINT_NAME.format(step=steps or 0))
    final_at = volume_location(final, source["worker"])
    if final_at is None:
        report.add(where, f"{job_label(source)} writes its checkpoints to {source_dir}, which "
                          "is not on a shared volume: a later stage cannot read them")
        return
    value = info["values"][key][0]
    at = volume_location(value, info["worker"])
    if at is not None and at != final_at:
        report.add(where, f"{LAUNCHER_CONTAINER}: {key}={value} is not the final checkpoint of "
                          f"{job_label(source)}: {final} on claim {final_at[0]} (its "
                          f"checkpoint folder + ckpt-<train.steps>.h5, train.steps {steps})")


def check_trainer_mirror(repo):
    """TRAINER_DEFAULTS, STAGE_SECTIONS and CHECKPOINT_NAME against the trainer's sources.
    Returns the differences; none when the sources are absent (a stand-in repository)."""
    problems = []
    config_c = os.path.join(repo, TRAINER_CONFIG_SOURCE)
    if os.path.isfile(config_c):
        with open(config_c, encoding="utf-8", errors="replace") as f:
            text = f.read()
        for key, value in TRAINER_DEFAULTS.items():
            q = re.escape(key)
            m = (re.search(rf'\b(?:ENUM|STR)\(\s*"{q}"\s*,\s*[\w.]+\s*,\s*"([^"]*)"', text)
                 or re.search(rf'\bNUM\(\s*"{q}"\s*,\s*\w+\s*,\s*[\w.]+\s*,\s*"([^"]*)"', text))
            if not m:
                problems.append(f"{TRAINER_CONFIG_SOURCE}: key {key} not found; update "
                                "TRAINER_DEFAULTS in validate_manifests.py")
            elif m.group(1) != value:
                problems.append(f"{TRAINER_CONFIG_SOURCE}: the default of {key} is "
                                f"'{m.group(1)}', validate_manifests.py's TRAINER_DEFAULTS "
                                f"says '{value}'")
        block = re.search(r"STAGE_SECTIONS\[\]\s*=\s*\{(.*?)\};", text, re.S)
        pairs = re.findall(r'\{\s*"([\w.]+)"\s*,\s*"([\w|]+)"\s*\}', block.group(1)) if block else []
        found = {prefix: tuple(stages.split("|")) for prefix, stages in pairs}
        # (in order: the first matching prefix counts, so a reordered table is another table)
        if list(found.items()) != list(STAGE_SECTIONS.items()):
            problems.append(f"{TRAINER_CONFIG_SOURCE}: STAGE_SECTIONS is {found or 'not found'}, "
                            f"validate_manifests.py's is {STAGE_SECTIONS} (in this order)")
    checkpoint_c = os.path.join(repo, TRAINER_CHECKPOINT_SOURCE)
    if os.path.isfile(checkpoint_c):
        with open(checkpoint_c, encoding="utf-8", errors="replace") as f:
            if CHECKPOINT_NAME_C not in f.read():
                problems.append(f"{TRAINER_CHECKPOINT_SOURCE}: checkpoint names are no longer "
                                f"written as {CHECKPOINT_NAME_C}; update CHECKPOINT_NAME in "
                                "validate_manifests.py")
    return problems


# ----------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------
def validate_documents(docs, source, schema, repo=None, dockerfile=None, upstream=None):
    """Validates the documents of one target; returns the list of error messages and the
    number of MPIJobs. upstream (from load_upstream, needs repo): the jobs of earlier stages
    whose final checkpoints the jobs of later stages (HANDOFFS) start from."""
    report = Report()
    claims = {}
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "PersistentVolumeClaim":
            claims[(doc.get("metadata") or {}).get("name")] = \
                (doc.get("spec") or {}).get("accessModes") or []
    jobs = 0
    for doc in docs:
        if not isinstance(doc, dict):
            report.add(source, "a document is not a mapping")
            continue
        kind = doc.get("kind")
        name = (doc.get("metadata") or {}).get("name", "?")
        where = f"{source}: {kind}/{name}"
        if kind == "MPIJob":
            jobs += 1
            if doc.get("apiVersion") != "kubeflow.org/v2beta1":
                report.add(where, f"apiVersion must be kubeflow.org/v2beta1, got {doc.get('apiVersion')!r}")
            check_schema(doc, schema, where, report)
            walk_schema(doc, schema, "", where, report)
            check_operator_rules(doc, where, report)
            cmd = check_project_rules(doc, claims, where, report)
            if repo:
                check_repo_refs(doc, cmd, repo, dockerfile, where, report)
                info, err = job_config(doc, cmd, repo)
                if err:
                    report.add(where, f"{LAUNCHER_CONTAINER}: {err}")
                if info is not None:
                    check_trainer_config(info, where, report)
                    if upstream is not None:
                        check_handoff(info, upstream, where, report)
        elif kind == "PersistentVolumeClaim":
            walk_curated(doc, "PersistentVolumeClaim", "", where, report)
        elif kind == "Pod":
            check_pod(doc, where, report)
        else:
            report.add(where, "unexpected kind (expected MPIJob, PersistentVolumeClaim or Pod)")
    return report.errors, jobs


def validate_target(target, schema, kubectl="kubectl", repo=None, dockerfile=None,
                    upstream=None):
    """upstream: the upstream targets (a list of paths) or load_upstream's answer for them
    (to count across targets how many later-stage jobs were checked against them)."""
    try:
        docs = render(target, kubectl)
    except (RuntimeError, OSError, yaml.YAMLError) as exc:
        return [f"{target}: {exc}"], 0
    if isinstance(upstream, (list, tuple)):
        upstream = load_upstream(upstream, kubectl, repo) if repo else None
    return validate_documents(docs, target, schema, repo, dockerfile, upstream)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="Kustomize directories or YAML files")
    parser.add_argument("--crd", required=True, help="the MPIJob CustomResourceDefinition")
    parser.add_argument("--kubectl", default="kubectl")
    parser.add_argument("--repo", help="repository root: check the files and programs named")
    parser.add_argument("--dockerfile", help="with --repo: check agreement with this Dockerfile")
    parser.add_argument("--upstream", "--stage1", metavar="TARGET", action="append",
                        help="with --repo, repeatable: the kustomization of an earlier stage's "
                             "job; every target job of a later stage must start from the final "
                             "checkpoint of the upstream job of the stage it reads, and differ "
                             "from every upstream job in name and checkpoint folder "
                             "(--stage1: the older name)")
    parser.add_argument("--loose-pod-template", action="store_true",
                        help="validate against a copy of the schema without the embedded "
                             "PodSpec (field names then come from the curated lists)")
    parser.add_argument("--self-check", action="store_true",
                        help="check the curated field lists against the CRD and exit")
    args = parser.parse_args(argv)

    schema = load_crd_schema(args.crd)
    if args.self_check:
        problems = self_check(schema)
        for p in problems:
            print(f"ERROR {p}")
        print("self-check:", "FAILED" if problems else "curated field lists agree with the CRD")
        return 1 if problems else 0
    if not args.targets:
        parser.error("no targets")
    if args.loose_pod_template:
        schema = strip_pod_template_schema(schema)

    if args.upstream and not args.repo:
        parser.error("--upstream needs --repo (the config files say where checkpoints go)")

    failed = False
    if args.repo:
        for problem in check_trainer_mirror(args.repo):
            print(f"ERROR {problem}")
            failed = True
    upstream = load_upstream(args.upstream, args.kubectl, args.repo) if args.upstream else None
    for target in args.targets:
        errors, jobs = validate_target(target, schema, args.kubectl, args.repo, args.dockerfile,
                                       upstream)
        for e in errors:
            print(f"ERROR {e}")
        if errors:
            failed = True
            print(f"FAIL {target}: {len(errors)} error(s)")
        else:
            print(f"OK   {target}: {jobs} MPIJob(s) valid")
    if upstream is not None:
        shown = " ".join(args.upstream)
        if not upstream["checked"]:
            print(f"ERROR --upstream {shown}: no target has a job of stage "
                  f"{'|'.join(HANDOFFS)} to check against it")
            failed = True
        elif not failed:
            print(f"OK   {upstream['checked']} later-stage job(s) start from the final checkpoint "
                  f"of an upstream job and differ from "
                  f"{', '.join(j['name'] for j in upstream['jobs'])} ({shown})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
