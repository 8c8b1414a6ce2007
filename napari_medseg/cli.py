"""The `medseg` command line.

Each subcommand lives in ``napari_medseg.commands.<name>`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``.  Modules are imported only
when their subcommand runs, so ``medseg --help`` stays fast (no torch import).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
import traceback
import warnings

from napari_medseg import __version__

#: subcommand name -> (module, one-line help)
SUBCOMMANDS = {
    "segment": ("napari_medseg.commands.segment", "segment a volume (or a folder of volumes) with one or more checkpoints"),
    "finetune": ("napari_medseg.commands.finetune", "fine-tune a model on corrected slices of one volume"),
    "demo": ("napari_medseg.commands.demo", "run the correct-and-retrain loop headlessly on the bundled sample CT"),
    "train": ("napari_medseg.commands.train", "train a model from a YAML recipe (torchrun for several GPUs)"),
    "evaluate": ("napari_medseg.commands.evaluate", "per-organ Dice and HD95 of a checkpoint on labelled volumes"),
    "datastore": ("napari_medseg.commands.datastore", "list, prune or export the stored corrections"),
    "project": ("napari_medseg.commands.project", "list a Cases project's cases, or export their labels in source geometry"),
    "view": ("napari_medseg.commands.view", "open napari with the plugin's docks and a volume (default: the sample CT)"),
}


class CommandError(Exception):
    """An error the CLI reports as one line and a non-zero exit code."""


def one_line(err: BaseException) -> str:
    """``err`` as one line: OS errors name the file and the reason, other errors keep their text."""
    if isinstance(err, OSError) and err.strerror:
        target = f" {err.filename}" if err.filename else ""
        return f"{err.strerror}:{target}"
    text = " ".join(str(err).split())
    if isinstance(err, (CommandError, ValueError, OSError)) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def debug_enabled(argv: list[str]) -> bool:
    """``--debug`` on the command line or ``MEDSEG_DEBUG`` set to a true value."""
    return "--debug" in argv or os.environ.get("MEDSEG_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _available_subcommands() -> dict[str, tuple[str, str]]:
    found = {}
    for name, (module, help_text) in SUBCOMMANDS.items():
        if importlib.util.find_spec(module) is not None:
            found[name] = (module, help_text)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (subcommands listed, their options parsed lazily)."""
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="napari-medseg: segment organs in CT/MRI, correct, and fine-tune.",
    )
    parser.add_argument("--version", action="version", version=f"napari-medseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in _available_subcommands().items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _one_line_warning(name: str):
    """A ``warnings.showwarning`` that prints ``medseg NAME: warning: ...`` on one line."""

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"medseg {name}: warning: {' '.join(str(message).split())}", file=sys.stderr)

    return show


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``medseg`` console script; returns the exit code.

    Every failure is one line on stderr and exit code 2; ``--debug`` (or
    ``MEDSEG_DEBUG=1``) adds the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_enabled(argv)
    argv = [a for a in argv if a != "--debug"]
    available = _available_subcommands()
    if not argv or argv[0] not in available:
        build_parser().parse_args(argv or ["--help"])  # prints help / version / usage error
        return 0
    name = argv[0]
    try:
        module_name, help_text = available[name]
        module = importlib.import_module(module_name)
        parser = argparse.ArgumentParser(prog=f"medseg {name}", description=help_text)
        parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
        module.add_arguments(parser)
        args = parser.parse_args(argv[1:])
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning(name)
            return int(module.run(args) or 0)
    except SystemExit:  # argparse usage errors (exit 2) and --help (exit 0)
        raise
    except KeyboardInterrupt:
        print(f"medseg {name}: interrupted", file=sys.stderr)
        return 130
    except BaseException as err:  # CLI boundary: every failure becomes one line
        if debug:
            traceback.print_exc()
        print(f"medseg {name}: error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
