"""How the batching worker stops: a warm stop within WORKER_SHUTDOWN_GRACE on SIGTERM or SIGINT (no
more jobs taken; running ones finish if they can, the rest go back to the front of the queue), a
cold one on a second signal, and a stop that wins over waiting for a Redis that is away.

A mixin of `worker.main.BatchWorker`, apart from the loop that runs jobs; it reads the worker's
running jobs, engine and reporter, and its `_stop_at` and `_force_stop` flags.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from rq.worker import WorkerStatus

log = logging.getLogger("worker.main")

STOP_POLL = 0.25
"""Longest a wait for Redis goes without checking whether the stop's grace has run out."""

COMMAND_POLL = 1.0
"""Longest rq's command listener (the pub/sub thread) blocks in one read. rq reads for 60 s at a time,
and its unsubscribe at teardown joins the thread for 1 s and then closes the connection under it: a
stop could then hang for up to a minute after the last job ended (seen in the stop tests)."""


class StoppedWithoutRedis(Exception):
    """The worker was asked to stop and its grace ran out while Redis was unreachable: it exits
    without handing its jobs back (the dead-worker recovery of the others requeues them, as after a
    SIGKILL). `python -m worker` exits 1 on it."""


class GracefulStop:
    """The stop of a batching worker (see the module docstring)."""

    def subscribe(self) -> None:
        """rq's subscription to this worker's command channel (`rq` stop-job and shutdown commands), with
        a listener thread that reads in slices of COMMAND_POLL, so that teardown's join finds it gone."""
        log.info("worker %s: listening for commands on %s", self.name, self.pubsub_channel_name)
        self._listener_done = threading.Event()
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(sleep_time=COMMAND_POLL, daemon=True,
                                                       exception_handler=self._on_listener_error)

    def _on_listener_error(self, error: Exception, pubsub: Any, thread: Any) -> None:
        # as rq's own handler: a lost connection is retried (redis-py subscribes again once it is back),
        # anything else ends the listener. Its pause ends at once when the worker stops listening:
        # redis-py 8's thread.stop() waits for the thread, and would wait out a plain 2 s sleep
        if not isinstance(error, RedisConnectionError):
            raise error
        log.error("worker %s: command listener cannot reach Redis (%s); retrying in 2 s", self.name, error)
        self._listener_done.wait(2.0)

    def unsubscribe(self) -> None:
        """rq's unsubscribe (at teardown), with the listener's pause cut short first."""
        self.stop_listening()
        super().unsubscribe()  # type: ignore[misc]

    def stop_listening(self) -> None:
        """End the command listener's thread now, without asking Redis for anything."""
        if getattr(self, "_listener_done", None) is not None:
            self._listener_done.set()
        if self.pubsub_thread is not None:
            self.pubsub_thread.stop()

    def install_stop_handlers(self) -> None:
        """SIGTERM and SIGINT ask for a warm stop (a second one for a cold one); see `_on_stop_signal`."""
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGTERM, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        # flags only: the handler may run in the middle of a Redis command on the same connection
        if self._stop_at is None:
            self._stop_at = time.monotonic() + self.shutdown_grace
            log.info("warm shutdown (%s): taking no more jobs; %d running get %.0f s to finish, then go back "
                     "to the queue", signal.Signals(signum).name, len(self.running), self.shutdown_grace)
        else:
            self._force_stop = True
            log.warning("second stop signal: handing every running job back now")

    def _in_flight(self) -> int:
        """Jobs this worker holds: running, or ended but not yet written."""
        return len(self.running) + len(self._unended)

    def _stop_is_due(self) -> bool:
        """Asked to stop, and nothing left to wait for: the grace has run out, a second signal came,
        or no job is in flight."""
        return self._stop_at is not None and (self._force_stop or time.monotonic() >= self._stop_at
                                              or self._in_flight() == 0)

    def _give_up_if_stopped(self, error: Exception) -> None:
        """A stop wins over waiting for Redis: StoppedWithoutRedis once it is due with Redis still
        unreachable."""
        if not self._stop_is_due():
            return
        held = self._in_flight()
        why = ("a second stop signal came" if self._force_stop else
               f"its {self.shutdown_grace:g} s grace ran out" if held else "no job was in flight")
        fate = (f"{held} jobs in flight are not handed back: the other workers' dead-worker recovery requeues them"
                if held else "nothing to hand back")
        raise StoppedWithoutRedis(f"stopping without Redis: {why} with Redis unreachable ({error}); exiting, "
                                  f"{fate}") from None

    def _wait_for_redis(self, seconds: float) -> None:
        """Sleep `seconds` before the next try, but not past the moment a stop is due."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self._stop_is_due():
            time.sleep(min(left, STOP_POLL))

    def _hand_back_what_cannot_finish(self) -> None:
        left = self._stop_at - time.monotonic()
        per_step = self._step_seconds or 0.0
        late = [j for j in self.running if left <= 0 or self.engine.remaining_evaluations(j) * per_step > left]
        self._hand_back(late)

    def _hand_back(self, job_ids: list[str]) -> None:
        """Give running jobs back: record `queued` again, RQ job at the front of its queue."""
        # pushed to the front newest first, so that the oldest ends up first in line again
        for job_id in reversed(job_ids):
            run = self.running.pop(job_id)
            self.engine.cancel([job_id])
            self.reporter.requeued(job_id)
            with self.connection.pipeline() as pipe:
                self.cleanup_execution(run.job, pipeline=pipe, execution=run.execution)
                pipe.execute()
            run.queue.enqueue_job(run.job, at_front=True)
            log.info("job %s handed back to the queue (the worker is stopping)", job_id)
        if not self.running:
            self.set_state(WorkerStatus.IDLE)
