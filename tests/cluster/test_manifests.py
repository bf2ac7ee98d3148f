"""Every manifest under cluster/ is valid for the KubeRay v1.7.0 CRDs (strictly: an unknown
field is an error, as with `kubectl apply --validate=strict`), every RayJob runs a real job
entry with a config that loads, every RayService serves a config from serve/, and the
cluster-launcher YAML passes Ray's own launcher schema."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from mnemoray.config.files import check_file
from repo_paths import REPO

KUBERAY = Path(os.environ.get("MNEMORAY_KUBERAY", REPO.parent / "shared" / "kuberay"))
CLUSTER = REPO / "cluster"
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
LAUNCHERS = sorted((CLUSTER / "launcher").glob("*.yaml"))
CORE_KINDS = {("v1", "PersistentVolumeClaim")}  # plain Kubernetes objects shipped beside the Ray ones


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _strict(schema: object) -> object:
    """The CRD schema with unknown fields forbidden wherever the API server would prune them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd_schemas() -> dict[tuple[str, str], dict]:
    if not KUBERAY.is_dir():
        pytest.fail(f"KubeRay CRDs not found at {KUBERAY} (set MNEMORAY_KUBERAY to the folder of ray.io_*.yaml)")
    schemas = {}
    for crd_file in sorted(KUBERAY.glob("ray.io_*.yaml")):
        crd = yaml.safe_load(crd_file.read_text())
        for version in crd["spec"]["versions"]:
            api = f"{crd['spec']['group']}/{version['name']}"
            schemas[(api, crd["spec"]["names"]["kind"])] = _strict(version["schema"]["openAPIV3Schema"])
    return schemas


SCHEMAS = _crd_schemas()


def _errors(doc: dict) -> list[str]:
    schema = SCHEMAS[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def _objects(kind: str) -> list[tuple[Path, dict]]:
    return [(p, d) for p in MANIFESTS for d in _docs(p) if d.get("kind") == kind]


def test_the_crds_cover_the_three_kinds_and_cluster_has_each():
    assert {k for _, k in SCHEMAS} == {"RayCluster", "RayJob", "RayService"}
    kinds = [d["kind"] for p in MANIFESTS for d in _docs(p)]
    assert kinds.count("RayCluster") == 1 and kinds.count("RayService") >= 1 and kinds.count("RayJob") >= 4


@pytest.mark.parametrize("path", MANIFESTS, ids=_rel)
def test_every_manifest_validates_against_its_crd(path: Path):
    for doc in _docs(path):
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in CORE_KINDS:
            continue
        assert key in SCHEMAS, f"{_rel(path)}: no KubeRay CRD for apiVersion/kind {key}"
        errors = _errors(doc)
        assert not errors, f"{_rel(path)} ({doc['kind']} {doc['metadata']['name']}):\n" + "\n".join(errors)


def test_strict_validation_catches_a_misspelt_field_and_a_wrong_type():
    _, cluster = _objects("RayCluster")[0]
    bad = copy.deepcopy(cluster)
    bad["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    bad["spec"]["workerGroupSpecs"][1]["minReplicas"] = "zero"
    errors = _errors(bad)
    assert any("maxReplica" in e for e in errors), errors
    assert any(e.startswith("spec.workerGroupSpecs.1.minReplicas") for e in errors), errors


def _groups(spec: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def _gpus(group: dict) -> int:
    containers = group["template"]["spec"]["containers"]
    return sum(int(c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0)) for c in containers)


@pytest.mark.parametrize("kind", ["RayCluster", "RayService"])
def test_clusters_autoscale_within_their_worker_group_bounds(kind: str):
    for path, doc in _objects(kind):
        spec = doc["spec"] if kind == "RayCluster" else doc["spec"]["rayClusterConfig"]
        assert spec.get("enableInTreeAutoscaling") is True, f"{_rel(path)}: in-tree autoscaler off"
        for name, group in _groups(spec).items():
            lo, n, hi = group["minReplicas"], group["replicas"], group["maxReplicas"]
            assert 0 <= lo <= n <= hi and hi > lo, f"{_rel(path)} group {name}: min {lo} / replicas {n} / max {hi}"


def test_the_raycluster_has_a_cpu_and_a_gpu_group():
    [(_, cluster)] = _objects("RayCluster")
    groups = _groups(cluster["spec"])
    assert set(groups) == {"cpu", "gpu"}
    assert _gpus(groups["gpu"]) > 0 and _gpus(groups["cpu"]) == 0


def _entry(doc: dict) -> tuple[Path, Path]:
    argv = shlex.split(doc["spec"]["entrypoint"])
    assert argv[0] == "python" and "--config" in argv, f"entrypoint {argv}: expected python jobs/X.py --config FILE"
    return Path(argv[1]), Path(argv[argv.index("--config") + 1])


@pytest.mark.parametrize("path", [p for p, _ in _objects("RayJob")], ids=_rel)
def test_every_rayjob_runs_a_job_entry_with_a_config_that_loads(path: Path, monkeypatch):
    [doc] = _docs(path)
    script, config = _entry(doc)
    assert script.parent == Path("jobs") and (REPO / script).is_file(), f"{_rel(path)}: {script} is not a jobs/ file"
    assert (REPO / config).is_file(), f"{_rel(path)}: config {config} does not exist"
    monkeypatch.chdir(REPO)
    result = check_file(REPO / config, root=REPO)
    assert result.ok, f"{_rel(path)}: {config}:\n" + "\n".join(result.errors)
    runtime_env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])
    assert runtime_env["working_dir"] == "/opt/mnemoray"  # where docker/ images put the repository
    assert doc["spec"]["clusterSelector"] == {"ray.io/cluster": _objects("RayCluster")[0][1]["metadata"]["name"]}


