"""Videos on remote storage, named by URL in the sessions table and retrieved through
Snakemake's storage plugins: S3 (an S3-compatible server, moto's), SFTP (an sshd) and
HTTP, each started on 127.0.0.1 by the test itself and stopped by it.

A video is downloaded once per run whatever number of jobs read it, and (storage.
keep_local, the default) not again in a later run; a missing file, a URL no plugin
handles and a server that does not answer stop the DAG build, naming the URL, the
session and its table line, before any job runs.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
KEY = "cohort1/mouseA_1.mp4"


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}): {proc.stderr.read()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """A short demo face video (600 frames, 120 fps: one spectrogram window and more)."""
    from facerhythm_core.demo import write_demo_video

    p = tmp_path_factory.mktemp("video") / "mouseA_1.mp4"
    write_demo_video(p, n_frames=600)
    return p


def project(tmp: Path, videos: dict[str, str], storage: dict | None = None) -> Path:
    """A project folder: the repository's config, a small TCA, the sessions given by URL
    (with a column of the lab's own, kept and ignored)."""
    wd = tmp / "project"
    shutil.copytree(REPO / "config", wd / "config")
    cfg = yaml.safe_load((wd / "config" / "config.yaml").read_text())
    cfg["tca"].update(rank=2, n_iter_max=10, joint={})
    cfg["nwb"]["enabled"] = False  # export needs each session's start time, not given here
    if storage is not None:
        cfg["storage"] = storage
    (wd / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    rows = "".join(f"{s}\t{v}\tconfig:demo_face\tWT\n" for s, v in videos.items())
    (wd / "config" / "sessions.tsv").write_text("session\tvideos\trois\tgenotype\n" + rows)
    return wd


def snakemake(wd: Path, *args, env: dict | None = None, check: bool = True):
    cmd = [SNAKEMAKE, "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(wd), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
        )
    return r


# --- S3 ------------------------------------------------------------------------------


class CountingApp:
    """WSGI middleware: counts requests by (method, path)."""

    def __init__(self, app):
        self.app, self.requests = app, Counter()

    def __call__(self, environ, start_response):
        self.requests[(environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""))] += 1
        return self.app(environ, start_response)


@pytest.fixture(scope="module")
def s3(video):
    """moto's S3 server on 127.0.0.1 with bucket 'lab' holding the video; stopped after."""
    pytest.importorskip("moto")
    import boto3
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    creds = {"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing", "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing"}
    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    client.create_bucket(Bucket="lab")
    client.upload_file(str(video), "lab", KEY)
    try:
        yield url, app, creds
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)
        assert not t.is_alive()


def gets(app: CountingApp, bucket: str = "lab", key: str = KEY) -> int:
    return app.requests[("GET", f"/{bucket}/{key}")]


@pytest.mark.slow
def test_s3_video_is_downloaded_once_and_kept(s3, tmp_path):
    url, app, creds = s3
    # the endpoint in the config, the keys in the environment (not in a file)
    wd = project(tmp_path, {"s1": f"s3://lab/{KEY}"}, storage={"s3": {"endpoint_url": url}})
    before = gets(app)
    snakemake(wd, "-j2", "results/s1/tracking.h5", env=creds)
    # probe_videos, rois and track_points read it: one download
    assert gets(app) - before == 1
    assert json.loads((wd / "results" / "s1" / "videos.json").read_text())["videos"][0]["num_frames"] == 600
    local = wd / ".snakemake" / "storage" / "s3" / "lab" / KEY
    assert local.is_file() and local.stat().st_size > 0  # storage.keep_local: kept
    # a later run that reads the video again (the overlay figure): no download
    snakemake(wd, "-j2", "results/s1/figures/overlay.mp4", env=creds)
    assert gets(app) - before == 1
    assert (wd / "results" / "s1" / "figures" / "overlay.mp4").stat().st_size > 0
    summary = (wd / "logs" / "run_summary.tsv").read_text()
    assert "s1\ttrack_points\tdone" in summary


