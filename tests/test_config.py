"""Config and sessions-table validation."""

from pathlib import Path

import pytest
import yaml

from facerhythm_core.config import read_sessions, validate_config
from facerhythm_core.errors import ConfigError

SCHEMAS = Path(__file__).resolve().parents[1] / "workflow" / "schemas"


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())


@pytest.fixture(scope="module")
def sschema():
    return yaml.safe_load((SCHEMAS / "sessions.schema.yaml").read_text())


def test_defaults_filled(schema):
    cfg = validate_config({}, schema)
    assert cfg["tracking"]["mesh_rigidity"] == 0.025
    assert cfg["tracking"]["clahe"] == {"clip_limit": 40.0, "tile_grid_size": [150, 150]}
    assert cfg["spectrogram"]["n_freq_bins"] == 36
    assert cfg["tca"]["rank"] == 10 and cfg["tca"]["rank_sweep"]["enabled"] is False
    assert cfg["rois"]["point_spacing"] == 9


def test_partial_section_keeps_user_values(schema):
    cfg = validate_config({"tracking": {"relaxation": 0.01}}, schema)
    assert cfg["tracking"]["relaxation"] == 0.01 and cfg["tracking"]["max_level"] == 2


def test_every_key_documented(schema):
    def walk(s, path):
        for k, sub in s.get("properties", {}).items():
            assert "default" in sub or k in ("clip_limit", "tile_grid_size"), f"{path}{k} lacks a default"
            if "properties" in sub:
                walk(sub, f"{path}{k}.")
    walk(schema, "")


@pytest.mark.parametrize("bad,where", [
    ({"trackign": {}}, "trackign"),
    ({"tracking": {"mesh_rigidity": "stiff"}}, "tracking.mesh_rigidity"),
    ({"tracking": {"relaxation": 2}}, "tracking.relaxation"),
    ({"spectrogram": {"n_freq_bins": 0}}, "spectrogram.n_freq_bins"),
    ({"tca": {"method": "PCA"}}, "tca.method"),
    ({"device": "tpu"}, "device"),
])
def test_schema_rejections_name_the_key(schema, bad, where):
    with pytest.raises(ConfigError) as e:
        validate_config(bad, schema)
    assert where in str(e.value)


def _write(tmp_path, text):
    p = tmp_path / "sessions.tsv"
    p.write_text(text)
    return p


def test_read_sessions(tmp_path, sschema):
    p = _write(tmp_path, "session\tvideos\trois\tfps\tcontiguous\n"
                         "# a comment\n"
                         "m1\ta.mp4; b.mp4\tROIs.h5\t\ttrue\n"
                         "m2\tc.mp4\tconfig:face\t90\t\n"
                         "m3\td.mp4\ttemplate:m1\t\t\n")
    s = read_sessions(p, sschema, {"face": {}})
    assert [x.session for x in s] == ["m1", "m2", "m3"]
    assert s[0].videos == ("a.mp4", "b.mp4") and s[0].contiguous is True and s[0].fps is None
    assert s[1].fps == 90.0 and s[1].roi_kind == "config" and s[1].roi_ref == "face"
    assert s[2].roi_kind == "template" and s[2].roi_ref == "m1"


@pytest.mark.parametrize("rows,msg", [
    ("m1\ta.mp4\tr.h5\nm1\tb.mp4\tr.h5\n", "appears on lines 2 and 3"),
    ("bad id\ta.mp4\tr.h5\n", "line 2"),
    ("../x\ta.mp4\tr.h5\n", "line 2"),
    ("m1\ta.mp4\tconfig:nope\n", "names no set"),
    ("m1\ta.mp4\ttemplate:m9\n", "not in the sessions table"),
    ("m1\ta.mp4\ttemplate:m1\n", "itself"),
])
def test_bad_sessions(tmp_path, sschema, rows, msg):
    p = _write(tmp_path, "session\tvideos\trois\n" + rows)
    with pytest.raises(ConfigError, match=msg):
        read_sessions(p, sschema, {})


def test_bad_columns_and_values(tmp_path, sschema):
    with pytest.raises(ConfigError, match="unknown column"):
        read_sessions(_write(tmp_path, "session\tvideos\trois\tcolour\nm\ta\tb\tred\n"), sschema)
    with pytest.raises(ConfigError, match="fps must be a number"):
        read_sessions(_write(tmp_path, "session\tvideos\trois\tfps\nm\ta\tb\tfast\n"), sschema)
    with pytest.raises(ConfigError, match="not found"):
        read_sessions(tmp_path / "none.tsv", sschema)


def test_vqt_window_check(schema):
    from facerhythm_core.config import check_vqt_window

    spec = validate_config({}, schema)["spectrogram"]
    # defaults: W = ceil(4 * 120 / 1) made odd = 481 samples at 120 Hz
    assert check_vqt_window([481, 600], 120.0, spec, False, "m1") == 481
    with pytest.raises(ConfigError, match=r"session 'm1': b.mp4 has 300 frames .* window is 481"):
        check_vqt_window([600, 300], 120.0, spec, False, "m1", ["a.mp4", "b.mp4"])
    assert check_vqt_window([300, 300], 120.0, spec, True, "m1") == 481  # contiguous: 600 frames
    assert check_vqt_window([300], 120.0, {**spec, "f_min": 2.0}, False, "m1") == 241
