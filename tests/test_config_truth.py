"""The config tells the truth: every key described, the schema's defaults equal the
code's, the top-level device reaches the stages, and one dependency list."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import yaml

from facerhythm_core import tca
from facerhythm_core.config import validate_config
from facerhythm_core.spectrogram import SpectrogramParams
from facerhythm_core.tracking_params import TrackingParams

REPO = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


def _keys(node, path=()):
    for k, v in node.get("properties", {}).items():
        yield path + (k,), v
        if "properties" in v:
            yield from _keys(v, path + (k,))


def test_every_config_key_has_a_description_and_a_default():
    undescribed = [".".join(p) for p, v in _keys(SCHEMA) if not str(v.get("description", "")).strip()]
    assert not undescribed, f"schema keys without a description: {undescribed}"
    required = set(SCHEMA.get("required", []))
    no_default = [".".join(p) for p, v in _keys(SCHEMA) if "default" not in v and p[0] not in required]
    assert not no_default, f"optional schema keys without a default: {no_default}"


@pytest.fixture(scope="module")
def defaults():
    return validate_config({"sessions": "config/sessions.tsv"}, SCHEMA)


def test_schema_defaults_equal_the_dataclass_defaults(defaults):
    assert TrackingParams.from_config(defaults["tracking"]) == TrackingParams()
    spec = SpectrogramParams()
    for key, value in defaults["spectrogram"].items():
        assert hasattr(spec, key), f"spectrogram.{key} is not a SpectrogramParams field"
        assert getattr(spec, key) == value, f"spectrogram.{key}: schema {value!r}, code {getattr(spec, key)!r}"
    options = tca.options_from_config(defaults["tca"], "cpu")
    params = inspect.signature(tca.decompose).parameters
    for key, value in options.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if default is not inspect.Parameter.empty:
            same = list(default) == list(value) if isinstance(default, (list, tuple)) else default == value
            assert same, f"tca option {key}: schema gives {value!r}, decompose defaults to {default!r}"


def test_top_level_device_reaches_the_torch_stages():
    cfg = validate_config({"sessions": "s.tsv", "device": "cpu"}, SCHEMA)
    assert cfg["spectrogram"]["device"] == "cpu" and cfg["tca"]["device"] == "cpu"
    cfg = validate_config({"sessions": "s.tsv", "device": "cpu", "tca": {"device": "cuda"}}, SCHEMA)
    assert cfg["spectrogram"]["device"] == "cpu" and cfg["tca"]["device"] == "cuda"
    assert validate_config({"sessions": "s.tsv"}, SCHEMA)["spectrogram"]["device"] == "auto"


def _names(lines):
    out = set()
    for line in lines:
        m = re.match(r"\s*-?\s*\"?([A-Za-z0-9_.\-\[\]]+)", line)
        if m:
            out.add(re.split(r"[\[<>=!]", m.group(1))[0].lower().replace("_", "-"))
    return out


def test_one_dependency_list():
    """pyproject.toml is the list; environment.yml and the rule env carry the same packages
    (plus python, pip, ffmpeg, which pip cannot install)."""
    text = (REPO / "pyproject.toml").read_text()
    block = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    deps = _names(ln for ln in block.splitlines() if ln.strip().startswith('"'))
    # the rule env runs inside a job: Snakemake itself is not needed there, and its
    # post-deploy script builds the package from git (git, setuptools)
    not_in = {"environment.yml": set(), "workflow/envs/facerhythm.yaml": {"snakemake"}}
    tools = {"python", "pip", "ffmpeg", "snakemake-executor-plugin-slurm", "pytest", "git", "setuptools"}
    for env, skip in not_in.items():
        spec = yaml.safe_load((REPO / env).read_text())["dependencies"]
        listed = set()
        for item in spec:
            listed |= _names(item["pip"] if isinstance(item, dict) else [item])
        listed -= tools
        missing, extra = deps - skip - listed, listed - deps
        assert not missing, f"{env} lacks {sorted(missing)} (declared in pyproject.toml)"
        assert not extra, f"{env} lists {sorted(extra)}, which pyproject.toml does not declare"