@pytest.mark.slow
def test_s3_local_copy_not_kept_when_asked(s3, tmp_path):
    url, app, creds = s3
    wd = project(tmp_path, {"s1": f"s3://lab/{KEY}"}, storage={"s3": {"endpoint_url": url}, "keep_local": False})
    before = gets(app)
    snakemake(wd, "-j1", "results/s1/videos.json", env=creds)
    assert gets(app) - before == 1
    assert (wd / "results" / "s1" / "videos.json").is_file()
    assert not (wd / ".snakemake" / "storage" / "s3" / "lab" / KEY).exists()


def test_remote_problems_stop_the_dag_build_naming_url_and_session(s3, tmp_path):
    url, app, creds = s3
    wd = project(
        tmp_path,
        {
            "ok": f"s3://lab/{KEY}",
            "missing": "s3://lab/cohort1/nothere.mp4",
            "nobucket": f"s3://no-such-bucket/{KEY}",
            "typo": f"s4://lab/{KEY}",
            "down": f"http://127.0.0.1:{closed_port()}/mouseA_1.mp4",
        },
        storage={"s3": {"endpoint_url": url}},
    )
    r = snakemake(wd, "-n", env=creds, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "session 'ok'" not in out
    assert (
        "session 'missing': video not found on remote storage: s3://lab/cohort1/nothere.mp4 "
        "(config/sessions.tsv, line 3, column 'videos')"
    ) in out, out[-4000:]
    assert (
        f"session 'nobucket': video not found on remote storage: s3://no-such-bucket/{KEY} "
        "(config/sessions.tsv, line 4" in out
    )
    assert re.search(
        rf"session 'typo': no storage plugin handles the video URL s4://lab/{KEY} "
        r"\(config/sessions.tsv, line 5, column 'videos'\); check the URL, or install the "
        r"plugin for it \(installed: [^)]*s3",
        out,
    ), out[-4000:]
    assert re.search(
        r"session 'down': cannot reach the video http://127\.0\.0\.1:\d+/mouseA_1\.mp4: "
        r".*Connection refused.*\(config/sessions.tsv, line 6, column 'videos'\)",
        out,
    ), out[-4000:]
    assert not (wd / "results").exists() and not (wd / "logs").exists()


def test_unreachable_s3_endpoint_stops_the_dag_build(tmp_path):
    pytest.importorskip("snakemake_storage_plugin_s3")
    port = closed_port()
    wd = project(
        tmp_path, {"s1": f"s3://lab/{KEY}"}, storage={"s3": {"endpoint_url": f"http://127.0.0.1:{port}", "retries": 1}}
    )
    t0 = time.monotonic()
    r = snakemake(
        wd, "-n", env={"SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "x", "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "y"}, check=False
    )
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert re.search(
        rf"session 's1': cannot reach the video s3://lab/{re.escape(KEY)}: .*127\.0\.0\.1:{port}.*"
        r"\(config/sessions.tsv, line 2, column 'videos'\)",
        out,
    ), out[-4000:]
    assert time.monotonic() - t0 < 300
    assert not (wd / "results").exists()


def test_storage_settings_are_checked(tmp_path):
    pytest.importorskip("snakemake_storage_plugin_s3")
    wd = project(
        tmp_path, {"s1": f"s3://lab/{KEY}"}, storage={"s3": {"endpoint": "http://127.0.0.1:9"}, "nosuchplugin": {}}
    )
    r = snakemake(wd, "-n", check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "config storage.s3: unknown setting(s) endpoint; the s3 plugin takes: " in out and "endpoint_url" in out
    assert (
        "config storage.nosuchplugin: the Snakemake storage plugin 'nosuchplugin' is not installed "
        "(pip install snakemake-storage-plugin-nosuchplugin)"
    ) in out


# --- HTTP ------------------------------------------------------------------------------


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requests.append((self.command, self.path))


@pytest.mark.slow
def test_http_video(video, tmp_path):
    pytest.importorskip("snakemake_storage_plugin_http")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(video.parent)))
    srv.requests = []
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        wd = project(tmp_path, {"s1": f"{base}/{video.name}", "gone": f"{base}/nothere.mp4"})
        r = snakemake(wd, "-n", check=False)
        assert (
            f"session 'gone': video not found on remote storage: {base}/nothere.mp4 "
            "(config/sessions.tsv, line 3, column 'videos')"
        ) in r.stdout + r.stderr
        (wd / "config" / "sessions.tsv").write_text(
            f"session\tvideos\trois\ns1\t{base}/{video.name}\tconfig:demo_face\n"
        )
        snakemake(wd, "-j2", "results/s1/rois.h5")
        assert [p for m, p in srv.requests if m == "GET"].count(f"/{video.name}") == 1
        assert (wd / "results" / "s1" / "rois.h5").is_file()
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(timeout=10)


