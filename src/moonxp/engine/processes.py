"""NumPy tile workers in processes of their own: the work of moonxp's worker threads, without one shared GIL.

A NumPy training step is some 25 NumPy calls per tile; on two threads each call hands
the GIL to the other thread, a futex wake every time, which left the threads 1.3-1.8x
behind one process per core (docs/design.md, "Tile workers on two cores"). Training
sends its parallel work here instead, where the processes are up (`team`).

The processes (one per core beyond the caller's) start once per Python process, in the
background, once training's parallel NumPy work has added up to `START_AFTER_S` (a
one-off command's small batch never pays for a start: ~0.3 s of a core); until they are
ready the work runs on threads, and only a call that alone would take `WAIT_S` waits for
them. The benchmark starts them before it times (`start`), as it warms caches. Each runs this interpreter with its flags and this process's `sys.path`,
BLAS on one thread, in a session of its own (a terminal's Ctrl-C is this process's to
handle), and exits when its socket closes (this process exited or gave it up). A
worker gets a module-level function and its arguments, pickled, and sends back the
result, or each value a generator function yields as it goes, or the exception raised,
with the warnings the call gave; it holds one value between calls (`Team.hold`),
which arguments name as `HELD`.

Only the main thread uses them (a Dask worker's or a user's threads keep threads), one
call at a time (a call made inside another, from a progress callback, runs on threads),
on POSIX, unless ``MOONXP_WORKER_PROCESSES=0``. Work that stops early (`owing`) stops
the workers' calls and reads what they still send; an interrupt, or anything that
leaves a message half written or unread, closes the processes instead, and the next
call starts new ones. If they cannot start at all, the work stays on threads, with one
warning.
"""

from __future__ import annotations

import atexit
import contextlib
import inspect
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .policy import one_blas_thread

SPIN_S = 0.005  # a message is polled for this long before the reader sleeps (`_await`)
START_AFTER_S = 0.5  # estimated seconds of parallel work on threads, in all, before the workers start
WAIT_S = 1.0  # a call estimated to take this long on threads waits for workers still starting
START_TIMEOUT_S = 60.0  # for a worker to import moonxp and say it is ready
PRELOAD = "moonxp.engine.training"  # what the work needs, imported before a worker says it is ready
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}


class WorkerProcessWarning(UserWarning):
    """moonxp's worker processes could not start: NumPy tiles run on threads instead."""


class WorkerProcessError(RuntimeError):
    """A worker process exited while a call was running on it, or a message could not be read."""


class Held:
    """In a call's arguments: the value the worker holds (`Team.hold`)."""


HELD = Held()


