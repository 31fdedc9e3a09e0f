"""Where a ``ledger serve``'s CPU goes under load: py-spy, grouped by area.

``py-spy record --gil --format raw`` samples the thread holding the GIL of each of the
service's processes (its workers, and a projection process if it has one: the shares
are of their Python CPU time, not wall time) for the measured window; the processes'
samples are added up into one table. Each sample is put in one area by walking its stack from the leaf
towards the root: the first frame whose file matches a rule of ``AREAS`` names it (a
leaf in ``json`` called from PyJWT counts as JWT parsing; a leaf in psycopg called
from the projection runner counts as the runner, because the runner's rule looks at
the whole stack). The areas are those of issue 12's profile, so runs can be compared
row by row (bench/README.md, "Profile").

py-spy needs ptrace on the worker: root, or ``kernel.yama.ptrace_scope`` 0, or
CAP_SYS_PTRACE. When it is missing or cannot attach, the bench says so and carries on
without a profile.
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# (area, pattern on a frame's file) in the order a frame is tested; the first match wins.
# Patterns see the frame as py-spy prints it: "function (path/to/file.py:line)".
STACK_WIDE: tuple[tuple[str, str], ...] = (
    # The runner's thread (or process) does all its own work: reads, folds, writes.
    ("projection runner", r"projections/runner\.py"),
)
AREAS: tuple[tuple[str, str], ...] = (
    ("RSA verification", r"cryptography/hazmat/.*(rsa|padding|hashes)|jwt/algorithms\.py"),
    ("AES-GCM (data keys, secrets)", r"cryptography/hazmat/.*aead|eventstore/crypto\.py"
                                     r"|eventstore/data_keys\.py"),
    ("JWT parsing", r"/jwt/|app/tokens\.py|app/forge/tokens\.py"),
    ("logging", r"/logging/|app/logs\.py"),
    ("metrics", r"prometheus_client|app/metrics\.py"),
    ("body validation", r"/pydantic|/msgspec|app/payload\.py"),
    ("fold and decide", r"app/lifecycle\.py|projections/"),
    ("event store (append, chain, reads)", r"eventstore/"),
    ("psycopg", r"/psycopg"),
    # The product's own ASGI middleware (LastResort) counts with the framework's.
    ("FastAPI/Starlette routing, middleware", r"/starlette/|/fastapi/|app/errors\.py"),
    ("ingest glue (app/)", r"app/(ingest|shell|calls|answers|service|key_fetch|keys"
                           r"|evidence)\.py|app/forge/"),
    ("app, other", r"(^|[ (/])app/"),
    ("thread hand-off", r"anyio/to_thread|anyio/_backends|starlette/concurrency"
                        r"|concurrent/futures|/threading\.py|/queue\.py"),
    ("uvicorn HTTP", r"/uvicorn/|httptools|/h11/"),
    ("event loop", r"/asyncio/|uvloop"),
)
RATE = 250  # samples per second


@dataclass
class Profile:
    """Samples per area of one worker, and what they cover."""

    pid: int
    samples: collections.Counter[str]
    total: int
    top_frames: list[tuple[str, int]]
    ours: list[tuple[str, int]]  # this project's functions, inclusive
    pids: list[int] = field(default_factory=list)

    def seconds(self) -> float:
        return self.total / RATE


def py_spy_path() -> str | None:
    found = shutil.which("py-spy")
    sibling = Path(sys.executable).with_name("py-spy")
    return found or (str(sibling) if sibling.exists() else None)


def start(pid: int, seconds: float, out_dir: Path) -> subprocess.Popen[bytes] | None:
    """py-spy recording ``pid`` for ``seconds`` (None, with the reason printed, if it can't)."""
    py_spy = py_spy_path()
    if py_spy is None:
        print("   profile skipped: py-spy is not installed (pip install py-spy, or"
              " `pip install -e .[bench]`)")
        return None
    out = out_dir / f"py-spy-{pid}.txt"
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
         "--rate", str(RATE), "--nonblocking", "--gil", "--full-filenames", "--format", "raw",
         "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=(out_dir / f"py-spy-{pid}.err").open("wb"),
    )


def finish(spy: subprocess.Popen[bytes], pid: int, out_dir: Path) -> Profile | None:
    spy.wait(timeout=120)
    out = out_dir / f"py-spy-{pid}.txt"
    if spy.returncode != 0 or not out.exists():
        error = (out_dir / f"py-spy-{pid}.err").read_text(errors="replace").strip()
        print(f"   profile skipped: py-spy exited {spy.returncode}: {error[-400:]}"
              " (it needs ptrace on the worker: root or CAP_SYS_PTRACE)")
        return None
    return parse(pid, out.read_text().splitlines())


def merge(profiles: Sequence[Profile]) -> Profile:
    """One table for several processes (their samples added up)."""
    samples: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    ours: collections.Counter[str] = collections.Counter()
    for profile in profiles:
        samples.update(profile.samples)
        leaves.update(dict(profile.top_frames))
        ours.update(dict(profile.ours))
    return Profile(profiles[0].pid if profiles else 0, samples,
                   sum(p.total for p in profiles), leaves.most_common(12), ours.most_common(15),
                   [p.pid for p in profiles])


def parse(pid: int, lines: Sequence[str]) -> Profile:
    samples: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_short(f) for f in stack.split(";") if f and not f.startswith(("process", "thread"))]
        total += count
        samples[area_of(frames)] += count
        leaves[frames[-1] if frames else "?"] += count
        for frame in set(frames):
            if re.search(r"\((app|eventstore|projections)/", frame):
                inclusive[frame] += count
    return Profile(pid, samples, total, leaves.most_common(40), inclusive.most_common(40), [pid])


def area_of(frames: Sequence[str]) -> str:
    """The area of one sample; ``frames`` run from the root to the leaf."""
    for area, pattern in STACK_WIDE:
        if any(re.search(pattern, frame) for frame in frames):
            return area
    for frame in reversed(frames):
        for area, pattern in AREAS:
            if re.search(pattern, frame):
                return area
    return "other (stdlib, interpreter)"


def report(profile: Profile, calls: float) -> None:
    """The areas by share, with the GIL-held µs per call that ``calls`` (the calls the
    profiled processes answered) implies."""
    if not profile.total:
        print("   py-spy recorded nothing")
        return
    per_call = profile.seconds() * 1e6 / calls if calls else 0.0
    print(f"   profile of the service's processes {profile.pids} (py-spy --gil, {RATE} Hz each,"
          f" {profile.total:,} samples = {profile.seconds():.1f} s holding a GIL; {calls:,.0f}"
          f" calls answered: ~{per_call:,.0f} µs of GIL time per call)")
    print(f"     {'area':<40} {'share':>6} {'µs/call':>8}")
    for area, count in profile.samples.most_common():
        share = count / profile.total
        print(f"     {area:<40} {share:6.1%} {share * per_call:8.0f}")
    print("   top leaf frames:")
    for frame, count in profile.top_frames[:12]:
        print(f"     {count / profile.total:6.1%}  {frame[:120]}")
    print("   this project's functions, inclusive (their callees counted in):")
    for frame, count in profile.ours[:15]:
        print(f"     {count / profile.total:6.1%}  {frame[:120]}")


def _short(frame: str) -> str:
    # Libraries and the standard library keep a leading "/" (so "/jwt/" matches PyJWT
    # only); this project's files become "app/...", "eventstore/...".
    frame = re.sub(r"/[^ (]*/(site-packages|lib/python3\.\d+)/", "/", frame)
    return re.sub(r"/[^ (]*/(wt/[^/]+|main)/", "", frame)
