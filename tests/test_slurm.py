"""The SLURM and workstation profiles: resolved resources per rule, and a real SLURM run.

Dry runs (no cluster needed) check what every job would ask for. The real run starts a
single-node SLURM cluster with `cpu` and `gpu` partitions (tools/local_slurm.sh; needs
root and apt), does the documented one-time set-up, runs the demo with the command
users type, `snakemake --profile slurm`, and checks from sacct/scontrol where each job ran.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
PROFILE_DIR = REPO / "profiles" / "slurm"
LOCAL_SLURM = REPO / "tools" / "local_slurm.sh"
INSTALL_PROFILE = REPO / "tools" / "install_slurm_profile.sh"
# Rules whose torch work benefits from a GPU; they carry `resources: gpu=1` themselves.
# track_points does not: OpenCV from PyPI has no CUDA (docs/slurm.md).
GPU_RULES = {"spectrogram", "tca", "tca_joint"}
CORE_RULES = {"demo_video", "probe_videos", "rois", "track_points"} | GPU_RULES
# Polling tweak for CI only; the profile keeps the plugin's cluster-friendly default.
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]
RUN_TIMEOUT_S = 720
START_TIMEOUT_S = 1200  # includes apt-get on a fresh machine

has_plugin = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
needs_plugin = pytest.mark.skipif(
    not has_plugin, reason="snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')"
)


# ---------------------------------------------------------------------------- helpers
def profile_config() -> dict:
    return yaml.safe_load((PROFILE_DIR / "config.yaml").read_text())


def clean_env(**extra) -> dict:
    """The caller's environment without SLURM job variables, venv bin first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run(cmd, cwd, env, timeout):
    """Run a command in its own process group; on timeout stop the whole group."""
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # snakemake cancels its SLURM jobs on SIGTERM
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {' '.join(map(str, cmd))}\n{out[-6000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def user_workdir(tmp: Path) -> Path:
    """A directory laid out like a user's clone: the workflow, profiles and demo config."""
    (tmp / "workflow").symlink_to(REPO / "workflow")
    (tmp / "profiles").symlink_to(REPO / "profiles")
    shutil.copytree(REPO / "config", tmp / "config")
    return tmp


def snakemake(wd: Path, *args, env=None, timeout=300) -> subprocess.CompletedProcess:
    r = run([SNAKEMAKE, *args], cwd=wd, env=env or clean_env(), timeout=timeout)
    assert r.returncode == 0, f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-6000:]}"
    return r


def _value(v: str):
    try:
        return int(v)
    except ValueError:
        return v


def dry_run_jobs(text: str) -> list[dict]:
    """Jobs of a `snakemake -n` listing: rule, threads, resources, whether it has outputs
    (a target rule like `all` has none and is never submitted). Local rules are left out."""
    jobs, cur = [], None
    for line in text.splitlines():
        s = line.strip()
        m = re.fullmatch(r"(local)?rule (\w+):", s)
        if m:
            cur = None if m.group(1) else {"rule": m.group(2), "threads": 1, "resources": {}, "outputs": False}
            if cur is not None:
                jobs.append(cur)
        elif cur is not None and s.startswith("output:"):
            cur["outputs"] = True
        elif cur is not None and s.startswith("wildcards:"):
            cur["wildcards"] = s.split(":", 1)[1].strip()
        elif cur is not None and s.startswith("threads:"):
            cur["threads"] = int(s.split(":", 1)[1])
        elif cur is not None and s.startswith("resources:"):
            for item in s.split(":", 1)[1].split(","):
                key, _, val = item.strip().partition("=")
                cur["resources"][key] = _value(val)
    return jobs


class _Resources(dict):
    __getattr__ = dict.__getitem__


def plugin_partition(job: dict) -> str | None:
    """The partition the SLURM plugin picks for this job from profiles/slurm/partitions.yaml."""
    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file

    if job["resources"].get("slurm_partition"):
        return job["resources"]["slurm_partition"]
    parts = read_partition_file(PROFILE_DIR / profile_config()["slurm-partition-config"])
    fake = SimpleNamespace(name=job["rule"], threads=job["threads"], resources=_Resources(job["resources"]))
    return get_best_partition(parts, fake, logging.getLogger("test_slurm"))


def gpu_partitions() -> set[str]:
    parts = yaml.safe_load((PROFILE_DIR / profile_config()["slurm-partition-config"]).read_text())["partitions"]
    return {name for name, lim in parts.items() if (lim or {}).get("max_gpu", 0) > 0}