class Team:
    """Worker processes, each reached through its own socket; used by one `owing` block at a time.

    `running[k]`: calls sent to worker k and not yet ended. `broken`: a message was left half
    written or unread (an exception inside `send` or `receive`), so the team must be closed.
    """

    def __init__(self, processes: list[subprocess.Popen], connections: list[Connection]):
        self.processes, self.connections = processes, connections
        self.running = [0] * len(connections)
        self.broken = False
        self.depth = 0  # `owing` blocks using the team now

    def __len__(self) -> int:
        return len(self.connections)

    def hold(self, k: int, value: Any) -> None:
        """Worker `k` keeps `value` (its previous one dropped) for calls that name it `HELD`."""
        self._send(k, ("hold", value))

    def send(self, k: int, fn: Callable, *args: Any) -> None:
        """Start ``fn(*args)`` on worker `k` (`fn` module-level), under this thread's np.errstate."""
        self._send(k, ("call", fn, args, np.geterr()))
        self.running[k] += 1

    def receive(self, k: int) -> Any:
        """The result of worker `k`'s oldest call, or for a generator function, its next value (then None once
        it is done); raises what the call raised. The call's warnings are given again here."""
        kind, value = self._message(k)
        if kind == "error":
            raise value
        return value

    def stop(self) -> None:
        """End every call still running: a generator stops at its next value; read what they send till then."""
        for k in range(len(self)):
            if self.running[k]:
                self._send(k, ("stop",))
            while self.running[k]:
                self._message(k)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def close(self) -> None:
        """Close the sockets (an idle worker exits when it reads their end); a worker still running a call, or
        any worker of a broken team, is killed rather than waited for."""
        for connection in self.connections:
            connection.close()
        for process, running in zip(self.processes, self.running):
            if running or self.broken:
                process.kill()
            try:
                process.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _send(self, k: int, message: tuple) -> None:
        self.broken = True  # until the whole message is written
        try:
            self.connections[k].send(message)
        except (BrokenPipeError, ConnectionResetError):
            raise self._lost(k) from None
        self.broken = False

    def _message(self, k: int) -> tuple[str, Any]:
        """("item" | "ok" | "error", value) of worker `k`'s next message; its warnings given again here."""
        self.broken = True  # until the message is read whole and unpickled
        try:
            data = _await(self.connections[k]).recv_bytes()
        except (EOFError, ConnectionResetError):
            raise self._lost(k) from None
        try:
            kind, value, caught = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - the reply of a call we can no longer tell apart
            raise WorkerProcessError(f"a reply of moonxp's worker process could not be read ({exc})") from None
        self.broken = False
        if kind != "item":
            self.running[k] -= 1
        for message, category in caught:
            warnings.warn(message, category, stacklevel=4)
        return kind, value

    def _lost(self, k: int) -> WorkerProcessError:
        process = self.processes[k]
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=1.0)
        return WorkerProcessError(f"moonxp's worker process {process.pid} exited (exit status {process.poll()}); "
                                  f"the next call starts a new one")


def team(size: int, work_s: float = 0.0) -> Team | None:
    """`size` running worker processes for this thread's parallel work, or None: use threads.

    `work_s`: this call's work, estimated in seconds on threads. The workers start in the
    background once such work adds up to `START_AFTER_S` in this process; until they are
    up, None, unless this call alone is `WAIT_S` or more (then it waits). None too while
    they are in use (a call from inside another call).
    """
    if size < 1 or not _usable():
        return None
    _state["work_s"] += work_s
    if work_s >= WAIT_S:
        _up(size)
    found = _running(size, begin=_state["work_s"] >= START_AFTER_S)
    _warn_if_failed(stacklevel=4)  # at train's caller: _warn_if_failed, team, training._team, train
    return found


def start(size: int) -> Team | None:
    """`size` worker processes, started now if need be and waited for (None where they cannot run here, or are in
    use): what a benchmark does before its clock runs."""
    if size < 1 or not _usable():
        return None
    _up(size)
    _warn_if_failed(stacklevel=2)
    return _running(size, begin=False)


def _up(size: int) -> None:
    """Start `size` workers if need be and wait until they are up, the start failed, or the team is in use (a
    smaller team being started is waited for, then replaced)."""
    while _running(size, begin=True) is None and _state["starting"] is not None:
        settle()


def _running(size: int, begin: bool) -> Team | None:
    """The team if it is up, has `size` workers or more and is not in use; else None, after starting one in the
    background if `begin`, or if the team had too few workers or one died (unless one is starting, or a start
    failed)."""
    with _lock:
        current = _state["team"]
        if current is not None and current.depth:
            return None
        if current is not None and len(current) >= size and current.alive():
            return current
        if current is not None:  # too few (more cores now), or one died: start afresh
            _state["team"], begin = None, True
            current.close()
        if begin and _state["starting"] is None and _state["failed"] is None:
            _state["starting"] = threading.Thread(target=_launch, args=(size,), name="moonxp-start-workers",
                                                  daemon=True)
            _state["starting"].start()
    return None


def _warn_if_failed(stacklevel: int) -> None:
    """One warning, the first time after a start failed (the work stays on threads in this process)."""
    with _lock:
        reason = _state["failed"]
        if reason:
            _state["failed"] = ""
    if reason:
        warnings.warn(f"moonxp's worker processes did not start ({reason}): NumPy tiles run on threads",
                      WorkerProcessWarning, stacklevel=stacklevel + 1)


def settle() -> None:
    """Wait until worker processes being started are up (or have failed)."""
    starting = _state["starting"]
    if starting is not None:
        starting.join()


