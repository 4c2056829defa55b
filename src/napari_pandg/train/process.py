"""The trainer as a separate process, followed through JSON lines (Qt-free).

The napari Fine-tune widget must survive whatever happens to training (a crash, a segfault in
a native library, the OOM killer, SIGKILL), so it never trains in its own process: it starts

    python -m napari_pandg.train CONFIG [key=value ...] --json-progress --stop-file FILE

(or the same under ``torchrun --nproc_per_node=N``) and reads one JSON object per line from
its standard output::

    {"event": "log", "text": "..."}
    {"event": "epoch", "epoch": 3, "step": 60, "loss": 0.41, "val_dice": 0.72, ...}
    {"event": "done", "run_dir": ..., "best_path": ..., "last_path": ..., "best_dice": ...,
     "best_epoch": ..., "epochs_done": ..., "cancelled": false}
    {"event": "error", "message": "..."}

A terminal user can follow the same lines. **Stop** creates the stop file: a single-process
trainer then drops the unfinished epoch and exits with ``cancelled: true`` (``last.pt`` holds
the last finished epoch); under torchrun the processes are terminated, which keeps the same
``last.pt``. Starting the same run folder again resumes it (``resume: true``). A trainer that
dies without a ``done`` line (killed, crashed) is reported by :meth:`TrainerProcess.result`
with its exit status and whether ``last.pt`` makes the run resumable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_pandg.train.trainer import TrainResult

#: the file whose existence asks a running trainer to stop after the current step
STOP_FILE = "STOP"


class TrainerProcessError(RuntimeError):
    """The trainer process ended without finishing: killed, crashed or refused its config."""


@dataclass
class ProcessResult(TrainResult):
    """:class:`TrainResult` of a trainer process (``network`` is None), plus its exit status."""

    returncode: int = 0


def trainer_command(
    config: str | os.PathLike,
    overrides: Sequence[str] = (),
    *,
    stop_file: str | os.PathLike | None = None,
    nproc: int = 1,
    python: str | None = None,
) -> list[str]:
    """The command line of one trainer launch (``torchrun`` when ``nproc`` > 1)."""
    py = python or sys.executable
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    head = [py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else [py]
    cmd = [*head, "-m", "napari_pandg.train", str(config), *map(str, overrides), "--json-progress"]
    if stop_file is not None:
        cmd += ["--stop-file", str(stop_file)]
    return cmd


class TrainerProcess:
    """One trainer process: start it, read its events, stop or kill it, collect its result."""

    def __init__(
        self,
        config: str | os.PathLike,
        run_dir: str | os.PathLike,
        overrides: Sequence[str] = (),
        *,
        nproc: int = 1,
        env: dict[str, str] | None = None,
        python: str | None = None,
    ) -> None:
        self.config = Path(config)
        self.run_dir = Path(run_dir)
        self.stop_file = self.run_dir / STOP_FILE
        self.nproc = int(nproc)
        self.command = trainer_command(config, overrides, stop_file=self.stop_file, nproc=nproc, python=python)
        self.env = {**os.environ, **(env or {})}
        self.env.setdefault("PYTHONUNBUFFERED", "1")
        self.proc: subprocess.Popen[str] | None = None
        self.history: list[dict[str, Any]] = []
        self.done: dict[str, Any] | None = None
        self.error: str | None = None
        self._stderr: deque[str] = deque(maxlen=40)
        self._stderr_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> TrainerProcess:
        if self.proc is not None:
            raise RuntimeError("this trainer process was already started")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.stop_file.unlink(missing_ok=True)  # a stop left from an earlier launch must not stop this one
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1, env=self.env,
            start_new_session=True,  # Stop/kill reach torchrun's workers too; napari's Ctrl-C does not
        )  # fmt: skip
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        return self

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line.rstrip("\n"))

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self) -> Iterator[dict[str, Any]]:
        """Events as they arrive, until the process closes its output (then it is waited for).

        Lines that are not JSON (a library printing to stdout) come as ``log`` events.
        """
        if self.proc is None:
            raise RuntimeError("start() the trainer process first")
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except json.JSONDecodeError:
                ev = {"event": "log", "text": line}
            if not isinstance(ev, dict) or "event" not in ev:
                ev = {"event": "log", "text": line}
            if ev["event"] == "epoch":
                self.history.append(ev)
            elif ev["event"] == "done":
                self.done = ev
            elif ev["event"] == "error":
                self.error = str(ev.get("message", ""))
            yield ev
        self.proc.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)

    def stop(self) -> None:
        """Ask the trainer to stop: it keeps the last finished epoch (``last.pt``)."""
        if not self.running:
            return
        self.stop_file.touch()
        if self.nproc > 1:  # DDP ranks cannot agree on a step to stop at: end the processes
            self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the trainer (and its torchrun workers); ``last.pt`` stays resumable."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            self.proc.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        if self.proc is None:
            raise RuntimeError("start() the trainer process first")
        return self.proc.wait(timeout)

    @property
    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    # ------------------------------------------------------------------ outcome
    def result(self) -> ProcessResult:
        """The run's outcome; :class:`TrainerProcessError` if the trainer did not finish.

        A stopped run (stop file or SIGTERM) finishes with ``cancelled=True``.
        """
        if self.proc is None:
            raise RuntimeError("start() the trainer process first")
        code = self.proc.wait()
        last = self.run_dir / "last.pt"
        if self.done is not None:
            d = self.done
            return ProcessResult(
                run_dir=Path(d.get("run_dir", self.run_dir)),
                best_path=Path(d["best_path"]) if d.get("best_path") else None,
                last_path=Path(d.get("last_path") or last),
                best_dice=float(d.get("best_dice", float("nan"))),
                best_epoch=int(d.get("best_epoch", 0)),
                epochs_done=int(d.get("epochs_done", len(self.history))),
                cancelled=bool(d.get("cancelled", False)),
                returncode=code,
                history=list(self.history),
            )
        if self.error:
            raise TrainerProcessError(f"training in {self.run_dir} refused to start: {self.error}")
        if code < 0:
            try:
                how = f"was killed by signal {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with status {code}"
        epochs = f"after epoch {self.history[-1]['epoch']}" if self.history else "before finishing an epoch"
        if last.exists():
            again = f"{last} holds the last finished epoch: start the same run folder again to resume"
        else:
            again = "no epoch was saved: start again"
        tail = self.stderr_tail.strip().splitlines()[-6:]
        detail = ("\nlast lines of its output:\n" + "\n".join(tail)) if tail and code > 0 else ""
        raise TrainerProcessError(f"the trainer process {how} {epochs}; {again}.{detail}")


def resumable(run_dir: str | os.PathLike) -> bool:
    """True when ``run_dir`` holds a run that a new launch would continue (config + last.pt)."""
    p = Path(run_dir)
    return (p / "last.pt").is_file() and (p / "config.yaml").is_file()
