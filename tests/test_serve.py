"""abcgen serve: the JSON API (FastAPI's TestClient), limits and bad input, and the page
in a real headless Chromium (Debian's, driven by Playwright)."""

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from abcgen import serve as SV  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "render"
JIG = (DATA / "jig.abc").read_text()
BOOK = (DATA / "book.abc").read_text()
CHROMIUM = "/usr/bin/chromium"
SVG_NS = "{http://www.w3.org/2000/svg}"
# Header prompts and a low temperature keep the random model's tunes engravable by verovio.
TUNE = {"meter": "6/8", "unit": "1/8", "key": "Gmaj", "temperature": 0.5, "max_tokens": 100}


@pytest.fixture(scope="module")
def client(random_model):
    with TestClient(SV.create_app(random_model, timeout=60), base_url="http://127.0.0.1") as c:
        yield c


def _svg_classes(svg: bytes) -> list[str]:
    root = ET.fromstring(svg)
    assert root.tag == SVG_NS + "svg"
    return [el.get("class") for el in root.iter() if el.get("class")]


def _without_ids(svg: bytes) -> str:
    """The SVG with each element id replaced by its rank of first appearance."""
    text = svg.decode("utf-8")
    ids = list(dict.fromkeys(re.findall(r'\bid="([^"]+)"', text)))
    names = {i: f"ID{n}" for n, i in enumerate(ids)}
    for i in sorted(ids, key=len, reverse=True):
        text = text.replace(i, names[i])
    return text


# --------------------------------------------------------------------------- sampling