@contextlib.contextmanager
def owing(team: Team | None) -> Iterator[None]:
    """A block that sends calls to `team` (None: nothing to do), which no other block uses meanwhile (`team`).

    Left by an exception while calls still run, they are stopped and their messages read, so the
    team answers the next call; left by an interrupt (KeyboardInterrupt, SystemExit, ...), with a
    message half written or unread, or if stopping fails, the team is closed.
    """
    if team is None:
        yield
        return
    team.depth += 1
    try:
        yield
    except Exception:
        if team.broken:
            _drop(team)
        elif any(team.running):
            try:
                team.stop()
            except BaseException:  # noqa: BLE001 - the exception that left the block is the one to raise
                _drop(team)
        raise
    except BaseException:
        if team.broken or any(team.running):
            _drop(team)
        raise
    finally:
        team.depth -= 1


def spread(team: Team, here: Callable[[], Any], calls: list[tuple]) -> list:
    """[here(), then the result of each call (fn, *args) on its worker], the calls side by side with `here` (BLAS on
    one thread here meanwhile, as on the workers)."""
    with owing(team):
        for k, (fn, *args) in enumerate(calls):
            team.send(k, fn, *args)
        with one_blas_thread():
            first = here()
        return [first] + [team.receive(k) for k in range(len(calls))]


def _drop(team: Team) -> None:
    """Close `team` and forget it: the next call with parallel work starts new workers."""
    with _lock:
        if _state["team"] is team:
            _state["team"] = None
        _state["work_s"] = max(_state["work_s"], START_AFTER_S)
    team.close()


def enabled() -> bool:
    """Whether parallel NumPy training may use worker processes here: POSIX, an interpreter to start, and
    ``MOONXP_WORKER_PROCESSES`` not 0 (from the main thread only, see `team`)."""
    return os.name == "posix" and bool(sys.executable) and os.environ.get("MOONXP_WORKER_PROCESSES", "1") != "0"


def _usable() -> bool:
    return enabled() and threading.current_thread() is threading.main_thread()


def _launch(size: int) -> None:
    """Start `size` workers and wait for each to be ready; in the background (`team`)."""
    started: list = _state["spawned"]
    try:
        for _ in range(size):
            started.append(_spawn())
        for process, connection in started:
            if not connection.poll(START_TIMEOUT_S):
                raise WorkerProcessError(f"a worker was not ready after {START_TIMEOUT_S:.0f} s")
            try:
                _, location = connection.recv()
            except EOFError:
                raise WorkerProcessError(f"a worker exited while starting (exit status {process.wait()})") from None
            if location != _location():
                raise WorkerProcessError(f"a worker imported moonxp from {location}, not {_location()}")
        with _lock:
            _state["team"] = Team([p for p, _ in started], [c for _, c in started])
            _state["starting"], _state["spawned"] = None, []
    except Exception as exc:  # noqa: BLE001 - any failure leaves the work on threads
        Team([p for p, _ in started], [c for _, c in started]).close()
        with _lock:
            _state["failed"] = str(exc) or type(exc).__name__
            _state["starting"], _state["spawned"] = None, []


def _location() -> str:
    """The folder moonxp is imported from."""
    return str(Path(__file__).resolve().parents[2])


