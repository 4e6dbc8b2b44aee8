"""Exactly one execution of a step attempt publishes: the fence around every Celery step.

Celery may hand one step to two workers. With late acknowledgement (what makes a killed worker's step
run again), the Redis broker puts a step's message back in the queue once it has been out for the
visibility timeout, whether or not the worker that took it is still alive: a slow step then runs twice
at once, or once more long after its run moved on, and each execution replaces the step's lake
partitions. A downstream step may already have read the first version (the bug this fixes: a day's raw,
staging and feature files rewritten after that day had been scored).

The rule, per step attempt (run id, step key, Dagster's retry count; a run retry is a new run id):

- An execution first takes the attempt's **claim** in Redis (``SET NX`` with a lease, renewed by a
  heartbeat thread while it runs). Only the claim holder executes.
- When it ends, it records the step's result as **done** and drops the claim, in one atomic script.
- Another delivery of the same attempt returns the recorded result without executing if the attempt is
  done, and waits while the claim is held. If the claim lapses without a result (its holder died: no
  heartbeat for a whole lease), the waiting delivery takes the claim and executes the step again:
  a re-execution after a real death still publishes.
- ``verify`` (called by ``lake.publish`` right before a file replaces the old one) refuses to publish
  for an execution that no longer holds its claim: one that stalled past its lease while another
  took over stops with ``FencedOut`` instead of overwriting the newer execution's files.

The lease bounds how long a dead execution's step waits before running again
(``BANKANOM_STEP_LEASE_SECONDS``, default 60); it must exceed the longest pause of a live process
(the heartbeat renews it every sixth of it). The fence needs no change to the assets: outside a Celery
step (the embedded mode, tests) there is no claim and ``verify`` passes.
"""

from __future__ import annotations

import contextvars
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from bankanom_pipeline import settings

log = logging.getLogger(__name__)

LEASE_VARIABLE = "BANKANOM_STEP_LEASE_SECONDS"
DONE_SECONDS = (
    7 * 86_400
)  # a late redelivery finds the result for this long (far past any visibility timeout)

# Lua runs atomically in Redis: the check of who holds the claim and the change are one step.
_RENEW = """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2])
else return 0 end"""
_FINISH = """if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('set', KEYS[2], ARGV[2], 'EX', ARGV[3]); redis.call('del', KEYS[1]); return 1
else return 0 end"""
_RELEASE = (
    """if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"""
)


class FencedOut(RuntimeError):
    """This execution lost its step's claim (it stalled past the lease and another execution took over)."""


def lease_seconds() -> float:
    text = os.environ.get(LEASE_VARIABLE, "60")
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if value <= 0:
        raise settings.SettingError(f"{LEASE_VARIABLE}={text!r}: a positive number of seconds is needed")
    return value


@dataclass
class Claim:
    client: redis.Redis
    key: str
    token: str
    lost: threading.Event = field(default_factory=threading.Event)
    renewed: float = field(default_factory=time.monotonic)  # when the heartbeat last kept the claim

    def held(self) -> bool:
        return not self.lost.is_set() and self.client.get(self.key) == self.token.encode()


_current: contextvars.ContextVar[Claim | None] = contextvars.ContextVar("bankanom_step_claim", default=None)


def verify() -> None:
    """Raise ``FencedOut`` unless the running step (if any) still holds its claim."""
    claim = _current.get()
    if claim is not None and not claim.held():
        ago = time.monotonic() - claim.renewed
        raise FencedOut(
            f"{claim.key} is no longer held by this execution ({claim.token}, last renewed {ago:.1f} s ago): "
            "not publishing"
        )


@dataclass
class StepFence:
    client: redis.Redis
    lease: float = field(default_factory=lease_seconds)
    poll: float = 0.5

    @classmethod
    def from_settings(cls) -> StepFence:
        return cls(redis.Redis.from_url(settings.celery_broker()))

    def run(self, attempt: str, execute: Callable[[], str]) -> tuple[str, bool]:
        """``execute()``'s result for ``attempt`` (a string, e.g. serialized events), and whether this
        call executed it (False: another execution's recorded result)."""
        claim_key, done_key = f"bankanom:step:{attempt}:claim", f"bankanom:step:{attempt}:done"
        claim = Claim(self.client, claim_key, f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}")
        lease_ms = int(self.lease * 1000)
        waited = False
        while True:
            done = self.client.get(done_key)
            if done is not None:
                log.info(
                    "%s already ran to completion: returning its result, not executing it again", attempt
                )
                return done.decode(), False
            if self.client.set(claim_key, claim.token, nx=True, px=lease_ms):
                break
            if not waited:
                holder = self.client.get(claim_key)
                log.info(
                    "%s is running elsewhere (%s): waiting for its result or its lease to lapse",
                    attempt,
                    holder,
                )
                waited = True
            time.sleep(self.poll)
        if waited:
            log.info(
                "%s: the claim lapsed without a result (its execution died): executing it again", attempt
            )
        stop = threading.Event()
        heartbeat = threading.Thread(target=self._renew, args=(claim, lease_ms, stop), daemon=True)
        heartbeat.start()
        token = _current.set(claim)
        try:
            result = execute()
        except BaseException:
            self.client.eval(_RELEASE, 1, claim_key, claim.token)
            raise
        finally:
            _current.reset(token)
            stop.set()
            heartbeat.join()
        if not self.client.eval(_FINISH, 2, claim_key, done_key, claim.token, result, DONE_SECONDS):
            log.warning("%s ended after its claim lapsed; another execution owns its result", attempt)
        return result, True

    def _renew(self, claim: Claim, lease_ms: int, stop: threading.Event) -> None:
        while not stop.wait(self.lease / 6):
            try:
                if not self.client.eval(_RENEW, 1, claim.key, claim.token, lease_ms):
                    claim.lost.set()
                    return
                claim.renewed = time.monotonic()
            except redis.RedisError as error:  # the lease runs on; the next beat may get through
                log.warning("%s: heartbeat failed: %s", claim.key, error)
