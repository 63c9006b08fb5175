"""`python -m mats_jax.demo` driven in headless Chromium: an uploaded ESC-50 clip gets the text
`python -m mats_jax.generate` prints for it, with Santa's retrievals shown; a file that is not
audio gets a readable error; the page asks nothing of any other host; uploads leave no copy."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright

from mats_jax.generate import main as generate
from tests.support.outputs import snapshot
from tests.support.paths import ESC50, ROOT, shared

CHROMIUM = ROOT / ".browser" / "chromium" / "chromium"  # unpacked by setup.sh
START_TIMEOUT = 300  # seconds for the demo to load its model and serve, on a slow 2-core machine
ANSWER_TIMEOUT_MS = 180_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, server: subprocess.Popen, log) -> None:
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert server.poll() is None, f"the demo exited: {log.read_text()[-2000:]}"
        try:
            no_proxy.open(url, timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"the demo did not serve {url}: {log.read_text()[-2000:]}")


def stop(server: subprocess.Popen) -> None:
    """Ctrl-C, as a person stops it (the demo then removes its upload folder)."""
    server.send_signal(signal.SIGINT)
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=60)
        raise


def test_the_demo_answers_as_generate_and_shows_santas_retrievals(
    listening_workdir, tmp_path, capsys
):
    assert CHROMIUM.is_file(), f"{CHROMIUM} missing: run bash setup.sh"
    clip = sorted(shared(ESC50).glob("*.wav"))[0]
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("these are notes, not audio")
    temp, log = tmp_path / "temp", tmp_path / "demo.log"
    temp.mkdir()
    workdir_before = snapshot(listening_workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "mats_jax.demo", f"--workdir={listening_workdir}"]
            + [f"--port={port}"],
            cwd=ROOT,
            env={**os.environ, "TMPDIR": str(temp)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # generate (Santa on, the paper's settings) while the demo loads the same model
        assert generate(["--workdir", str(listening_workdir), "--audio", str(clip)]) == 0
        name, expected = capsys.readouterr().out.strip().split("\t")
        assert name == str(clip) and expected
        wait_until_serving(url, server, log)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--no-zygote", "--single-process", "--no-proxy-server"],
            )
            page = browser.new_page()
            requested = []
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url)
            page.locator("#clip input[type=file]").set_input_files(str(clip))
            page.click("#listen")
            page.wait_for_function(
                "document.querySelector('#answer textarea').value !== ''",
                timeout=ANSWER_TIMEOUT_MS,
            )
            answer = page.input_value("#answer textarea")
            report = page.inner_text("#santa-report")

            page.reload()  # a fresh page: the clip's player has replaced the upload box
            page.locator("#clip input[type=file]").set_input_files(str(not_audio))
            page.click("#listen")
            error = page.get_by_text("notes.wav: not a readable audio file")
            error.wait_for(timeout=ANSWER_TIMEOUT_MS)
            body = page.inner_text("body")
            page.screenshot(path=tmp_path / "demo.png", full_page=True)
            browser.close()
    finally:
        stop(server)

    assert answer == expected
    # Santa's cluster (of the 4 the bank was built with) and the bank texts it mixed in
    lines = report.strip().splitlines()
    header, rows = lines[2], lines[3:]
    assert header.split("\t") == ["weight", "memory text"], report
    assert report.startswith("Nearest cluster: ") and report.split()[2] in {"0", "1", "2", "3"}
    bank = json.loads((listening_workdir / "memory_bank" / "bank.json").read_text())["texts"]
    weights = [float(row.split("\t")[0]) for row in rows]
    assert rows and all(row.split("\t")[1] in bank for row in rows), report
    assert abs(sum(weights) - 1.0) <= 0.0005 * len(rows) and weights == sorted(weights)[::-1]
    assert "Traceback" not in body and "Error opening" in body
    # every request stayed on the demo's own host
    assert {urlsplit(u.removeprefix("blob:")).netloc for u in requested} == {f"127.0.0.1:{port}"}
    # the uploads lived in a temporary folder, gone once the demo stopped, and nowhere else
    assert server.returncode == 0, log.read_text()[-2000:]
    assert list(temp.iterdir()) == []
    assert snapshot(listening_workdir) == workdir_before
