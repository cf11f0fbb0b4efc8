"""cluster/: every YAML and manifest parses, has its required keys, and runs real `mutransfer` commands.

The `ray up` file goes through Ray's own validator (the JSON schema `ray up` uses); the KubeRay
manifests are checked against the field names of KubeRay's ray.io/v1 Go types; every
`mutransfer ...` command in cluster/ (RayJob entrypoint, shell scripts, README code blocks,
`ray up` setup commands) must parse with the real CLI parser, and a sweep's file and overrides
must load with the real sweep loader.
"""

from __future__ import annotations

import copy
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
IMAGE_ROOT = "/home/ray/mutransfer/"  # where cluster/Dockerfile puts the checkout

# KubeRay ray.io/v1 field names (ray-operator/apis/ray/v1/{raycluster,rayjob}_types.go); a name
# outside these is a typo the API server would drop or reject.
RAYCLUSTER_SPEC = {
    "headGroupSpec",
    "workerGroupSpecs",
    "rayVersion",
    "enableInTreeAutoscaling",
    "autoscalerOptions",
    "headServiceAnnotations",
    "suspend",
    "managedBy",
    "gcsFaultToleranceOptions",
    "upgradeStrategy",
    "historyServerOptions",
    "networkPolicy",
    "tlsOptions",
    "authOptions",
}
HEAD_GROUP = {"serviceType", "headService", "enableIngress", "rayStartParams", "template"}
WORKER_GROUP = {
    "groupName",
    "replicas",
    "minReplicas",
    "maxReplicas",
    "numOfHosts",
    "rayStartParams",
    "template",
    "scaleStrategy",
}
AUTOSCALER_OPTIONS = {
    "resources",
    "image",
    "imagePullPolicy",
    "env",
    "envFrom",
    "volumeMounts",
    "securityContext",
    "idleTimeoutSeconds",
    "upscalingMode",
}
RAYJOB_SPEC = {
    "activeDeadlineSeconds",
    "backoffLimit",
    "rayClusterSpec",
    "submitterPodTemplate",
    "metadata",
    "clusterSelector",
    "submitterConfig",
    "managedBy",
    "deletionStrategy",
    "entrypoint",
    "runtimeEnvYAML",
    "jobId",
    "submissionMode",
    "entrypointResources",
    "entrypointNumCpus",
    "entrypointNumGpus",
    "ttlSecondsAfterFinished",
    "shutdownAfterJobFinishes",
    "suspend",
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}

# Shell variables the scripts pass to `mutransfer`, and a value each takes in this check.
SHELL_VALUES = {
    '"$space"': "search_spaces/smoke.yaml",
    '"$@"': "",
    '"$address"': "127.0.0.1:6379",
    '"$results"': "/tmp/mutransfer-results",
}


