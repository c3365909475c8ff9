"""Config and sessions-table validation."""

import codecs
import re
import warnings
from pathlib import Path

import pytest
import numpy as np
import yaml

from facerhythm_core.config import check_vqt_window, read_sessions, validate_config
from facerhythm_core.errors import ConfigError, FaceRhythmWarning

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


@pytest.mark.parametrize(
    "bad,where",
    [
        ({"trackign": {}}, "trackign"),
        ({"tracking": {"mesh_rigidity": "stiff"}}, "tracking.mesh_rigidity"),
        ({"tracking": {"relaxation": 2}}, "tracking.relaxation"),
        ({"spectrogram": {"n_freq_bins": 0}}, "spectrogram.n_freq_bins"),
        ({"tca": {"method": "PCA"}}, "tca.method"),
        ({"device": "tpu"}, "device"),
        ({"tracking": {"criteria": [3, 2, "small"]}}, "tracking.criteria.2"),
    ],
)
def test_schema_rejections_name_the_key(schema, bad, where):
    with pytest.raises(ConfigError) as e:
        validate_config(bad, schema)
    assert where in str(e.value)


def _write(tmp_path, text):
    p = tmp_path / "sessions.tsv"
    p.write_text(text)
    return p


def test_read_sessions(tmp_path, sschema):
    p = _write(
        tmp_path,
        "session\tvideos\trois\tfps\tcontiguous\n"
        "# a comment\n"
        "m1\ta.mp4; b.mp4\tROIs.h5\t\ttrue\n"
        "m2\tc.mp4\tconfig:face\t90\t\n"
        "m3\td.mp4\ttemplate:m1\t\t\n",
    )
    s = read_sessions(p, sschema, {"face": {}})
    assert [x.session for x in s] == ["m1", "m2", "m3"]
    assert s[0].videos == ("a.mp4", "b.mp4") and s[0].contiguous is True and s[0].fps is None
    assert s[1].fps == 90.0 and s[1].roi_kind == "config" and s[1].roi_ref == "face"
    assert s[2].roi_kind == "template" and s[2].roi_ref == "m1"


@pytest.mark.parametrize(
    "rows,msg",
    [
        ("m1\ta.mp4\tr.h5\nm1\tb.mp4\tr.h5\n", "appears on lines 2 and 3"),
        ("bad id\ta.mp4\tr.h5\n", "line 2"),
        ("../x\ta.mp4\tr.h5\n", "line 2"),
        ("m1\ta.mp4\tconfig:nope\n", "names no set"),
        ("m1\ta.mp4\ttemplate:m9\n", "not in the sessions table"),
        ("m1\ta.mp4\ttemplate:m1\n", "itself"),
    ],
)
def test_bad_sessions(tmp_path, sschema, rows, msg):
    p = _write(tmp_path, "session\tvideos\trois\n" + rows)
    with pytest.raises(ConfigError, match=msg):
        read_sessions(p, sschema, {})


def test_bad_columns_and_values(tmp_path, sschema):
    with pytest.raises(ConfigError, match=r"line 2, column 'fps': fps must be a number, got 'fast'"):
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


# --------------------------------------------------------------------- spreadsheet tables

PLAIN = "session\tvideos\trois\tfps\tcontiguous\nm1\ta.mp4;b.mp4\tROIs.h5\t\ttrue\nm2\tc.mp4\tconfig:face\t90\t\n"


