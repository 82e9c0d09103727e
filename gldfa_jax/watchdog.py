"""Peer watchdog of a multi-process run: it names the process that stopped responding, then ends this one.

JAX's coordination service notices a silent process only by its missed heartbeats and then aborts every process
(SIGABRT); on jax 0.10.2 its message "The following tasks are unhealthy (stopped sending heartbeats):" lists no
task, so a process that hangs while alive (stopped, swapped out, frozen host) ends the run without saying which.
Here each process writes a counter to the coordination service's key-value store every `interval` and reads the
others'; a peer whose counter has not changed for `limit` seconds (half of --distributed_timeout) is named in the
log and this process exits with EXIT_CODE. main.py gives JAX's own heartbeat twice --distributed_timeout, so this
fires first and JAX's abort stays the backstop. Only this process's clock is read (hosts' clocks may differ).
"""

import os
import socket
import sys
import threading
import time

import jax
from absl import logging

EXIT_CODE = 3  # distinct from a usage error (2) and a failed run (1): a peer stopped responding
_DIR = "gldfa_jax/watchdog/"  # one key per process, read in one call: a peer that has not beaten yet is absent
_DONE = "done"  # a peer that finished its work stops beating; its last value says so


def limits(timeout: int) -> tuple[float, float]:
    """(interval between beats, silence after which a peer counts as lost) for --distributed_timeout=`timeout`:
    a peer is named at most limit + 2 intervals after its last beat (0.7 × timeout), inside the timeout."""
    return min(1.0, timeout / 10), timeout / 2


def silent_peers(last_change: dict, now: float, limit: float) -> dict:
    """{process index: seconds since its counter last changed} of the peers silent for longer than `limit`."""
    return {peer: now - t for peer, t in last_change.items() if now - t > limit}


def lost_message(peer: int, who: str, silent: float, timeout: int, me: int) -> str:
    return (
        f"process {peer} ({who}) stopped responding (no heartbeat for {silent:.1f} s; "
        f"--distributed_timeout={timeout}); ending process {me} with exit code {EXIT_CODE}. "
        "Check that process's host, then restart every process with the same command to resume from the "
        "latest checkpoint."
    )


class Watchdog:
    """Beats and watches from two daemon threads: a key-value call that hangs (process 0, which serves the store,
    is stopped) holds up the beating thread only, and the watching thread then names process 0."""

    def __init__(self, timeout: int):
        # The coordination client that jax.distributed.initialize made; jax has no public accessor (Orbax reads
        # the same attribute).
        from jax._src.distributed import global_state

        self.client, self.timeout = global_state.client, timeout
        self.interval, self.limit = limits(timeout)
        self.me, self.count = global_state.process_id, global_state.num_processes  # no backend started for them
        self.ident = f"pid {os.getpid()} on {socket.gethostname()}"
        start = time.monotonic()
        self.peers = {p: start for p in range(self.count) if p != self.me}  # peer -> when its counter last changed
        self.values, self.who = {}, {}
        self.round_done = start  # the last time a full round of key-value calls came back
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=f, name=f"watchdog-{f.__name__}", daemon=True) for f in (self.beat, self.watch)
        ]

    def beat(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                self.client.key_value_set(f"{_DIR}{self.me}", f"{n} {self.ident}", allow_overwrite=True)
                entries = self.client.key_value_dir_get(_DIR)
            except jax.errors.JaxRuntimeError:  # the store is unreachable: `watch` judges by the silence
                entries = None
            if entries is not None:
                self.round_done = time.monotonic()
                for key, value in entries:
                    peer = int(key.rsplit("/", 1)[1])
                    if peer not in self.peers:
                        continue
                    if value == _DONE:
                        del self.peers[peer]
                    elif value != self.values.get(peer):
                        self.values[peer], self.who[peer] = value, value.split(" ", 1)[1]
                        self.peers[peer] = time.monotonic()
            self.stop.wait(self.interval)

    def watch(self) -> None:
        while not self.stop.wait(self.interval):
            now = time.monotonic()
            silent = silent_peers(dict(self.peers), now, self.limit)
            if now - self.round_done > self.limit and self.me != 0:  # the store lives in process 0
                silent.setdefault(0, now - self.round_done)
            if silent:
                peer = min(silent)
                logging.error(
                    "%s",
                    lost_message(peer, self.who.get(peer, "never heard from"), silent[peer], self.timeout, self.me),
                )
                logging.flush()
                sys.stderr.flush()
                os._exit(EXIT_CODE)  # the main thread may be blocked in a collective that never returns

    def start(self) -> "Watchdog":
        for t in self.threads:
            t.start()
        logging.info(
            "watchdog: a process silent for %.1f s is named and ends the run (--distributed_timeout=%d)",
            self.limit,
            self.timeout,
        )
        return self

    def finish(self) -> None:
        """This process's work is done: stop watching, and tell the peers not to wait for its beats."""
        self.stop.set()
        for t in self.threads:  # a beat that lands after _DONE would make the peers wait for this process again
            t.join(self.limit)
        try:
            self.client.key_value_set(f"{_DIR}{self.me}", _DONE, allow_overwrite=True)
        except jax.errors.JaxRuntimeError:  # the store went with a finished process 0; nobody is left to tell
            pass
