"""Output paths checked before any work: never over an input, never over a file without ``--overwrite``.

Every check raises :class:`~napari_medseg.cli.CommandError` with one line
that names the path and says what to do.
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_medseg.cli import CommandError
from napari_medseg.io.writer import LABEL_FORMATS

#: label outputs the library writer knows, by suffix (lower case)
LABEL_SUFFIXES = tuple(ext for ext, _ in LABEL_FORMATS)


def output_suffix(path: Path, suffixes) -> str | None:
    """The first of ``suffixes`` that ``path``'s name ends with (case-insensitive), or None."""
    name = path.name.lower()
    return next((s for s in suffixes if name.endswith(s) and len(name) > len(s)), None)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_parent_writable(path: Path, what: str) -> None:
    """The nearest existing ancestor is a writable folder (missing folders are created later)."""
    parent = path.parent
    while not parent.exists():
        if parent.is_symlink():
            raise CommandError(f"{what} {path}: {parent} is a broken symbolic link")
        if parent.parent == parent:
            break
        parent = parent.parent
    if not parent.is_dir():
        raise CommandError(f"{what} {path} is under {parent}, which is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CommandError(f"{what} {path}: folder {parent} is not writable; choose another place")


def check_output_file(path, *, inputs=(), overwrite: bool = False, suffixes=LABEL_SUFFIXES,
                      what: str = "--output") -> Path:
    """Check one output file before any work starts; returns it as a ``Path``.

    Args:
        path: the file to write.
        inputs: files and folders read by this run; never replaced, even with ``overwrite``.
        overwrite: allow replacing an existing file that is not an input.
        suffixes: accepted name endings (lower case), or None for any.
        what: how the message names the path (``"--output"``).
    """
    path = Path(path)
    if suffixes and output_suffix(path, suffixes) is None:
        raise CommandError(f"{what} must end in {' or '.join(suffixes)}, got {str(path)!r}")
    if path.is_dir():
        raise CommandError(f"{what} {path} is an existing folder; give a file name")
    for src in inputs:
        src = Path(src)
        if _same_file(path, src) or (src.is_dir() and path.exists() and _inside(path, src)):
            raise CommandError(f"{what} {path} already exists and is an input of this run; choose another name (--overwrite never replaces an input)")
    if path.is_symlink() and not path.exists():
        raise CommandError(f"{what} {path} is a broken symbolic link; remove it or choose another name")
    if path.exists():
        if not overwrite:
            raise CommandError(f"{what} {path} already exists; choose a new name or pass --overwrite")
        if not os.access(path, os.W_OK):
            raise CommandError(f"{what} {path} is write-protected; not replaced")
    check_parent_writable(path, what)
    return path


def _inside(path: Path, folder: Path) -> bool:
    """``path`` lies directly in ``folder`` (a file of a DICOM series folder is part of that input)."""
    try:
        return path.resolve().parent == folder.resolve()
    except OSError:
        return False


def check_outputs(paths, *, inputs=(), overwrite: bool = False, suffixes=LABEL_SUFFIXES, what: str = "--output") -> None:
    """:func:`check_output_file` for each, plus: no two outputs of one run share a name."""
    seen: dict[str, Path] = {}
    for p in paths:
        p = Path(p)
        key = os.path.normcase(os.path.abspath(p))
        if key in seen:
            raise CommandError(f"two outputs of this run would both be written to {p}; rename one input")
        seen[key] = p
        check_output_file(p, inputs=inputs, overwrite=overwrite, suffixes=suffixes, what=what)


def label_sidecar(path: Path) -> Path | None:
    """The ``<stem>.json`` written beside a NIfTI label file (None for other formats)."""
    from napari_medseg.io.read import sidecar_path

    if output_suffix(path, (".nii.gz", ".nii")) is None:
        return None
    return sidecar_path(path)


def check_label_outputs(paths, *, inputs=(), overwrite: bool = False) -> None:
    """Label files and their JSON sidecars: unique, not inputs, not existing unless ``overwrite``."""
    paths = [Path(p) for p in paths]
    check_outputs(paths, inputs=inputs, overwrite=overwrite)
    sidecars = [s for s in map(label_sidecar, paths) if s is not None]
    check_outputs(sidecars, inputs=inputs, overwrite=overwrite, suffixes=None, what="label sidecar")


def check_new_checkpoint(path, *, inputs=()) -> Path:
    """A fine-tune output: a new ``.safetensors`` file (never replaced) in a writable folder."""
    return check_output_file(path, inputs=inputs, overwrite=False, suffixes=(".safetensors",))


def write_label_output(labels, path, geometry, label_set, *, inputs=(), overwrite: bool = False,
                       algorithm=None) -> Path:
    """Check ``path`` once more (it may have appeared meanwhile), make its folder, and write the labels.

    ``labels`` is ``(z, y, x)`` in canonical order; the file gets ``geometry``'s source geometry
    (``algorithm``: DICOM-SEG only, see :func:`napari_medseg.io.write_labels`).
    """
    from napari_medseg.io import write_labels

    path = Path(path)
    check_label_outputs([path], inputs=inputs, overwrite=overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_labels(labels, path, geometry, label_set, algorithm=algorithm)
