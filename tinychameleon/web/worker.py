"""A bounded inference queue with micro-batching, so the server stays responsive under load.

Requests become jobs on an asyncio queue of fixed size; a full queue is refused at once
(the server answers 503). One worker task drains the queue, merges compatible jobs (same
kind and sampling settings, no fixed seed) into one batched pipeline call, and runs it in a
single inference thread. Each job carries its deadline: a job whose client stopped waiting or
whose deadline passed is dropped before it starts, and running work is stopped between decode
steps once every job in its batch has expired (Pipeline.time_limit), so abandoned heavy
requests free the CPU instead of running to the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from dataclasses import dataclass, field

import numpy as np


class QueueFull(Exception):
    pass


@dataclass
class Job:
    kind: str                      # "generate" | "caption" | "sample"
    settings: dict                 # sampling overrides; jobs with equal settings can share a batch
    payload: list                  # one item per output row: prompts, images, or None (sample)
    seed: int | None = None
    future: asyncio.Future = field(default=None, repr=False)
    deadline: float = float("inf")  # time.monotonic() after which nobody waits for the result

    @property
    def abandoned(self) -> bool:
        return self.future.done() or time.monotonic() >= self.deadline

    @property
    def batch_key(self):
        if self.seed is not None:
            return None  # a fixed seed must see exactly its own random stream
        return (self.kind, tuple(sorted(self.settings.items())))


class InferenceWorker:
    def __init__(self, pipeline, queue_size: int = 32, max_batch_rows: int = 256) -> None:
        self.pipeline = pipeline
        self.queue: asyncio.Queue[Job] = asyncio.Queue(maxsize=queue_size)
        self.max_batch_rows = max_batch_rows
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, job: Job, timeout: float):
        """Queue a job and wait for its result; QueueFull or asyncio.TimeoutError otherwise."""
        job.future = asyncio.get_running_loop().create_future()
        job.deadline = time.monotonic() + timeout
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull from None
        return await asyncio.wait_for(job.future, timeout)  # on timeout the future is cancelled

    def _take_batch(self, first: Job) -> list[Job]:
        batch, rows = [first], len(first.payload)
        if first.batch_key is None:
            return batch
        kept = []
        while not self.queue.empty():
            job = self.queue.get_nowait()
            if job.batch_key == first.batch_key and rows + len(job.payload) <= self.max_batch_rows:
                batch.append(job)
                rows += len(job.payload)
            else:
                kept.append(job)
        for job in kept:  # put the rest back in their original order
            self.queue.put_nowait(job)
        return batch

    def _compute(self, kind: str, settings: dict, payload: list, seed: int | None, deadline: float):
        with self.pipeline.time_limit(max(0.0, deadline - time.monotonic())):
            return self._call(kind, settings, payload, seed)

    def _call(self, kind: str, settings: dict, payload: list, seed: int | None):
        if kind == "generate":
            return list(self.pipeline.generate_images(payload, n=1, seed=seed, **settings))
        if kind == "caption":
            return self.pipeline.caption(np.stack(payload), seed=seed, **settings)
        images, captions = self.pipeline.sample(len(payload), seed=seed, **settings)
        return list(zip(images, captions))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            if first.abandoned:  # timed out or cancelled while waiting: skip the work
                continue
            batch = [job for job in self._take_batch(first) if not job.abandoned]
            if not batch:
                continue
            payload = [item for job in batch for item in job.payload]
            deadline = max(job.deadline for job in batch)  # stop once the last waiting client gave up
            try:
                results = await loop.run_in_executor(self.executor, self._compute, first.kind, first.settings,
                                                     payload, first.seed, deadline)
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
