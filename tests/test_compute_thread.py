"""One thread for the plugin's torch work (napari_medseg.compute_thread)."""

from __future__ import annotations

import threading

import pytest

from napari_medseg import compute_thread


def test_call_runs_on_one_thread_from_any_caller_and_nests_without_deadlock():
    seen = []

    def where():
        seen.append(threading.get_ident())
        return compute_thread.call(threading.get_ident)  # nested: runs directly, no deadlock

    callers = [threading.Thread(target=lambda: compute_thread.call(where)) for _ in range(3)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(10)
    inner = compute_thread.call(where)
    assert len(set(seen)) == 1 and inner == seen[0] != threading.get_ident()
    assert not compute_thread.on_compute_thread_now() and compute_thread.call(compute_thread.on_compute_thread_now)
    with pytest.raises(ZeroDivisionError):
        compute_thread.call(lambda: 1 / 0)


def test_a_relayed_generator_runs_every_step_and_its_cleanup_on_the_compute_thread():
    steps, cleanup = [], []

    def job(n):
        try:
            for i in range(n):
                steps.append(threading.get_ident())
                yield i
            return "done"
        finally:
            cleanup.append(threading.get_ident())

    relayed = compute_thread.on_compute_thread(job)
    gen = relayed(3)
    items = []
    try:
        while True:
            items.append(next(gen))
    except StopIteration as stop:
        result = stop.value
    assert items == [0, 1, 2] and result == "done"
    here = compute_thread.call(threading.get_ident)
    assert set(steps) == {here} and cleanup == [here]

    steps.clear(), cleanup.clear()
    gen = relayed(10)
    assert next(gen) == 0
    gen.close()  # a cancelled worker: the job's finally still runs there, once
    assert len(steps) == 1 and cleanup == [here]


def test_an_error_in_a_step_reaches_the_worker_with_its_type():
    def job():
        yield 1
        raise ValueError("corrupt slice 3")

    gen = compute_thread.on_compute_thread(job)()
    assert next(gen) == 1
    with pytest.raises(ValueError, match="corrupt slice 3"):
        next(gen)
