"""A standing adversarial suite: generated bad input through the reader, convert, sample and the studio.

Each test states an invariant that must hold for any input, not an expected
output: no traceback and no ``internal error``, only the documented exit
codes (0 ok, 1 some failures, 2 bad input) or HTTP statuses (200, 400, 404,
405, 422, 503; never 500), every error in its documented one-line or
``{"error", "line", "tune"}`` form, no partial or overwritten file, and the
server still answering afterwards.  Examples are few (``max_examples``) so
the suite stays fast; hypothesis keeps the failing ones in its database.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from abcgen.cli import app
from abcgen.errors import AbcgenError, InputError

FAST = settings(max_examples=20, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
runner = CliRunner()

ABC_ALPHABET = "ABCDEFGabcdefgzxZ,'^_=/|:[]()<>{}-.~!+\"1234567890 \nXTMLKQVPw%"
HEADERS = st.sampled_from(["", "X:1\n", "X:1\nT:t\n", "X:1\nM:4/4\nL:1/8\nK:C\n", "X:1\nM:6/8\nK:Gmaj\n",
                           "M:3/4\nL:1/4\n\nX:3\nK:D\n", "X:1\nL:1/0\nK:C\n", "X:1\nM:0/0\nK:C\n"])
ABC_BODIES = st.text(alphabet=ABC_ALPHABET, max_size=120)


def _clean(output: str) -> None:
    assert "Traceback" not in output and "internal error" not in output, output


# --------------------------------------------------------------------------- the reader


@FAST
@given(head=HEADERS, body=ABC_BODIES)
def test_reader_raises_only_abcgen_errors(head, body):
    from abcgen.abc.reader import parse_tune, split_book

    for tune in split_book(head + body, file="gen.abc"):
        try:
            parse_tune(tune)
        except AbcgenError as e:
            assert "\n" not in str(e) and str(e).startswith("gen.abc")


# --------------------------------------------------------------------------- convert


def _no_temp(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if p.name.startswith(".")]


@FAST
@given(books=st.lists(st.tuples(HEADERS, ABC_BODIES), min_size=1, max_size=3))
def test_convert_any_abc_exit_code_and_no_partial_output(tmp_path_factory, books):
    d = tmp_path_factory.mktemp("conv")
    inputs = []
    for i, (head, body) in enumerate(books):
        p = d / f"in{i}.abc"
        p.write_text(head + body, encoding="utf-8")
        inputs.append(p)
    before = {p: p.read_bytes() for p in inputs}
    out = d / "out.abc"
    out.write_text("old\n")
    r = runner.invoke(app, ["convert", *map(str, inputs), "-o", str(out)])
    _clean(r.output)
    assert r.exit_code in (0, 1, 2), r.output
    assert {p: p.read_bytes() for p in inputs} == before            # inputs never touched
    assert _no_temp(d)
    if r.exit_code == 2:
        assert out.read_text() == "old\n"                            # nothing converted: left alone
    else:
        from abcgen.abc.reader import parse_tune, read_book

        tunes = read_book(out)
        assert [t.x for t in tunes] == [str(i) for i in range(1, len(tunes) + 1)]
        for t in tunes:
            parse_tune(t)                                             # canonical output reads back
    # writing over an input is always refused
    r = runner.invoke(app, ["convert", *map(str, inputs), "-o", str(inputs[-1])])
    assert r.exit_code == 2 and "refusing to write over an input" in r.output
    assert {p: p.read_bytes() for p in inputs} == before


MIDI_HEADS = st.sampled_from([b"", b"MThd", b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60",
                              b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk"])


@FAST
@given(head=MIDI_HEADS, tail=st.binary(max_size=80))
def test_convert_any_midi_bytes_fails_cleanly(tmp_path_factory, head, tail):
    d = tmp_path_factory.mktemp("midi")
    p = d / "x.mid"
    p.write_bytes(head + tail)
    r = runner.invoke(app, ["convert", str(p)])
    _clean(r.output)
    assert r.exit_code in (0, 2), r.output
    if r.exit_code == 2:
        assert "x.mid" in r.output


@FAST
@given(data=st.binary(max_size=200))
def test_convert_any_musicxml_bytes_fails_cleanly(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("xml")
    p = d / "x.musicxml"
    p.write_bytes(b"<?xml version='1.0'?><score-partwise>" + data)
    r = runner.invoke(app, ["convert", str(p)])
    _clean(r.output)
    assert r.exit_code in (0, 2), r.output


# --------------------------------------------------------------------------- sample options


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e-9, 5.0, 5.0001, 1e9]))
INTS = st.one_of(st.integers(min_value=-5, max_value=20), st.sampled_from([-2**63, 2**63 - 1, 2**63, 2**70]))


@pytest.fixture(scope="module")
def model(random_model):
    from abcgen import sample as S

    return S.Model(random_model)


@FAST
@given(count=st.integers(min_value=-2, max_value=4), temperature=FLOATS, top_k=INTS,
       top_p=FLOATS, seed=INTS, max_tokens=st.integers(min_value=-1, max_value=30),
       meter=st.sampled_from([None, "6/8", "4/4", "11/8", "", "x"]), prime=st.sampled_from(["", "G", "&", "|:"]))
def test_sample_options_give_tunes_or_an_input_error(model, count, temperature, top_k, top_p, seed,
                                                     max_tokens, meter, prime):
    from abcgen import sample as S

    opts = S.SampleOptions(count=count, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed,
                           meter=meter, unit="1/8" if meter else None, key="Gmaj" if meter else None,
                           prime=prime, max_tokens=max_tokens)
    try:
        book = S.generate(model, opts)
    except InputError as e:
        assert "\n" not in str(e)
        return
    assert math.isfinite(temperature) and 0 < temperature <= S.MAX_TEMPERATURE and 0 <= seed < 2**63
    assert book.count("T:abcgen ") == count


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=st.lists(st.sampled_from(["-n", "0", "3", "-1", "--seed", "-5", "7", "--temperature", "inf",
                                      "nan", "1e9", "0.5", "--top-p", "2", "--top-k", "-3", "--max-tokens",
                                      "30", "--meter", "6/8", "--unit", "1/8", "--key", "Gmaj"]),
                     max_size=6))
def test_sample_command_line_any_options(random_model, args):
    r = runner.invoke(app, ["sample", "--model", str(random_model), "--max-tokens", "30", *args])
    _clean(r.output)
    assert r.exit_code in (0, 2), r.output


# --------------------------------------------------------------------------- the studio

fastapi = pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def client(random_model):
    from fastapi.testclient import TestClient

    from abcgen import serve as SV

    with TestClient(SV.create_app(random_model, timeout=20), base_url="http://127.0.0.1") as c:
        yield c


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                    max_leaves=12)
FIELDS = st.fixed_dictionaries({}, optional={
    "abc": st.one_of(ABC_BODIES.map(lambda b: "X:1\nM:4/4\nL:1/8\nK:C\n" + b), st.integers(), st.none()),
    "format": st.sampled_from(["svg", "png", "mid", "pdf", "musicxml", "wav", ""]),
    "tune": st.one_of(st.integers(min_value=-2, max_value=3), st.text(max_size=3)),
    "count": st.integers(min_value=-1, max_value=20), "seed": INTS, "temperature": FLOATS.filter(math.isfinite),
    "max_tokens": st.integers(min_value=-1, max_value=40), "meter": st.sampled_from(["6/8", "x" * 20, ""]),
})
ALLOWED = {200, 400, 404, 405, 413, 415, 422, 503}


def _check_answer(r) -> None:
    assert r.status_code in ALLOWED, (r.status_code, r.text)
    if r.status_code != 200:
        body = r.json()
        assert set(body) == {"error", "line", "tune"} and body["error"] and "\n" not in body["error"], body
    assert r.headers["x-content-type-options"] == "nosniff"


@FAST
@given(path=st.sampled_from(["/api/sample", "/api/render", "/api/notes"]), body=st.one_of(JSON, FIELDS))
def test_api_any_json_body(client, path, body):
    if path == "/api/sample" and isinstance(body, dict):
        body = dict(body, max_tokens=min(int(body.get("max_tokens", 30)) if isinstance(body.get("max_tokens"), int)
                                         else 30, 30))
    _check_answer(client.post(path, json=body))
    assert client.get("/api/model").status_code == 200


@FAST
@given(path=st.sampled_from(["/api/sample", "/api/render", "/api/notes"]), data=st.binary(max_size=200),
       ctype=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]))
def test_api_any_bytes(client, path, data, ctype):
    _check_answer(client.post(path, content=data, headers={"content-type": ctype} if ctype else {}))
    assert client.get("/api/model").status_code == 200


@FAST
@given(host=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789.-:[]", max_size=30))
def test_api_host_header(client, host):
    from abcgen import serve as SV

    r = client.get("/api/model", headers={"host": host})
    assert r.status_code == (200 if SV._host_name(host) in SV.host_names(None) else 400), (host, r.text)
    _check_answer(r)


def test_nested_json_depths(client):
    for depth in (10, 100, 1000, 10000, 100000):
        data = ("[" * depth + "]" * depth).encode()
        _check_answer(client.post("/api/render", content=data, headers={"content-type": "application/json"}))
        data = json.dumps({"abc": "X:1\nK:C\nC|", "tune": 1}).encode()[:-1] + b"," + b'"x":' + b"{" * depth
        _check_answer(client.post("/api/notes", content=data, headers={"content-type": "application/json"}))
    assert client.get("/api/model").status_code == 200