def _spawn() -> tuple[subprocess.Popen, Connection]:
    """One worker process and this side of its socket."""
    from .policy import keep_freed_memory
    malloc = keep_freed_memory.cache_info().currsize > 0  # as this process: the command line and the benchmark
    ours, theirs = socket.socketpair()
    code = (f"import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
            f"from moonxp.engine.processes import serve; serve({theirs.fileno()}, {malloc})")
    path = json.dumps([str(entry) for entry in sys.path])  # the same modules as here (numpy, moonxp, ...)
    try:
        process = subprocess.Popen([sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code, path],
                                   env={**os.environ, **ONE_THREAD}, pass_fds=[theirs.fileno()],
                                   start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    finally:
        theirs.close()
    return process, Connection(ours.detach())


def serve(fd: int, keep_freed_memory: bool) -> None:
    """A worker's loop: run the calls that arrive on socket `fd` until it closes (or breaks the protocol)."""
    connection = Connection(fd)
    os.environ["MOONXP_WORKER_PROCESSES"] = "0"  # work run here never starts workers of its own
    __import__(PRELOAD)
    if keep_freed_memory:
        from .policy import keep_freed_memory as tune
        tune()
    connection.send(("ready", _location()))
    held = None
    with contextlib.suppress(EOFError, OSError):
        while True:
            message = _await(connection).recv()  # a message that does not unpickle ends the worker
            if message[0] == "hold":
                held = message[1]
            elif message[0] == "call":  # a "stop" that came after its call ended is dropped
                _, fn, args, errors = message
                with np.errstate(**errors):
                    if not _answer(connection, fn, [held if isinstance(a, Held) else a for a in args]):
                        return


def _answer(connection: Connection, fn: Callable, args: list) -> bool:
    """Run ``fn(*args)`` and send its result: ("ok", result), or ("item", value) for each value a generator
    yields until it ends or a "stop" arrives, then ("ok", None); ("error", exception) if it raises. False:
    a message other than "stop" came during a generator (the caller broke the protocol)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the caller's filters decide what is shown
        try:
            result = fn(*args)
            if inspect.isgenerator(result):
                for value in result:
                    if not _reply(connection, "item", value, caught):
                        result.close()
                        return True  # the error sent instead ended the call
                    if connection.poll():
                        if connection.recv()[0] != "stop":
                            return False
                        result.close()
                        break
                result = None
            kind, value = "ok", result
        except Exception as exc:  # noqa: BLE001 - the caller raises it
            kind, value = "error", exc
        _reply(connection, kind, value, caught)
    return True


def _reply(connection: Connection, kind: str, value: Any, caught: list) -> bool:
    """Send (kind, value, the warnings caught since the last reply). A value that does not pickle, or an
    exception that does not unpickle (its __init__ wants other arguments), goes as a WorkerProcessError
    instead (then False)."""
    warned = [(str(w.message), w.category) for w in caught]
    caught.clear()
    try:
        data = pickle.dumps((kind, value, warned))
        if kind == "error":
            pickle.loads(data)
    except Exception as exc:  # noqa: BLE001 - told to the caller instead
        what = f"{type(value).__name__}: {value}" if kind == "error" else f"its result ({type(exc).__name__}: {exc})"
        error = WorkerProcessError(f"moonxp's worker process could not send {what}"[:1000])
        connection.send_bytes(pickle.dumps(("error", error, warned)))
        return False
    connection.send_bytes(data)
    return True


def _await(connection: Connection) -> Connection:
    """`connection` once it has a message: polled for up to `SPIN_S`, then waited for asleep.

    A process asleep in a read wakes some 0.1-0.5 ms after the message arrives (measured on a
    2-core VM), a delay paid at every exchange; polling reads it at once.
    """
    end = time.perf_counter() + SPIN_S
    while not connection.poll():
        if time.perf_counter() > end:
            connection.poll(None)
            break
    return connection


@atexit.register
def _close() -> None:
    current, _state["team"] = _state["team"], None
    if current is not None:
        current.close()


def _forget() -> None:
    """In a child forked from this process: its parent's workers are not its own. Its copies of their sockets are
    closed, so that the workers still see their end when the parent exits; the lock is new (another thread of the
    parent may have held it)."""
    global _lock
    _lock = threading.Lock()
    current, spawned = _state["team"], _state["spawned"]
    _state.update(team=None, starting=None, failed=None, spawned=[], work_s=0.0)
    for connection in [*(current.connections if current is not None else []), *(c for _, c in spawned)]:
        with contextlib.suppress(OSError):
            connection.close()


os.register_at_fork(after_in_child=_forget)

_lock = threading.Lock()
# team: the workers; starting: the thread starting them; spawned: (process, socket) it started so far;
# failed: why the start failed ("" once warned); work_s: parallel work seen so far, estimated seconds on threads
_state: dict = {"team": None, "starting": None, "failed": None, "spawned": [], "work_s": 0.0}