def test_sample_is_what_the_cli_prints(client, random_model):
    r = client.post("/api/sample", json={**TUNE, "seed": 7, "count": 2, "top_p": 0.95})
    assert r.status_code == 200, r.text
    got = r.json()
    cli = subprocess.run(
        [sys.executable, "-m", "abcgen", "sample", "--model", str(random_model), "-n", "2", "--seed", "7",
         "--meter", "6/8", "--unit", "1/8", "--key", "Gmaj", "-t", "0.5", "--max-tokens", "100",
         "--top-p", "0.95"],
        capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    assert got["abc"] == cli.stdout
    assert got["seed"] == 7 and got["count"] == 2 and got["model"] == "random"
    assert got["abc"].count("\nK:Gmaj\n") == 2


def test_form_and_bars_are_what_the_cli_prints(client, random_model):
    for extra, flags in (({"form": "AABB"}, ["--form", "AABB"]), ({"bars": 12}, ["--bars", "12"]),
                         ({"form": "AB", "part_bars": 4}, ["--form", "AB", "--part-bars", "4"])):
        body = {**TUNE, "max_tokens": 2000, "seed": 5, **extra}
        r = client.post("/api/sample", json=body)
        assert r.status_code == 200, r.text
        cli = subprocess.run(
            [sys.executable, "-m", "abcgen", "sample", "--model", str(random_model), "--seed", "5",
             "--meter", "6/8", "--unit", "1/8", "--key", "Gmaj", "-t", "0.5", "--max-tokens", "2000", *flags],
            capture_output=True, text=True, cwd=ROOT)
        assert cli.returncode == 0, cli.stderr
        assert r.json()["abc"] == cli.stdout, extra
    # AABB: two repeated parts
    assert client.post("/api/sample", json={**TUNE, "max_tokens": 2000, "seed": 5, "form": "AABB"}
                       ).json()["abc"].count(":|") >= 2
    r = client.post("/api/sample", json={**TUNE, "form": "AABB", "bars": 16})
    assert r.status_code == 400 and "--bars and --form both set the length" in r.json()["error"]


def test_no_seed_draws_one_and_returns_it(client):
    a = client.post("/api/sample", json={**TUNE}).json()
    b = client.post("/api/sample", json={**TUNE, "seed": a["seed"]}).json()
    assert a["abc"] == b["abc"]
    assert f"T:abcgen random seed {a['seed']} " in a["abc"]


def test_blank_header_fields_are_left_to_the_model(client):
    a = client.post("/api/sample", json={"meter": "", "unit": " ", "key": "", "seed": 3, "max_tokens": 60})
    b = client.post("/api/sample", json={"seed": 3, "max_tokens": 60})
    assert a.status_code == 200 and a.json()["abc"] == b.json()["abc"]


def test_model_info_lists_the_header_values_it_knows(client):
    info = client.get("/api/model").json()
    assert info["name"] == "random" and info["level"] == "token"
    assert "6/8" in info["meters"] and "1/8" in info["units"] and "Gmaj" in info["keys"]
    assert info["limits"]["count"] == SV.LIMITS["count"]


# --------------------------------------------------------------------------- rendering


def test_render_svg_engraves_every_note(client):
    r = client.post("/api/render", json={"abc": JIG, "format": "svg"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/svg+xml"
    classes = _svg_classes(r.content)
    # |:GAB cBA|Bdd d2B|cAA BGG|1 AFD D2D:|2 AFD G3|] has 6+5+6+5+4 written notes.
    assert classes.count("notehead") == 26
    assert classes.count("staff") >= 1 and classes.count("measure") == 5


def test_render_is_the_same_engraving_as_abcgen_render(client, tmp_path):
    src = tmp_path / "jig.abc"
    src.write_text(JIG)
    out = tmp_path / "jig.svg"
    cli = subprocess.run([sys.executable, "-m", "abcgen", "render", str(src), "-o", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    api = client.post("/api/render", json={"abc": JIG, "format": "svg"}).content
    # verovio draws random element ids; apart from them the files are the same.
    assert _without_ids(api) == _without_ids(out.read_bytes())


def test_engraving_works_in_any_thread():
    """verovio sets its font path per thread on import; render.svg_pages must not depend on it."""
    from concurrent.futures import ThreadPoolExecutor

    from abcgen import render as R
    from abcgen.abc.reader import parse_abc

    score = parse_abc(JIG)
    here = R.svg_pages(score)
    with ThreadPoolExecutor(2) as pool:
        there = list(pool.map(lambda _: R.svg_pages(score), range(2)))
    assert [_without_ids(p[0].encode()) for p in there] == [_without_ids(here[0].encode())] * 2


@pytest.mark.parametrize("fmt,ctype,magic", [
    ("png", "image/png", b"\x89PNG\r\n\x1a\n"),
    ("pdf", "application/pdf", b"%PDF-"),
    ("mid", "audio/midi", b"MThd"),
    ("musicxml", "application/vnd.recordare.musicxml+xml", b"<?xml"),
])
def test_render_formats(client, fmt, ctype, magic):
    r = client.post("/api/render", json={"abc": JIG, "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype and r.content.startswith(magic)
    if fmt == "musicxml":
        assert b"<score-partwise" in r.content and b"The Test Jig" in r.content


def test_render_book(client):
    svg = client.post("/api/render", json={"abc": BOOK, "format": "svg"})
    root = ET.fromstring(svg.content)
    pages = root.findall(SVG_NS + "svg")
    assert len(pages) == 2                        # one page per tune, stacked
    assert [float(p.get("y")) for p in pages][0] == 0 and float(pages[1].get("y")) > 0
    notes = [c for c in _svg_classes(svg.content) if c == "notehead"]
    assert len(notes) == 11 + 5                   # GAB cBA Bdd d2B, then A B c d e2
    r = client.post("/api/render", json={"abc": BOOK, "format": "mid"})
    assert r.status_code == 400 and r.json()["error"] == "the text has 2 tunes: say which one (tune: 1 to 2)"
    r = client.post("/api/render", json={"abc": BOOK, "format": "mid", "tune": 2})
    assert r.status_code == 200 and r.content.startswith(b"MThd")
    r = client.post("/api/render", json={"abc": BOOK, "format": "svg", "tune": 3})
    assert r.status_code == 400 and "no tune 3" in r.json()["error"]
    r = client.post("/api/render", json={"abc": BOOK, "format": "pdf"})
    assert r.status_code == 200, r.text
    pdf = r.content
    from pypdf import PdfReader

    assert len(PdfReader(io.BytesIO(pdf)).pages) == 2


def test_notes_play_the_repeats(client):
    r = client.post("/api/notes", json={"abc": JIG})
    assert r.status_code == 200
    n = r.json()
    ev = n["events"]
    # Bars 1-3 and ending 1, then bars 1-3 and ending 2: (6+5+6+5) + (6+5+6+4) notes.
    assert len(ev) == 43
    assert [e["pitch"] for e in ev[:6]] == [67, 69, 71, 72, 71, 69]       # G A B c B A
    assert [e["onset"] for e in ev[:3]] == [0.0, 0.5, 1.0]
    assert ev[-1] == {"onset": 22.5, "duration": 1.5, "pitch": 67}           # the final G3
    assert n["length"] == 24.0 and n["qpm"] == 180.0 and n["title"] == "The Test Jig"


# --------------------------------------------------------------------------- bad input and limits


def test_invalid_abc_names_the_line(client):
    bad = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\nCDEF GABc|\n[CEG GABc|\nCDEF|\n"
    r = client.post("/api/render", json={"abc": bad, "format": "svg"})
    assert r.status_code == 400
    body = r.json()
    assert body["line"] == 8 and body["tune"] == "1"
    assert body["error"].startswith("line 8 tune X:1: the chord at column 1 is not closed")
    # In a book the line is the book's line, past the first tune.
    r = client.post("/api/render", json={"abc": JIG + "\n" + bad, "format": "svg"})
    assert r.json()["line"] == 8 + JIG.count("\n") + 1
    r = client.post("/api/notes", json={"abc": "X:1\nM:4/4\nL:1/0\nK:C\nCDEF|\n"})
    assert r.status_code == 400 and r.json()["line"] == 3
    # A text without X: is one tune from line 1, which may be the bad one.
    r = client.post("/api/render", json={"abc": "L:1/0\nK:C\nCDEF|\n"})
    assert r.status_code == 400 and r.json()["line"] == 1
    r = client.post("/api/render", json={"abc": "X:1\nT:silence\nK:C\n|\n"})
    assert r.status_code == 400 and r.json()["error"] == "line 1 tune X:1: the tune has no notes"
    r = client.post("/api/render", json={"abc": "  \n"})
    assert r.status_code == 400 and r.json()["error"] == "there is no tune: the ABC text is empty"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet="ABCDEFGabcdefgz,'^_=/|:[]()1234 \n-", max_size=60))
def test_any_abc_body_gives_a_file_or_a_4xx_never_a_500(client, body):
    r = client.post("/api/render", json={"abc": "X:1\nM:4/4\nL:1/8\nK:C\n" + body, "format": "svg"})
    if r.status_code == 200:
        assert r.content.startswith(b"<svg")
    else:
        assert r.status_code in (400, 422), r.text
        assert r.json()["error"]


@pytest.mark.parametrize("body,status,message", [
    ({"count": SV.LIMITS["count"] + 1}, 422, "count: Input should be less than or equal to 16"),
    ({"max_tokens": SV.LIMITS["max_tokens"] + 1}, 422, "max_tokens: Input should be less than or equal to 2000"),
    ({"prime": "A" * (SV.LIMITS["prime"] + 1)}, 422, "prime: String should have at most 400 characters"),
    ({"temperature": 0}, 422, "temperature: Input should be greater than 0"),
    ({"top_p": 1.5}, 422, "top_p: Input should be less than or equal to 1"),
    ({"seed": -1}, 422, "seed: Input should be greater than or equal to 0"),
    ({"bars": SV.LIMITS["bars"] + 1}, 422, "bars: Input should be less than or equal to 128"),
    ({"form": "A1"}, 400, "--form"),
    ({"colour": "red"}, 422, "colour: Extra inputs are not permitted"),
    ({"key": "H"}, 400, "--key H: not a key"),
    ({"meter": "11/8"}, 400, "M:11/8 is not in the model's vocabulary"),
    ({"meter": "6/8", "unit": "1/8", "key": "Gmaj", "prime": "G&"}, 400, "unknown symbol '&' at position 1"),
])
def test_sample_limits_and_bad_input(client, body, status, message):
    r = client.post("/api/sample", json=body)
    assert r.status_code == status
    assert r.json()["error"].startswith(message), r.json()


@pytest.mark.parametrize("body,message", [
    ({"abc": "X:1\n" + "C" * SV.LIMITS["abc"]}, "abc: String should have at most 40000 characters"),
    ({"abc": JIG, "format": "gif"}, "format: Input should be 'svg', 'png', 'pdf', 'mid' or 'musicxml'"),
    ({"format": "svg"}, "abc: Field required"),
    ({"abc": JIG, "tune": 0}, "tune: Input should be greater than or equal to 1"),
])
def test_render_limits(client, body, message):
    r = client.post("/api/render", json=body)
    assert r.status_code == 422 and r.json()["error"] == message


def test_slow_request_times_out_cleanly(random_model):
    with TestClient(SV.create_app(random_model, timeout=0.05), base_url="http://localhost") as c:
        r = c.post("/api/sample", json={"count": 16, "max_tokens": 2000, "seed": 1})
        assert r.status_code == 503
        assert r.json()["error"].startswith(("the request took longer than 0.05 s", "sampling stopped after"))
        assert c.get("/api/model").status_code == 200


def test_page_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="sheet"' in page.text and "/static/studio.js" in page.text
    assert client.get("/static/studio.js").status_code == 200
    spec = client.get("/openapi.json").json()
    assert {"/api/sample", "/api/render", "/api/notes", "/api/model"} <= set(spec["paths"])
    assert set(spec["components"]["schemas"]["RenderRequest"]["properties"]) == {"abc", "format", "tune"}


def test_serve_refuses_bad_options():
    def run(*args):
        return subprocess.run([sys.executable, "-m", "abcgen", "serve", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    r = run("--model", "/nonexistent/run")
    assert r.returncode == 2
    assert r.stderr.strip() == "abcgen: error: /nonexistent/run: no such model file or run directory"
    r = run("--port", "0", "--model", "/nonexistent/run")
    assert r.returncode == 2 and r.stderr.strip() == "abcgen: error: --port must be between 1 and 65535"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run("--port", str(port), "--model", "/nonexistent/run")
    assert r.returncode == 1
    assert r.stderr.strip() == f"abcgen: error: cannot listen on 127.0.0.1:{port}: Address already in use"


# --------------------------------------------------------------------------- a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(random_model):
    """uvicorn serving the app on a free loopback port, in a thread of this process."""
    import uvicorn

    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(SV.create_app(random_model), host="127.0.0.1", port=port,
                                        log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    t0 = time.monotonic()
    while not srv.started:
        assert time.monotonic() - t0 < 30, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    th.join(10)


def test_server_answers_while_a_slow_request_runs(server):
    import httpx

    done = {}

    def slow():
        r = httpx.post(server + "/api/sample", json={"count": 16, "max_tokens": 2000, "seed": 2}, timeout=120)
        done["slow"] = (time.monotonic(), r.status_code)

    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.3)                     # the sampling is under way in the pool
    r = httpx.get(server + "/api/model", timeout=30)
    quick = time.monotonic()
    assert r.status_code == 200 and "slow" not in done
    th.join(120)
    assert done["slow"][1] == 200 and done["slow"][0] > quick


def _wait_for(page, expr: str, timeout: float = 60000) -> None:
    """Poll a JavaScript expression from Python: the page's CSP forbids eval, which
    Playwright's wait_for_function uses for its predicate (page.evaluate is not bound by it)."""
    t0 = time.monotonic()
    while not page.evaluate(expr):
        assert (time.monotonic() - t0) * 1000 < timeout, f"timed out waiting for {expr}"
        time.sleep(0.1)



CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.slow
def test_page_generates_engraves_edits_and_plays(server, browser):
    import httpx

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    # A shared link: the settings in the query string regenerate the tune.
    page.goto(server + "/?meter=6/8&unit=1/8&key=Gmaj&t=0.5&seed=4&len=100")
    page.wait_for_selector("#sheet svg g.staff", timeout=60000)
    _wait_for(page, "document.getElementById('status').textContent.includes('engraved')")
    expected = httpx.post(server + "/api/sample", json={**TUNE, "seed": 4}).json()["abc"]
    assert page.input_value("#abc") == expected
    assert page.locator("#sheet svg g.note").count() > 0
    assert page.input_value("#meter") == "6/8" and page.input_value("#tonic") == "G"

    # Generate with another seed from the form: the URL follows.
    page.fill("#seed", "5")
    page.click("#generate")
    _wait_for(page, "document.getElementById('abc').value.includes('random seed 5 ')")
    assert "seed=5" in page.url and "key=Gmaj" in page.url

    # An edit that music21 cannot read: an inline error naming the line, and the gutter marks it.
    page.fill("#abc", "X:1\nT:t\nM:4/4\nL:1/8\nK:C\nCDEF GABc|\n[CEG GABc|\n")
    page.wait_for_selector("#abc-error:not([hidden])", timeout=30000)
    assert page.inner_text("#abc-error").startswith("line 7 tune X:1: the chord at column 1 is not closed")
    assert page.inner_text("#gutter .bad") == "7"
    # Fixed: the error goes and the sheet shows the new tune (8 note heads).
    page.fill("#abc", "X:1\nT:Fixed\nM:4/4\nL:1/8\nK:C\nCDEF GABc|]\n")
    page.wait_for_selector("#abc-error", state="hidden", timeout=30000)
    _wait_for(page, "document.querySelectorAll('#sheet svg g.notehead').length === 8")

    page.click("#play")
    _wait_for(page, "document.getElementById('play').textContent.includes('Stop')", timeout=30000)
    page.click("#play")
    _wait_for(page, "document.getElementById('play').textContent.includes('Play')")
    assert errors == []
    page.close()


# --------------------------------------------------------------------------- hardening (issue 17)


@pytest.mark.parametrize("host,status", [
    ("127.0.0.1:8000", 200), ("localhost", 200), ("LOCALHOST:80", 200), ("[::1]:8000", 200),
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400),
    ("localhost.attacker.net:8000", 400), ("", 400),
])
def test_only_the_hosts_it_serves_are_answered(client, host, status):
    r = client.get("/api/model", headers={"host": host})
    assert r.status_code == status, r.text
    if status == 400:
        body = r.json()
        assert set(body) == {"error", "line", "tune"} and "is not served here" in body["error"]
        r = client.post("/api/sample", json=TUNE, headers={"host": host})
        assert r.status_code == 400
        assert r.headers["x-frame-options"] == "DENY"


def test_the_bound_host_is_served_too(random_model):
    with TestClient(SV.create_app(random_model, host="192.168.1.5"), base_url="http://192.168.1.5:8000") as c:
        assert c.get("/api/model").status_code == 200
        assert c.get("/api/model", headers={"host": "192.168.1.6"}).status_code == 400
    assert SV.host_names("::1") >= {"[::1]"} and "[fe80::1]" in SV.host_names("fe80::1")


def test_security_headers_on_page_files_and_api(client):
    for r in (client.get("/"), client.get("/static/studio.js"), client.get("/api/model"),
              client.post("/api/render", json={"abc": JIG}), client.post("/api/render", json={"abc": ""})):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        csp = r.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self';" in csp and "object-src 'none'" in csp
        assert "unsafe-eval" not in csp


@pytest.mark.parametrize("data,ctype", [
    (b'{"abc": "X:1\\nK:C\\n\xff\xfe"}', "application/json"),
    (b"[" * 5000 + b"]" * 5000, "application/json"),
    (b'{"abc": ' + b"[" * 3000 + b"]" * 3000 + b"}", "application/json"),
    (b"\xff\xfe\xfd", "application/json"),
    (b"abc=1", "application/x-www-form-urlencoded"),
])
def test_unreadable_bodies_get_the_documented_error_shape(client, data, ctype):
    for path in ("/api/render", "/api/sample", "/api/notes"):
        r = client.post(path, content=data, headers={"content-type": ctype})
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
        body = r.json()
        assert set(body) == {"error", "line", "tune"} and body["error"], body
    assert client.get("/api/model").status_code == 200


def test_unknown_paths_get_the_documented_error_shape(client):
    r = client.get("/api/nothing")
    assert r.status_code == 404 and set(r.json()) == {"error", "line", "tune"}
    r = client.get("/api/sample")
    assert r.status_code == 405 and set(r.json()) == {"error", "line", "tune"}


# Under MAX_BARS and slow: 480 bars of sixteenths, about 6 s of engraving on a busy 2-core machine
# (abcgen's reader is quick, so the bars are full to keep the engraving long).
LONG = "X:1\nT:Long\nM:4/4\nL:1/16\nK:D\n" + "|".join(["ABcd efga gfed cBAG"] * 480) + "|]\n"


def test_a_render_past_its_time_is_stopped_and_holds_up_nothing(random_model):
    """The slow render's worker process is killed at the deadline; the next render is answered at once."""
    with TestClient(SV.create_app(random_model, timeout=3), base_url="http://127.0.0.1") as c:
        engravers = c.app.state.studio.engraver.all
        assert c.post("/api/render", json={"abc": JIG}).status_code == 200     # the workers are up
        pids = {e._proc.pid for e in engravers}
        t0 = time.monotonic()
        r = c.post("/api/render", json={"abc": LONG})
        assert r.status_code == 503 and "stopped" in r.json()["error"], r.text
        assert time.monotonic() - t0 < 10
        time.sleep(0.2)
        gone = []
        for pid in pids:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                gone.append(pid)
        assert len(gone) == 1                      # the slow render's process is gone, the other kept
        assert len({e._proc.pid for e in engravers} - pids) == 1      # and replaced
        t1 = time.monotonic()
        r = c.post("/api/render", json={"abc": JIG})
        assert r.status_code == 200 and r.content.startswith(b"<svg")
        r = c.post("/api/notes", json={"abc": JIG})
        assert r.status_code == 200 and r.json()["events"]
        assert time.monotonic() - t1 < 4         # not waiting for the slow tune's engraving


def test_a_quick_render_passes_a_slow_one_in_flight(random_model):
    with TestClient(SV.create_app(random_model, timeout=30), base_url="http://127.0.0.1") as c:
        assert c.post("/api/render", json={"abc": JIG}).status_code == 200
        done = {}

        def slow():
            done["slow"] = c.post("/api/render", json={"abc": LONG}).status_code

        th = threading.Thread(target=slow)
        th.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        r = c.post("/api/render", json={"abc": JIG})
        assert r.status_code == 200 and time.monotonic() - t0 < 5 and "slow" not in done
        th.join(60)


def test_bench_serve_reports_every_phase_and_is_bounded(random_model):
    from abcgen import bench
    from abcgen.errors import InputError

    for kw in (dict(count=0), dict(count=10**6), dict(concurrency=0), dict(concurrency=1000),
               dict(time_limit=0), dict(time_limit=10**6), dict(timeout=0)):
        with pytest.raises(InputError):
            bench.bench_serve(model=str(random_model), log=lambda m: None, **kw)
    lines = []
    r = bench.bench_serve(model=str(random_model), count=6, renders=3, concurrency=3, max_tokens=60,
                          slow_bars=150, timeout=20, time_limit=240, log=lines.append)
    for phase in ("sample", "render", "sample_with_slow_render", "render_with_slow_render"):
        p = r[phase]
        assert p["errors"] == 0 and p["ok"] == p["requests"], (phase, p)
        assert 0 < p["p50_s"] <= p["p95_s"] <= p["max_s"]
    assert r["sample_with_slow_render"]["slow_renders"] and r["sample_p95_ratio_with_slow_render"] > 0
    assert len(lines) == 5 and lines[-1].startswith("p95 with a slow render in flight / alone")


def test_a_tune_too_long_to_engrave_is_refused_at_once(client):
    from abcgen.render import MAX_BARS

    text = "X:1\nT:Long\nM:4/4\nL:1/8\nK:D\n" + "|".join(["ABcd efga"] * (MAX_BARS + 50)) + "|]\n"
    t0 = time.monotonic()
    r = client.post("/api/render", json={"abc": text})
    assert r.status_code == 400 and time.monotonic() - t0 < 10
    assert r.json()["error"].startswith(f"line 1 tune X:1: the tune has about {MAX_BARS + 50} bars")