def test_every_job_entry_has_a_rayjob():
    submitted = {_entry(doc)[0] for _, doc in _objects("RayJob")}
    entries = {p.relative_to(REPO) for p in (REPO / "jobs").glob("*.py") if not p.name.startswith("_")}
    assert entries - submitted == set(), "job entries without a RayJob in cluster/kuberay/"


@pytest.mark.parametrize("path", [p for p, _ in _objects("RayService")], ids=_rel)
def test_every_rayservice_serves_a_config_from_serve(path: Path):
    [doc] = _docs(path)
    apps = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"]
    served = {p.name: yaml.safe_load(p.read_text()).get("applications") for p in (REPO / "serve").glob("*.yaml")}
    matches = [name for name, other in served.items() if other == apps]
    assert matches, f"{_rel(path)}: serveConfigV2's applications match no serve/*.yaml (keep them in step)"
    for app in apps:
        module = app["import_path"].split(":")[0]
        assert (REPO / "platform" / Path(*module.split("."))).with_suffix(".py").is_file(), app["import_path"]
        config = app.get("args", {}).get("config")
        if config:
            assert (REPO / config).is_file(), f"{_rel(path)}: {config} does not exist"


def _ray_launcher_schema() -> dict:
    spec = importlib.util.find_spec("ray")
    assert spec is not None and spec.submodule_search_locations, "ray is not installed"
    schema = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    assert schema.is_file(), f"{schema} missing from the installed Ray"
    return json.loads(schema.read_text())


@pytest.mark.parametrize("path", LAUNCHERS, ids=_rel)
def test_the_launcher_yaml_passes_rays_schema_and_mirrors_the_kuberay_groups(path: Path):
    config = yaml.safe_load(path.read_text())
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(_ray_launcher_schema()).iter_errors(config)]
    assert not errors, f"{_rel(path)}:\n" + "\n".join(errors)
    types = config["available_node_types"]
    assert config["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != config["head_node_type"]}
    [(_, cluster)] = _objects("RayCluster")
    assert set(workers) == set(_groups(cluster["spec"]))
    for name, node_type in workers.items():
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"] <= config["max_workers"], name
    assert sum(t["max_workers"] for t in workers.values()) <= config["max_workers"]


def test_the_launcher_schema_check_can_fail():
    config = yaml.safe_load(LAUNCHERS[0].read_text())
    config["available_node_types"]["gpu"]["max_workers"] = "four"
    del config["provider"]
    messages = [e.message for e in jsonschema.Draft7Validator(_ray_launcher_schema()).iter_errors(config)]
    assert any("provider" in m for m in messages) and any(re.search("'four'", m) for m in messages), messages


def _absolute_paths(data: object) -> set[str]:
    if isinstance(data, dict):
        return set().union(*(_absolute_paths(v) for v in data.values())) if data else set()
    if isinstance(data, list):
        return set().union(*(_absolute_paths(v) for v in data)) if data else set()
    if isinstance(data, str) and data.startswith("/") and " " not in data:
        return {data}
    return set()


def _config_chain(path: Path) -> list[dict]:
    """The file and the files its `base:` names, nearest first."""
    chain = []
    while path is not None:
        data = yaml.safe_load(path.read_text()) or {}
        chain.append(data)
        path = path.parent / data["base"] if data.get("base") else None
    return chain


def _mounts(pod_spec: dict) -> list[str]:
    return [m["mountPath"] for c in pod_spec["containers"] for m in c.get("volumeMounts", [])]


@pytest.mark.parametrize("path", [p for p, _ in _objects("RayJob")], ids=_rel)
def test_every_absolute_path_a_rayjobs_config_uses_is_mounted_on_every_pod(path: Path):
    [doc] = _docs(path)
    _, config = _entry(doc)
    used = set().union(*(_absolute_paths(d) for d in _config_chain(REPO / config)))
    [(_, cluster)] = _objects("RayCluster")
    pods = {"head": cluster["spec"]["headGroupSpec"]["template"]["spec"]}
    pods |= {name: g["template"]["spec"] for name, g in _groups(cluster["spec"]).items()}
    for pod, spec in pods.items():
        mounts = _mounts(spec)
        unmounted = sorted(p for p in used if not any(p == m or p.startswith(m.rstrip("/") + "/") for m in mounts))
        assert not unmounted, f"{_rel(path)}: {config} uses {unmounted}, not mounted on the {pod} pods"


@pytest.mark.parametrize(("script", "kinds"), [("jobs/evaluate.py", "evaluation_kinds"),
                                               ("jobs/build_memory.py", "build_kinds")])
def test_every_kind_of_a_job_entry_has_a_rayjob_on_its_cluster_preset(script: str, kinds: str):
    from mnemoray.distributed import jobs

    table = getattr(jobs, kinds)()
    submitted: dict[str, Path] = {}
    for _, doc in _objects("RayJob"):
        argv = shlex.split(doc["spec"]["entrypoint"])
        if argv[1] == script:
            kind = argv[argv.index("--kind") + 1] if "--kind" in argv else next(iter(table))
            submitted[kind] = _entry(doc)[1]
    missing = set(table) - set(submitted) - ({"suite"} if script == "jobs/evaluate.py" else set())
    assert not missing, f"{script}: kinds without a RayJob in cluster/kuberay/: {sorted(missing)}"
    for kind, config in submitted.items():
        assert config == Path(table[kind].default_config), f"{script} --kind {kind}: RayJob runs {config}"
