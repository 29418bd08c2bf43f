"""``abcgen serve``: a local web studio and its JSON API.

The page (``abcgen/static/``) asks the server for everything musical: tunes
from ``POST /api/sample``, engraved sheet music and files from
``POST /api/render``, and note events for its WebAudio synthesiser from
``POST /api/notes``.  FastAPI describes the API at ``/openapi.json`` and
``/docs``.

One code path with the command line: sampling is ``sample.generate`` (what
``abcgen sample`` prints, byte for byte, for the same model and options) and
rendering goes through ``render``'s music21 parse, verovio engraving, cairo
conversion and music21 MIDI.

Keeping the server responsive:

* every request body is bounded (count, tokens, prime, ABC size: ``LIMITS``),
  checked before any work, with a 422 naming the field;
* the work runs in a thread pool, never on the event loop, so the page and
  other requests are answered while a tune is sampled or engraved;
* each request has a time limit: past it the client gets a 503 with a
  message; sampling stops itself at the deadline, and rendering (music21
  parse, verovio, exporters) runs in a worker process (``Engraver``) that is
  killed at the deadline, so a slow tune never holds up later requests;
* each pool thread has its own copy of the model, because the NumPy LSTM
  keeps scratch buffers that two threads must not share; music21 parsing and
  verovio engraving run one at a time (``_ENGRAVING``, and one engraving
  worker process each), as neither says it is safe to run in two threads at once;
  two engraving processes (``Engravers``) let a quick render pass a slow one.

Safety: only requests whose ``Host`` is a name the studio serves (localhost,
127.0.0.1, [::1], the address it listens on) are answered, else a 400, so a
web page cannot reach it by DNS rebinding; every response says
``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and a
``Content-Security-Policy`` that allows only the studio's own files and
no framing.

Errors are JSON ``{"error": "one line", "line": N|null, "tune": X|null}``
(every error, bodies that are not JSON or UTF-8 included):
400 for bad input (ABC music21 cannot read, a header the model does not
know), 422 for out-of-bounds fields and tunes that cannot be engraved, 503
for time-outs.  Invalid ABC never gives a 500.
"""

from __future__ import annotations

import asyncio
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from .errors import AbcgenError, AbcParseError, InputError

STATIC = Path(__file__).parent / "static"

LIMITS = {
    "count": 16,           # tunes per request (sampled as one batch)
    "max_tokens": 2000,    # length cap per tune
    "prime": 400,          # characters of an opening
    "field": 16,           # characters of a meter, key or unit
    "abc": 40000,          # characters of ABC to render
    "tunes": 32,           # tunes in a book to render
    "bars": 128,           # bars asked of a sampled tune
}
DEFAULT_TIMEOUT = 60.0

CONTENT_TYPES = {
    "svg": "image/svg+xml",
    "png": "image/png",
    "pdf": "application/pdf",
    "mid": "audio/midi",
    "musicxml": "application/vnd.recordare.musicxml+xml",
}
EXTENSIONS = {"svg": "svg", "png": "png", "pdf": "pdf", "mid": "mid", "musicxml": "musicxml"}


# --------------------------------------------------------------------------- work (no web framework)


class EditorError(InputError):
    """ABC from the editor that cannot be read; ``line`` is the line of the submitted text."""


def parse_book(text: str):
    """[(Tune, Score)] of every tune of an editor's text; EditorError naming the line."""
    from .abc.reader import parse_tune, split_book

    tunes = split_book(text, file="abc")
    if not tunes:
        raise EditorError("there is no tune: the ABC text is empty")
    if len(tunes) > LIMITS["tunes"]:
        raise EditorError(f"{len(tunes)} tunes is more than the {LIMITS['tunes']} one request renders")
    from .render import check_length

    out = []
    for t in tunes:
        try:
            check_length(t)
        except InputError as e:
            raise EditorError(e.message, tune=t.x, line=t.line) from None
        try:
            out.append((t, parse_tune(t)))
        except AbcParseError as e:         # the reader names the line of the submitted text
            raise EditorError(e.message, tune=t.x, line=e.line or t.line) from None
    return out


