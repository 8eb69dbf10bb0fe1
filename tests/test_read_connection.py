"""The FastAGI server's read connection: work runs in its own thread, in batches, with every
caller getting its own result or error, and nothing runs after close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from consent_ivr.transports.fastagi.reader import ReadConnection, ReaderClosed


def test_work_queued_while_the_thread_is_busy_runs_as_one_batch(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], int, int]:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")
        release = threading.Event()
        first = asyncio.ensure_future(reader.run_lazily(lambda connect: release.wait(10)))
        await asyncio.sleep(0.05)  # the thread now blocks inside the first job
        rest = [
            asyncio.ensure_future(reader.run_lazily(lambda connect, n=n: n * n)) for n in range(20)
        ]
        await asyncio.sleep(0.05)
        release.set()
        assert await first is True
        values = list(await asyncio.gather(*rest))
        await reader.close()
        return values, reader.batches, reader.jobs

    values, batches, jobs = asyncio.run(scenario())
    assert values == [n * n for n in range(20)]
    assert jobs == 21
    assert batches == 2  # the first job alone, then the twenty that queued behind it


def test_an_error_reaches_its_own_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    async def scenario() -> tuple[BaseException | None, int]:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")

        def fail(connect: Any) -> int:
            raise ValueError("no such record")

        outcome = await asyncio.gather(reader.run_lazily(fail), return_exceptions=True)
        after = await reader.run_lazily(lambda connect: 7)
        await reader.close()
        error = outcome[0]
        return (error if isinstance(error, BaseException) else None), after

    error, after = asyncio.run(scenario())
    assert isinstance(error, ValueError) and str(error) == "no such record"
    assert after == 7


def test_the_store_opens_in_the_readers_thread_and_closes_with_it(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")
        await reader.run(lambda store: seen.update(thread=threading.current_thread().name))
        seen["head"] = await reader.run(lambda store: store.head())
        await reader.close()
        seen["store_after_close"] = reader._store

    asyncio.run(scenario())
    assert seen["thread"] == "test-reader"
    assert seen["store_after_close"] is None
    assert (tmp_path / "evidence.sqlite3").exists()


def test_close_runs_the_queued_work_first_and_refuses_later_work(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], BaseException | None]:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")
        release = threading.Event()
        jobs = [asyncio.ensure_future(reader.run_lazily(lambda c: release.wait(10) and 1))]
        jobs += [asyncio.ensure_future(reader.run_lazily(lambda c, n=n: n)) for n in (2, 3)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(reader.close())
        await asyncio.sleep(0.05)
        release.set()
        await closing
        late = await asyncio.gather(reader.run_lazily(lambda c: 4), return_exceptions=True)
        error = late[0]
        return list(await asyncio.gather(*jobs)), (
            error if isinstance(error, BaseException) else None
        )

    done, late = asyncio.run(scenario())
    assert done == [1, 2, 3]
    assert isinstance(late, ReaderClosed)


def test_a_cancelled_caller_does_not_disturb_the_others(tmp_path: Path) -> None:
    async def scenario() -> list[int]:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")
        release = threading.Event()
        blocker = asyncio.ensure_future(reader.run_lazily(lambda c: release.wait(10)))
        await asyncio.sleep(0.05)
        gone = asyncio.ensure_future(reader.run_lazily(lambda c: 1))
        kept = asyncio.ensure_future(reader.run_lazily(lambda c: 2))
        await asyncio.sleep(0)
        gone.cancel()
        release.set()
        await blocker
        with pytest.raises(asyncio.CancelledError):
            await gone
        value = await kept
        await reader.close()
        return [value]

    assert asyncio.run(scenario()) == [2]


def test_thousands_of_jobs_queued_while_the_thread_drains_and_idles_all_complete(
    tmp_path: Path,
) -> None:
    # a stress test of the wake-up: jobs queued while the thread is busy, about to wait and
    # waiting (a job nobody woke the thread for would time out here); the order that makes the
    # race impossible is argued in `ReadConnection._loop`
    async def scenario() -> int:
        reader = ReadConnection(tmp_path / "evidence.sqlite3", "test")
        done = 0
        for n in range(3000):
            job = reader.run_lazily(lambda c, n=n: n)
            if n % 3 == 0:
                await asyncio.sleep(0)  # let the thread drain and go idle now and then
            done += int(await asyncio.wait_for(job, timeout=5) == n)
        await reader.close()
        return done

    assert asyncio.run(scenario()) == 3000
