"""Deployed the Snakemake way, as a new user does it, in a project folder of its own.

* ``snakedeploy deploy-workflow https://github.com/OWNER/facerhythm DIR --tag vX``: the
  module comes from a remote git repository (github.com is redirected by git's own
  ``url.insteadOf`` to a loopback HTTP server started here, serving this checkout as a
  tagged release), the package is installed from the same tag by the rule
  environment's post-deploy script, and a small config runs to ``tca.h5`` with the run
  summary written in module mode.
* A module from a local git repository (``git+file://...@tag``), from a plain URL, and
  from a path.
* Without the package, the DAG build stops with the pip command for this very source.
* The rule conda environment (``--sdm conda``) as far as a machine without conda and
  without conda-forge allows: its dependencies against pyproject.toml, its post-deploy
  script run for real in a Python environment that lacks facerhythm.

No PYTHONPATH anywhere: every Python environment here finds facerhythm_core only where
it was installed.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VERSION = re.search(r'^__version__ = "([^"]+)"', (REPO / "facerhythm_core" / "__init__.py").read_text(), re.M).group(1)
TAG = f"v{VERSION}"
OWNER = "facerhythm-ci"  # made up: github.com is redirected to a loopback server
GITHUB_URL = f"https://github.com/{OWNER}/facerhythm"
BIN = Path(sys.executable).parent
POST_DEPLOY = Path("workflow") / "envs" / "facerhythm.post-deploy.sh"

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


# --- helpers -----------------------------------------------------------------------------


def run(cmd, *, env, cwd=None, check=True, timeout=900):
    r = subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
        )
    return r


def base_env(tmp: Path, git_base_url: str | None = None) -> dict:
    """The user's environment: no PYTHONPATH, fresh caches (Snakemake's git cache is per
    user and would keep an earlier run's tag), git never prompting."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(
        XDG_CACHE_HOME=str(tmp / "cache"),
        GIT_TERMINAL_PROMPT="0",
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@localhost",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@localhost",
    )
    if git_base_url:  # what github.com/ means to every git call (snakedeploy, Snakemake, pip)
        env.update(
            GIT_CONFIG_COUNT="1",
            GIT_CONFIG_KEY_0=f"url.{git_base_url}/.insteadOf",
            GIT_CONFIG_VALUE_0="https://github.com/",
        )
    return env


def git(*args, cwd, env):
    return run(["git", *args], cwd=cwd, env=env).stdout


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean; requests are counted
        self.server.requests.append(self.path)


