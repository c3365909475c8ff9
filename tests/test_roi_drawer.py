"""The browser ROI drawer: save/load round trip, the HTTP API, and an end-to-end
drawing session in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage

from facerhythm_core.errors import ConfigError, ROIError, VideoError
from facerhythm_core.io import read_provenance
from facerhythm_core.roi_drawer import (
    STATIC_DIR,
    DrawerApp,
    build_app,
    _parser,
    main,
    make_server,
    resolve_source,
    ssh_hint,
)
from facerhythm_core.roi_drawing import Drawing, drawing_from_payload, drawing_to_rois, load_drawing, save_drawing
from facerhythm_core.rois import ROISet, build_session_rois, load_rois_h5, make_points, polygon_mask, save_rois_h5

REPO = Path(__file__).resolve().parents[1]
H, W = 150, 200
FACE = [[40.0, 30.0], [150.0, 35.0], [165.0, 100.0], [100.0, 130.0], [30.0, 95.0]]
NOSE = [[120.0, 60.0], [180.0, 60.0], [180.0, 140.0], [120.0, 140.0]]


def _image(seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (H, W, 3), dtype=np.uint8)


def _drawing(**kw):
    d = Drawing(
        polygons={"face": np.array(FACE, np.float32), "nose": np.array(NOSE, np.float32)},
        point_rois=["face"],
        point_spacing=7,
        shape=(H, W),
        example_image=_image(),
        frame_index=3,
    )
    for k, v in kw.items():
        setattr(d, k, v)
    return d


@pytest.fixture(scope="module")
def small_video(tmp_path_factory):
    """A 12-frame 200x150 MPEG-4 video with a bright disc that drifts right."""
    import cv2

    p = tmp_path_factory.mktemp("drawer_video") / "face.mp4"
    vw = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*"mp4v"), 30, (W, H))
    if not vw.isOpened():
        pytest.skip("OpenCV cannot write MPEG-4 video here")
    for i in range(12):
        f = np.full((H, W, 3), 40, np.uint8)
        cv2.circle(f, (90 + 3 * i, 75), 45, (200, 180, 160), -1)
        cv2.circle(f, (70 + 3 * i, 60), 6, (20, 20, 20), -1)
        vw.write(f)
    vw.release()
    return p


# ----------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    out = tmp_path / "rois" / "ROIs.h5"
    d = _drawing()
    written = save_drawing(out, d, video=None)
    back = load_drawing(out)
    assert list(back.polygons) == ["face", "nose"]  # drawing order kept
    for k in d.polygons:
        np.testing.assert_allclose(back.polygons[k], d.polygons[k], atol=1e-4)
    assert back.point_rois == ["face"] and back.point_spacing == 7 and back.frame_index == 3
    assert back.shape == (H, W) and back.notes == []
    np.testing.assert_array_equal(back.example_image, d.example_image)
    # the workflow's reader sees the same masks and points
    rois = load_rois_h5(out)
    for k, poly in d.polygons.items():
        np.testing.assert_array_equal(rois.masks[k], polygon_mask(poly, (H, W)))
    np.testing.assert_array_equal(rois.point_positions, make_points(rois.masks["face"], 7))
    np.testing.assert_array_equal(rois.point_positions, written.point_positions)
    with h5py.File(out) as f:
        assert f.attrs["point_spacing"] == 7
        assert json.loads(f.attrs["point_rois"]) == ["face"]
        assert int(f["num_points"][()]) == len(rois.point_positions)
        assert f["exampleImage"].dtype == np.uint8 and f["exampleImage"].shape == (H, W, 3)
        prov = read_provenance(f)
    assert prov["stage"] == "roi_drawer" and prov["params"]["point_spacing"] == 7
    # saving what was loaded writes the same file content
    out2 = tmp_path / "again.h5"
    save_drawing(out2, back)
    np.testing.assert_array_equal(load_rois_h5(out2).point_positions, rois.point_positions)


def test_saved_points_are_what_the_workflow_tracks(tmp_path):
    """The rois rule keeps the file's points, so preview == workflow."""
    out = tmp_path / "ROIs.h5"
    d = _drawing(point_rois=["face", "nose"], point_spacing=5)
    preview = drawing_to_rois(d).point_positions
    save_drawing(out, d)
    rois, tracking_mask = build_session_rois(
        str(out), (H, W), roi_file=str(out), point_rois=[0], point_spacing=9, use_file_points=True
    )
    np.testing.assert_array_equal(rois.point_positions, preview)
    both = polygon_mask(FACE, (H, W)) & polygon_mask(NOSE, (H, W))
    xy = preview.astype(int)
    assert both[xy[:, 1], xy[:, 0]].all()  # the grid lies in the intersection
    assert tracking_mask.sum() == (polygon_mask(FACE, (H, W)) | polygon_mask(NOSE, (H, W))).sum()