def _select(parsed, tune: int | None, fmt: str):
    if tune is not None:
        if tune > len(parsed):
            raise EditorError(f"there is no tune {tune}: the text has {len(parsed)}")
        return [parsed[tune - 1]]
    if len(parsed) > 1 and fmt in ("mid", "musicxml"):
        raise EditorError(f"the text has {len(parsed)} tunes: say which one (tune: 1 to {len(parsed)})")
    return parsed


def stack_svgs(pages: list[str]) -> str:
    """Several SVG pages (each with width and height in px) as one SVG, one under the other."""
    import re

    size = re.compile(r'<svg\b[^>]*?\bwidth="([\d.]+)(?:px)?"[^>]*?\bheight="([\d.]+)(?:px)?"')
    if len(pages) == 1:
        return pages[0]
    width, y, parts = 0.0, 0.0, []
    for svg in pages:
        svg = re.sub(r"^\s*<\?xml[^>]*\?>\s*", "", svg)
        m = size.search(svg)
        if m is None:
            raise AbcgenError("verovio's SVG has no width and height")
        w, h = float(m.group(1)), float(m.group(2))
        parts.append(svg.replace("<svg", f'<svg x="0" y="{y:g}"', 1))
        width, y = max(width, w), y + h
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'version="1.1" width="{width:g}px" height="{y:g}px" viewBox="0 0 {width:g} {y:g}">\n'
            + "\n".join(parts) + "\n</svg>\n")


_ENGRAVING = threading.Lock()


def render_abc(text: str, fmt: str, tune: int | None = None) -> bytes:
    with _ENGRAVING:
        return _render_abc(text, fmt, tune)


def _render_abc(text: str, fmt: str, tune: int | None = None) -> bytes:
    """The bytes of ``abcgen render`` for an ABC text: one file for the book (or tune ``tune``).

    SVG and PNG stack every page of every tune into one picture; PDF is one
    document, each tune on new A4 pages; MIDI and MusicXML are of one tune.
    """
    from . import render as R

    chosen = _select(parse_book(text), tune, fmt)
    try:
        if fmt in ("svg", "png"):
            pages = []
            for t, score in chosen:
                pages.extend(R.svg_pages(score, fit_height=True, where=t))
            svg = stack_svgs(pages)
            return svg.encode("utf-8") if fmt == "svg" else R.svg_to_png(svg)
        if fmt == "pdf":
            pages = []
            for t, score in chosen:
                pages.extend(R._pdf_pages(score, t))
            return R._join_pdfs(pages)
        t, score = chosen[0]
        if fmt == "mid":
            return R.midi_bytes(score)
        if fmt == "musicxml":
            return R.musicxml_bytes(score)
    except AbcgenError:
        raise
    except Exception as e:  # music21's exporters or verovio on odd input: still the user's ABC
        t = chosen[0][0]
        raise AbcgenError(f"cannot engrave this tune ({type(e).__name__}: {e})", tune=t.x,
                          line=t.line) from None
    raise InputError(f"unknown format {fmt!r}; use one of {', '.join(CONTENT_TYPES)}")


