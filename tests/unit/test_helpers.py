"""The driver's shared helper threads: reused within a process, made anew in a forked child."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from mlinfra_ray.helpers import helper_pool


def test_the_pool_is_made_once_and_runs_tasks_beside_the_caller():
    pool = helper_pool()
    assert helper_pool() is pool and pool._max_workers >= 2
    first = pool.submit(os.getpid)
    assert list(pool.map(abs, [-1, -2, 3])) == [1, 2, 3] and first.result() == os.getpid()


def _in_child(queue) -> None:
    pool = helper_pool()
    queue.put((pool is not _PARENT, pool.submit(lambda: 6 * 7).result(timeout=30)))


_PARENT = None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork-only")
def test_a_forked_child_gets_its_own_threads():
    """The parent's threads do not exist in a forked child: reusing its pool there would hang."""
    global _PARENT
    _PARENT = helper_pool()
    _PARENT.submit(int).result()  # the parent's threads are running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(queue,))
    child.start()
    child.join(60)
    assert child.exitcode == 0 and queue.get(timeout=5) == (True, 42)