# ---------------------------------------------------------------------------- profile files
def test_slurm_profile_settings():
    cfg = profile_config()
    assert cfg["executor"] == "slurm"
    assert isinstance(cfg["jobs"], int) and cfg["jobs"] >= 1
    assert cfg["latency-wait"] >= 30
    assert cfg["retries"] >= 1
    assert cfg["rerun-incomplete"] is True and cfg["keep-going"] is True
    res = cfg["default-resources"]
    assert {"slurm_account", "mem_mb", "runtime"} <= set(res)
    assert "attempt" in str(res["mem_mb"]), "default memory must grow with the retry attempt"
    # cpus_per_task overrides every rule's threads; a default partition would pin GPU rules
    assert "cpus_per_task" not in res and "slurm_partition" not in res
    # the profile never names rules: GPU needs live in the rules themselves
    assert "set-resources" not in cfg
    parts = yaml.safe_load((PROFILE_DIR / cfg["slurm-partition-config"]).read_text())["partitions"]
    assert gpu_partitions(), "partitions.yaml must name a partition with GPUs (max_gpu >= 1)"
    assert any((lim or {}).get("max_gpu", 0) == 0 for lim in parts.values()), "and one without"


def test_local_profile_and_no_default_profile():
    cfg = yaml.safe_load((REPO / "profiles" / "local" / "config.yaml").read_text())
    assert cfg["resources"]["gpu"] == 1
    assert "executor" not in cfg
    # a profiles/default/ would silently change every plain `snakemake -j4`
    assert not (REPO / "profiles" / "default").exists()
    assert not (REPO / "workflow" / "profiles" / "default").exists()


def test_install_script_links_profile_and_refuses_foreign(tmp_path):
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    for _ in range(2):  # idempotent
        r = run(["bash", INSTALL_PROFILE], cwd=tmp_path, env=env, timeout=30)
        assert r.returncode == 0, r.stdout
    link = tmp_path / "xdg" / "snakemake" / "slurm"
    assert link.is_symlink() and link.resolve() == PROFILE_DIR.resolve()
    (tmp_path / "xdg" / "snakemake" / "mine").mkdir()
    r = run(["bash", INSTALL_PROFILE, "--name", "mine"], cwd=tmp_path, env=env, timeout=30)
    assert r.returncode != 0 and "left alone" in r.stdout
    assert not (tmp_path / "xdg" / "snakemake" / "mine").is_symlink()
    r = run(["bash", INSTALL_PROFILE, "--uninstall"], cwd=tmp_path, env=env, timeout=30)
    assert r.returncode == 0 and not link.exists()


# ---------------------------------------------------------------------------- dry runs
@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """Dry runs with the SLURM profile: as shipped, with a command-line --set-resources,
    at retry attempt 2, and by profile name after the documented set-up."""
    if not has_plugin:
        pytest.skip("snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")
    wd = user_workdir(tmp_path_factory.mktemp("slurm_dry"))
    xdg = wd / "xdg"
    env = clean_env(XDG_CONFIG_HOME=str(xdg))
    r = run(["bash", INSTALL_PROFILE], cwd=wd, env=env, timeout=30)
    assert r.returncode == 0, r.stdout
    out = {
        "plain": snakemake(wd, "--profile", "profiles/slurm", "-n", env=env).stdout,
        "set_resources": snakemake(
            wd, "--profile", "profiles/slurm", "-n", "--set-resources", "rois:mem_mb=3333", env=env
        ).stdout,
        "attempt2": snakemake(wd, "--profile", "profiles/slurm", "-n", "--attempt", "2", env=env).stdout,
        "by_name": snakemake(wd, "--profile", "slurm", "-n", env=env).stdout,
    }
    return {k: (v, dry_run_jobs(v)) for k, v in out.items()}