def test_load_reference_layout_file(tmp_path):
    """face-rhythm's files name polygons ROI_i and masks mask_i, and store a float image."""
    p = tmp_path / "ref.h5"
    m0, m1 = polygon_mask(FACE, (H, W)), polygon_mask(NOSE, (H, W))
    pts = make_points([m0], 13)
    with h5py.File(p, "w") as f:
        f.create_dataset("mask_images/mask_0", data=m0)
        f.create_dataset("mask_images/mask_1", data=m1)
        f.create_dataset("roi_points/ROI_0", data=np.array(FACE, np.float64))
        f.create_dataset("roi_points/ROI_1", data=np.array(NOSE + [[205.0, 160.0]], np.float64))
        f.create_dataset("point_positions", data=pts)
        f.create_dataset("exampleImage", data=_image().astype(np.float32) / 255)
    d = load_drawing(p)
    assert list(d.polygons) == ["mask_0", "mask_1"]
    np.testing.assert_allclose(d.polygons["mask_0"], FACE)
    assert d.polygons["mask_1"][:, 0].max() == W - 1 and d.polygons["mask_1"][:, 1].max() == H - 1
    assert any("outside the frame" in n for n in d.notes)
    assert d.point_rois == ["mask_0"] and d.point_spacing == 13
    np.testing.assert_array_equal(drawing_to_rois(d).point_positions, pts)
    assert d.example_image.dtype == np.uint8
    with pytest.raises(ROIError, match="video is 100x80"):
        load_drawing(p, shape=(80, 100))


def test_load_traces_masks_without_polygons(tmp_path):
    p = tmp_path / "masks_only.h5"
    m = polygon_mask(FACE, (H, W))
    save_rois_h5(p, ROISet(masks={"cheek": m}))
    d = load_drawing(p)
    assert list(d.polygons) == ["cheek"] and "traced" in d.notes[0]
    traced = polygon_mask(d.polygons["cheek"], (H, W))
    iou = (traced & m).sum() / (traced | m).sum()
    assert iou > 0.95


def test_payload_validation():
    ok = {"rois": [{"name": "face", "points": FACE, "use_for_points": True}], "point_spacing": 4}
    d = drawing_from_payload(ok, (H, W))
    assert d.point_rois == ["face"] and d.point_spacing == 4 and d.polygons["face"].dtype == np.float32
    bad_names = ["", "a b", "a/b", "-x", "x" * 65]
    for n in bad_names:
        with pytest.raises(ROIError, match="not allowed"):
            drawing_from_payload({"rois": [{"name": n, "points": FACE}]}, (H, W))
    with pytest.raises(ROIError, match="two ROIs are named 'face'"):
        drawing_from_payload({"rois": [{"name": "face", "points": FACE}] * 2}, (H, W))
    with pytest.raises(ROIError, match="spacing must be >= 1"):
        drawing_from_payload({**ok, "point_spacing": 0}, (H, W))
    with pytest.raises(ROIError, match="whole number"):
        drawing_from_payload({**ok, "point_spacing": 2.5}, (H, W))
    with pytest.raises(ROIError, match=r"\[x, y\] pairs"):
        drawing_from_payload({"rois": [{"name": "face", "points": [1, 2, 3]}]}, (H, W))
    with pytest.raises(ROIError, match="no 'rois' list"):
        drawing_from_payload({}, (H, W))


