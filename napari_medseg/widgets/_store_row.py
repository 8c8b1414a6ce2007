"""The Retrain dock's store row: which corrections store is used, whether it replays, and what.

One line says the store and how many slices of how many patients the next
fine-tune replays (``CorrectionStore.plan_replay``: same label set and modality,
other images); *Project store…* picks a folder; *Replay* is on by default.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QCheckBox, QFileDialog, QHBoxLayout, QLabel, QVBoxLayout, QWidget

from napari_medseg.widgets._layout import button


class StoreRow(QWidget):
    """Store chooser + replay checkbox + summary line for a :class:`~napari_medseg.widgets.retrain.RetrainWidget`.

    Args:
        dock: the Retrain dock; its image, start and label-set combos drive the summary.
    """

    def __init__(self, dock):
        super().__init__()
        self.dock = dock
        self.root: Path | None = None  # None = the default store in the user data dir
        self._hashes: dict[tuple, str] = {}
        self.summary = QLabel()
        self.summary.setWordWrap(False)  # at most 3 short explicit lines, room reserved: the dock does not grow
        self.summary.setMinimumHeight(3 * self.summary.fontMetrics().lineSpacing() + 4)
        self.replay = QCheckBox("Replay earlier corrections")
        self.replay.setChecked(True)
        self.replay.setToolTip("Mix stored corrections of other patients (same label set and modality) into training")
        self.choose_btn = button("Project store\u2026", self.choose,
                                 "Keep this project's corrections in their own folder (default: the user data dir)")
        row = QHBoxLayout()
        row.addWidget(self.replay)
        row.addWidget(self.choose_btn)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.summary)
        self.replay.toggled.connect(self.refresh)
        for combo in (dock.image_combo, dock.start_combo, dock.label_set_combo):
            combo.currentTextChanged.connect(self.refresh)
        self.refresh()

    def store(self):
        """The :class:`CorrectionStore` in use."""
        from napari_medseg.retrain.datastore import CorrectionStore

        return CorrectionStore(self.root)

    def choose(self, path: str | None = None) -> None:
        """Use ``path`` (default: ask with a folder dialog) as the project store; a file is refused."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Project corrections store", str(self.store().root))
            if not path:
                return
        if Path(path).exists() and not Path(path).is_dir():
            self.summary.setText(f"{path} is a file; choose a folder for the project store.")
            return
        self.root = Path(path)
        self.refresh()

    def refresh(self, *_) -> None:
        """Re-read the store and say what the next fine-tune replays (two short lines; full path in the tooltip)."""
        store = self.store()
        self.summary.setToolTip(str(store.root))
        head = f"Store: {_short(store.root)}\n"
        if not self.replay.isChecked():
            self.summary.setText(head + "Replay off (corrections are still added).")
            return
        context = self._context()
        if context is None:
            self.summary.setText(head + "Choose an image and a model to see what it replays.")
            return
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            label_set, modality, image_hash = context
            plan = store.plan_replay(label_set, modality, exclude_hash=image_hash)
        scribbled = plan.scribbled_left_out  # recorded in the entries; replay uses full slices
        text = f"Replays {plan.counts()}" + (f", not {scribbled} scribbled" if scribbled else "")
        text += f"\nSkipped {plan.skipped_counts()}" if plan.skipped else ""
        notes = [str(w.message) for w in caught]  # damaged entries: counted in "Skipped", named in the tooltip
        if scribbled:
            notes.append(f"{scribbled} stored slice(s) with unlabelled pixels (scribbles) are not replayed: replayed "
                         "strokes lowered the next patient's Dice (docs/retrain.md, \"Replayed scribbles\").")
        if notes:
            self.summary.setToolTip("\n".join([str(store.root)] + notes))
        self.summary.setText(head + text)

    def _context(self):
        """``(label_set dict, modality, image voxel hash)`` of the next fine-tune, or ``None`` if unknown."""
        from napari_medseg.labels import get_label_set

        dock = self.dock
        image, choice = dock.image_layer(), dock.start_combo.currentText()
        if image is None or not choice:
            return None
        try:
            if choice in dock.scratch:
                from napari_medseg.preprocess import guess_modality  # as retrain_volume decides it

                label_set = get_label_set(dock.label_set_combo.currentText())
                modality = guess_modality(self._array(image)[0])
            else:
                from napari_medseg.checkpoint import read_checkpoint_info

                info = read_checkpoint_info(choice)
                label_set, modality = info.label_set, info.preprocessing.modality
        except (OSError, ValueError):
            return None
        return label_set.to_dict(), modality, self._hash(image)

    def _array(self, image):
        from napari_medseg.widgets._common import current_volume

        return current_volume(self.dock.viewer, image)  # (array, frame or None)

    def _hash(self, image) -> str:
        """The voxel hash of the image fine-tuning will see (cached per layer and frame)."""
        from napari_medseg.hashing import voxel_hash

        array, frame = self._array(image)
        key = (str(image.unique_id), id(image.data), frame)
        if key not in self._hashes:
            self._hashes[key] = voxel_hash(array)
        return self._hashes[key]


def _short(path: Path, width: int = 36) -> str:
    """``path`` with ``~`` for home, cut to its last ``width`` characters (the tooltip has it all)."""
    text = str(path)
    home = str(Path.home())
    if text.startswith(home + "/"):
        text = "~" + text[len(home):]
    return text if len(text) <= width else "\u2026" + text[-(width - 1):]
