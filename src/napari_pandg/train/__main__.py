"""``python -m napari_pandg.train CONFIG [key=value ...] [--json-progress] [--stop-file FILE]``

Also under torchrun. ``--json-progress``: one JSON object per line on stdout (events ``log``,
``epoch``, ``done``, ``error``; see :mod:`napari_pandg.train.process`), which is how the napari
Fine-tune widget follows a trainer it runs as a separate process. ``--stop-file FILE``: when the
file appears (or on SIGTERM), a single-process run drops the unfinished epoch, keeps ``last.pt``
and ends with ``"cancelled": true``; running the same out_dir again resumes it.
``PANDG_TRAIN_COMMAND`` (environment): the command recorded in the checkpoints (default: argv).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any


def _emitter(enabled: bool):
    def emit(event: str, **fields: Any) -> None:
        if enabled:
            from napari_pandg.models.inference import json_safe

            print(json.dumps(json_safe({"event": event, **fields}), allow_nan=False), flush=True)

    return emit


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("CONFIG: a YAML file (training/configs/*.yaml) or '-' for the defaults")
        return 0
    json_mode = "--json-progress" in args
    args = [a for a in args if a != "--json-progress"]
    stop_file: Path | None = None
    if "--stop-file" in args:
        i = args.index("--stop-file")
        if i + 1 >= len(args):
            print("python -m napari_pandg.train: error: --stop-file needs a path", file=sys.stderr)
            return 2
        stop_file = Path(args[i + 1])
        del args[i : i + 2]
    rank0 = os.environ.get("RANK", "0") == "0"
    emit = _emitter(json_mode and rank0)
    config = None if args[0] == "-" else args[0]
    if not json_mode and stop_file is None:
        from napari_pandg.train import run_train_cli

        try:
            path = run_train_cli(config, args[1:])
        except (FileExistsError, FileNotFoundError, ValueError) as exc:
            print(f"pandg train: error: {exc}", file=sys.stderr)
            return 2
        if rank0:
            print(f"best checkpoint: {path}")
        return 0

    from napari_pandg.train import train
    from napari_pandg.train.config import load_config
    from napari_pandg.train.trainer import preflight

    try:
        cfg = load_config(config, args[1:])
        preflight(cfg)
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        emit("error", message=f"training config {config}: {exc}")
        print(f"pandg train: error: training config {config}: {exc}", file=sys.stderr)
        return 2
    stopping = {"flag": False}

    def on_term(signum: int, frame: Any) -> None:  # noqa: ARG001 - signal handler signature
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, on_term)

    def cancel() -> bool:
        return stopping["flag"] or (stop_file is not None and stop_file.exists())

    def log(text: str) -> None:
        if json_mode:
            emit("log", text=text)
        elif rank0:
            print(text, flush=True)

    try:
        res = train(cfg, command=os.environ.get("PANDG_TRAIN_COMMAND"), log=log, cancel=cancel,
                    on_epoch=lambda rec: emit("epoch", **rec))  # fmt: skip
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        emit("error", message=str(exc))
        print(f"pandg train: error: {exc}", file=sys.stderr)
        return 2
    emit("done", run_dir=res.run_dir, best_path=res.best_path, last_path=res.last_path, best_dice=res.best_dice,
         best_epoch=res.best_epoch, epochs_done=res.epochs_done, cancelled=res.cancelled)  # fmt: skip
    if rank0 and not json_mode:
        print(f"best checkpoint: {res.best_path or res.last_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
