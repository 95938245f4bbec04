"""Running many async jobs with a concurrency bound and a progress bar; calling async code from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from synchronous code, also inside an already running loop (notebooks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def map_concurrent(items: Iterable[T], job: Callable[[T], Awaitable[R]], concurrency: int = 8,
                         desc: str | None = None, on_result: Callable[[T, R], None] | None = None,
                         progress: bool = True) -> list[R]:
    """Run `job` over items, at most `concurrency` at a time; results come back in input order.

    `on_result` is called as each job finishes (in completion order), which is where callers append
    to their output file so a killed run keeps everything finished so far.
    """
    items = list(items)
    semaphore = asyncio.Semaphore(max(1, concurrency))
    bar = tqdm(total=len(items), desc=desc, disable=not progress or not items, dynamic_ncols=True)

    async def guarded(index: int, item: T) -> tuple[int, R]:
        async with semaphore:
            result = await job(item)
        if on_result is not None:
            on_result(item, result)
        bar.update(1)
        return index, result

    try:
        pairs = await asyncio.gather(*(guarded(index, item) for index, item in enumerate(items)))
    finally:
        bar.close()
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]
