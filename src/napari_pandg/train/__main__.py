"""``python -m napari_pandg.train CONFIG [key=value ...]`` (also under torchrun)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip())
        print("CONFIG: a YAML file (training/configs/*.yaml) or '-' for the defaults")
        return 0
    from napari_pandg.train import run_train_cli

    config = None if args[0] == "-" else args[0]
    try:
        path = run_train_cli(config, args[1:])
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"pandg train: error: {exc}", file=sys.stderr)
        return 2
    import os

    if os.environ.get("RANK", "0") == "0":
        print(f"best checkpoint: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
