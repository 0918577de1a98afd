"""Bounded inference queues with micro-batching, so the server stays responsive under load.

Requests become jobs on an asyncio queue of fixed size; a full queue is refused at once
(the server answers 503). There are two lanes, each a queue drained by one task into its own
inference thread: light jobs (cost at most `light_cost` decoded rows) never wait behind heavy
ones. Each lane merges compatible jobs (same kind and sampling settings, no fixed seed) into
one batched pipeline call. While a light batch runs, the heavy lane pauses before its next
decode step, so light requests get the whole CPU. Each job carries its deadline: a job whose
client stopped waiting or whose deadline passed is dropped before it starts, and running work is stopped between decode
steps once every job in its batch has expired (Pipeline.time_limit), so abandoned heavy
requests free the CPU instead of running to the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..errors import DeadlineExceeded
from ..tasks import TASKS


class QueueFull(Exception):
    pass


@dataclass(eq=False)   # a job is itself: two equal requests are still two jobs
class Job:
    kind: str                      # a task of tasks.TASKS that has a `run`
    settings: dict                 # sampling overrides; jobs with equal settings can share a batch
    payload: list                  # one item per output row: prompts, images, or None (sample)
    seed: int | None = None
    cost: int = 1                  # decoded rows (images x candidates x guidance streams): picks the lane
    model: str | None = None       # a served model by name (None: the default one)
    future: asyncio.Future = field(default=None, repr=False)
    deadline: float = float("inf")  # time.monotonic() after which nobody waits for the result

    def __post_init__(self) -> None:
        if self.kind not in TASKS or TASKS[self.kind].run is None:
            raise ValueError(f"{self.kind!r} is not a task the worker runs (tasks.TASKS)")

    @property
    def abandoned(self) -> bool:
        return self.future.done() or time.monotonic() >= self.deadline

    @property
    def batch_key(self):
        if self.seed is not None or not TASKS[self.kind].shares_batches:
            return None  # a fixed seed must see exactly its own random stream; some tasks carry their own images
        return (self.kind, self.model, tuple(sorted(self.settings.items())))

    @property
    def rate_key(self) -> str:
        """Jobs whose seconds per cost are measured together: a kind, on one model."""
        return self.kind if self.model is None else f"{self.kind}@{self.model}"


class BatchTimes:
    """The last batches of one kind, (cost, seconds), and the time they predict for a new one: a fixed part plus a
    part per unit of cost. A request's decode steps cost about the same whatever its batch, so the fixed part
    dominates small requests: a rate per unit of cost alone priced an 8-image generate 4x too high and refused
    large ones that finish in a second. Robust fits (medians, Theil-Sen) so one cold first batch does not skew
    them; in proportion to cost until two batches of different cost have run."""

    def __init__(self, keep: int = 16) -> None:
        self.batches: deque[tuple[int, float]] = deque(maxlen=keep)
        self.fixed, self.per_cost = 0.0, 0.0

    def add(self, cost: int, seconds: float) -> None:
        """Record a batch and refit, once per batch: admission reads the fit for every waiting job."""
        self.batches.append((max(1, cost), seconds))
        costs = np.array([batch[0] for batch in self.batches], dtype=float)
        times = np.array([batch[1] for batch in self.batches])
        if len(set(costs)) < 2:
            self.fixed, self.per_cost = 0.0, float(np.median(times / costs))
            return
        slopes = [(times[j] - times[i]) / (costs[j] - costs[i])
                  for i in range(len(costs)) for j in range(i + 1, len(costs)) if costs[i] != costs[j]]
        self.per_cost = max(0.0, float(np.median(slopes)))
        self.fixed = max(0.0, float(np.median(times - self.per_cost * costs)))

    def predict(self, cost: int) -> float:
        return self.fixed + self.per_cost * cost


class Lane:
    """One queue and the single thread that runs its jobs."""

    def __init__(self, name: str, queue_size: int) -> None:
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.waiting: list[Job] = []      # the queued jobs, in order (what admission adds up; read on the loop)
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"inference-{name}")
        self.task: asyncio.Task | None = None


class InferenceWorker:
    def __init__(self, pipeline, queue_size: int = 32, max_batch_rows: int = 256, light_cost: int = 16,
                 models: dict | None = None) -> None:
        self.pipeline = pipeline
        self.models = dict(models or {})   # other pipelines a job may name (Job.model); None is `pipeline`
        self.max_batch_rows, self.light_cost = max_batch_rows, light_cost
        self.lanes = {"light": Lane("light", queue_size), "heavy": Lane("heavy", queue_size)}
        self.light_idle = threading.Event()
        self.light_idle.set()
        # The batches measured per kind (and model): what admission predicts a request's time from.
        self.timings: dict[str, BatchTimes] = {}

    def predicted_seconds(self, job: Job, waiting: bool = True) -> float | None:
        """Seconds until `job` would finish if queued now: the jobs waiting in its lane (unless not `waiting`), then
        its own, each at its kind's measured times (None before any measurement)."""
        jobs = [other for other in (self.lane_of(job).waiting if waiting else []) if not other.abandoned] + [job]
        times = [self._times_of(other) for other in jobs]
        if any(timing is None for timing in times):
            return None
        return sum(timing.predict(other.cost) for timing, other in zip(times, jobs))

    def _times_of(self, job: Job) -> "BatchTimes | None":
        """The measured times of the job's kind on its model; a kind not measured yet is priced like the generate
        calibrated at start-up on that model (a decoded row costs about the same), not like the slowest kind of any
        model: a `continue` or another model's rate once made an 8-pair `sample` of 0.7 s look like 12 s."""
        calibrated = Job("generate", {}, [], model=job.model).rate_key
        return self.timings.get(job.rate_key) or self.timings.get(calibrated) or (
            max(self.timings.values(), key=lambda timing: timing.predict(1)) if self.timings else None)

    def pipeline_of(self, model: str | None):
        return self.pipeline if model is None else self.models[model]

    async def calibrate(self, prompt: str, cost: int, model: str | None = None) -> None:
        """Time one small generate before serving, so the first requests of every kind are admitted on a
        measured rate (each kind then refines its own) rather than on the cost budget alone."""
        lane, loop, job = self.lanes["light"], asyncio.get_running_loop(), Job("generate", {}, [prompt], 0, model=model)
        await loop.run_in_executor(lane.executor, self._call, job, [prompt])  # warm-up: not timed
        started = time.monotonic()
        await loop.run_in_executor(lane.executor, self._call, job, [prompt])
        self._measure(job.rate_key, cost, time.monotonic() - started)

    def _measure(self, kind: str, cost: int, seconds: float) -> None:
        self.timings.setdefault(kind, BatchTimes()).add(cost, seconds)

    @property
    def queued(self) -> int:
        return sum(lane.queue.qsize() for lane in self.lanes.values())

    def start(self) -> None:
        for lane in self.lanes.values():
            lane.task = asyncio.get_running_loop().create_task(self._run(lane))

    async def stop(self) -> None:
        for lane in self.lanes.values():
            if lane.task:
                lane.task.cancel()
                try:
                    await lane.task
                except asyncio.CancelledError:
                    pass
            lane.executor.shutdown(wait=False, cancel_futures=True)

    def lane_of(self, job: Job) -> Lane:
        return self.lanes["light" if job.cost <= self.light_cost else "heavy"]

    async def submit(self, job: Job, timeout: float):
        """Queue a job and wait for its result; QueueFull or asyncio.TimeoutError otherwise."""
        job.future = asyncio.get_running_loop().create_future()
        job.deadline = time.monotonic() + timeout
        lane = self.lane_of(job)
        try:
            lane.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        lane.waiting.append(job)
        return await asyncio.wait_for(job.future, timeout)  # on timeout the future is cancelled

    def _take_batch(self, queue: asyncio.Queue, first: Job) -> list[Job]:
        batch, rows = [first], len(first.payload)
        if first.batch_key is None:
            return batch
        kept = []
        while not queue.empty():
            job = queue.get_nowait()
            if job.batch_key == first.batch_key and rows + len(job.payload) <= self.max_batch_rows:
                batch.append(job)
                rows += len(job.payload)
            else:
                kept.append(job)
        for job in kept:  # put the rest back in their original order
            queue.put_nowait(job)
        return batch

    def _compute(self, lane: Lane, first: Job, payload: list, deadline: float, batch: list[Job]) -> tuple[list, float]:
        """Run the batch; its results and the seconds it ran, less those it spent paused for light batches: the time
        it takes alone, which admission prices from (with the pauses counted, a live test's heavy requests were
        priced alone at 13-14 s under a stream of light ones and refused with 422)."""
        light = lane is self.lanes["light"]
        if light:
            self.light_idle.clear()
        started, paused = time.monotonic(), 0.0
        try:
            # A heavy batch waits (up to a second at a time) while a light one runs; its deadline still holds.
            # Work whose every client has gone (disconnected or timed out) stops at the next decode step.
            def pause():
                nonlocal paused
                if all(job.future.done() for job in batch):
                    raise DeadlineExceeded("every client of this batch has gone")
                if not light and not self.light_idle.is_set():
                    waited = time.monotonic()
                    self.light_idle.wait(1.0)
                    paused += time.monotonic() - waited

            with self.pipeline_of(first.model).time_limit(max(0.0, deadline - time.monotonic()), pause=pause):
                return self._call(first, payload), time.monotonic() - started - paused
        finally:
            if light:
                self.light_idle.set()

    def _call(self, job: Job, payload: list):
        """Run a batch of jobs like `job` (same kind, model and settings) on their `payload`, in order."""
        return TASKS[job.kind].run(self.pipeline_of(job.model), payload, job.seed, job.settings)

    async def _run(self, lane: Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await lane.queue.get()
            lane.waiting.remove(first)
            if first.abandoned:  # timed out or cancelled while waiting: skip the work
                continue
            taken = self._take_batch(lane.queue, first)
            for job in taken[1:]:
                lane.waiting.remove(job)
            batch = [job for job in taken if not job.abandoned]
            if not batch:
                continue
            payload = [item for job in batch for item in job.payload]
            deadline = max(job.deadline for job in batch)  # stop once the last waiting client gave up
            try:
                results, seconds = await loop.run_in_executor(lane.executor, self._compute, lane, first, payload,
                                                              deadline, batch)
                self._measure(first.rate_key, sum(job.cost for job in batch), seconds)
            except Exception as error:  # hand the failure to every waiting request
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            start = 0
            for job in batch:
                part = results[start:start + len(job.payload)]
                start += len(job.payload)
                if not job.future.done():
                    job.future.set_result(part)
