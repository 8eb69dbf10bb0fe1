"""The floor: a hand-written minimal asyncio FastAGI server for benchmarks.

    python tests/bench/floor.py --listen 127.0.0.1:PORT [--flow FLOW.yaml] [--sounds DIR]

Per connection it reads the env block and performs the command exchange consent-ivr performs
for a call whose caller presses 1 at the question: the same command lines in the same order
(the variables, ANSWER, each notice segment, the question, the ``WAIT FOR DIGIT`` after it when
the key did not come during the question, the decision's variables, the closing prompt;
tests/test_bench_floor.py compares the two), with no flow logic, no evidence, no logging. It reads
each response line (skipping a ``HANGUP`` line) and closes. It prints ``listening on HOST:PORT``
(flushed) when ready and exits 0 on SIGTERM. ``--max-calls`` is accepted for command-line parity
with ``consent-ivr serve`` and ignored.

**The same process conditions as the server.** At start it reads and hashes every prompt's WAV,
as consent-ivr does to pin the audio (R13). That is not for show: glibc's malloc serves blocks over
its mmap threshold (128 KiB at start) with ``mmap`` and raises the threshold for the rest of the
process once such a block is freed whole. The WAVs are 140-175 KB, so consent-ivr runs with a
raised threshold, and the 256 KiB read buffer asyncio allocates for every ``recv`` stays on the
heap; a floor that never frees such a block ``mmap``s, ``mremap``s and ``munmap``s that buffer on
every read (about 19 times per call, ~250 us of system time) and would be a slower floor than the
exchange needs. benchlib prints each server's minor page faults per call, which shows whether the
two ran in the same state.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
import sys
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def q(text: str) -> bytes:
    return b'"' + text.encode() + b'"'


def set_var(name: str, value: str) -> bytes:
    return b"SET VARIABLE " + q(name) + b" " + q(value) + b"\n"


def stream(path: str, escape: str) -> bytes:
    return b"STREAM FILE " + q(path) + b" " + q(escape) + b"\n"


def milliseconds(value: str | int) -> int:
    """A flow's duration (``6s``, ``1500ms`` or a number of seconds) in milliseconds."""
    text = str(value).strip()
    if text.endswith("ms"):
        return int(float(text[:-2]))
    return int(float(text.removesuffix("s")) * 1000)


class Floor:
    def __init__(self, flow_file: Path, sounds: Path) -> None:
        flow = yaml.safe_load(flow_file.read_text(encoding="utf-8"))
        self.flow_id: str = flow["flow"]
        self.tag = f"{self.flow_id}@{flow['version']}"
        self.languages: list[str] = list(flow["languages"])
        keys = flow["choice"]["keys"]
        # The notice's escape keys as consent-ivr sends them: decline, accept, repeat, full notice.
        order = ("decline", "accept", "repeat", "full_notice")
        escape = "".join(str(keys[k]) for k in order if keys.get(k) is not None)
        question = flow["questions"][0]
        question_id = question.get("id") or f"ask_{question['purpose']}"
        self.wait = (
            b'WAIT FOR DIGIT "' + str(milliseconds(flow["choice"]["timeout"])).encode() + b'"\n'
        )
        self.notice_sha = hashlib.sha256(flow_file.read_bytes()).hexdigest()
        self.head: dict[str, bytes] = {}
        self.tail: dict[str, bytes] = {}
        for lang in self.languages:
            base = sounds / lang / self.flow_id
            self.head[lang] = (
                set_var("__CONSENT_STATUS", "none")
                + set_var("__CONSENT_FLOW", self.tag)
                + set_var("__CONSENT_GA_LINKAGE", "none")
                + b"ANSWER\n"
                + b"".join(stream(str(base / seg["id"]), escape) for seg in flow["notice"])
                + stream(str(base / question_id), "0123456789*#")
            )
            self.tail[lang] = stream(str(base / "close_granted"), "")
        # Read and hash every prompt as the server does (see the module's docstring).
        self.audio = {
            wav.name: hashlib.sha256(wav.read_bytes()).hexdigest()
            for wav in sorted(sounds.glob("*/" + self.flow_id + "/*.wav"))
        }
        self.tasks: set[asyncio.Task[None]] = set()

    def language(self, env: dict[str, str]) -> str:
        lang = env.get("agi_language", "").split("_")[0].lower()
        return lang if lang in self.languages else self.languages[0]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            env: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\n", b""):
                    break
                key, _, value = line.decode("utf-8", "replace").rstrip("\n").partition(": ")
                env[key] = value
            lang = self.language(env)
            commands = self.head[lang].splitlines(keepends=True)
            question = len(commands) - 1
            commands += [
                set_var("__CONSENT_GA_LINKAGE", "granted"),
                set_var("__CONSENT_REASON", "key"),
                set_var("__CONSENT_RECORD_ID", uuid.uuid4().hex),
                set_var("__CONSENT_FLOW", self.tag),
                set_var("__CONSENT_NOTICE_SHA256", self.notice_sha),
                set_var("__CONSENT_STATUS", "granted"),
                self.tail[lang],
            ]
            for index, command in enumerate(commands):
                writer.write(command)
                answer = await reader.readline()
                while answer == b"HANGUP\n":
                    answer = await reader.readline()
                if not answer:
                    break
                if index == question and answer.startswith(b"200 result=0 "):
                    # The question played to its end without a key: wait for one, as the
                    # server does (the caller's key then answers this wait).
                    writer.write(self.wait)
                    answer = await reader.readline()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            self.tasks.discard(task)


async def serve(host: str, port: int, floor: Floor) -> None:
    server = await asyncio.start_server(floor.handle, host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()
    if floor.tasks:
        await asyncio.wait(floor.tasks, timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:4573", help="HOST:PORT")
    parser.add_argument("--flow", type=Path, default=ROOT / "flows" / "call-tracking.yaml")
    parser.add_argument("--sounds", type=Path, default=ROOT / "sounds")
    parser.add_argument("--max-calls", type=int, default=0, help="ignored (parity with serve)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    asyncio.run(serve(host, int(port), Floor(args.flow, args.sounds.resolve())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