@needs_plugin
def test_dry_run_gpu_rules_on_gpu_partition(dry_runs):
    _, jobs = dry_runs["plain"]
    assert CORE_RULES <= {j["rule"] for j in jobs}, f"rules missing from the dry run: {jobs}"
    account = profile_config()["default-resources"]["slurm_account"]
    gpu_parts = gpu_partitions()
    for j in jobs:
        res, rule = j["resources"], j["rule"]
        part = plugin_partition(j)
        assert res.get("slurm_account") == account, (rule, res)
        assert "cpus_per_task" not in res, (rule, res)
        assert int(res["mem_mb"]) > 0 and int(res["runtime"]) > 0, (rule, res)
        if rule in GPU_RULES:
            assert res.get("gpu") == 1, f"{rule} must ask for one GPU: {res}"
            assert part in gpu_parts, f"{rule} would go to partition {part!r}"
        else:
            assert not res.get("gpu") and "gpu" not in str(res.get("gres", "")), (rule, res)
            assert part is not None and part not in gpu_parts, f"{rule} would go to {part!r}"


@needs_plugin
def test_command_line_set_resources_keeps_gpu_routing(dry_runs):
    """--set-resources on the command line replaces the profile's map; routing must survive."""
    _, jobs = dry_runs["set_resources"]
    assert any(j["rule"] == "rois" for j in jobs)
    for j in jobs:
        if j["rule"] == "rois":
            assert j["resources"]["mem_mb"] == 3333  # the override did take effect
        if j["rule"] in GPU_RULES:
            assert j["resources"].get("gpu") == 1
            assert plugin_partition(j) in gpu_partitions()


def test_retry_asks_for_more_memory(dry_runs):
    # jobs matched by rule and wildcards: two dry runs may list independent jobs in another order
    first = {(j["rule"], j.get("wildcards", "")): j for j in dry_runs["plain"][1]}
    second = {(j["rule"], j.get("wildcards", "")): j for j in dry_runs["attempt2"][1]}
    assert len(first) == len(dry_runs["plain"][1])  # every job has its own key
    assert first.keys() == second.keys() and first
    for key, j1 in first.items():
        m1, m2 = j1["resources"]["mem_mb"], second[key]["resources"]["mem_mb"]
        assert m2 > m1, f"rule {key[0]}: mem_mb {m1} at attempt 1, {m2} at attempt 2"


def test_profile_found_by_name_after_setup(dry_runs):
    text, jobs = dry_runs["by_name"]
    assert re.search(r"Using profile \S*slurm\b", text), text[:2000]
    account = profile_config()["default-resources"]["slurm_account"]
    assert jobs and all(j["resources"].get("slurm_account") == account for j in jobs)
    plain = dry_runs["plain"][1]
    assert sorted((j["rule"], j["resources"].get("gpu")) for j in jobs) == sorted(
        (j["rule"], j["resources"].get("gpu")) for j in plain
    )


def test_local_profile_dry_run(tmp_path):
    wd = user_workdir(tmp_path)
    r = snakemake(wd, "--profile", "profiles/local", "-n")
    jobs = dry_run_jobs(r.stdout)
    assert GPU_RULES <= {j["rule"] for j in jobs}
    for j in jobs:
        assert (j["resources"].get("gpu") == 1) == (j["rule"] in GPU_RULES), j
        assert "slurm_account" not in j["resources"]


# ---------------------------------------------------------------------------- real cluster
def _our_slurmctld_alive() -> bool:
    pids = Path("/run/facerhythm-local-slurm/pids")
    if not pids.exists():
        return False
    for line in pids.read_text().splitlines():
        name, _, pid = line.partition(" ")
        if name == "slurmctld" and pid.isdigit():
            try:
                os.kill(int(pid), 0)
                return True
            except OSError:
                return False
    return False


@pytest.fixture(scope="module")
def local_slurm(dry_runs):
    if not has_plugin:
        pytest.skip("snakemake-executor-plugin-slurm not installed (pip install -e '.[slurm]')")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    chk = run(["bash", LOCAL_SLURM, "check"], cwd=REPO, env=clean_env(), timeout=60)
    if chk.returncode == 3:
        pytest.skip(chk.stdout.strip().splitlines()[-1])
    assert chk.returncode == 0, chk.stdout
    # The node is declared, not probed: big enough that every rule fits even on its last
    # retry and that a few jobs (and two of the GPU jobs) run side by side, which hides
    # the per-job start-up and polling latency; the jobs time-share the real cores.
    jobs = dry_runs["plain"][1]
    tries = 1 + int(profile_config()["retries"])
    mem = max(int(j["resources"]["mem_mb"]) for j in jobs) * tries + 1024
    cpus = max(os.cpu_count() or 2, 8)
    was_running = _our_slurmctld_alive()
    env = clean_env(
        ACCOUNT=str(profile_config()["default-resources"]["slurm_account"]),
        NODE_MEM_MB=str(mem),
        NODE_CPUS=str(cpus),
        FAKE_GPUS="2",
    )
    r = run(["bash", LOCAL_SLURM, "start"], cwd=REPO, env=env, timeout=START_TIMEOUT_S)
    try:
        assert r.returncode == 0, f"local SLURM did not start ({r.returncode}):\n{r.stdout[-4000:]}"
        yield
    finally:
        if not was_running:  # stop only what this test started
            run(["bash", LOCAL_SLURM, "stop"], cwd=REPO, env=clean_env(), timeout=120)