@contextmanager
def http_server(directory: Path):
    """A static HTTP server on 127.0.0.1 serving ``directory``; stopped on exit."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    t.start()
    try:
        yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)
        assert not t.is_alive()


def python_env_without_facerhythm(path: Path) -> Path:
    """A Python environment (venv) that has Snakemake and every dependency of this test
    run's environment, but not facerhythm: the dependencies' folders are added as plain
    paths, so their .pth files (the editable install of facerhythm among them) do not run."""
    run([sys.executable, "-m", "venv", "--without-pip", path], env=os.environ)
    site = next((path / "lib").glob("python3*/site-packages"))
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_test_dependencies.pth").write_text("\n".join(deps) + "\n")
    py = path / "bin" / "python"
    r = run(
        [
            py,
            "-c",
            "import snakemake, numpy, cv2\ntry:\n import facerhythm_core\nexcept ImportError:\n"
            " print('absent')\nelse:\n print(facerhythm_core.__file__)",
        ],
        env=base_env(path),
        cwd=path,
    )
    if r.stdout.strip() != "absent":
        pytest.skip(
            f"facerhythm_core is installed inside a dependency folder ({r.stdout.strip()}); "
            "this test needs it installed editable (make setup)"
        )
    return py


def smk(py: Path, project: Path, *args, env, check=True, timeout=900):
    return run([py, "-m", "snakemake", *args], cwd=project, env=env, check=check, timeout=timeout)


def small_config(project: Path, sessions: str | None = None) -> None:
    """One short demo session, a small TCA; extra columns a lab keeps (genotype, date)."""
    cfg = yaml.safe_load((project / "config" / "config.yaml").read_text())
    cfg["tca"].update(rank=3, n_iter_max=30, joint={})
    cfg["nwb"]["enabled"] = False  # export needs each session's start time, not given here
    (project / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (project / "config" / "sessions.tsv").write_text(
        sessions
        or "session\tvideos\trois\tgenotype\tdate\ns1\tresources/demo/mouseA_1.mp4\tconfig:demo_face\tWT\t2024-05-01\n"
    )


def deploying_snakefile(project: Path, source: str) -> None:
    """A deploying Snakefile as snakedeploy writes it, for a module from ``source``."""
    (project / "workflow").mkdir(parents=True)
    (project / "workflow" / "Snakefile").write_text(
        'configfile: "config/config.yaml"\n\n\nmodule facerhythm:\n    snakefile:\n'
        f"        {source}\n    config:\n        config\n\n\nuse rule * from facerhythm\n"
    )


def install_with_post_deploy(py: Path, script: Path, pip_source: str, env: dict) -> str:
    """Run the rule environment's post-deploy script as Snakemake does after creating the
    environment: inside it (its python first on PATH), FACERHYTHM_PIP_SOURCE set."""
    env = {**env, "PATH": f"{py.parent}{os.pathsep}{env['PATH']}", "FACERHYTHM_PIP_SOURCE": pip_source}
    return run(["bash", script], env=env, cwd=py.parent).stdout


def installed_at(py: Path, env: dict) -> Path:
    out = run([py, "-c", "import facerhythm_core; print(facerhythm_core.__file__)"], env=env, cwd="/").stdout
    return Path(out.strip())


# --- a tagged release of this checkout, served like github.com/OWNER/facerhythm ----------


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """This checkout's files (committed or not, as git lists them) committed and tagged
    as release ``TAG`` in a repository of its own, plus a bare copy for HTTP serving."""
    root = tmp_path_factory.mktemp("release")
    env = base_env(root)
    work = root / "facerhythm"
    work.mkdir()
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=REPO, env=env)
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, work / rel)
    git("init", "-q", "-b", "main", cwd=work, env=env)
    git("add", "-A", cwd=work, env=env)
    git("commit", "-q", "-m", f"facerhythm {VERSION}", cwd=work, env=env)
    git("tag", TAG, cwd=work, env=env)
    served = root / "served"
    bare = served / OWNER / "facerhythm"
    git("clone", "-q", "--bare", work, bare, cwd=root, env=env)
    git("update-server-info", cwd=bare, env=env)  # git's "dumb" HTTP protocol: static files
    return work, served


# --- the tests -------------------------------------------------------------------------


@pytest.mark.slow
def test_snakedeploy_from_github_runs_in_a_project_folder(release, tmp_path):
    work, served = release
    with http_server(served) as (srv, url):
        env = base_env(tmp_path, git_base_url=url)
        project = tmp_path / "my-project"
        r = run([BIN / "snakedeploy", "deploy-workflow", GITHUB_URL, project, "--tag", TAG], env=env)
        snakefile = (project / "workflow" / "Snakefile").read_text()
        assert f'github("{OWNER}/facerhythm", path="workflow/Snakefile", tag="{TAG}")' in snakefile
        assert "use rule * from facerhythm" in snakefile
        for copied in (
            "config/config.yaml",
            "config/sessions.tsv",
            "config/README.md",
            "profiles/slurm/config.yaml",
            "LICENSE",
        ):
            assert (project / copied).is_file(), f"snakedeploy did not copy {copied}"
        assert not (project / "workflow" / "rules").exists()  # the workflow stays in its repository
        small_config(project)

        # without the package, the DAG build says how to install this very version
        py = python_env_without_facerhythm(tmp_path / "env")
        requests_before = len(srv.requests)
        r = smk(py, project, "-n", env=env, check=False)
        # Snakemake cloned the module's repository from the (loopback) remote, for good
        assert len(srv.requests) > requests_before
        git_cache = tmp_path / "cache" / "snakemake" / "snakemake" / "source-cache" / "snakemake-git-cache"
        assert (git_cache / "github.com" / OWNER / "facerhythm").is_dir()
        pip_source = f"git+https://github.com/{OWNER}/facerhythm@{TAG}"
        assert r.returncode != 0
        assert (
            f"Install this workflow's version into the environment that runs Snakemake:\n"
            f"    pip install '{pip_source}'" in r.stdout + r.stderr
        ), r.stdout[-3000:] + r.stderr[-3000:]
        assert not (project / "results").exists()

        # the rule environment's post-deploy script installs it from the same tag
        requests_before = len(srv.requests)
        out = install_with_post_deploy(py, work / POST_DEPLOY, pip_source, env)
        assert f"facerhythm post-deploy: facerhythm {VERSION} at" in out
        assert len(srv.requests) > requests_before  # pip fetched it from the (loopback) remote
        where = installed_at(py, env)
        assert where.is_relative_to(tmp_path / "env") and not where.is_relative_to(REPO), where

        r = smk(py, project, "-j2", "results/s1/tca.h5", env=env)
        with h5py.File(project / "results" / "s1" / "tca.h5") as f:
            assert "decompositions" in f and "provenance" in f
        summary = (project / "logs" / "run_summary.tsv").read_text().splitlines()
        assert summary[0].split("\t")[:3] == ["session", "stage", "status"]
        assert [ln.split("\t")[2] for ln in summary[1:]] == ["done"] * 5, summary
        assert "facerhythm run finished: summary in logs/run_summary.tsv" in r.stdout + r.stderr
        # the project holds data and results; the workflow's files stay in its repository
        assert not (project / "workflow" / "scripts").exists()
        assert git("status", "--porcelain", cwd=work, env=env) == ""

        r = smk(py, project, "-n", "results/s1/tca.h5", env=env)
        assert "Nothing to be done" in r.stdout + r.stderr


@pytest.mark.slow
def test_module_from_a_local_git_repository(release, tmp_path):
    work, _ = release
    env = base_env(tmp_path)
    project = tmp_path / "project"
    deploying_snakefile(project, f'"git+file://{work}/workflow/Snakefile@{TAG}"')
    shutil.copytree(work / "config", project / "config")
    small_config(project)
    # the working tree moves on after the tag: the module is the tag's, not the tree's
    (work / "workflow" / "Snakefile").write_text("this is not a Snakefile\n")
    try:
        py = python_env_without_facerhythm(tmp_path / "env")
        r = smk(py, project, "-n", env=env, check=False)
        pip_source = f"git+file://{work}@{TAG}"
        assert f"pip install '{pip_source}'" in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
        install_with_post_deploy(py, work / POST_DEPLOY, pip_source, env)
        assert installed_at(py, env).is_relative_to(tmp_path / "env")
        smk(py, project, "-j2", "results/s1/videos.json", env=env)
        assert (project / "results" / "s1" / "videos.json").is_file()
        assert (project / "logs" / "probe_videos" / "s1.log").stat().st_size > 0
    finally:
        git("checkout", "--", "workflow/Snakefile", cwd=work, env=env)


@pytest.mark.slow
def test_module_from_a_plain_url(release, tmp_path):
    """A Snakefile URL on an HTTP server: every workflow file (rules, schemas, scripts,
    the rule environment) is fetched through Snakemake's source cache."""
    work, _ = release
    env = base_env(tmp_path)
    with http_server(work) as (srv, url):
        project = tmp_path / "project"
        deploying_snakefile(project, f'"{url}/workflow/Snakefile"')
        shutil.copytree(work / "config", project / "config")
        small_config(project)
        py = python_env_without_facerhythm(tmp_path / "env")
        r = smk(py, project, "-n", env=env, check=False)
        # pip cannot install from a folder on a web server: the error says what to do
        assert (
            f"install facerhythm {VERSION} from the repository this workflow comes from ({url}/workflow/rules)"
        ) in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
        install_with_post_deploy(py, work / POST_DEPLOY, f"git+file://{work}@{TAG}", env)
        smk(py, project, "-j2", "results/s1/videos.json", env=env)
        assert (project / "results" / "s1" / "videos.json").is_file()
        fetched = set(srv.requests)
        for f in (
            "/workflow/rules/common.smk",
            "/workflow/schemas/config.schema.yaml",
            "/workflow/scripts/probe_videos.py",
            "/workflow/envs/facerhythm.yaml",
        ):
            assert f in fetched, sorted(fetched)


