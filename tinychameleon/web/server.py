"""`tinychameleon serve`: the JSON API and the single page, on FastAPI + uvicorn.

The model is loaded once. Every request goes through the bounded InferenceWorker queue;
bad input is answered with a 4xx and a short reason that never echoes more than a prefix of
what was sent, a full queue with 503, a request past its time limit with 504 (and its work is
stopped). Bodies over a size limit get 413; a request whose cost (images x candidates x guidance
streams) is over the budget gets 422 before any work. Images are decoded off the event loop.
Nothing a request sends is ever used as a file system path.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import math
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES, PALETTE
from ..config import short
from ..errors import ConfigError, DeadlineExceeded, ImageInputError, ImageTooLargeError, PromptError, TinyChameleonError
from ..regions import KEEP_REGIONS, RegionError, keep_mask, read_mask
from ..tokenizers.text import MAX_PROMPT_CHARACTERS, TEMPLATE, normalize_prompt
from ..imaging import png_bytes, read_image
from ..documents.document import MAX_PROMPT_CHARACTERS as MAX_DOCUMENT_PROMPT, DocumentTokenizer, split_words
from ..pipeline_completion import COMPLETION_REDRAWS
from ..tasks import TASKS
from .worker import InferenceWorker, Job, QueueFull

STATIC = Path(__file__).parent / "static"
MAX_SEED = 2**31 - 1


@dataclass
class ServerSettings:
    max_samples: int = 64
    queue_size: int = 32
    timeout_s: float = 10.0
    max_upload_bytes: int = 2 * 1024 * 1024
    max_cost: int = 512           # decoded rows one request may cost: images x candidates x guidance streams

    @property
    def max_body_bytes(self) -> int:
        return self.max_upload_bytes + 64 * 1024  # an upload plus its multipart envelope


class Sampling(BaseModel):
    # Strict numbers: `true` is not 1, `"3"` is not 3, and NaN / Infinity are refused.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    temperature: float | None = Field(None, ge=0.0, le=5.0, description="0 = greedy; default: the checkpoint's")
    top_k: StrictInt | None = Field(None, ge=0, le=2048, description="0 = no top-k filtering; default: the checkpoint's")
    seed: StrictInt | None = Field(None, ge=0, le=MAX_SEED, description="fix the random stream")
    model: str | None = Field(None, max_length=40, description="a served model by name (GET /api/models); "
                                                               "default: the served checkpoint")


class GenerateRequest(Sampling):
    prompt: str = Field(..., max_length=MAX_PROMPT_CHARACTERS, examples=["dark green eight on bright cyan"])
    n: StrictInt = Field(4, ge=1, description="number of images")
    guidance: float | None = Field(None, ge=0.0, le=10.0,
                                   description="classifier-free guidance scale (1 = off); default: the checkpoint's")
    candidates: StrictInt | None = Field(None, ge=1, le=16, description="images drawn per image shown; the model "
                                         "keeps the one it captions best; default: the checkpoint's")


class SampleRequest(Sampling):
    n: StrictInt = Field(6, ge=1, description="number of image + caption pairs")


def validation_message(error: RequestValidationError) -> str:
    """Pydantic's errors as one short line per field, without echoing the input back."""
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "body"
        parts.append(f"{short(where, 40)}: {short(str(item.get('msg', 'invalid')), 120)}")
    return "; ".join(parts)


def safe_text(text: str, limit: int = 300) -> str:
    """A message that is valid UTF-8 (lone surrogates escaped) and short."""
    return short(str(text), limit).encode("utf-8", "backslashreplace").decode("utf-8")