class Engraver:
    """One worker process that parses and engraves, killed and replaced when a request runs out of time.

    music21 and verovio cannot be stopped from another thread, so a tune that
    takes minutes would hold the engraving lock (and a pool thread) long after
    its request got its 503.  Here the work runs in a separate process (spawned:
    no locks of this multi-threaded server are copied into it); a call waits
    at most until its deadline, for the process to be free and for its answer,
    and past it the process is killed and a fresh one started for the next
    call.  Errors come back as their class name and fields, and are raised
    again here as the same abcgen error.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._proc = None
        self._conn = None

    def _start(self):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=True)
        self._proc = ctx.Process(target=_engraver_main, args=(child,), daemon=True,
                                 name="abcgen-engraver")
        self._proc.start()
        child.close()
        self._conn = parent

    def _kill(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def call(self, name: str, args: tuple, deadline: float | None):
        def left():
            return None if deadline is None else max(0.0, deadline - time.monotonic())

        if not self._lock.acquire(timeout=-1 if deadline is None else left()):
            raise RequestTimeout("the engraver stayed busy past this request's time limit; try again")
        try:
            if self._proc is None or not self._proc.is_alive():
                self._kill()
                self._start()
            self._conn.send((name, args))
            if not self._conn.poll(left()):
                self._kill()   # stops the work; a fresh process starts now, for the next call
                self._start()
                raise RequestTimeout("the request ran out of time and its engraving was stopped; "
                                     "ask for a shorter tune")
            try:
                kind, value = self._conn.recv()
            except (EOFError, OSError):
                self._kill()
                raise AbcgenError("the engraving process died (out of memory or a crash)") from None
        finally:
            self._lock.release()
        if kind == "ok":
            return value
        cls, msg, line, tune = value
        raise {"EditorError": EditorError, "InputError": InputError,
               "AbcParseError": AbcParseError}.get(cls, AbcgenError)(msg, line=line, tune=tune)

    def warm(self):
        """Start the process now (it imports music21 and verovio while the server waits for work)."""
        with self._lock:
            if self._proc is None:
                self._start()

    def close(self):
        self._kill()


class Engravers:
    """A few engraving processes, so a quick render need not wait behind a slow one."""

    def __init__(self, n: int = 2):
        import queue

        self.all = [Engraver() for _ in range(max(1, n))]
        self._free: "queue.Queue[Engraver]" = queue.Queue()
        for e in self.all:
            self._free.put(e)

    def call(self, name: str, args: tuple, deadline: float | None):
        import queue

        try:
            e = self._free.get(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise RequestTimeout("every engraving process stayed busy past this request's time limit; "
                                 "try again") from None
        try:
            return e.call(name, args, deadline)
        finally:
            self._free.put(e)

    def warm(self):
        for e in self.all:
            e.warm()

    def close(self):
        for e in self.all:
            e.close()


def _engraver_main(conn) -> None:
    """The engraving process: answer (name, args) requests until the pipe closes."""
    import signal
    import warnings

    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the server handles Ctrl-C
    warnings.simplefilter("ignore")
    work = {"render": _render_abc, "notes": _note_events}
    while True:
        try:
            name, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            out = ("ok", work[name](*args))
        except AbcgenError as e:
            out = ("error", (type(e).__name__, e.message, e.line, e.tune))
        except Exception as e:  # noqa: BLE001 - a bug, reported as one line
            out = ("error", ("AbcgenError", f"internal error: {type(e).__name__}: {e}", None, None))
        try:
            conn.send(out)
        except (OSError, BrokenPipeError):
            return


def _qpm(score) -> float:
    """Quarter notes per minute: the tune's Q: if it has one, else a dance tempo for its meter."""
    from music21 import meter, tempo

    mm = next(iter(score.recurse().getElementsByClass(tempo.MetronomeMark)), None)
    if mm is not None and mm.number:
        try:
            return float(mm.getQuarterBPM())
        except Exception:
            pass
    ts = next(iter(score.recurse().getElementsByClass(meter.TimeSignature)), None)
    if ts is not None and ts.denominator == 8 and ts.numerator % 3 == 0:
        return 180.0            # jigs and slip jigs: a dotted quarter at 120
    return 120.0


def note_events(text: str, tune: int = 1) -> dict:
    """What the page's synthesiser plays: repeats written out, ties joined, times in quarter notes."""
    with _ENGRAVING:
        return _note_events(text, tune)


def _note_events(text: str, tune: int = 1) -> dict:
    from .sounding import part_events
    from .sounding import played

    parsed = parse_book(text)
    t, score = _select(parsed, tune, "notes")[0]
    heard = played(score)
    parts = list(heard.parts) or [heard]
    events = []
    for part in parts:
        for on, d, p in part_events(part):
            events.append({"onset": float(on), "duration": float(d), "pitch": int(p)})
    events.sort(key=lambda e: (e["onset"], e["pitch"]))
    end = max((Fraction(e["onset"]) + Fraction(e["duration"]) for e in events), default=0)
    return {"tune": tune, "x": t.x, "title": t.title, "qpm": _qpm(score),
            "length": float(end), "events": events}


def vocabulary_headers(model) -> dict:
    """The M:, L: and K: values to offer, in musical order: those the model (so the
    corpus) really uses (sample.header_menu); char-level models: empty."""
    from .sample import header_menu

    if model.vocab.level == "token":
        return header_menu(model)
    out = {"meters": [], "units": [], "keys": []}
    for s in model.vocab.symbols:
        for prefix, name in (("M:", "meters"), ("L:", "units"), ("K:", "keys")):
            if s.startswith(prefix) and len(s) > 2:
                out[name].append(s[2:].strip())
    for name in out:
        out[name] = sorted(set(out[name]))
    return out


