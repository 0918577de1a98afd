"""`tinychameleon serve`: the JSON API and the single page, on FastAPI + uvicorn.

The model is loaded once. Every request goes through the bounded InferenceWorker queue;
bad input is answered with a 4xx and a reason, a full queue with 503, a slow request with
504. Nothing a request sends is ever used as a file system path.
"""

from __future__ import annotations

import asyncio
import base64
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from ..data.colored import ADJECTIVES, DIGIT_WORDS, HUES, PALETTE
from ..errors import ImageInputError, ImageTooLargeError, PromptError
from ..imaging import png_bytes, read_image
from .worker import InferenceWorker, Job, QueueFull

STATIC = Path(__file__).parent / "static"


@dataclass
class ServerSettings:
    max_samples: int = 64
    queue_size: int = 32
    timeout_s: float = 10.0
    max_upload_bytes: int = 2 * 1024 * 1024


class Sampling(BaseModel):
    temperature: float | None = Field(None, ge=0.0, le=5.0, description="0 = greedy; default: the checkpoint's")
    top_k: int | None = Field(None, ge=0, le=2048, description="0 = no top-k filtering; default: the checkpoint's")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="fix the random stream")


class GenerateRequest(Sampling):
    prompt: str = Field(..., max_length=200, examples=["dark green eight on bright cyan"])
    n: int = Field(4, ge=1, description="number of images")
    guidance: float | None = Field(None, ge=0.0, le=10.0,
                                   description="classifier-free guidance scale (1 = off); default: the checkpoint's")
    candidates: int | None = Field(None, ge=1, le=16, description="images drawn per image shown; the model keeps "
                                   "the one it captions best; default: the checkpoint's")


class SampleRequest(Sampling):
    n: int = Field(6, ge=1, description="number of image + caption pairs")


def data_url(levels, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(levels, scale)).decode()


def create_app(pipeline, settings: ServerSettings | None = None) -> FastAPI:
    settings = settings or ServerSettings()
    worker = InferenceWorker(pipeline, queue_size=settings.queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="tinychameleon", version="0.1.0", lifespan=lifespan,
                  description="One transformer for text and images of colored MNIST digits.")
    app.state.worker = worker
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def run(job: Job):
        try:
            return await worker.submit(job, settings.timeout_s)
        except QueueFull:
            raise HTTPException(503, "the server is busy: too many requests are waiting; retry shortly") from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {settings.timeout_s:g}s and was cancelled") from None

    def check_count(n: int) -> None:
        if n > settings.max_samples:
            raise HTTPException(422, f"n={n} is more than the {settings.max_samples} samples one request may ask for")

    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health")
    async def health():
        return {"status": "ok", "checkpoint": Path(pipeline.source).name, "queued": worker.queue.qsize(),
                "max_samples": settings.max_samples}

    @app.get("/api/vocabulary")
    async def vocabulary():
        """The words and palette colors, for building prompts."""
        return {"adjectives": ADJECTIVES, "hues": HUES, "digits": DIGIT_WORDS,
                "colors": [{"name": f"{a} {h}", "rgb": [v * 85 for v in rgb]} for (a, h), rgb in PALETTE.items()],
                "template": "<adjective> <color> <digit> on <adjective> <color>"}

    @app.post("/api/generate")
    async def generate(request: GenerateRequest):
        """Text -> image: `n` images for one caption."""
        check_count(request.n)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                pipeline.encode_prompts([request.prompt])
            except PromptError as error:
                raise HTTPException(422, str(error)) from None
        prompt = " ".join(request.prompt.lower().split())
        sampling = {"temperature": request.temperature, "top_k": request.top_k, "guidance": request.guidance,
                    "image_candidates": request.candidates}
        images = await run(Job("generate", sampling, [prompt] * request.n, request.seed))
        return {"prompt": prompt, "warnings": [str(w.message) for w in caught],
                "images": [data_url(image) for image in images]}

    @app.post("/api/caption")
    async def caption(request: Request, file: UploadFile = File(..., description="an image of any size"),
                      temperature: float | None = None, seed: int | None = None):
        """Image -> text: upload an image; returns its caption and the 2-bit 28x28 image the model saw."""
        if temperature is not None and not 0.0 <= temperature <= 5.0:
            raise HTTPException(422, "temperature must be between 0 and 5")
        data = await file.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise HTTPException(413, f"the upload is larger than {settings.max_upload_bytes} bytes")
        if not data:
            raise HTTPException(400, "the upload is empty")
        try:
            levels = read_image(data)
        except ImageTooLargeError as error:
            raise HTTPException(413, str(error)) from None
        except ImageInputError as error:
            raise HTTPException(415, str(error)) from None
        result = await run(Job("caption", {"temperature": temperature}, [levels], seed))
        return {"caption": result[0], "seen": data_url(levels)}

    @app.post("/api/sample")
    async def sample(request: SampleRequest):
        """Unconditional: `n` image + caption pairs."""
        check_count(request.n)
        sampling = {"temperature": request.temperature, "top_k": request.top_k}
        pairs = await run(Job("sample", sampling, [None] * request.n, request.seed))
        return {"samples": [{"caption": text, "image": data_url(image)} for image, text in pairs]}

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse({"detail": error.detail}, status_code=error.status_code)

    return app


def serve(args) -> None:
    import uvicorn

    from ..pipeline import Pipeline

    pipeline = Pipeline.from_pretrained(args.checkpoint)
    settings = ServerSettings(max_samples=args.max_samples, queue_size=args.queue_size, timeout_s=args.timeout)
    print(f"serving {pipeline.source} on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(create_app(pipeline, settings), host=args.host, port=args.port, log_level="warning")