# --- SFTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sshd(video, tmp_path_factory):
    """OpenSSH's sshd on 127.0.0.1 (key login only, SFTP), serving the video; a home folder
    whose ~/.ssh holds the client key and the server's host key. Needs root (sshd's
    privilege separation) and the openssh-server package (make setup installs it)."""
    exe = shutil.which("sshd") or "/usr/sbin/sshd"
    if os.geteuid() != 0:
        pytest.skip("sshd needs root here")
    if not Path(exe).exists():
        if os.environ.get("CI"):  # make setup installs it where it can (root, apt)
            raise AssertionError("sshd is not installed: tools/setup_env.sh should have installed openssh-server")
        pytest.skip("sshd not installed (Debian: apt-get install openssh-server)")
    d = tmp_path_factory.mktemp("sshd")
    home = d / "home"
    (home / ".ssh").mkdir(parents=True)
    keygen = shutil.which("ssh-keygen")
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")], check=True)
    subprocess.run(
        [keygen, "-q", "-t", "rsa", "-b", "3072", "-m", "PEM", "-N", "", "-f", str(home / ".ssh" / "id_rsa")],
        check=True,
    )
    shutil.copy(home / ".ssh" / "id_rsa.pub", d / "authorized_keys")
    data = d / "data"
    data.mkdir()
    shutil.copy(video, data / video.name)
    port = closed_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nSubsystem sftp internal-sftp\n"
    )
    host_pub = (d / "host_key.pub").read_text().split()
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    proc = subprocess.Popen(
        [exe, "-D", "-e", "-f", str(d / "sshd_config")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_port(port, proc)
        yield port, data, home
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.mark.slow
def test_sftp_video(sshd, video, tmp_path):
    pytest.importorskip("snakemake_storage_plugin_sftp")
    port, data, home = sshd
    url = f"sftp://127.0.0.1:{port}{data / video.name}"
    wd = project(
        tmp_path,
        {"s1": url, "gone": f"sftp://127.0.0.1:{port}{data / 'nothere.mp4'}"},
        storage={"sftp": {"username": getpass.getuser()}},
    )
    env = {"HOME": str(home)}  # ~/.ssh: the client key and the server's host key
    r = snakemake(wd, "-n", env=env, check=False)
    assert (
        f"session 'gone': video not found on remote storage: sftp://127.0.0.1:{port}{data / 'nothere.mp4'} "
        "(config/sessions.tsv, line 3, column 'videos')"
    ) in r.stdout + r.stderr, (r.stdout + r.stderr)[-3000:]
    (wd / "config" / "sessions.tsv").write_text(f"session\tvideos\trois\ns1\t{url}\tconfig:demo_face\n")
    snakemake(wd, "-j1", "results/s1/videos.json", env=env)
    assert json.loads((wd / "results" / "s1" / "videos.json").read_text())["videos"][0]["num_frames"] == 600
    # the server's key unknown: the error says how to add it
    (home / ".ssh" / "known_hosts").rename(home / ".ssh" / "known_hosts.bak")
    try:
        r = snakemake(wd, "-n", env=env, check=False)
        out = r.stdout + r.stderr
        assert f"session 's1': cannot reach the video {url}" in out
        assert f"ssh-keyscan -p {port} 127.0.0.1 >> ~/.ssh/known_hosts" in out
    finally:
        (home / ".ssh" / "known_hosts.bak").rename(home / ".ssh" / "known_hosts")