# --------------------------------------------------------------------------- the web app

_FIELD = LIMITS["field"]


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    meter: Optional[str] = Field(None, max_length=_FIELD, description="e.g. 6/8")
    key: Optional[str] = Field(None, max_length=_FIELD, description="e.g. D, Dm, Ddor, Amix")
    unit: Optional[str] = Field(None, max_length=_FIELD, description="e.g. 1/8")
    temperature: float = Field(1.0, gt=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=10000)
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1, description="none: a random seed, returned")
    prime: str = Field("", max_length=LIMITS["prime"], description="an opening to continue")
    count: int = Field(1, ge=1, le=LIMITS["count"])
    max_tokens: int = Field(1000, ge=1, le=LIMITS["max_tokens"])
    bars: Optional[int] = Field(None, ge=1, le=LIMITS["bars"],
                                description="about this many bars; none: the corpus's lengths for the meter")
    form: Optional[str] = Field(None, max_length=_FIELD, description="parts, e.g. AABB (a doubled letter: a repeat)")
    part_bars: int = Field(8, ge=1, le=32, description="bars per part of the form")


class SampleResponse(BaseModel):
    abc: str
    seed: int
    model: str
    count: int


class RenderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    abc: str = Field(..., max_length=LIMITS["abc"])
    format: Literal["svg", "png", "pdf", "mid", "musicxml"] = "svg"
    tune: Optional[int] = Field(None, ge=1, description="the tune's position in the book (1: the first)")


class NotesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    abc: str = Field(..., max_length=LIMITS["abc"])
    tune: int = Field(1, ge=1)


class Studio:
    """The model, the thread pool and the time limit behind one app."""

    def __init__(self, model_path: Path, timeout: float = DEFAULT_TIMEOUT, workers: int = 2):
        from .sample import Model

        self.model_path = Path(model_path)
        self.model = Model(self.model_path)   # loads (and checks) it now, not on the first request
        from .sample import check_model

        check_model(self.model)               # the studio always samples with the grammar mask
        self.timeout = timeout
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="abcgen-serve")
        # Threads that wait for the engraving process: a slow render must not take a sampling thread.
        self.engrave_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="abcgen-engrave")
        self._local = threading.local()
        self.engraver = Engravers(2)

    def thread_model(self):
        from .sample import Model

        m = getattr(self._local, "model", None)
        if m is None:
            m = self._local.model = Model(self.model_path)
        return m

    async def run(self, fn, *args, pool=None):
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(pool or self.pool, fn, *args)
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except asyncio.TimeoutError:
            raise RequestTimeout(f"the request took longer than {self.timeout:g} s and was stopped; "
                                 "ask for fewer or shorter tunes") from None


class RequestTimeout(AbcgenError):
    pass


SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # The page's own script and style; engraved SVG is inserted inline (its style attributes);
    # downloads and audio are blob: URLs; nothing may frame the studio.
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data: blob:; font-src 'self' data:; media-src 'self' blob:; "
                                "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                                "frame-ancestors 'none'"),
}
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def host_names(host: str | None) -> set[str]:
    """The ``Host`` names the studio answers to when it listens on ``host`` (lower case, no port)."""
    names = set(LOOPBACK_NAMES)
    if host:
        h = host.strip().lower()
        if h in ("0.0.0.0", "::", "[::]"):       # every interface: this machine's names too
            import socket

            names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        elif ":" in h and not h.startswith("["):
            names.add(f"[{h}]")
        else:
            names.add(h)
    return names