def _sacct(ids: list[str]) -> dict[str, dict]:
    fields = ["JobIDRaw", "Partition", "AllocTRES", "State", "Comment", "Account"]
    out = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "-j", ",".join(ids), f"--format={','.join(fields)}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    rows = [dict(zip(fields, ln.split("|"))) for ln in out.splitlines() if ln.strip()]
    return {r["JobIDRaw"]: r for r in rows}


@pytest.mark.slurm
@pytest.mark.slow
def test_demo_runs_on_local_slurm_cluster(local_slurm, tmp_path):
    wd = user_workdir(tmp_path)
    env = clean_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    r = run(["bash", INSTALL_PROFILE], cwd=wd, env=env, timeout=30)  # the documented set-up
    assert r.returncode == 0, r.stdout
    expected = {}
    for j in dry_run_jobs(snakemake(wd, "--profile", "slurm", "-n", env=env).stdout):
        if j["outputs"]:
            expected[j["rule"]] = expected.get(j["rule"], 0) + 1
    assert CORE_RULES <= set(expected)

    started = time.monotonic()
    r = run([SNAKEMAKE, "--profile", "slurm", *FAST_STATUS], cwd=wd, env=env, timeout=RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    logs = sorted((wd / ".snakemake" / "slurm_logs").rglob("*.log"))
    tail = "\n".join(f"--- {p}\n{p.read_text()[-1500:]}" for p in logs[-4:])
    assert r.returncode == 0, f"snakemake --profile slurm failed:\n{r.stdout[-6000:]}\n{tail}"
    assert "Using profile slurm" in r.stdout or re.search(r"Using profile \S*slurm\b", r.stdout)
    print(f"demo on local SLURM: {elapsed:.0f} s")

    # every job went through sbatch
    submitted = re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/", r.stdout)
    assert submitted, r.stdout[-3000:]
    rule_of = dict(submitted)
    deadline = time.monotonic() + 60  # slurmdbd records job ends asynchronously
    while True:
        acct = _sacct(list(rule_of))
        if set(acct) == set(rule_of) and all(
            a["State"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL")
            for a in acct.values()
        ):
            break
        assert time.monotonic() < deadline, f"sacct does not show all jobs as finished: {acct}"
        time.sleep(2)

    completed = {}
    account = str(profile_config()["default-resources"]["slurm_account"])
    for jid, rule in rule_of.items():
        a = acct[jid]
        assert a["Comment"].startswith(f"rule_{rule}"), a
        assert a["Account"] == account, a
        if a["State"] != "COMPLETED":
            continue  # a failed attempt that a retry made good is allowed
        completed[rule] = completed.get(rule, 0) + 1
        if rule in GPU_RULES:
            assert a["Partition"] == "gpu" and "gres/gpu=1" in a["AllocTRES"], a
            show = subprocess.run(["scontrol", "show", "job", jid], capture_output=True, text=True, timeout=30).stdout
            if show:  # still within MinJobAge
                assert "Partition=gpu" in show and re.search(r"TresPerJob=gres:gpu:1\b", show), show
        else:
            assert a["Partition"] == "cpu" and "gres/gpu" not in a["AllocTRES"], a
    assert completed == expected, f"SLURM jobs per rule {completed}, DAG {expected}"
    print(
        "\n".join(
            f"{rule_of[j]:>20} {a['Partition']:>4} {a['State']:>9} {a['AllocTRES']}"
            for j, a in sorted(acct.items(), key=lambda x: int(x[0]))
        )
    )

    # inside each GPU job the core chose a device and said which
    for rule in GPU_RULES:
        for log in (wd / "logs" / rule).glob("*.log"):
            assert re.search(r"device: (cpu|cuda)", log.read_text()), f"no device line in {log}"
