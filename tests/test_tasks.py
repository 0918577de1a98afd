"""The one task registry: the CLI, the web server and the worker all read it, and the worker runs a task exactly as
the pipeline method it names."""

from __future__ import annotations

import numpy as np
import pytest

from tinychameleon.cli import build_parser
from tinychameleon.tasks import TASKS
from tinychameleon.web.server import create_app
from tinychameleon.web.worker import InferenceWorker, Job


def test_every_task_is_a_command_and_an_endpoint_described_alike(tiny_pipeline):
    commands = next(action for action in build_parser()._actions if action.dest == "command")
    routes = {route.path: route for route in create_app(tiny_pipeline).routes}
    for task in TASKS.values():
        assert task.name in commands.choices, task.name
        assert commands._choices_actions[list(commands.choices).index(task.name)].help == task.summary
        assert task.endpoint in routes and routes[task.endpoint].summary == task.summary


def test_the_worker_refuses_a_kind_the_registry_does_not_run():
    with pytest.raises(ValueError, match="not a task the worker runs"):
        Job("paint", {}, [None])
    with pytest.raises(ValueError, match="not a task the worker runs"):
        Job("search", {}, [None])                 # a task, but answered by the server itself


@pytest.mark.parametrize("kind", ["generate", "sample", "caption", "complete"])
def test_the_worker_runs_each_task_as_its_pipeline_method(tiny_pipeline, colored, kind):
    image = colored[1].images[0]
    payload, direct = {
        "generate": (["dark green eight on bright cyan"] * 3,
                     lambda: list(zip(*tiny_pipeline.draw(["dark green eight on bright cyan"] * 3, n=1, seed=4)))),
        "sample": ([None] * 3, lambda: list(zip(*tiny_pipeline.sample(3, seed=4)))),
        "caption": ([image] * 2, lambda: tiny_pipeline.caption(np.stack([image] * 2), seed=4)),
        "complete": ([(image, "top", None)] * 2,
                     lambda: list(zip(*tiny_pipeline.complete(image[None], "top", None, n=2, seed=4)))),
    }[kind]
    through_worker = InferenceWorker(tiny_pipeline)._call(Job(kind, {}, payload, seed=4), payload)
    expected = direct()
    assert len(through_worker) == len(expected) == len(payload)
    for got, want in zip(through_worker, expected):
        if isinstance(want, tuple):
            np.testing.assert_array_equal(got[0], want[0])
            assert got[1] == want[1]
        else:
            assert got == want