def _this_checkout_is_installed(env) -> bool:
    where = installed_at(Path(sys.executable), env)
    return where.is_relative_to(REPO)


@pytest.mark.slow
def test_module_from_a_path_writes_the_summary_also_on_failure(tmp_path):
    """A module from this checkout's folder, run from another folder by the environment
    the checkout is installed in (editable: `make setup`), with one broken session."""
    env = base_env(tmp_path)
    if not _this_checkout_is_installed(env):
        if os.environ.get("CI"):
            raise AssertionError("facerhythm_core is not installed from this checkout (make setup)")
        pytest.skip("the environment's facerhythm is installed from another checkout")
    project = tmp_path / "project"
    deploying_snakefile(project, f'"{REPO}/workflow/Snakefile"')
    shutil.copytree(REPO / "config", project / "config")
    (project / "broken.mp4").write_bytes(b"not a video at all" * 100)
    small_config(
        project,
        "session\tvideos\trois\ns1\tresources/demo/mouseA_1.mp4\tconfig:demo_face\nbad\tbroken.mp4\tconfig:demo_face\n",
    )
    r = smk(
        Path(sys.executable),
        project,
        "-j2",
        "--keep-going",
        "results/s1/rois.h5",
        "results/bad/rois.h5",
        env=env,
        check=False,
    )
    assert r.returncode != 0
    assert "facerhythm run ended with errors: summary in logs/run_summary.tsv" in r.stdout + r.stderr
    rows = {tuple(ln.split("\t")[:3]) for ln in (project / "logs" / "run_summary.tsv").read_text().splitlines()}
    assert {
        ("s1", "probe_videos", "done"),
        ("s1", "rois", "done"),
        ("bad", "probe_videos", "failed"),
        ("bad", "rois", "not run"),
    } <= rows, rows
    assert (project / "results" / "s1" / "rois.h5").is_file()
    assert not (REPO / "results" / "s1").exists() and not (REPO / "results" / "bad").exists()