class BodyLimit:
    """ASGI middleware: bodies over `limit` bytes get 413 before they are read into memory."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self.refuse(send)
        received, started, too_large = 0, False, False

        async def limited_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            if too_large:
                # A body without Content-Length (chunked) ran over the limit mid-parse; the form parser answers
                # that with its own 400. The documented answer is 413: send it instead of the app's.
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self.refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await self.refuse(send)

    async def refuse(self, send):
        response = JSONResponse({"detail": f"the request body is larger than {self.limit} bytes"}, status_code=413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class BodyTooLarge(Exception):
    pass


def _load_malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc: nothing to trim


_MALLOC_TRIM = _load_malloc_trim()


def _release_memory() -> None:
    """Hand freed heap pages back to the system (glibc keeps a large decode's pages in its arenas otherwise,
    and the server would stay hundreds of MB above its baseline after a burst of uploads)."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def decode_upload(data: bytes, reader=None):
    """reader(data) (read_image unless given, e.g. read_mask), then the decode's memory returned: the small
    result is all that is kept."""
    try:
        return (reader or read_image)(data)
    finally:
        _release_memory()


def checked_prompt(check) -> list[str]:
    """Run a prompt's check: its PromptError becomes a 422, and the warnings it gives (a color off the palette) are
    returned for the answer's "warnings"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check()
        except PromptError as error:
            raise HTTPException(422, str(error)) from None
    return [str(warning.message) for warning in caught]


def data_url(levels, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(levels, scale)).decode()


DECODE_SLOTS = 2  # uploads decoded at once: a 4096x4096 PNG takes ~130 MB while it is read (BENCHMARKS.md)
MAX_SEARCH_HITS = 64
MAX_SEARCH_TEXT = 400


def load_search(retriever_dir: str | None = None, memory: str | None = None):
    """The retriever and its memory bank (the training digits unless `memory`); built on first use."""
    from ..retrieval.memory import load_bank
    from ..retrieval.retriever import Retriever

    retriever = Retriever.from_pretrained(retriever_dir)
    return retriever, load_bank(retriever, memory)


def create_app(pipeline, settings: ServerSettings | None = None, search_loader=load_search,
               models: dict | None = None) -> FastAPI:
    """The app serving `pipeline`; `models` ({name: Pipeline}) are the others a request may name (`model`)."""
    settings = settings or ServerSettings()
    models = dict(models or {})
    search_state = {"lock": asyncio.Lock(), "loaded": None}
    decode_slots = asyncio.Semaphore(DECODE_SLOTS)   # bounds the memory a burst of large uploads can take
    worker = InferenceWorker(pipeline, queue_size=settings.queue_size, models=models)

    def pipeline_for(name: str | None):
        """The pipeline a request names (None: the served checkpoint); 422 for a name not served."""
        if name is None:
            return pipeline
        if name not in models:
            raise HTTPException(422, f"unknown model {short(name, 40)!r}; served: {', '.join(models) or 'only the default'}")
        return models[name]

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        for name in [None, *models]:
            served = pipeline_for(name)
            await worker.calibrate("dark green eight on bright cyan",
                                   served.sampling.image_candidates * served.sampling.streams, name)
        yield
        await worker.stop()

    app = FastAPI(title="tinychameleon", version="0.1.0", lifespan=lifespan,
                  description="One transformer for text and images of colored MNIST digits.")
    app.state.worker = worker
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    async def run(job: Job, client: Request):
        """Admit a job only if it can finish in time at the measured rate; wait for it, and stop its work if the
        client goes away."""
        predicted = worker.predicted_seconds(job)
        if predicted is not None and predicted > settings.timeout_s:
            alone = worker.predicted_seconds(job, waiting=False)
            if alone > settings.timeout_s:  # even on an idle server it would end in a 504: say so now
                raise HTTPException(422, f"this request would take about {alone:.0f}s, over the server's "
                                         f"{settings.timeout_s:g}s limit; ask for fewer images")
            retry = max(1, math.ceil(predicted - settings.timeout_s))
            raise HTTPException(503, f"the server is busy: this request would finish in about {predicted:.0f}s, "
                                     f"over its {settings.timeout_s:g}s limit; retry in {retry}s",
                                headers={"Retry-After": str(retry)})
        waiting = asyncio.create_task(worker.submit(job, settings.timeout_s))
        try:
            while True:
                done, _ = await asyncio.wait({waiting}, timeout=0.25)
                if done:
                    return waiting.result()
                if await client.is_disconnected():  # nobody will read the answer: free the CPU
                    if job.future is not None:
                        job.future.cancel()
                    waiting.cancel()
                    raise HTTPException(499, "the client closed the connection")
        except QueueFull:
            raise HTTPException(503, "the server is busy: too many requests are waiting; retry shortly") from None
        except (asyncio.TimeoutError, DeadlineExceeded):
            raise HTTPException(504, f"the request took longer than {settings.timeout_s:g}s; its work was "
                                     "stopped") from None
        except (ConfigError, PromptError) as error:  # e.g. a prompt whose colors contradict a kept half
            raise HTTPException(422, str(error)) from None

    def check_cost(n: int, sampling: dict, candidates_used: bool = True, images_per_sample: int = 1,
                   passes: int = 1, model: str | None = None) -> int:
        """Refuse up front what would cost more than the budget: images x candidates x guidance streams, times
        the images a document may draw (`images_per_sample`) and the times each may be drawn (`passes`: a
        completion without a prompt is redrawn up to COMPLETION_REDRAWS times, each read back)."""
        if n > settings.max_samples:
            raise HTTPException(422, f"n={n} is more than the {settings.max_samples} samples one request may ask for")
        try:
            chosen = pipeline_for(model).resolve_settings(sampling)
        except ConfigError as error:
            raise HTTPException(422, str(error)) from None
        candidates = chosen.image_candidates if candidates_used else 1
        cost = n * candidates * chosen.streams * images_per_sample * passes
        if cost > settings.max_cost:
            per_sample = (f" x {images_per_sample} images" if images_per_sample > 1 else "") + \
                (f" x {passes} draws and redraws" if passes > 1 else "")
            raise HTTPException(422, f"this request would decode {cost} rows (n {n} x candidates {candidates} x "
                                     f"{chosen.streams} guidance streams{per_sample}); the limit is {settings.max_cost}")
        return cost

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "checkpoint": Path(pipeline.source).name, "queued": worker.queued,
                "max_samples": settings.max_samples, "models": list(models)}

    @app.get("/api/models")
    async def served_models():
        """The models a request may name, and which generator each is (the default first, named null)."""
        rows = [(None, pipeline)] + [(name, served) for name, served in models.items() if served is not pipeline]
        return {"models": [{"name": name, "checkpoint": Path(served.source).name,
                            "generator": "next-scale" if served.next_scale else "raster"} for name, served in rows]}

    @app.get("/api/vocabulary")
    async def vocabulary():
        """The words and palette colors, for building prompts."""
        return {"adjectives": ADJECTIVES, "hues": HUES, "digits": DIGIT_WORDS,
                "colors": [{"name": f"{a} {h}", "rgb": [v * 85 for v in rgb]} for (a, h), rgb in PALETTE.items()],
                "template": TEMPLATE}

    @app.post(TASKS["generate"].endpoint, summary=TASKS["generate"].summary)
    async def generate(request: GenerateRequest, http: Request):
        """Text -> image: `n` images for one caption."""
        sampling = {"temperature": request.temperature, "top_k": request.top_k, "guidance": request.guidance,
                    "image_candidates": request.candidates}
        cost = check_cost(request.n, sampling, model=request.model)
        notes = checked_prompt(lambda: pipeline.encode_partial([request.prompt]))  # "*" blanks are filled per image
        prompt = normalize_prompt(request.prompt)
        pairs = await run(Job("generate", sampling, [prompt] * request.n, request.seed, cost, model=request.model), http)
        return {"prompt": prompt, "warnings": notes,
                "images": [data_url(image) for image, _ in pairs], "captions": [text for _, text in pairs]}

    @app.post(TASKS["caption"].endpoint, summary=TASKS["caption"].summary)
    async def caption(request: Request, file: UploadFile = File(..., description="an image of any size"),
                      temperature: float | None = Query(None, ge=0.0, le=5.0, allow_inf_nan=False),
                      seed: int | None = Query(None, ge=0, le=MAX_SEED),
                      model: str | None = Query(None, max_length=40, description="a served model by name")):
        """Image -> text: upload an image; returns its caption and the 2-bit 28x28 image the model saw."""
        cost = check_cost(1, {"temperature": temperature, "guidance": pipeline_for(model).sampling.caption_guidance},
                          candidates_used=False, model=model)
        levels = await read_upload(file)
        result = await run(Job("caption", {"temperature": temperature}, [levels], seed, cost, model=model), request)
        return {"caption": result[0], "seen": data_url(levels)}

    async def read_upload(file: UploadFile, reader=None, what: str | None = None):
        """An upload decoded by `reader` off the event loop, in one of the few decode slots; `what` names it in
        errors ("the mask") when it is not the request's image."""
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"{what or 'the upload'} is larger than {settings.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, f"{what or 'the upload'} is empty")
        try:
            async with decode_slots:  # decoding is CPU work off the loop, a few at a time
                return await asyncio.to_thread(decode_upload, data, reader)
        except ImageTooLargeError as error:
            raise HTTPException(413, f"{what}: {error}" if what else str(error)) from None
        except ImageInputError as error:
            raise HTTPException(415, f"{what}: {error}" if what else str(error)) from None

    @app.post(TASKS["complete"].endpoint, summary=TASKS["complete"].summary)
    async def complete(http: Request, file: UploadFile = File(..., description="the image to complete"),
                       keep: str = Form("top", description="the half kept: top, bottom, left or right"),
                       mask: UploadFile | None = File(None, description="instead of keep: a 28x28 mask image "
                                                                        "whose white pixels are kept"),
                       prompt: str | None = Form(None, max_length=MAX_PROMPT_CHARACTERS,
                                                 description='caption to draw for ("*" blanks allowed); '
                                                             "default: read off the kept half"),
                       n: int = Form(4, ge=1), seed: int | None = Form(None, ge=0, le=MAX_SEED)):
        """Completion: keep one half of an uploaded image, draw the rest; returns the images and captions."""
        if keep not in KEEP_REGIONS:
            raise HTTPException(422, f"keep must be one of {', '.join(KEEP_REGIONS)}")
        kept = keep
        if mask is not None:   # the same 28x28 mask the CLI's --keep MASK.png takes
            try:
                kept = keep_mask(await read_upload(mask, read_mask, "the mask"))
            except RegionError as error:
                raise HTTPException(422, str(error)) from None
        prompt = normalize_prompt(prompt) if prompt and prompt.strip() else None
        cost = check_cost(n, {}, passes=1 + COMPLETION_REDRAWS if prompt is None else 1)
        if prompt is not None:
            try:
                pipeline.encode_partial([prompt])
            except PromptError as error:
                raise HTTPException(422, str(error)) from None
        levels = await read_upload(file)
        pairs = await run(Job("complete", {}, [(levels, kept, prompt)] * n, seed, cost), http)
        return {"keep": "mask" if mask is not None else keep, "seen": data_url(levels),
                "completions": [{"caption": text, "image": data_url(image)} for image, text in pairs]}

    @app.post(TASKS["continue"].endpoint, summary=TASKS["continue"].summary)
    async def continue_document(http: Request, prompt: str = Form(..., max_length=MAX_DOCUMENT_PROMPT,
                                                   description='words with <image> placeholders, e.g. '
                                                               '"<image> make the digit plain red ."'),
                                images: list[UploadFile] = File([], description="one image per <image>, in order"),
                                n: int = Form(1, ge=1), seed: int | None = Form(None, ge=0, le=MAX_SEED),
                                temperature: float | None = Form(None, ge=0.0, le=5.0, allow_inf_nan=False),
                                guidance: float | None = Form(None, ge=0.0, le=10.0, allow_inf_nan=False)):
        """Mixed-modal documents: continue a prompt of words and images with text and images the model decides
        to draw. Cost: n x guidance streams x the images a continuation has room for."""
        if len(images) > pipeline.vocab.document_images:
            raise HTTPException(422, f"{len(images)} images: a document holds at most {pipeline.vocab.document_images}")
        sampling = {"temperature": temperature, "guidance": guidance}
        notes = checked_prompt(lambda: DocumentTokenizer(pipeline.vocab).check(prompt, len(images)))
        cost = check_cost(n, pipeline.document_overrides(sampling), candidates_used=False,
                          images_per_sample=pipeline.vocab.document_images)
        pictures = [await read_upload(file) for file in images]
        results = await run(Job("continue", sampling, [(prompt, pictures)] * n, seed, cost), http)
        return {"prompt": " ".join(split_words(prompt)), "warnings": notes,
                "seen": [data_url(picture) for picture in pictures],
                "continuations": [{"text": item.text, "images": [data_url(image) for image in item.images],
                                   "finished": item.finished} for item in results]}

    @app.post(TASKS["search"].endpoint, summary=TASKS["search"].summary)
    async def search(text: str | None = Form(None, max_length=MAX_SEARCH_TEXT, description='e.g. "plain red eight"'),
                     image: UploadFile | None = File(None, description="or an image to find documents like"),
                     k: int = Form(8, ge=1, le=MAX_SEARCH_HITS)):
        """Retrieval: the k documents of the memory bank nearest to a text or an image, with their pictures."""
        from ..retrieval.memory import embed_queries

        if (text is None or not text.strip()) == (image is None):
            raise HTTPException(422, "give either a text or an image to search with")
        async with search_state["lock"]:  # the first search builds (or loads) the bank, once
            if search_state["loaded"] is None:
                try:
                    search_state["loaded"] = await asyncio.to_thread(search_loader)
                except TinyChameleonError as error:
                    raise HTTPException(503, f"search is not available: {error}") from None
        retriever, bank = search_state["loaded"]
        query = text if image is None else await read_upload(image)
        try:
            vectors = await asyncio.to_thread(embed_queries, retriever, [query])
        except PromptError as error:
            raise HTTPException(422, str(error)) from None
        hits = bank.search(vectors, k)[0]
        pictures = await asyncio.to_thread(bank.images, [hit.position for hit in hits])
        return {"query": " ".join(split_words(text)) if image is None else "image",
                "seen": None if image is None else data_url(query), "memory": bank.name,
                "hits": [{**hit.to_dict(0), "image": data_url(picture)} for hit, picture in zip(hits, pictures)]}

    @app.post(TASKS["sample"].endpoint, summary=TASKS["sample"].summary)
    async def sample(request: SampleRequest, http: Request):
        """Unconditional: `n` image + caption pairs."""
        sampling = {"temperature": request.temperature, "top_k": request.top_k}
        cost = check_cost(request.n, sampling, model=request.model)
        pairs = await run(Job("sample", sampling, [None] * request.n, request.seed, cost, model=request.model), http)
        return {"samples": [{"caption": text, "image": data_url(image)} for image, text in pairs]}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse({"detail": safe_text(error.detail)}, status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        return JSONResponse({"detail": safe_text(validation_message(error))}, status_code=422)

    return app


def serve(checkpoint: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          settings: ServerSettings | None = None) -> None:
    import uvicorn

    from ..pipeline import PRETRAINED, Pipeline, resolve_checkpoint

    pipeline = Pipeline.from_pretrained(checkpoint)
    # Every shipped model is served beside the checkpoint, by name (the web page's model choice).
    models = {name: pipeline if path.resolve() == resolve_checkpoint(checkpoint).resolve() else Pipeline.from_pretrained(path)
              for name, path in PRETRAINED.items() if (path / "model.safetensors").exists()}
    print(f"serving {pipeline.source} on http://{host}:{port}/ (API docs at /docs); models by name: "
          f"{', '.join(models) or 'none'}", flush=True)
    uvicorn.run(create_app(pipeline, settings, models=models), host=host, port=port, log_level="warning")
