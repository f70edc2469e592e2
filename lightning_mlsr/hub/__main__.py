"""``python -m lightning_mlsr.hub export --ckpt_path X.ckpt --out DIR`` and
``python -m lightning_mlsr.hub push DIR/query USER/NAME``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from lightning_mlsr.hub.export import PushError, export_checkpoint, push_folder
from lightning_mlsr.hub.manifest import ExportError
from lightning_mlsr.io.checkpoints import CheckpointError
from lightning_mlsr.training.trusted_classes import UntrustedClassError

#: what a user can act on: printed as one message, exit status 1 (anything else is a bug and
#: keeps its traceback)
_USER_ERRORS = (
    CheckpointError,
    ExportError,
    FileNotFoundError,
    OSError,
    PushError,
    UntrustedClassError,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_mlsr.hub",
        description="Share trained models: export each side of a checkpoint as a folder "
        "with a model card, or upload one to the Hugging Face hub.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="write DIR/query and DIR/doc (config, safetensors, tokenizer, card)"
    )
    export.add_argument("--ckpt_path", required=True, help="a checkpoint written by fit")
    export.add_argument("--out", required=True, help="folder to write into")
    export.add_argument("--name", help="the model's name on its card (default: run directory)")
    export.add_argument(
        "--metrics",
        help="a run's runs/<split>.metrics.json for the card (default: the run's "
        "runs/test.metrics.json when there is one)",
    )
    export.add_argument("--license", default="apache-2.0")
    push = commands.add_parser("push", help="upload an exported folder (needs network, login)")
    push.add_argument("folder")
    push.add_argument("repo_id", help="USER/NAME on the Hugging Face hub")
    push.add_argument("--public", action="store_true", help="create a public repository")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            written = export_checkpoint(
                args.ckpt_path,
                args.out,
                name=args.name,
                metrics_file=args.metrics,
                license=args.license,
            )
            for side, folder in written.items():
                print(f"{side}: {folder}")
            return 0
        print(push_folder(args.folder, args.repo_id, private=not args.public))
    except _USER_ERRORS as err:
        print(f"{parser.prog} {args.command}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