def _load(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _unknown(mapping: dict, known: set[str]) -> set[str]:
    return set(mapping) - known


# ---- ray up ---------------------------------------------------------------------------
def _ray_up_errors(cfg: dict) -> str | None:
    """Ray's own check of a `ray up` file (defaults filled in, then the JSON schema); None if valid."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except Exception as exc:  # jsonschema.ValidationError, ValueError
        return str(exc).splitlines()[0]
    return None


def test_ray_up_yaml_passes_rays_schema():
    cfg = _load(CLUSTER / "aws.yaml")
    assert _ray_up_errors(cfg) is None
    typo = copy.deepcopy(cfg)
    typo["setup_comands"] = typo.pop("setup_commands")
    assert "setup_comands" in (_ray_up_errors(typo) or "")  # the check can fail


def test_ray_up_yaml_cpu_head_autoscaling_gpu_workers_same_ray():
    cfg = _load(CLUSTER / "aws.yaml")
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert workers and all(w["resources"]["GPU"] >= 1 for w in workers)
    assert all(w["min_workers"] == 0 < w["max_workers"] <= cfg["max_workers"] for w in workers)
    for key in ("head_image", "worker_image"):
        assert cfg["docker"][key].startswith(f"rayproject/ray:{ray.__version__}-py311-"), cfg["docker"][key]
    # the project is installed on every node
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("-e ~/mutransfer" in c for c in cfg[key]), key
    assert cfg["file_mounts"]["~/mutransfer"] == "."


# ---- KubeRay ----------------------------------------------------------------------------
def _check_raycluster_spec(spec: dict) -> None:
    assert not _unknown(spec, RAYCLUSTER_SPEC), _unknown(spec, RAYCLUSTER_SPEC)
    assert spec["rayVersion"] == ray.__version__
    assert not _unknown(spec.get("autoscalerOptions", {}), AUTOSCALER_OPTIONS)
    head = spec["headGroupSpec"]
    assert not _unknown(head, HEAD_GROUP), _unknown(head, HEAD_GROUP)
    assert isinstance(head["rayStartParams"], dict)
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), "rayStartParams values are strings"
    containers = head["template"]["spec"]["containers"]
    assert containers and all(c["name"] and c["image"] for c in containers)
    assert "nvidia.com/gpu" not in containers[0].get("resources", {}).get("limits", {})  # a CPU head
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"] == {"mode": "token"}  # Ray token authentication, the operator makes the token
    groups = spec["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert not _unknown(g, WORKER_GROUP), _unknown(g, WORKER_GROUP)
        assert g["groupName"] and isinstance(g["rayStartParams"], dict)
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"] and g["maxReplicas"] > 0
        c = g["template"]["spec"]["containers"][0]
        assert c["name"] and c["image"]
        assert c["resources"]["limits"]["nvidia.com/gpu"] >= 1
    images = {c["image"] for c in containers} | {g["template"]["spec"]["containers"][0]["image"] for g in groups}
    assert len(images) == 1, images  # one image: same Ray, Python and project everywhere


def test_kuberay_raycluster_fields():
    doc = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayCluster")
    assert doc["metadata"]["name"]
    _check_raycluster_spec(doc["spec"])
    bad = copy.deepcopy(doc["spec"])
    bad["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(AssertionError):
        _check_raycluster_spec(bad)  # the check can fail


def test_kuberay_rayjob_fields_and_same_cluster():
    job = _load(CLUSTER / "kuberay" / "rayjob.yaml")
    cluster = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert job["metadata"].get("name") or job["metadata"].get("generateName")
    spec = job["spec"]
    assert not _unknown(spec, RAYJOB_SPEC), _unknown(spec, RAYJOB_SPEC)
    assert spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES
    assert spec["entrypoint"].strip()
    _check_raycluster_spec(spec["rayClusterSpec"])
    assert spec["rayClusterSpec"] == cluster["spec"], "rayjob.yaml's rayClusterSpec differs from raycluster.yaml"


def test_kuberay_services_volume_and_mlflow():
    docs = {d["kind"]: d for d in yaml.safe_load_all((CLUSTER / "kuberay" / "services.yaml").read_text())}
    assert set(docs) == {"PersistentVolumeClaim", "Deployment", "Service"}
    pvc = docs["PersistentVolumeClaim"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mlflow", "server"]
    svc = docs["Service"]
    port = svc["spec"]["ports"][0]["port"]
    cluster = _load(CLUSTER / "kuberay" / "raycluster.yaml")["spec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    for pod in pods:
        c = pod["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MLFLOW_TRACKING_URI"] == f"http://{svc['metadata']['name']}:{port}"
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["template"]["spec"]["volumes"]]
        assert claims == [pvc["metadata"]["name"]]


def test_dockerfile_uses_the_projects_ray_and_python():
    text = (CLUSTER / "Dockerfile").read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.M).group(1)
    assert base == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert IMAGE_ROOT.rstrip("/") in text


def test_sbatch_script_starts_head_then_workers_then_sweeps():
    path = CLUSTER / "slurm" / "sweep.sbatch"
    subprocess.run(["bash", "-n", str(path)], check=True)
    text = path.read_text()
    assert re.search(r"^#SBATCH --nodes=(\d+)", text, re.M)
    code = "\n".join(line for line in _joined_lines(text) if not line.lstrip().startswith("#"))
    head, worker, sweep = (code.index(s) for s in ("ray start --head", "ray start --address", "mutransfer sweep"))
    assert head < worker < sweep


# ---- the mutransfer commands -----------------------------------------------------------
def _joined_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def _mutransfer_argv(line: str, where: str) -> list[str] | None:
    """The argv after `mutransfer` in a shell line (None if the line runs no mutransfer command)."""
    m = re.search(r"(?:^|[\s;&|(])(?:exec\s+)?mutransfer\s+(?=[a-z])(.*)$", line)
    if m is None:
        return None
    rest = m.group(1).split("||")[0].rstrip().removesuffix("&")  # a command run in the background
    for var, value in SHELL_VALUES.items():
        rest = rest.replace(var, value)
    assert "$" not in rest, f"{where}: unexpanded shell variable in `mutransfer {rest}`"
    return [a.replace(IMAGE_ROOT, str(ROOT) + "/") for a in shlex.split(rest, comments=True)]


def _commands() -> list[tuple[str, list[str]]]:
    """Every mutransfer command cluster/ runs, with where it comes from."""
    found = []

    def add(text: str, where: str) -> None:
        for line in _joined_lines(text):
            argv = _mutransfer_argv(line, where)
            if argv is not None:
                found.append((where, argv))

    add(_load(CLUSTER / "kuberay" / "rayjob.yaml")["spec"]["entrypoint"], "kuberay/rayjob.yaml entrypoint")
    for name in ("aws_sweep.sh", "slurm/sweep.sbatch", "kuberay/raycluster.yaml", "Dockerfile"):
        add((CLUSTER / name).read_text(), name)
    aws = _load(CLUSTER / "aws.yaml")
    for key in ("setup_commands", "head_setup_commands", "worker_setup_commands", "head_start_ray_commands"):
        add("\n".join(aws[key]), f"aws.yaml {key}")
    readme = (CLUSTER / "README.md").read_text()
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", readme, re.S):
        add(block, "README.md")
    return found


def _parser():
    from orchestrator.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    if "sweep" not in sub.choices:
        pytest.fail(
            "`mutransfer sweep` is not a sub-command of orchestrator.cli.main yet (issue 5): "
            f"the CLI knows {sorted(sub.choices)}; cluster/ runs `mutransfer sweep`"
        )
    return parser


def test_cluster_files_run_real_mutransfer_commands():
    commands = _commands()
    wheres = {w for w, _ in commands}
    for must in ("kuberay/rayjob.yaml entrypoint", "aws_sweep.sh", "slurm/sweep.sbatch", "README.md"):
        assert must in wheres, f"no mutransfer command found in {must}"
    parser = _parser()
    from orchestrator.spec.config import load_sweep

    sweeps = 0
    for where, argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `mutransfer {shlex.join(argv)}` is rejected by the CLI parser")
        if args.command == "sweep":
            sweeps += 1
            assert Path(args.space).is_file(), f"{where}: {args.space} does not exist"
            sweep = load_sweep(args.space, args.overrides)  # BadInput on an unknown key or bad value
            assert sweep.trials, where
            assert args.address, f"{where}: a cluster sweep without --address runs embedded Ray"
    assert sweeps >= 4


def test_command_check_rejects_a_bad_command():
    parser = _parser()
    argv = _mutransfer_argv("mutransfer sweep search_spaces/smoke.yaml --adress auto", "test")
    with pytest.raises(SystemExit):
        parser.parse_args(argv)
    from orchestrator.errors import BadInput
    from orchestrator.spec.config import load_sweep

    with pytest.raises(BadInput):
        load_sweep(ROOT / "search_spaces" / "smoke.yaml", ["resources.gpus=0.25"])


# ---- versions, token authentication, requeue ------------------------------------------------
# The KubeRay release that introduced each ray.io/v1 field the manifests use (older operators drop it).
KUBERAY_SINCE = {"backoffLimit": (1, 2, 0), "authOptions": (1, 5, 1)}


def _keys(doc) -> set[str]:
    if isinstance(doc, dict):
        return set(doc) | {k for v in doc.values() for k in _keys(v)}
    if isinstance(doc, list):
        return {k for v in doc for k in _keys(v)}
    return set()


def test_kuberay_minimum_in_the_readme_covers_every_field_used():
    m = re.search(r"KubeRay operator \((\d+)\.(\d+)(?:\.(\d+))? or later", (CLUSTER / "README.md").read_text())
    assert m, "cluster/README.md does not state the KubeRay operator's minimum version"
    stated = tuple(int(g or 0) for g in m.groups())
    used = set()
    for name in ("raycluster.yaml", "rayjob.yaml"):
        used |= _keys(_load(CLUSTER / "kuberay" / name)) & set(KUBERAY_SINCE)
    assert used == set(KUBERAY_SINCE)
    need = max(KUBERAY_SINCE[k] for k in used)
    assert stated >= need, f"README says KubeRay {stated}, the manifests use fields from {need}"


def test_token_authentication_in_every_recipe():
    aws = _load(CLUSTER / "aws.yaml")
    assert aws["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in aws[key] if "ray start" in c]
        assert starts and all("export RAY_AUTH_MODE=token;" in c.split("ray start")[0] for c in starts), key
    env = (CLUSTER / "mutransfer.env.example").read_text()
    assert re.search(r"^RAY_AUTH_MODE=token$", env, re.M)  # sourced by aws_sweep.sh: the driver joins with it
    assert ". ~/mutransfer.env" in (CLUSTER / "aws_sweep.sh").read_text()
    sbatch = (CLUSTER / "slurm" / "sweep.sbatch").read_text()
    assert "export RAY_AUTH_MODE=token" in sbatch and "export RAY_AUTH_TOKEN=" in sbatch
    readme = (CLUSTER / "README.md").read_text()
    for step in ("ray get-auth-token --generate", "authOptions", "RAY_AUTH_TOKEN"):
        assert step in readme, step


STUBS = {
    "scontrol": 'if [ "$1" = show ]; then echo n1; else echo "scontrol $*" >> "$LOG"; fi',
    "srun": 'while [ "${1#-}" != "$1" ]; do case "$1" in -w) shift 2;; *) shift;; esac; done\n'
    'if [ "$1" = hostname ]; then echo 127.0.0.1; else exec /bin/sleep 60; fi',
    "sleep": "exit 0",  # the script's waits for Ray to start
    "mutransfer": 'echo "mutransfer $*" >> "$LOG"\n/bin/sleep 60 &\n'
    "trap \"kill $!; echo 'driver got TERM' >> $LOG; exit 143\" TERM\nwait",
}


def _job(tmp_path):
    """The sbatch script run by bash with srun, scontrol, sleep and mutransfer replaced by stubs."""
    import os
    import time

    stubs = tmp_path / ".venv" / "bin"
    stubs.mkdir(parents=True)
    for name, body in STUBS.items():
        (stubs / name).write_text("#!/bin/bash\n" + body + "\n")
        (stubs / name).chmod(0o755)
    (stubs / "activate").write_text(f'export PATH="{stubs}:$PATH"\n')
    log = tmp_path / "log"
    env = dict(
        os.environ,
        SLURM_SUBMIT_DIR=str(tmp_path),
        SLURM_JOB_NODELIST="n1",
        SLURM_JOB_ID="42",
        SLURM_CPUS_PER_TASK="2",
        LOG=str(log),
    )
    proc = subprocess.Popen(
        ["bash", str(CLUSTER / "slurm" / "sweep.sbatch"), "search_spaces/smoke.yaml"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 30
    while not (log.exists() and "mutransfer sweep" in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    return proc, log


def test_sbatch_requeues_at_the_time_limit_and_stops_the_driver_on_preemption(tmp_path):
    import signal

    text = (CLUSTER / "slurm" / "sweep.sbatch").read_text()
    assert re.search(r"^#SBATCH --requeue$", text, re.M)
    m = re.search(r"^#SBATCH --signal=B:USR1@(\d+)$", text, re.M)
    assert m and int(m.group(1)) >= 60
    assert "resumes" in text  # the note that a requeued job resumes
    proc, log = _job(tmp_path)
    assert "mutransfer sweep search_spaces/smoke.yaml" in log.read_text()
    proc.send_signal(signal.SIGUSR1)  # the time limit is near: the job asks to be requeued, the driver runs on
    import time

    deadline = time.time() + 10
    while "scontrol requeue 42" not in log.read_text() and time.time() < deadline:
        time.sleep(0.05)
    assert "scontrol requeue 42" in log.read_text() and proc.poll() is None
    proc.send_signal(signal.SIGTERM)  # preemption: the driver is stopped, the job ends with its status
    out, _ = proc.communicate(timeout=30)
    assert "driver got TERM" in log.read_text()
    assert proc.returncode == 143, out