def _host_name(header: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``[::1]``, ``Localhost:80`` -> ``localhost``."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if ":" in h else h


def create_app(model_path: str | Path | None = None, *, timeout: float = DEFAULT_TIMEOUT,
               workers: int = 2, host: str | None = None):
    """The FastAPI app; ``model_path`` as ``abcgen sample --model`` takes it (None: the shipped model).

    ``host``: the address the server listens on; requests must name it, or
    a loopback name, in their ``Host`` header.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from . import __version__
    from . import sample as S

    studio = Studio(S.resolve_model(None if model_path is None else str(model_path)),
                    timeout=timeout, workers=workers)

    @asynccontextmanager
    async def lifespan(app):
        studio.engraver.warm()
        yield
        studio.pool.shutdown(wait=False, cancel_futures=True)
        studio.engrave_pool.shutdown(wait=False, cancel_futures=True)
        studio.engraver.close()

    app = FastAPI(title="abcgen studio", version=__version__, lifespan=lifespan,
                  description="Generate folk tunes in ABC notation, engrave them and hear them.")
    app.state.studio = studio
    allowed = host_names(host)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        name = _host_name(request.headers.get("host", ""))
        if name not in allowed:
            response = error(400, f"host {name or '(none)'!r} is not served here; "
                                  f"open http://127.0.0.1:PORT/ (or the address the studio listens on)")
        else:
            response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    def error(status: int, e: Exception | str, line=None, tune=None):
        if isinstance(e, AbcgenError):
            msg, line, tune = e.message, e.line, e.tune
        else:
            msg = str(e)
        where = []
        if line:
            where.append(f"line {line}")
        if tune is not None:
            where.append(f"tune X:{tune}")
        text = f"{' '.join(where)}: {msg}" if where else msg
        return JSONResponse({"error": text, "line": line, "tune": tune}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        msgs = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            msgs.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return error(422, "; ".join(msgs) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        # FastAPI's own errors (a body that is not JSON or not UTF-8, nested too deep; 404; 405)
        detail = exc.detail if isinstance(exc.detail, str) else "invalid request"
        if detail == "There was an error parsing the body":
            detail = "the request body is not valid JSON (UTF-8, nested at most a few levels)"
        resp = error(exc.status_code, detail)
        for k, v in (getattr(exc, "headers", None) or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(RequestTimeout)
    async def _timeout(request: Request, exc: RequestTimeout):
        return error(503, exc)

    @app.exception_handler(S.SamplingTimeout)
    async def _stimeout(request: Request, exc: AbcgenError):
        return error(503, exc)

    @app.exception_handler(InputError)
    async def _bad(request: Request, exc: InputError):
        return error(400, exc)

    @app.exception_handler(AbcgenError)
    async def _cannot(request: Request, exc: AbcgenError):
        return error(422, exc)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/model")
    async def model_info() -> dict:
        """The model's name and level, the header values it knows, and the request limits."""
        m = studio.model
        return {"name": m.name, "level": m.vocab.level, **vocabulary_headers(m), "limits": LIMITS}

    @app.post("/api/sample", response_model=SampleResponse)
    async def api_sample(req: SampleRequest):
        """New tunes: the tune book ``abcgen sample`` prints for the same options."""
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        blank = lambda v: None if v is None or not v.strip() else v.strip()  # noqa: E731
        opts = S.SampleOptions(count=req.count, temperature=req.temperature, top_k=req.top_k,
                               top_p=req.top_p, seed=seed, meter=blank(req.meter), key=blank(req.key),
                               unit=blank(req.unit), prime=req.prime, max_tokens=req.max_tokens,
                               bars=req.bars, form=blank(req.form), part_bars=req.part_bars)
        S.check_options(opts)
        deadline = time.monotonic() + studio.timeout

        def work():
            return S.generate(studio.thread_model(), opts, deadline=deadline)

        book = await studio.run(work)
        return {"abc": book, "seed": seed, "model": studio.model.name, "count": req.count}

    @app.post("/api/render", response_class=Response,
              responses={200: {"content": {t: {} for t in CONTENT_TYPES.values()},
                               "description": "the file"}})
    async def api_render(req: RenderRequest):
        """The ABC engraved (svg, png, pdf) or converted (mid, musicxml); as ``abcgen render`` does."""
        deadline = time.monotonic() + studio.timeout
        data = await studio.run(studio.engraver.call, "render", (req.abc, req.format, req.tune), deadline,
                                pool=studio.engrave_pool)
        name = f"abcgen.{EXTENSIONS[req.format]}"
        return Response(data, media_type=CONTENT_TYPES[req.format],
                        headers={"Content-Disposition": f'inline; filename="{name}"'})

    @app.post("/api/notes")
    async def api_notes(req: NotesRequest) -> dict:
        """Note events of one tune for the page's synthesiser: onset and duration in quarter notes, MIDI pitch."""
        deadline = time.monotonic() + studio.timeout
        return await studio.run(studio.engraver.call, "notes", (req.abc, req.tune), deadline,
                                pool=studio.engrave_pool)

    return app
