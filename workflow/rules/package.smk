# The facerhythm package this workflow runs on. Every script imports it as an installed
# package (no sys.path edits), so it must be importable where Snakemake parses the
# workflow and in the rule environments, at this workflow's own version. Works the same
# from a clone, from a module (snakedeploy) with a local, git or remote source, and in
# rule conda environments (`--sdm conda`; workflow/envs/facerhythm.post-deploy.sh).

import os
import re
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.sourcecache import GithubFile, GitlabFile, LocalGitFile, LocalSourceFile


def facerhythm_pip_source(rules_dir):
    """What `pip install` takes to install the package of this very workflow version.

    ``rules_dir`` is this file's folder as Snakemake sees it: a local path (clone, or a
    module from a path), a local git repository at a ref (``git+file://...@ref``), or a
    GitHub/GitLab repository at a tag, branch or commit (snakedeploy's ``github(...)``).
    None for other remote sources (a plain URL), which pip cannot install from.
    """
    if isinstance(rules_dir, LocalGitFile):
        return f"git+file://{os.path.abspath(rules_dir.repo_path)}@{rules_dir.ref}"
    if isinstance(rules_dir, (GithubFile, GitlabFile)):
        return f"git+https://{rules_dir.host}/{rules_dir.repo}@{rules_dir.ref}"
    if isinstance(rules_dir, LocalSourceFile):
        return str(Path(rules_dir.get_path_or_uri(secret_free=True)).parents[1])
    return None


def _workflow_version():
    """The package version this workflow was released with (its facerhythm_core/__init__.py)."""
    try:
        with open(workflow.source_path("../../facerhythm_core/__init__.py")) as fh:
            m = re.search(r'^__version__ = "([^"]+)"', fh.read(), re.M)
    except Exception:  # a source that holds only workflow/: nothing to compare with
        return None
    return m.group(1) if m else None


def _fix_local_git_join():
    """Snakemake 9 (seen on 9.27) cannot run a `script:` rule of a module from a local git
    repository (git+file://...@ref): it joins the rule's folder with the script path
    already made a LocalSourceFile, and LocalGitFile.join() takes only a str
    ("TypeError: sequence item 1: expected str instance, LocalSourceFile found"). Let it
    take both; no effect on other sources."""
    join = LocalGitFile.join
    if getattr(join, "_facerhythm_fix", False):
        return

    def join_str_or_source(self, path):
        if isinstance(path, LocalSourceFile):
            path = path.get_path_or_uri(secret_free=True)
        return join(self, path)

    join_str_or_source._facerhythm_fix = True
    LocalGitFile.join = join_str_or_source


FACERHYTHM_SOURCE = workflow.current_basedir
if isinstance(FACERHYTHM_SOURCE, LocalGitFile):
    _fix_local_git_join()
FACERHYTHM_PIP_SOURCE = facerhythm_pip_source(FACERHYTHM_SOURCE)
FACERHYTHM_VERSION = _workflow_version()
# the rule conda environment's post-deploy script installs the package from here; set
# FACERHYTHM_PIP_SOURCE yourself to install it from elsewhere (a wheel, an index)
if FACERHYTHM_PIP_SOURCE:
    os.environ.setdefault("FACERHYTHM_PIP_SOURCE", FACERHYTHM_PIP_SOURCE)


def _install_hint():
    where = FACERHYTHM_SOURCE.get_path_or_uri(secret_free=True)
    if FACERHYTHM_PIP_SOURCE is None:
        return (
            f"install facerhythm {FACERHYTHM_VERSION or ''} from the repository this "
            f"workflow comes from ({where}) with pip"
        )
    editable = "-e " if isinstance(FACERHYTHM_SOURCE, LocalSourceFile) else ""
    return f"pip install {editable}'{FACERHYTHM_PIP_SOURCE}'"


try:
    import facerhythm_core
except ImportError as exc:
    raise WorkflowError(
        f"facerhythm: the Python package facerhythm_core is not importable by {sys.executable} "
        f"({exc}). Install this workflow's version into the environment that runs Snakemake:\n"
        f"    {_install_hint()}\n(README: 'Install'; a clone's `make setup` does it.)"
    ) from None

if FACERHYTHM_VERSION and facerhythm_core.__version__ != FACERHYTHM_VERSION:
    raise WorkflowError(
        f"facerhythm: this workflow is version {FACERHYTHM_VERSION} but the installed package "
        f"facerhythm_core is {facerhythm_core.__version__} ({facerhythm_core.__file__}). "
        f"Install the matching version:\n    {_install_hint()}"
    )