def _write_bytes(tmp_path, data: bytes, name="sessions.tsv"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _summary(sessions):
    return [(s.session, s.videos, s.rois, s.fps, s.contiguous) for s in sessions]


def _crlf(text):
    return text.replace("\n", "\r\n")


@pytest.mark.parametrize(
    "label,data",
    [
        # LibreOffice/Excel "UTF-8" text with a byte-order mark and Windows line ends
        ("utf-8 BOM, CRLF", b"\xef\xbb\xbf" + _crlf(PLAIN).encode()),
        # Excel "Unicode Text": UTF-16 LE with a byte-order mark, CRLF, a trailing empty column
        ("utf-16 LE BOM, trailing tab", _crlf(PLAIN.replace("\n", "\t\n")).encode("utf-16")),
        ("utf-16 BE BOM", codecs.BOM_UTF16_BE + PLAIN.encode("utf-16-be")),
        ("utf-16 LE without BOM", PLAIN.encode("utf-16-le")),
        ("utf-32 BOM", PLAIN.encode("utf-32")),
        # old Mac line ends
        ("CR only", PLAIN.replace("\n", "\r").encode()),
        # quoted cells, as spreadsheets write them
        ("quoted cells", PLAIN.replace("a.mp4;b.mp4", '"a.mp4;b.mp4"').replace("m2\t", '"m2"\t').encode()),
        # Excel "CSV UTF-8": commas, BOM, CRLF, quotes only where needed
        ("CSV UTF-8", b"\xef\xbb\xbf" + _crlf(PLAIN.replace("\t", ",")).encode()),
        # a European-locale CSV: semicolons, so the video list is quoted
        ("semicolon CSV", PLAIN.replace("a.mp4;b.mp4", '"a.mp4;b.mp4"').replace("\t", ";").encode()),
    ],
)
def test_spreadsheet_tables_read_like_the_plain_table(tmp_path, sschema, label, data):
    expected = _summary(read_sessions(_write(tmp_path, PLAIN), sschema, {"face": {}}))
    got = read_sessions(_write_bytes(tmp_path, data, "sheet.tsv"), sschema, {"face": {}})
    assert _summary(got) == expected, label
    assert [s.line for s in got] == [2, 3]


@pytest.mark.parametrize("encoding,byte", [("cp1252", "e9"), ("mac-roman", "8e")])
def test_legacy_encoding_rejected_naming_file_line_and_encoding(tmp_path, sschema, encoding, byte):
    text = "session\tvideos\trois\n# recorded by René\nm1\tvidéo.mp4\tconfig:face\n"
    p = _write_bytes(tmp_path, text.encode(encoding))
    with pytest.raises(ConfigError) as e:
        read_sessions(p, sschema, {"face": {}})
    msg = str(e.value)
    assert str(p) in msg and "not valid UTF-8" in msg and f"byte 0x{byte} on line 2, column 18" in msg
    assert "Windows-1252" in msg and "Save it as UTF-8" in msg


def test_broken_utf16_and_binary_rejected(tmp_path, sschema):
    p = _write_bytes(tmp_path, PLAIN.encode("utf-16")[:-1])  # odd byte count: truncated
    with pytest.raises(ConfigError, match=r"not valid UTF-16 \(with a byte-order mark\) text"):
        read_sessions(p, sschema)
    p = _write_bytes(tmp_path, b"session\tvideos\trois\nm1\t\x00\x01\x02\tr.h5\n")
    with pytest.raises(ConfigError, match=r"not a text file: it holds a NUL byte on line 2, column 4"):
        read_sessions(p, sschema)


def test_line_numbers_count_comment_and_blank_lines(tmp_path, sschema):
    head = "# sessions of cohort 3\n\n# columns:\nsession\tvideos\trois\tfps\n\n"
    with pytest.raises(ConfigError, match=r"sessions\.tsv, line 8, column 'fps': fps must be a number"):
        read_sessions(_write(tmp_path, head + "m1\ta.mp4\tr.h5\t\n# m2 is below\nm2\tb.mp4\tr.h5\tfast\n"), sschema)
    with pytest.raises(ConfigError, match="appears on lines 6 and 9"):
        read_sessions(_write(tmp_path, head + "m1\ta.mp4\tr.h5\t\n\n\nm1\tb.mp4\tr.h5\t\n"), sschema)
    with pytest.raises(ConfigError, match=r"line 3, column 'rois': .*names no set"):
        read_sessions(_write_bytes(tmp_path, b"session\tvideos\trois\r\n\r\nm1\ta.mp4\tconfig:x\r\n"), sschema)


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_non_finite_fps_rejected(tmp_path, sschema, value):
    p = _write(tmp_path, f"session\tvideos\trois\tfps\nm1\ta.mp4\tr.h5\t{value}\n")
    with pytest.raises(ConfigError, match=rf"line 2, column 'fps': fps must be a finite number, got '{value}'"):
        read_sessions(p, sschema)


def test_decimal_comma_and_bad_bool_named(tmp_path, sschema):
    with pytest.raises(ConfigError, match=r"column 'fps': fps must be a number, got '29,97' \(use a decimal point"):
        read_sessions(_write(tmp_path, "session\tvideos\trois\tfps\nm1\ta.mp4\tr.h5\t29,97\n"), sschema)
    with pytest.raises(
        ConfigError, match=r"line 2, column 'contiguous': contiguous must be true or false, got 'maybe'"
    ):
        read_sessions(_write(tmp_path, "session\tvideos\trois\tcontiguous\nm1\ta.mp4\tr.h5\tmaybe\n"), sschema)


def test_extra_columns_kept_and_ignored(tmp_path, sschema):
    p = _write(tmp_path, "date\tsession\tgenotype\tvideos\trois\tnotes\n2024-05-01\tm1\tVgat-Cre\ta.mp4\tr.h5\t\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for plainly unrelated columns
        (s,) = read_sessions(p, sschema)
    assert (s.session, s.videos, s.rois) == ("m1", ("a.mp4",), "r.h5")
    assert s.extra == {"date": "2024-05-01", "genotype": "Vgat-Cre", "notes": ""}


@pytest.mark.parametrize(
    "column,meant", [("FPS", "fps"), ("frame_freeze", "frames_freeze"), ("Contiguous ", "contiguous"), ("fsp", "fps")]
)
def test_misspelled_known_column_warns(tmp_path, sschema, column, meant):
    p = _write(tmp_path, f"session\tvideos\trois\t{column}\nm1\ta.mp4\tr.h5\t90\n")
    with pytest.warns(
        FaceRhythmWarning,
        match=rf"line 1 \(the header\): column '{column.strip()}' "
        rf"is not a known column and is ignored; did you mean '{meant}'",
    ):
        (s,) = read_sessions(p, sschema)
    assert s.fps is None and s.extra == {column.strip(): "90"}


def test_missing_required_column_named_with_its_misspelling(tmp_path, sschema):
    p = _write(tmp_path, "# first line is a comment\nSession\tvideo\trois\nm1\ta.mp4\tr.h5\n")
    with pytest.raises(ConfigError) as e:
        read_sessions(p, sschema)
    msg = str(e.value)
    assert "line 2 (the header): missing required column(s) ['session', 'videos']" in msg
    assert "'Session' for 'session'?" in msg and "'video' for 'videos'?" in msg


@pytest.mark.parametrize(
    "text,msg",
    [
        (
            "session\tvideos\trois\tvideos\nm1\ta\tr\tb\n",
            r"line 1 \(the header\): column 'videos' appears twice \(columns 2 and 4\)",
        ),
        ("session\tvideos\trois\nm1\ta.mp4\tr.h5\t\tx\n", r"line 2: cell 5 \('x'\) lies beyond the header's 3 columns"),
        ("session\t\tvideos\trois\nm1\tx\ta.mp4\tr.h5\n", r"line 2: cell 2 \('x'\) is in a column that has no name"),
        ('session\tvideos\trois\nm1\t"a.mp4\tr.h5\n', r"line 2: cannot split the line into cells"),
        ("session\tvideos\trois\nm1\ta.mp4\t\n", r"line 2: required column\(s\) \['rois'\] empty"),
        ("session\tvideos\trois\n# only comments\n", "has a header but no session rows"),
        ("\n# nothing\n\n", r"is empty \(no header row\)"),
    ],
)
def test_table_shape_errors(tmp_path, sschema, text, msg):
    with pytest.raises(ConfigError, match=msg):
        read_sessions(_write(tmp_path, text), sschema)


def test_reserved_and_case_colliding_session_ids(tmp_path, sschema):
    reserved = {"joint": "results/joint/ holds the joint TCAs"}
    with pytest.raises(
        ConfigError,
        match=r"line 3, column 'session': session id 'Joint' is reserved: "
        r"results/joint/ holds the joint TCAs",
    ):
        read_sessions(_write(tmp_path, "session\tvideos\trois\nm1\ta\tr\nJoint\tb\tr\n"), sschema, reserved=reserved)
    with pytest.raises(
        ConfigError,
        match=r"session ids 'M1' \(line 2\) and 'm1' \(line 3\) differ only "
        r"in letter case.* must be unique ignoring case",
    ):
        read_sessions(_write(tmp_path, "session\tvideos\trois\nM1\ta\tr\nm1\tb\tr\n"), sschema)


# --------------------------------------------------------------------- non-finite numbers


@pytest.mark.parametrize(
    "text,where",
    [
        ("tracking:\n  mesh_rigidity: .nan\n", "tracking.mesh_rigidity"),
        ("spectrogram:\n  f_min: .inf\n", "spectrogram.f_min"),
        ("spectrogram:\n  fs: .nan\n", "spectrogram.fs"),
        ("video:\n  fps_clamp: .inf\n", "video.fps_clamp"),
        ("tca:\n  tol: .nan\n", "tca.tol"),
        ("tca:\n  method_params:\n    l2_reg: -.inf\n", "tca.method_params.l2_reg"),
        ("tracking:\n  criteria: [3, 2, .nan]\n", "tracking.criteria.2"),
        ("roi_sets:\n  face:\n    cheek: [[1, 2], [3, .nan], [5, 6]]\n", "roi_sets.face.cheek.1.1"),
    ],
)
def test_non_finite_config_numbers_rejected_naming_the_key(schema, text, where):
    cfg = yaml.safe_load(text)
    with pytest.raises(ConfigError, match=rf"  {re.escape(where)}: (nan|inf|-inf) is not a finite number"):
        validate_config(cfg, schema)


def test_config_from_the_command_line_nan(schema):
    # snakemake --config parses `relaxation=nan` with float(): a real NaN, not a string
    with pytest.raises(ConfigError, match=r"tracking.relaxation: nan is not a finite number"):
        validate_config({"tracking": {"relaxation": float("nan")}}, schema)


def test_results_dir_must_name_a_folder(schema):
    for bad in ("", "/", "//"):
        with pytest.raises(ConfigError, match=r"results_dir: .* \(Folder that receives"):
            validate_config({"results_dir": bad}, schema)
    assert validate_config({"results_dir": "out/"}, schema)["results_dir"] == "out/"


def test_frames_freeze_text_as_a_spreadsheet_saves_it(tmp_path):
    from facerhythm_core.tracking_session import load_frames_freeze

    p = _write_bytes(tmp_path, "# grooming\r\n3\t5\r\n10\r\n".encode("utf-16"), "freeze.txt")
    assert np.flatnonzero(load_frames_freeze(p, 20)).tolist() == [3, 4, 5, 10]
    p = _write_bytes(tmp_path, "# toilettage à 3 s\n3 5\n".encode("cp1252"), "freeze.txt")
    with pytest.raises(
        ConfigError,
        match=rf"frames_freeze file {re.escape(str(p))} is not valid UTF-8 "
        r"text: byte 0xe0 on line 1, column 14",
    ):
        load_frames_freeze(p, 20)


# --------------------------------------------------------------------- usable length


@pytest.fixture()
def spec_same(schema):
    return {**validate_config({}, schema)["spectrogram"], "padding": "same"}


@pytest.mark.parametrize("frames", [[1], [2], [19], [600, 2]])
def test_too_short_for_a_time_bin_under_same_padding(spec_same, frames):
    names = [f"v{i}.mp4" for i in range(len(frames))]
    with pytest.raises(
        ConfigError,
        match=rf"session 'm1': v{len(frames) - 1}.mp4 has {frames[-1]} "
        r"frame\(s\) .* with padding 'same' it needs at least 20 frames",
    ):
        check_vqt_window(frames, 120.0, spec_same, False, "m1", names)


def test_same_padding_accepts_one_full_bin_and_joined_videos(spec_same):
    assert check_vqt_window([20], 120.0, spec_same, False, "m1") == 481  # shorter than W: allowed
    assert check_vqt_window([10, 10], 120.0, spec_same, True, "m1") == 481  # contiguous: 20 frames
    with pytest.raises(ConfigError, match="needs at least 2 frames"):
        check_vqt_window([1], 120.0, {**spec_same, "downsample_factor": 1}, False, "m1")


def test_tca_time_bins_checked_in_frames(schema, spec_same):
    cfg = validate_config({}, schema)
    spec, tca = cfg["spectrogram"], cfg["tca"]
    # valid: W = 481, ds = 20: 600 frames give ceil(120 / 20) = 6 bins < rank 10; 661 give 10
    with pytest.raises(
        ConfigError,
        match=r"session 'm1': a.mp4 has 600 frames, which give 6 spectrogram "
        r"time bin\(s\) \(padding 'valid', window 481, downsample_factor "
        r"20\), but TCA needs 10 along time \(tca.rank 10\), i.e. at "
        r"least 661 frames",
    ):
        check_vqt_window([600], 120.0, spec, False, "m1", ["a.mp4"], tca=tca)
    assert check_vqt_window([661], 120.0, spec, False, "m1", tca=tca) == 481
    # same: ceil(S / 20) bins; 181 frames give 10
    assert check_vqt_window([181], 120.0, spec_same, False, "m1", tca=tca) == 481
    with pytest.raises(ConfigError, match=r"at least 181 frames"):
        check_vqt_window([180], 120.0, spec_same, False, "m1", tca=tca)
    # joined by tca.videos: concatenate (10 + 10 bins), or not checked here with time windows
    assert check_vqt_window([200, 200], 120.0, spec_same, False, "m1", tca={**tca, "rank": 20, "videos": "concatenate"})
    assert check_vqt_window([40], 120.0, spec_same, False, "m1", tca={**tca, "windows": [0, 1]})
    # the largest swept rank counts; 2 bins to normalise over time; complex_unfold doubles time
    with pytest.raises(ConfigError, match=r"TCA needs 12 along time \(tca.rank_sweep.ranks up to 12\)"):
        check_vqt_window(
            [200],
            120.0,
            spec_same,
            False,
            "m1",
            tca={**tca, "rank_sweep": {"enabled": True, "ranks": [2, 12], "seeds": [0]}},
        )
    with pytest.raises(ConfigError, match=r"TCA needs 2 along time \(normalising over time"):
        check_vqt_window([20], 120.0, spec_same, False, "m1", tca={**tca, "rank": 1})
    assert check_vqt_window([100], 120.0, spec_same, False, "m1", tca={**tca, "complex_unfold": True})


def test_template_loop_and_repeated_video_named(tmp_path, sschema):
    text = (
        "session\tvideos\trois\n# day 1 and 2 take each other's ROIs\n"
        "d1\ta.mp4\ttemplate:d2\nd2\tb.mp4\ttemplate:d3\nd3\tc.mp4\ttemplate:d1\nd4\te.mp4\ttemplate:d1\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"line 3, column 'rois': template sessions form a loop: 'd1' "
        r"\(line 3\) -> 'd2' \(line 4\) -> 'd3' \(line 5\) -> 'd1' \(line 3\)",
    ):
        read_sessions(_write(tmp_path, text), sschema)
    # a chain that ends at a session with its own ROIs is fine
    chain = read_sessions(_write(tmp_path, text.replace("template:d1\nd4", "r.h5\nd4")), sschema)
    assert [s.roi_ref for s in chain] == ["d2", "d3", "r.h5", "d1"]
    with pytest.raises(
        ConfigError,
        match=r"line 2, column 'videos': session 'm1' lists \['a.mp4'\] more "
        r"than once",
    ):
        read_sessions(_write(tmp_path, "session\tvideos\trois\nm1\ta.mp4; b.mp4;a.mp4\tr.h5\n"), sschema)
