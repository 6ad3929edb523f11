"""The tool's Pacer against a simulated Drive create quota, on a simulated clock.

Drive's per-user write limit behaves like a token bucket (a burst allowance refilled at a steady
rate; the emulator's `create_rate_per_s`/`create_burst`), and real Drive also refuses now and then
with no limit hit ("additional rate limit checks on the Drive backend",
developers.google.com/drive/api/guides/limits). Workers here do what `DriveApi.call` does for a
write: ask the pacer for a slot until it says go, send, and on a refusal tell the pacer and ask
for a slot again. Seconds of run are milliseconds of CPU, so a test can try
thousands of writes under several kinds of pushback without timing anything.
"""
from __future__ import annotations

import dataclasses
import heapq
import random
from typing import Any, Callable


@dataclasses.dataclass
class SimClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class SimResult:
    writes: int
    refused: int          # refusals of any kind (limit and noise)
    limit_refused: int    # refusals by the token bucket
    seconds: float        # first send to last accepted answer
    rate: float           # the bucket's rate (0: no limit)

    @property
    def used(self) -> float:
        """Share of the quota used: accepted writes per second over the bucket's rate."""
        return self.writes / self.seconds / self.rate if self.rate else float("nan")

    @property
    def writes_per_s(self) -> float:
        return self.writes / self.seconds

    @property
    def refused_share(self) -> float:
        return self.refused / self.writes


def simulate(make_pacer: Callable[[Callable[[], float]], Any], *, workers: int, writes: int,
             rate: float = 5.0, burst: float = 10.0, noise: float = 0.0, latency_s: float = 0.02,
             work_s: float = 0.03, lead_s: float = 0.0, seed: int = 1) -> SimResult:
    """`writes` accepted writes by `workers` workers, each doing `work_s` (exponentially
    distributed) between writes; `rate` 0 is no limit; `noise` is the chance a write is refused
    with no limit hit (such a refusal takes no token). With `lead_s`, one write goes `lead_s`
    before the workers start (the run's lease and folder, before the listing is done)."""
    rng = random.Random(seed)
    clock = SimClock()
    pacer = make_pacer(clock)
    tokens, refilled = burst, 0.0
    events: list[tuple[float, int, int, str, Any]] = []
    order = 0

    def at(when: float, worker: int, what: str, data: Any = None) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (when, order, worker, what, data))

    if lead_s:
        pacer.reserve(write=True)
        pacer.succeeded(write=True, sent_at=0.0)
    for worker in range(workers):
        at(lead_s + rng.expovariate(1 / work_s), worker, "reserve")
    accepted = refused = limit_refused = 0
    first_sent = last_accepted = None
    while accepted < writes:
        clock.now, _, worker, what, data = heapq.heappop(events)
        if what == "reserve":
            wait = pacer.reserve(write=True)
            at(clock.now + wait, worker, "reserve" if wait else "send")
        elif what == "send":
            first_sent = clock.now if first_sent is None else first_sent
            at(clock.now + latency_s / 2, worker, "arrive", clock.now)
        elif what == "arrive":
            verdict = "ok"
            if rate:
                tokens = min(burst, tokens + (clock.now - refilled) * rate)
                refilled = clock.now
            if rng.random() < noise:
                verdict = "noise"
            elif rate and tokens < 1:
                verdict = "limit"
            elif rate:
                tokens -= 1
            at(clock.now + latency_s / 2, worker, verdict, data)
        elif what == "ok":
            pacer.succeeded(write=True, sent_at=data)
            accepted += 1
            last_accepted = clock.now
            at(clock.now + rng.expovariate(1 / work_s), worker, "reserve")
        else:
            refused += 1
            limit_refused += what == "limit"
            pacer.rate_limited(None, sent_at=data)
            at(clock.now, worker, "reserve")
    return SimResult(accepted, refused, limit_refused, last_accepted - first_sent, rate)