# --- the rule environment (--sdm conda) ---------------------------------------------------


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~ \[;@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_rule_environment_has_every_runtime_dependency_and_names_the_version():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    env_text = (REPO / "workflow" / "envs" / "facerhythm.yaml").read_text()
    spec = yaml.safe_load(env_text)
    conda = [d for d in spec["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    have = {_name(d) for d in conda + pip}
    # the workflow engine runs outside the rule environment
    need = {_name(d) for d in project["dependencies"]} - {"snakemake"}
    assert need <= have, f"missing from workflow/envs/facerhythm.yaml: {sorted(need - have)}"
    assert "numba" in have  # without it the tracker silently takes the slower CLAHE
    assert {"git", "setuptools", "pip"} <= have  # the post-deploy script's pip install
    py = next(d for d in conda if _name(d) == "python")
    assert project["requires-python"] == ">=3.11" and py == "python=3.11"
    # a release changes the file, so Snakemake builds a new environment for it
    assert f"Package version {VERSION}:" in env_text
    assert project["version"] == VERSION


def test_post_deploy_script_installs_the_checkout_non_editable(tmp_path):
    """The post-deploy script as Snakemake runs it in a new environment, for a clone (the
    source is the checkout's folder): a copy is installed, importable from anywhere."""
    env = base_env(tmp_path)
    py = python_env_without_facerhythm(tmp_path / "env")
    out = install_with_post_deploy(py, REPO / POST_DEPLOY, str(REPO), env)
    assert "facerhythm post-deploy: dependencies import" in out
    where = installed_at(py, env)
    assert where.is_relative_to(tmp_path / "env") and where.name == "__init__.py"
    assert (where.parent / "runtime.py").is_file() and (where.parent / "results.py").is_file()
    # and without a source it stops with what to set
    r = run(["bash", REPO / POST_DEPLOY], env={**env, "PATH": f"{py.parent}{os.pathsep}{env['PATH']}"}, check=False)
    assert r.returncode == 1 and "FACERHYTHM_PIP_SOURCE is not set" in r.stdout + r.stderr


def test_snakemake_lint_is_clean(tmp_path):
    """Among the lints: every rule names the conda environment."""
    r = run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, env=base_env(tmp_path), check=False)
    assert r.returncode == 0 and "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr, (
        r.stdout[-3000:] + r.stderr[-3000:]
    )


def test_catalog_license_and_citation_files():
    """What the Snakemake workflow catalog and snakedeploy look for, and a citation file
    that asks to cite face-rhythm too."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert (REPO / "LICENSE").read_text().startswith(f"{project['license']} License\n")
    catalog = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert catalog["usage"]["software-stack-deployment"]["conda"] is True
    assert catalog["usage"]["report"] is True
    readme = (REPO / "config" / "README.md").read_text()
    for column in ("session", "videos", "rois", "fps", "contiguous", "frames_freeze", "timestamps"):
        assert f"| `{column}` |" in readme, column
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["version"] == VERSION and cff["license"] == project["license"]
    assert {"message", "title", "authors"} <= set(cff) and "face-rhythm" in cff["message"]
    refs = {r["title"]: r for r in cff["references"]}
    face_rhythm = next(r for t, r in refs.items() if t.startswith("face-rhythm"))
    assert face_rhythm["repository-code"] == "https://github.com/RichieHakim/face-rhythm"
    assert any(r.get("doi") == "10.1101/2025.09.10.675423" for r in refs.values())
