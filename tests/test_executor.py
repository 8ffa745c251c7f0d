"""The build's executors (``pipeline.dataset.executor``, ``flows.build.PrefectExecutor``): a task
whose argument is a list of futures runs once they are done, with their results (the GPU task of a
batch takes its prepare tasks' futures, issue 13); default resources keep a GPU build's CPU tasks
off GPU workers; priorities reach Dask.

The slow test runs the same submissions through Prefect on a local Dask cluster."""

from __future__ import annotations

import time

import pytest

from pipeline.dataset.executor import SerialExecutor, WithResources


def _chunk(i: int) -> dict:
    time.sleep(0.2)
    return {"i": i, "done": time.time()}


def _batch(chunks: list, k: int) -> tuple:
    return [c["i"] * k for c in chunks], type(chunks).__name__, time.time() - max(c["done"] for c in chunks)


def _boom(i: int) -> int:
    raise RuntimeError(f"chunk {i}")


def test_serial_executor_resolves_futures_in_arguments():
    ex = SerialExecutor()
    preps = [ex.submit(_chunk, i) for i in range(3)]
    out, kind, after = ex.submit(_batch, preps, 10).result()
    assert out == [0, 10, 20] and kind == "list" and after >= 0
    bad = ex.submit(_batch, [ex.submit(_chunk, 1), ex.submit(_boom, 2)], 1)
    with pytest.raises(RuntimeError, match="chunk 2"):
        bad.result()


def test_default_resources_apply_only_where_none_are_given():
    seen = []

    class Recorder:
        def submit(self, fn, *args, resources=None, priority=0):
            seen.append((fn.__name__, resources, priority))
            return SerialExecutor().submit(fn, *args)

        def as_completed(self, futures):
            return iter(list(futures))

        def wait(self, futures):
            return None

    ex = WithResources(Recorder(), {"CPU": 1})
    ex.submit(_chunk, 0, priority=1)
    ex.submit(_chunk, 1, resources={"GPU": 1})
    assert seen == [("_chunk", {"CPU": 1}, 1), ("_chunk", {"GPU": 1}, 0)]
    assert [f.result()["i"] for f in ex.as_completed([SerialExecutor().submit(_chunk, 5)])] == [5]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_prefect_executor_passes_futures_resources_and_priority(monkeypatch):
    """Through Prefect on a local Dask cluster whose workers advertise ``CPU=1`` (as ``dynaset
    worker`` does): CPU-restricted, prioritised tasks run, and a task given their futures in a list
    gets their results, in order, after they finished."""
    from prefect import flow, task
    from prefect_dask import DaskTaskRunner

    import flows.build as fb
    from flows.runtime import prefect_api

    for fn in (_chunk, _batch):
        # as flows.build wraps its stage functions: plain arguments travel as Payloads
        monkeypatch.setitem(fb.TASKS, fn, task(fb.unwrapped(fn), name=fn.__name__, cache_policy=fb.NO_CACHE,
                                                retries=0))
    runner = DaskTaskRunner(cluster_class="distributed.LocalCluster",
                            cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True,
                                            "dashboard_address": ":0", "resources": {"CPU": 1}})

    @flow(task_runner=runner)
    def run():
        ex = WithResources(fb.PrefectExecutor(), {"CPU": 1})
        preps = [ex.submit(_chunk, i, priority=1) for i in range(3)]
        return ex.submit(_batch, preps, 10).result()

    with prefect_api():
        out, kind, after = run()
    assert out == [0, 10, 20] and kind == "list" and after >= 0


def test_payload_arguments_are_not_walked_and_arrive_unwrapped():
    """``PrefectExecutor`` wraps every argument that holds no future in a ``Payload``: Prefect's
    ``visit_collection`` sees one leaf instead of every record of a batch, and the stage function
    receives the value itself (``unwrapped``)."""
    from prefect.utilities.collections import visit_collection

    import flows.build as fb

    records = [(i, str(i), [i] * 3) for i in range(1000)]
    seen = []
    visit_collection(fb.Payload(records), visit_fn=lambda x: seen.append(x) or x, return_data=False)
    assert len(seen) == 1
    seen.clear()
    visit_collection(records, visit_fn=lambda x: seen.append(x) or x, return_data=False)
    assert len(seen) > 1000
    assert fb.unwrapped(lambda a, b, c=0: (a, b, c))(fb.Payload(records), 2, c=3) == (records, 2, 3)
    assert not fb._has_future(records) and not fb._has_future(fb.Payload(records))