def test_drawing_errors_name_the_fix():
    with pytest.raises(ROIError, match="no ROI drawn"):
        drawing_to_rois(Drawing(shape=(H, W)))
    with pytest.raises(ROIError, match="tick 'points'"):
        drawing_to_rois(_drawing(point_rois=[]))
    apart = {
        "a": np.array([[0, 0], [20, 0], [20, 20]], np.float32),
        "b": np.array([[150, 100], [190, 100], [190, 140]], np.float32),
    }
    with pytest.raises(ROIError, match="intersection of the point ROIs is empty"):
        drawing_to_rois(_drawing(polygons=apart, point_rois=["a", "b"]))
    with pytest.raises(ROIError, match="outside the 200x150 frame"):
        drawing_to_rois(_drawing(polygons={"face": np.array([[0, 0], [250, 0], [10, 10]], np.float32)}))


# ----------------------------------------------------------------- sources / CLI


def test_resolve_source(tmp_path, small_video):
    assert resolve_source(small_video, tmp_path / "none.tsv") == small_video
    tsv = tmp_path / "sessions.tsv"
    tsv.write_text(
        "session\tvideos\trois\n# a comment\n"
        f"mouseA\t{small_video};other.mp4\tconfig:x\n"
        "mouseB\tmissing/vid.mp4\tconfig:x\n"
    )
    assert resolve_source("mouseA", tsv) == small_video
    with pytest.raises(VideoError, match="first video missing/vid.mp4 does not exist"):
        resolve_source("mouseB", tsv)
    with pytest.raises(ConfigError, match=r"neither a file nor a session .*mouseA"):
        resolve_source("mouseC", tsv)
    with pytest.raises(VideoError, match="file not found"):
        resolve_source(str(tmp_path / "nope.mp4"), tsv)
    with pytest.raises(ConfigError, match="--sessions"):
        resolve_source("mouseA", tmp_path / "none.tsv")
    # the same table saved by a spreadsheet: byte-order mark, CRLF
    sheet = tmp_path / "sheet.tsv"
    sheet.write_bytes(b"\xef\xbb\xbf" + tsv.read_text().replace("\n", "\r\n").encode())
    assert resolve_source("mouseA", sheet) == small_video


def test_build_app_edits_existing_out_file(tmp_path, small_video):
    out = tmp_path / "ROIs.h5"
    save_drawing(out, _drawing(frame_index=5), video=small_video)
    args = _parser().parse_args([str(small_video), "--out", str(out)])
    app = build_app(args)
    assert list(app.drawing.polygons) == ["face", "nose"] and app.frame_index == 5
    assert app.video == small_video and app.shape == (H, W)
    app = build_app(_parser().parse_args([str(small_video), "--out", str(out), "--new"]))
    assert app.drawing.polygons == {} and app.frame_index == 0
    # an ROIs.h5 as the source: edit without the video, on its stored image
    app = build_app(_parser().parse_args([str(out), "--out", str(tmp_path / "copy.h5")]))
    assert app.video is None and app.file_image.shape == (H, W, 3)
    assert main([str(tmp_path / "missing.mp4"), "--out", str(out)]) == 2


def test_ssh_hint_names_tunnel_and_url():
    s = ssh_hint(8765, user="me", machine="login.cluster")
    assert "http://127.0.0.1:8765/" in s
    assert "ssh -N -L 8765:127.0.0.1:8765 me@login.cluster" in s


def test_static_files_load_nothing_from_outside():
    names = sorted(p.name for p in STATIC_DIR.iterdir())
    assert names == ["app.js", "index.html", "style.css"]
    for p in STATIC_DIR.iterdir():
        text = p.read_text()
        for url in ("https://", "//cdn", "@import", "googleapis"):
            assert url not in text, f"{p.name} refers to {url}"
        # the only http:// is the SVG namespace name, which browsers never fetch
        assert text.count("http://") == text.count("http://www.w3.org/2000/svg"), p.name


# ----------------------------------------------------------------- HTTP API


