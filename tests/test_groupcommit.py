"""The group-commit writer: batches concurrent records, and fails closed instead of hanging."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consent_ivr.evidence.errors import EvidenceWriteError
from consent_ivr.evidence.groupcommit import GroupCommitWriter


class RecordingStore:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.batches: list[int] = []
        self.fail = fail

    def new_record_id(self) -> str:
        return "r"

    def write_prepared(self, prepared: list[Any]) -> None:
        if self.fail is not None:
            raise self.fail
        self.batches.append(len(prepared))

    def close(self) -> None:
        pass


def record(i: int) -> dict[str, Any]:
    return {
        "record_id": f"rec-{i}",
        "created_at": "2026-11-29T00:00:00.000Z",
        "status": "granted",
        "reason": "key",
        "call": {"uniqueid": "1.1", "caller_pseudonym": None, "caller_key_id": "k"},
        "flow": {
            "id": "f",
            "version": 1,
            "sha256": "s",
            "notice_version": "1",
            "notice_sha256": "n",
            "language": "de",
        },
        "outcomes": [{"purpose": "ga_linkage", "outcome": "granted", "reason": "key"}],
    }


def test_concurrent_records_share_commits() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store)  # type: ignore[arg-type]

    async def main() -> list[str]:
        return await asyncio.gather(*(writer.write(record(i)) for i in range(200)))

    ids = asyncio.run(main())
    writer.close()
    assert ids == [f"rec-{i}" for i in range(200)]
    assert sum(store.batches) == 200 and len(store.batches) < 200


@pytest.mark.parametrize("fail", [RuntimeError("bug in a store"), EvidenceWriteError("disk full")])
def test_a_failing_store_fails_every_waiting_write_instead_of_hanging(fail: Exception) -> None:
    writer = GroupCommitWriter(RecordingStore(fail))  # type: ignore[arg-type]

    async def main() -> list[Any]:
        return await asyncio.wait_for(
            asyncio.gather(*(writer.write(record(i)) for i in range(5)), return_exceptions=True),
            timeout=5,
        )

    results = asyncio.run(main())
    writer.close()
    assert all(isinstance(r, EvidenceWriteError) for r in results)


def test_under_load_the_writer_gathers_records_but_an_idle_one_commits_at_once() -> None:
    import time

    store = RecordingStore()
    writer = GroupCommitWriter(store, gather_seconds=1.0, busy_batch=2)  # type: ignore[arg-type]

    async def main() -> float:
        t0 = time.monotonic()
        await writer.write(record(0))  # idle: the last batch was empty, no gathering
        alone = time.monotonic() - t0
        writer._last_batch = 2  # as after a busy batch
        first = asyncio.ensure_future(writer.write(record(1)))
        await asyncio.sleep(0.1)
        await asyncio.gather(first, writer.write(record(2)))
        return alone

    alone = asyncio.run(main())
    writer.close()
    assert alone < 0.8  # an idle writer does not gather (it would take 1 s)
    assert store.batches == [1, 2]  # records 1 and 2, 0.1 s apart, shared one commit


def test_a_record_submitted_after_close_fails_instead_of_waiting_forever() -> None:
    store = RecordingStore()
    writer = GroupCommitWriter(store)  # type: ignore[arg-type]

    async def main() -> None:
        await writer.write(record(0))
        writer.close()
        with pytest.raises(EvidenceWriteError, match="closed"):
            await asyncio.wait_for(writer.write(record(1)), timeout=5)

    asyncio.run(main())
    assert store.batches == [1]


def test_a_close_racing_a_submit_never_strands_the_record(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import consent_ivr.evidence.groupcommit as groupcommit_module

    store = RecordingStore()
    writer = GroupCommitWriter(store)  # type: ignore[arg-type]
    real_prepare = groupcommit_module.prepare

    def prepare_while_closing(rec: dict[str, Any]) -> Any:
        closer = threading.Thread(target=writer.close)  # close() runs to its end meanwhile
        closer.start()
        closer.join()
        return real_prepare(rec)

    monkeypatch.setattr(groupcommit_module, "prepare", prepare_while_closing)

    async def main() -> None:
        with pytest.raises(EvidenceWriteError, match="closed"):
            await asyncio.wait_for(writer.write(record(1)), timeout=5)

    asyncio.run(main())