@pytest.fixture()
def served(tmp_path, small_video):
    app = DrawerApp(tmp_path / "out" / "ROIs.h5", video=small_video, point_spacing=6)
    srv = make_server(app, "127.0.0.1", 0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield app, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _req(url, body=None, token=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        h["X-Drawer-Token"] = token
    h.update(headers or {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=h), timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def test_http_api(served, small_video):
    import cv2

    from facerhythm_core.video import read_frame

    app, url = served
    status, ctype, body = _req(url + "/")
    assert status == 200 and ctype.startswith("text/html")
    assert app.token in body.decode() and "{{TOKEN}}" not in body.decode()
    for name, kind in [("app.js", "javascript"), ("style.css", "css")]:
        status, ctype, _ = _req(f"{url}/static/{name}")
        assert status == 200 and kind in ctype
    assert _req(url + "/static/../roi_drawer.py")[0] == 404
    assert _req(url + "/static/%2e%2e%2froi_drawer.py")[0] == 404
    st = json.loads(_req(url + "/api/state")[2])
    assert (st["width"], st["height"], st["num_frames"], st["point_spacing"]) == (W, H, 12, 6)
    status, ctype, png = _req(url + "/api/frame.png?i=0")
    assert status == 200 and ctype == "image/png"
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img, read_frame(small_video, 0))
    status, _, png7 = _req(url + "/api/frame.png?i=7")
    assert status == 200 and png7 != png
    assert _req(url + "/api/frame.png?i=99")[0] == 400

    payload = {
        "rois": [
            {"name": "face", "points": FACE, "use_for_points": True},
            {"name": "nose", "points": NOSE, "use_for_points": False},
        ],
        "point_spacing": 8,
        "frame_index": 7,
    }
    # POSTs need the page's token and JSON; a foreign Host is refused (DNS rebinding)
    assert _req(url + "/api/preview", payload)[0] == 403
    assert _req(url + "/api/preview", payload, token="wrong")[0] == 403
    assert _req(url + "/api/preview", payload, token=app.token, headers={"Content-Type": "text/plain"})[0] == 415
    assert _req(url + "/api/state", headers={"Host": "evil.example:80"})[0] == 403

    status, _, body = _req(url + "/api/preview", payload, token=app.token)
    prev = json.loads(body)
    assert status == 200 and prev["n_points"] == len(prev["points"])
    np.testing.assert_array_equal(np.array(prev["points"], np.float32), make_points(polygon_mask(FACE, (H, W)), 8))
    assert prev["areas"]["nose"] == polygon_mask(NOSE, (H, W)).sum()
    bad = {**payload, "rois": [{"name": "face", "points": FACE[:2], "use_for_points": True}]}
    status, _, body = _req(url + "/api/preview", bad, token=app.token)
    assert status == 400 and "at least 3" in json.loads(body)["error"]

    status, _, body = _req(url + "/api/save", payload, token=app.token)
    saved = json.loads(body)
    assert status == 200 and saved["n_points"] == prev["n_points"] and saved["names"] == ["face", "nose"]
    rois = load_rois_h5(app.out)
    np.testing.assert_array_equal(rois.point_positions, np.array(prev["points"], np.float32))
    from facerhythm_core.roi_drawer import read_example_frame

    np.testing.assert_array_equal(rois.example_image, read_example_frame(small_video, 7))
    with h5py.File(app.out) as f:
        assert f.attrs["frame_index"] == 7 and f.attrs["video"] == str(small_video)

    status, _, body = _req(url + "/api/load", {"path": str(app.out)}, token=app.token)
    st = json.loads(body)
    assert status == 200 and [r["name"] for r in st["rois"]] == ["face", "nose"]
    assert st["point_spacing"] == 8 and st["frame_index"] == 7
    assert [r["use_for_points"] for r in st["rois"]] == [True, False]
    status, _, body = _req(url + "/api/load", {"path": str(app.out) + ".nope"}, token=app.token)
    assert status == 400 and "not found" in json.loads(body)["error"]


# ----------------------------------------------------------------- browser


def _find_chromium():
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if os.path.exists("/usr/bin/chromedriver") else None
    )
    return browser, driver


@pytest.fixture(scope="module")
def chrome():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[test]')")
    browser, driver = _find_chromium()
    if not (browser and driver):
        script = REPO / "tools" / "install_browser_test_deps.sh"
        if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
            r = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                pytest.skip(f"installing Chromium failed: {r.stderr.strip()[-500:]}")
            browser, driver = _find_chromium()
        if not (browser and driver):
            pytest.skip(
                "headless Chromium and chromedriver are not installed and cannot be installed "
                "here (needs root on Debian/Ubuntu); run tools/install_browser_test_deps.sh"
            )
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--force-device-scale-factor=1",
        "--no-first-run",
    ):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def _wait(cond, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.browser
def test_draw_edit_save_in_chromium(chrome, tmp_path, small_video):
    """Click a polygon, edit it, delete a second one, set the spacing, save; the file
    matches the clicks within a pixel and the page's preview."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from facerhythm_core.video import read_frame

    out = tmp_path / "drawn" / "ROIs.h5"
    app = DrawerApp(out, video=small_video)
    srv = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    d = chrome
    try:
        d.get(f"http://127.0.0.1:{srv.server_address[1]}/")
        _wait(lambda: d.execute_script("return document.body.dataset.ready === '1'"), what="page ready")
        _wait(
            lambda: d.execute_script(
                "const i = document.getElementById('frame');return i.getBoundingClientRect().width > 0"
            ),
            what="frame shown",
        )
        # image pixel (x, y) -> viewport px, from the layout of the <image> (spans -0.5..W-0.5)
        rect = d.execute_script(
            "const r = document.getElementById('frame').getBoundingClientRect();"
            "return [r.left, r.top, r.width, r.height];"
        )
        sx, sy = rect[2] / W, rect[3] / H
        assert sx > 2 and abs(sx - sy) < 1e-3  # the frame is shown enlarged, undistorted

        def screen(x, y):
            return int(round(rect[0] + (x + 0.5) * sx)), int(round(rect[1] + (y + 0.5) * sy))

        def click_at(x, y):
            ab = ActionBuilder(d)
            ab.pointer_action.move_to_location(*screen(x, y)).click()
            ab.perform()

        def drag(p, q):
            ab = ActionBuilder(d)
            ab.pointer_action.move_to_location(*screen(*p)).pointer_down()
            ab.pointer_action.move_to_location(*screen((p[0] + q[0]) / 2, (p[1] + q[1]) / 2))
            ab.pointer_action.move_to_location(*screen(*q)).pointer_up()
            ab.perform()

        def draw(poly):
            d.find_element(By.ID, "add-roi").click()
            for x, y in poly:
                click_at(x, y)
            click_at(*poly[0])  # clicking the first corner closes the polygon

        def shift_click_at(x, y):
            ab = ActionBuilder(d)
            ab.key_action.key_down(Keys.SHIFT)
            ab.pointer_action.pause(0)
            ab.pointer_action.move_to_location(*screen(x, y)).pointer_down().pointer_up()
            for _ in range(3):
                ab.key_action.pause(0)
            ab.key_action.key_up(Keys.SHIFT)
            ab.perform()

        def corners(i):
            info = d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-info")[i].text
            return int(info.split()[0])

        draw(FACE)
        d.find_element(By.ID, "add-roi").click()  # the nose is closed by a double-click
        for x, y in NOSE[:-1]:
            click_at(x, y)
        ab = ActionBuilder(d)
        ab.pointer_action.move_to_location(*screen(*NOSE[-1])).double_click()
        ab.perform()
        _wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-item")) == 2, what="2nd ROI")
        assert corners(1) == 4
        items = d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-item")
        assert [i.find_element(By.CLASS_NAME, "roi-name").get_attribute("value") for i in items] == ["roi_1", "roi_2"]
        # edit: select the face and drag its third corner; delete the second ROI
        click_at(60, 60)  # inside the face, outside the nose
        mid = ((FACE[0][0] + FACE[1][0]) / 2, (FACE[0][1] + FACE[1][1]) / 2)
        click_at(*mid)  # a click on an edge adds a corner ...
        _wait(lambda: corners(0) == 6, what="corner added")
        shift_click_at(*mid)  # ... and shift+click deletes it again
        _wait(lambda: corners(0) == 5, what="corner deleted")
        drag(FACE[2], (170.0, 110.0))
        face = [list(p) for p in FACE]
        face[2] = [170.0, 110.0]
        items = d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-item")  # the list was re-rendered
        items[1].find_element(By.CLASS_NAME, "roi-del").click()
        _wait(lambda: len(d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-item")) == 1, what="ROI deleted")
        name = d.find_element(By.CSS_SELECTOR, "#roi-list .roi-name")
        name.send_keys(Keys.CONTROL, "a")
        name.send_keys("face", Keys.ENTER)
        spacing = d.find_element(By.ID, "spacing")
        spacing.send_keys(Keys.CONTROL, "a")
        spacing.send_keys("5")
        expected_mask = polygon_mask(face, (H, W))
        expected_pts = make_points(expected_mask, 5)
        text = _wait(
            lambda: (
                (t := d.find_element(By.ID, "n-points").text).endswith("seed points")
                and abs(int(t.split()[0]) - len(expected_pts)) <= 0.1 * len(expected_pts)
                and t
            ),
            what="preview with spacing 5",
        )
        d.find_element(By.ID, "save").click()
        status = _wait(
            lambda: (s := d.find_element(By.ID, "status").text).startswith(("Saved", "Not saved")) and s, what="save"
        )
        shot = tmp_path / "roi_drawer.png"
        d.save_screenshot(str(shot))
        if os.environ.get("FACERHYTHM_TEST_ARTIFACTS"):
            shutil.copy(shot, Path(os.environ["FACERHYTHM_TEST_ARTIFACTS"]) / shot.name)
        assert status.startswith("Saved"), status
        assert shot.stat().st_size > 10_000

        rois = load_rois_h5(out)
        assert rois.names == ["face"]
        verts = rois.polygons["face"]
        assert verts.shape == (5, 2)
        np.testing.assert_allclose(verts, face, atol=1.0)  # the clicks, within a pixel
        mask = rois.masks["face"]
        np.testing.assert_array_equal(mask, polygon_mask(verts, (H, W)))  # the workflow's raster
        one_px = np.ones((3, 3), bool)
        assert not (mask & ~ndimage.binary_dilation(expected_mask, one_px)).any()
        assert not (expected_mask & ~ndimage.binary_dilation(mask, one_px)).any()
        pts = rois.point_positions
        np.testing.assert_array_equal(pts, make_points(mask, 5))  # grid of the saved mask
        assert int(text.split()[0]) == len(pts)  # what the page showed is what was saved
        # and each point is within a pixel of the grid the intended polygon gives
        dist = np.abs(pts[:, None, :] - expected_pts[None, :, :]).max(axis=2).min(axis=1)
        assert dist.max() <= 1.0 and abs(len(pts) - len(expected_pts)) <= 0.1 * len(expected_pts)
        np.testing.assert_array_equal(rois.example_image, read_frame(small_video, 0))
        with h5py.File(out) as f:
            assert f.attrs["point_spacing"] == 5

        # reopening the page shows the saved ROI for further editing
        d.refresh()
        _wait(lambda: d.execute_script("return document.body.dataset.ready === '1'"), what="reload")
        names = [e.get_attribute("value") for e in d.find_elements(By.CSS_SELECTOR, "#roi-list .roi-name")]
        assert names == ["face"] and d.find_element(By.ID, "spacing").get_attribute("value") == "5"
        errors = [e["message"] for e in d.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors  # no JavaScript error and no failed request along the way
    finally:
        srv.shutdown()
        srv.server_close()


def test_cli_serves_and_quits(tmp_path):
    """`python -m facerhythm_core.roi_drawer ROIs.h5 --out ...` prints the URL and the
    ssh hint, serves the page, and stops on /api/quit."""
    import re
    import sys

    src = tmp_path / "drawn.h5"
    save_drawing(src, _drawing())
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facerhythm_core.roi_drawer",
            str(src),
            "--out",
            str(tmp_path / "edited.h5"),
            "--port",
            "0",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = proc.stdout.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert m, first + proc.stderr.read() if proc.poll() is not None else first
        assert "ssh -N -L" in proc.stdout.readline() + proc.stdout.readline()
        url = f"http://127.0.0.1:{m.group(1)}"
        html = _req(url + "/")[2].decode()
        token = re.search(r'name="drawer-token" content="([^"]+)"', html).group(1)
        st = json.loads(_req(url + "/api/state")[2])
        assert st["video"] is None and [r["name"] for r in st["rois"]] == ["face", "nose"]
        assert _req(url + "/api/quit", {}, token=token)[0] == 200
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
