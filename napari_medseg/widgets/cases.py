"""The "Cases" dock: a worklist of volumes, each case's work saved in a project folder.

Thin by design: listing, the project folder and opening a case (read, restore
or segment) are Qt-free in :mod:`napari_medseg.worklist`; saving a case is
:func:`napari_medseg.casestate.save_case`.  This widget shows the table, runs
:func:`~napari_medseg.worklist.open_case` in a worker (progress, cancel), adds
the image and labels layers, points the "Correct and retrain" dock at them, and
saves the case when the user leaves it, saves it, changes its status, or
fine-tunes on it.

Saving never blocks painting: the labels and ledger are copied in the GUI thread
(0.1-0.7 s for 512x512x600, mostly the first touch of new memory) and compressed and written by one background thread, in
order.  Leaving a case, closing napari or removing the case's layers wait for the
writes and keep the layers when one failed.

Which checkpoint segments a new case (``docs/cases.md``): the project's newest
fine-tuned version (:func:`~napari_medseg.worklist.newest_checkpoint`), else the
checkpoint chosen in the Segment dock, else none (the case opens with empty
labels to paint, and the Retrain dock starts from scratch).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer, Signal
from qtpy.QtGui import QPalette
from qtpy.QtWidgets import (
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg.casestate import slices_with_strokes
from napari_medseg.widgets import _ledger_sync
from napari_medseg.widgets._cases_links import (
    RETRAIN,
    add_case_layers,
    add_case_scribbles,
    case_scribble_layer,
    drop_same_autosave,
    point_retrain,
    retrain_dock,
    same,
    segment_choice,
)
from napari_medseg.widgets._cases_table import CasesTable
from napari_medseg.widgets._common import show_organ
from napari_medseg.widgets._layout import StatusArea, StatusLabel, scrolling
from napari_medseg.widgets._organ_table import check_first_html, parse_organ_link
from napari_medseg.widgets._on_close import call_before_close


#: Granularity (s) of a case's active time: a tick in which the user painted, changed slice or waited
#: for a fine-tune on the case counts whole; a tick without any of these (the user away) does not.
ACTIVE_TICK_S = 10.0


class CasesWidget(QWidget):
    """Dock widget: worklist table, project folder, Open next / Save case / Mark reviewed / Mark done."""

    _written = Signal(object)  # (case name, status, Future) from the writer thread: a case save finished

    def __init__(self, napari_viewer):
        from napari_medseg.worklist import default_project_dir

        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.worklist: Path | None = None
        self.project: Path = default_project_dir()
        self.rows: list = []
        self.current = None  # the open worklist.OpenedCase
        self._layers: tuple | None = None  # (image, labels) layers of the open case
        self._failed: dict[str, str] = {}  # case id -> why it could not be opened (this session)
        self._watched: set[int] = set()  # ids of Retrain workers whose result saves the case
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medseg-case-save")
        self._pending: list[tuple[str, str, Future]] = []  # (case name, status, future) of unsettled saves, in order
        self._written.connect(lambda done: self._settle(*done))
        self._build_ui()
        self.refresh_model()
        call_before_close(napari_viewer, self._save_before_close)
        napari_viewer.layers.events.removing.connect(self._on_removing)
        napari_viewer.layers.events.inserted.connect(self._on_inserted)
        self._leaving = False
        # the user's active time on the open case: ticks in which they painted, moved through slices or
        # waited for a fine-tune on it (saved as case.json's active_seconds)
        self._active_s, self._activity = 0.0, False
        self._ticker = QTimer(self)
        self._ticker.setInterval(int(ACTIVE_TICK_S * 1000))
        self._ticker.timeout.connect(self._on_tick)
        napari_viewer.dims.events.current_step.connect(self._mark_active)

    def _on_removing(self, event) -> None:
        """The open case's image, labels or scribble layer is about to be removed (by the user, or by
        ``viewer.close()``, which clears the layer list): save the case first."""
        if self.current is None or self._leaving or self._layers is None:
            return
        image, labels = self._layers
        index = self._index(labels)
        scribbles = case_scribble_layer(self.viewer, image) if self._index(image) is not None else None
        going = {self._index(image), self._index(scribbles) if scribbles is not None else None}
        if index is not None and (index == event.index or event.index in going):
            self.save_case(wait=True)

    def _on_inserted(self, event) -> None:
        """A new, empty scribble layer for the open case (e.g. *Scribble mode* after its layer was closed)
        starts from the case's saved strokes, so that saving it never replaces them with nothing."""
        case, layer = self.current, event.value
        if case is None or self._layers is None or not same(case_scribble_layer(self.viewer, self._layers[0]), layer):
            return
        layer.events.paint.connect(self._mark_active)  # strokes are active time too
        if case.scribbles is not None and np.any(case.scribbles) and not np.any(layer.data):
            layer.data = np.array(case.scribbles, dtype=np.uint8)

    def _save_before_close(self) -> None:
        """napari is closing: save the open case (labels, ledger, status) into the project, and wait for it."""
        if self.current is not None:
            self.save_case(wait=True)
        self.flush()

    # ------------------------------------------------------------------ UI
    def _build_ui(self):
        self.worklist_label, self.project_label, self.model_label = QLabel("(none)"), QLabel(), QLabel()
        self.model_label.setWordWrap(True)
        self.folder_btn, self.list_btn = QPushButton("Folder\u2026"), QPushButton("List file\u2026")
        self.folder_btn.setToolTip("A folder of volumes: NIfTI, NRRD, MHA/MHD files and DICOM folders")
        self.list_btn.setToolTip("A text file naming one volume per line (relative to the file; # comments)")
        self.folder_btn.clicked.connect(lambda: self._choose_worklist(folder=True))
        self.list_btn.clicked.connect(lambda: self._choose_worklist(folder=False))
        self.project_btn = QPushButton("Choose\u2026")
        self.project_btn.setToolTip("Where each case's labels, slice ledger and status are saved (never beside a source)")
        self.project_btn.clicked.connect(self._choose_project)
        self.table = CasesTable(self)
        self.table.cellDoubleClicked.connect(lambda row, col: self.open_row(row))
        self.next_btn, self.save_btn, self.cancel_btn = QPushButton("Open next"), QPushButton("Save case"), QPushButton("Cancel")
        self.reviewed_btn, self.done_btn = QPushButton("Mark reviewed"), QPushButton("Mark done")
        self.export_btn = QPushButton("Export labels\u2026")
        self.export_btn.setToolTip("Write every saved case's labels (NIfTI, in its scan's own geometry, with organ "
                                   "names) and cases.json into an empty folder; the open case is saved first")
        self.export_btn.clicked.connect(lambda: self.export_labels())
        self.next_btn.clicked.connect(self.open_next)
        self.save_btn.clicked.connect(lambda: self.save_case())
        self.cancel_btn.clicked.connect(self.cancel)
        self.reviewed_btn.clicked.connect(lambda: self.set_status("reviewed"))
        self.done_btn.clicked.connect(lambda: self.set_status("done"))
        self.progress = QProgressBar()
        self.check_first = QLabel()  # the fresh segmentation's least certain organs, as links to them
        self.check_first.setWordWrap(True)
        self.check_first.setToolTip("Click an organ: go to the slice where it is least certain and paint with it")
        self.check_first.linkActivated.connect(self._go_to_organ)
        self.check_first.setVisible(False)
        self.status = StatusLabel("Open a folder of scans, or a text file listing them.")

        form = QFormLayout()
        form.addRow("Worklist", self.worklist_label)
        form.addRow("", _row(self.folder_btn, self.list_btn))
        form.addRow("Project", self.project_label)
        form.addRow("", _row(self.project_btn))
        body, footer = QWidget(), QWidget()
        scrolling(self, body, footer)  # a short window scrolls the table; the buttons and status stay in sight
        layout = QVBoxLayout(body)
        layout.addLayout(form)
        layout.addWidget(self.model_label)
        layout.addWidget(self.table)
        bottom = QVBoxLayout(footer)
        bottom.setContentsMargins(layout.contentsMargins().left(), 4, layout.contentsMargins().right(), 6)
        bottom.addLayout(_row(self.next_btn, self.save_btn, self.cancel_btn))
        bottom.addLayout(_row(self.reviewed_btn, self.done_btn, self.export_btn))
        bottom.addWidget(self.progress)
        bottom.addWidget(self.check_first)
        bottom.addWidget(StatusArea(self.status))  # scrolls past a few lines: the buttons stay in sight
        _show_path(self.project_label, self.project)
        self._set_running(False)

    def _set_running(self, running: bool):
        is_open = self.current is not None
        self.next_btn.setEnabled(not running)
        self.export_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)
        for button in (self.save_btn, self.reviewed_btn, self.done_btn):
            button.setEnabled(not running and is_open)

    def _choose_worklist(self, folder: bool):
        if folder:
            path = QFileDialog.getExistingDirectory(self, "Folder of scans")
        else:
            path, _ = QFileDialog.getOpenFileName(self, "Text file listing scans", "", "Text files (*.txt *.lst);;All files (*)")
        if path:
            self.open_worklist(path)

    def _choose_project(self):
        path = QFileDialog.getExistingDirectory(self, "Project folder (case states are saved here)", str(self.project))
        if path:
            self.set_project(path)

    # ------------------------------------------------------- worklist, project
    def open_worklist(self, path) -> bool:
        """Show the cases of a folder or text file (the open case is saved and closed first)."""
        from napari_medseg.worklist import check_project, list_sources

        try:
            check_project(self.project, list_sources(path))
        except ValueError as err:
            self.status.setText(str(err))
            return False
        if not self.leave_case():
            return False
        self.worklist, self._failed = Path(path), {}
        _show_path(self.worklist_label, self.worklist)
        self.refresh_rows()
        usable = sum(r.status != "unreadable" for r in self.rows)
        self.status.setText(f"{len(self.rows)} case(s), {usable} readable. Open next, or double-click a case.")
        return True

    def set_project(self, path) -> bool:
        """Use another project folder (the open case is saved in the old one and closed first)."""
        from napari_medseg.worklist import check_project

        try:
            project = check_project(path, [r.source for r in self.rows])
        except ValueError as err:
            self.status.setText(str(err))
            return False
        if not self.leave_case():
            return False
        self.project = project
        _show_path(self.project_label, project)
        self.refresh_rows()
        self.refresh_model()
        return True

    def refresh_rows(self, rescan: bool = True):
        """Re-read the worklist (``rescan``: the list and each source's header, else only the saved states).

        Cases that failed to open this session stay unreadable.
        """
        from napari_medseg.worklist import UNREADABLE, read_saved_state, read_worklist

        if rescan:
            try:
                self.rows = read_worklist(self.worklist, self.project) if self.worklist is not None else []
            except ValueError as err:
                self.rows = []
                self.status.setText(str(err))
        else:
            self.rows = [r if r.status == UNREADABLE and r.case_id not in self._failed else read_saved_state(r, self.project)
                         for r in self.rows]
        for row in self.rows:
            if row.case_id in self._failed and row.status != UNREADABLE:
                row.status, row.reason = UNREADABLE, self._failed[row.case_id]
        self.table.show_rows(self.rows, self.current.entry.case_id if self.current is not None else None)

    # ------------------------------------------------------------- the model
    def model_choice(self) -> tuple[Path | None, str]:
        """``(checkpoint, why)``: the project's newest fine-tuned version, else the Segment dock's choice, else None."""
        from napari_medseg.worklist import newest_checkpoint

        try:
            newest = newest_checkpoint(self.project)
        except ValueError as err:
            return None, str(err)
        if newest is not None:
            return newest, "newest version fine-tuned in this project"
        chosen = segment_choice(self.viewer)
        if chosen is not None:
            return chosen, "the Segment dock's checkpoint (no fine-tuned version in this project yet)"
        return None, "none yet: cases open with empty labels; paint a few slices and fine-tune from scratch"

    def candidates(self) -> list[Path]:
        """Checkpoints that may segment a new case, in preference order: the project's versions, newest
        first, then the Segment dock's choice (``worklist.open_case`` takes the first of the case's modality)."""
        from napari_medseg.worklist import project_checkpoints

        try:
            found = project_checkpoints(self.project)
        except ValueError:  # an unreadable project.json: model_label says why
            found = []
        chosen = segment_choice(self.viewer)
        return found + ([chosen] if chosen is not None and chosen not in found else [])

    def refresh_model(self):
        """The *Model:* line: the checkpoint a new case is segmented with, per modality when the project has
        models of more than one (a case takes the first made for its scan's modality: ``worklist.open_case``)."""
        from napari_medseg.worklist import first_per_modality

        path, why = self.model_choice()
        if path is None:
            self.model_label.setText(f"Model: {why}")
            self.model_label.setToolTip("")
            return
        per_modality = first_per_modality(self.candidates())
        if len(per_modality) > 1:  # a mixed CT/MR worklist: one line of models per modality
            names = ", ".join(f"{modality.upper()} scans: {p.name}" for modality, p in per_modality)
            self.model_label.setText(f"Model: {names} \u2014 newest of each modality")
        else:
            made_for = f" ({per_modality[0][0].upper()})" if per_modality else ""
            self.model_label.setText(f"Model: {path.name}{made_for} \u2014 {why}")
        self.model_label.setToolTip("\n".join(str(p) for _, p in per_modality) or str(path))

    # ---------------------------------------------------------- open a case
    def open_next(self) -> bool:
        """Save and close the open case, then open the next one that is neither done nor unreadable."""
        from napari_medseg.worklist import next_case

        if self.worker is not None:
            return False
        after = self.current.entry.case_id if self.current is not None else None
        if not self.leave_case():
            return False
        self.refresh_rows()
        entry = next_case(self.rows, after)
        if entry is None and after is not None:  # wrap round to cases left open earlier
            entry = next((r for r in [next_case(self.rows)] if r is not None and r.case_id != after), None)
        if entry is None:
            self.status.setText("No case left to open: every case is done or unreadable." if self.rows
                                else "Open a folder of scans, or a text file listing them, first.")
            return False
        return self.open_entry(entry)

    def open_row(self, index: int) -> bool:
        """Open the case in table row ``index`` (double-click)."""
        from napari_medseg.worklist import UNREADABLE

        if self.worker is not None or not 0 <= index < len(self.rows):
            return False
        entry = self.rows[index]
        if entry.status == UNREADABLE:
            self.status.setText(f"{entry.source.name} is unreadable: {entry.reason}")
            return False
        if self.current is not None and self.current.entry.case_id == entry.case_id:
            return True
        return self.leave_case() and self.open_entry(entry)

    def open_entry(self, entry) -> bool:
        """Read the case and restore its saved state, or segment it, in a worker thread."""
        from napari.qt.threading import create_worker

        from napari_medseg._torch_compat import hide_triton
        from napari_medseg.compute_thread import on_compute_thread
        from napari_medseg.worklist import open_case

        hide_triton()  # see napari_medseg._torch_compat
        self.refresh_model()
        self.worker = create_worker(on_compute_thread(open_case), entry, self.project, self.candidates(), _start_thread=False,
                                    _ignore_errors=True)  # errors are shown in the table and the status line
        return self._start(self._on_progress, self._on_opened, lambda err: self._on_failed(entry, err),
                           f"Cancelled opening {entry.source.name}.", f"Opening {entry.source.name}\u2026")

    def _start(self, on_yield, on_return, on_error, cancelled: str, starting: str) -> bool:
        """Connect ``self.worker`` (made with ``_start_thread=False``) to the dock and start it; True."""
        self.worker.yielded.connect(on_yield)
        self.worker.returned.connect(on_return)
        self.worker.errored.connect(on_error)
        self.worker.aborted.connect(lambda: self.status.setText(cancelled))
        self.worker.finished.connect(self._on_finished)
        self.progress.setValue(0)
        self._set_running(True)
        self.status.setText(starting)
        self.worker.start()
        return True

    def cancel(self):
        """Stop opening the case (after the current batch of slices)."""
        if self.worker is not None:
            self.worker.quit()

    def _on_progress(self, p):
        self.progress.setValue(int(100 * (0.1 * p.fraction if p.phase == "read" else 0.1 + 0.9 * p.fraction)))
        self.status.setText(p.message)

    def _on_failed(self, entry, err):
        reason = " ".join(str(err).split()) or type(err).__name__
        self._failed[entry.case_id] = reason
        self.refresh_rows(rescan=False)
        self.status.setText(f"Could not open {entry.source.name}: {reason}. It is marked unreadable; Open next skips it.")

    def _on_finished(self):
        self.worker = None
        self._set_running(False)

    def _on_opened(self, case):
        retrain = retrain_dock(self.viewer, open_it=False)
        image, labels = add_case_layers(self.viewer, case, retrain.label_set_combo.currentText() if retrain else "synapse")
        scribbles = add_case_scribbles(self.viewer, image, labels, case.scribbles)
        self._layers, self.current = (image, labels), case
        self._track_activity(labels, scribbles)
        if case.restored:
            drop_same_autosave(self.viewer, image, case)
        fresh = not case.restored or case.status == "new"
        case.status = "in progress" if case.status == "new" else case.status
        saved = self.save_case() if fresh else True  # new -> in progress; a fresh segmentation is work to keep
        self._open_retrain(image, labels, case.slice_uncertainty, case.organs)
        self.show_check_first(case.organs)
        self.progress.setValue(100)
        strokes = "" if scribbles is None else f", and scribbles on {len(slices_with_strokes(scribbles.data))} slice(s)"
        how = (f"restored: labels and slice ledger as saved{strokes}" if case.restored else
               f"segmented with {Path(case.checkpoint).name}" if case.checkpoint else
               case.note or "no checkpoint yet: empty labels to paint")
        passed_over = f" ({case.note})" if case.note and case.checkpoint else ""
        self.status.setText(f"{case.entry.source.name}: {how}{passed_over}. Correct it in \u201c{RETRAIN}\u201d."
                            + ("" if saved else f" {self.status.text()}"))

    def show_check_first(self, organs) -> None:
        """The *Check first* line for ``organs`` (``OrganStat`` rows with uncertainty); hidden without them."""
        text_colour = self.check_first.palette().color(QPalette.ColorRole.WindowText).name()
        hint = check_first_html(organs or [], colour=text_colour)
        self.check_first.setText(hint)
        self.check_first.setVisible(bool(hint))

    def _go_to_organ(self, href: str) -> None:
        """A *Check first* link: the open case's slice where that organ is least certain, painting with it."""
        if self._layers is not None:
            show_organ(self.viewer, self._layers[1], *parse_organ_link(href))

    def _open_retrain(self, image, labels, slice_uncertainty=None, organs=None):
        """Open the Retrain dock on the case; each change of its model output (a fine-tune, Revert) saves the case.

        ``slice_uncertainty``: the case's per-slice mean uncertainty ``(z,)``, and ``organs`` its ``OrganStat``
        rows, so that *Suggest next slice* works before any fine-tune and *Revert* brings them back."""
        try:
            dock = retrain_dock(self.viewer)
        except Exception as err:  # that widget belongs to another module; say why it did not open
            self.status.setText(f"Could not open \u201c{RETRAIN}\u201d: {err}")
            return
        point_retrain(dock, image, labels, self.project)
        if slice_uncertainty is not None:
            dock.set_slice_uncertainty(labels, slice_uncertainty, organs)
        if id(dock) not in self._watched:
            self._watched.add(id(dock))
            dock.model_output_changed.connect(lambda layer: self._after_model_output(dock, layer))

    def _after_model_output(self, dock, layer):
        """The Retrain dock's model output on ``layer`` changed: if it is the open case's, show and save it."""
        if self._layers is not None and same(layer, self._layers[1]):
            organs, scores = dock.model_output(layer)
            self.show_check_first(organs)  # ranked again on the re-segmentation (or the version reverted to)
            self.current.organs, self.current.slice_uncertainty = organs, scores  # saved with the case
            # save_case reads the Dice of the fine-tune now in effect from its checkpoint; a version that was not
            # fine-tuned on this case (Revert to the opening model) has none, so the case row never keeps a
            # discarded version's Dice
            self.current.extra.update(dice_before=None, dice_after=None)
            self.save_case()
        self.refresh_model()

    # ------------------------------------------------------------- saving
    def save_case(self, status: str | None = None, wait: bool = False) -> bool:
        """Save the open case's labels, ledger and status (and last fine-tune Dice) into the project.

        The layer is copied now and written in the background (``wait``: block until it is on disk).
        False when the save could not start, or (``wait``) when a write failed; the status line says why.
        """
        from napari_medseg.casestate import save_case_snapshot
        from napari_medseg.organ_stats import rows_to_json
        from napari_medseg.worklist import case_folder, fine_tune_dice, record_checkpoint

        case = self.current
        if case is None:
            return self.flush() if wait else True
        image, labels = self._layers
        name = case.entry.source.name
        if self._index(labels) is None:
            self.status.setText(f"The labels layer of {name} was closed; its last saved state is kept.")
            return self.flush() if wait else True
        status = status or case.status
        meta = labels.metadata.get("medseg", {})
        checkpoints = list(meta.get("checkpoints") or [])
        extra = {k: case.extra.get(k) for k in ("dice_before", "dice_after") if case.extra.get(k) is not None}
        dice = fine_tune_dice(checkpoints[0], case.entry.source) if checkpoints else None
        try:
            if dice is not None:
                extra["dice_before"], extra["dice_after"] = dice
                record_checkpoint(self.project, checkpoints[0], case.entry.case_id, dice_before=dice[0], dice_after=dice[1])
        except (OSError, ValueError) as err:
            self.status.setText(f"Could not save {name} in {self.project}: {err}")
            return False
        extra.update(image_name=image.name, checkpoints=checkpoints)
        extra["opened_at"] = case.extra.get("opened_at") or datetime.now(timezone.utc).isoformat()  # order worked
        extra["active_seconds"] = round(float(case.extra.get("active_seconds") or 0.0) + self._active_s, 1)
        self._active_s = 0.0  # counted into the case now (kept in case.extra should the write fail)
        if case.organs:  # the model output's least certain organs: the Check first line of a reopened case
            extra["organs"] = rows_to_json(case.organs)
        snapshot = np.array(labels.data)  # painting goes on while it is written
        # the scribble layer's strokes; without one (closed, or napari closing), the last saved strokes are kept
        strokes = case_scribble_layer(self.viewer, image)
        strokes = case.scribbles if strokes is None else np.array(strokes.data)
        case.scribbles = strokes
        state = _ledger_sync.ledger_for(labels).to_state()
        future = self._writer.submit(save_case_snapshot, case_folder(self.project, case.entry.source), snapshot, state,
                                     image_hash=case.image_hash, source_path=str(case.entry.source),
                                     label_set=meta.get("label_set"), status=status, extra=extra, scribbles=strokes,
                                     slice_uncertainty=case.slice_uncertainty)
        self._pending.append((name, status, future))
        future.add_done_callback(lambda f: self._emit_written(name, status, f))
        case.status, case.extra = status, {**case.extra, **extra}
        for row in self.rows:  # the table shows the status being saved; the rest is re-read once it is on disk
            row.status = status if row.case_id == case.entry.case_id else row.status
        self.table.show_rows(self.rows, case.entry.case_id)
        self.status.setText(f"Saving {name} ({status})\u2026")
        return self.flush() if wait else True

    def _emit_written(self, name: str, status: str, future: Future) -> None:
        """Writer thread: hand the finished save to the GUI thread (a queued signal)."""
        try:
            self._written.emit((name, status, future))
        except RuntimeError:  # the dock is gone (napari closed): nothing left to show
            pass

    def _settle(self, name: str, status: str, future: Future) -> bool:
        """GUI thread, once per save: show its outcome and re-read the table; False when it failed."""
        if (name, status, future) not in self._pending:
            return future.exception() is None
        self._pending.remove((name, status, future))
        err = future.exception()
        if err is not None:
            self.status.setText(f"Could not save {name} in {self.project}: {err}")
            return False
        self.refresh_rows(rescan=False)
        self.refresh_model()
        if not self._pending and self.status.text().startswith("Saving"):
            self.status.setText(f"Saved {name} ({status}).")
        return True

    def flush(self) -> bool:
        """Wait until every case save is on disk; False when any failed (the status line names it)."""
        ok = True
        while self._pending:
            self._pending[0][2].exception()  # waits for the oldest
            ok = self._settle(*self._pending[0]) and ok
        return ok

    def set_status(self, status: str) -> bool:
        """Mark the open case ``"reviewed"``, ``"done"`` or ``"in progress"``, and save it."""
        if self.current is None:
            self.status.setText("Open a case first.")
            return False
        return self.save_case(status)

    # ------------------------------------------------------ active time
    def _track_activity(self, labels, scribbles=None) -> None:
        """Count the open case's active time from now: painting on its labels or scribble layer marks a tick."""
        self._active_s, self._activity = 0.0, True
        for layer in (labels, scribbles):
            if layer is not None:
                layer.events.paint.connect(self._mark_active)
        self._ticker.start()

    def _mark_active(self, event=None) -> None:
        self._activity = True

    def _on_tick(self) -> None:
        """Every :data:`ACTIVE_TICK_S`: the tick counts when the user did something in it, or a fine-tune
        on the open case ran (waiting for the model is the user's time too)."""
        if self.current is None:
            return
        retrain = retrain_dock(self.viewer, open_it=False)
        running = retrain is not None and retrain.worker is not None and same(retrain.labels_layer(), self._layers[1])
        if self._activity or running:
            self._active_s += self._ticker.interval() / 1000.0
        self._activity = False

    # ------------------------------------------------------------ export
    def export_labels(self, folder=None) -> bool:
        """Save the open case, then export every saved case of the project into ``folder`` (asked when None)
        in a worker: ``<case id>.nii.gz`` in each scan's geometry and ``cases.json``
        (:mod:`napari_medseg.project_export`, as ``medseg project export``).  Never replaces a file."""
        from napari.qt.threading import create_worker

        from napari_medseg.project_export import plan_export, run_export

        if self.worker is not None:
            return False
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Empty folder for the exported labels")
            if not folder:
                return False
        if self.current is not None and not self.save_case(wait=True):
            return False
        try:
            plan = plan_export(self.project, folder)
        except ValueError as err:
            self.status.setText(f"Nothing exported: {err}.")
            return False
        self.worker = create_worker(run_export, plan, _start_thread=False, _ignore_errors=True)
        return self._start(self._on_exported_one, lambda rows: self._on_exported(plan, rows),
                           lambda err: self.status.setText(f"Export stopped: {err}"),
                           f"Export cancelled; {plan.manifest} lists the cases written before.",
                           f"Exporting {len(plan.cases)} case(s) to {folder}\u2026")

    def _on_exported_one(self, progress) -> None:
        done, total, row = progress
        self.progress.setValue(int(100 * done / max(total, 1)))
        self.status.setText(f"Exported {done}/{total}: {row['case_id']}")

    def _on_exported(self, plan, rows) -> None:
        failed = [row for row in rows if row["file"] is None]
        folder = plan.manifest.parent
        text = f"Exported {len(rows) - len(failed)} of {len(plan.cases)} case(s) to {folder} (list: {plan.manifest.name})."
        if failed:
            text += f" Not exported: {failed[0]['error']}" + (f" (+{len(failed) - 1} more)" if len(failed) > 1 else "")
        self.status.setText(text)

    def _index(self, layer) -> int | None:
        """Index of ``layer`` in the viewer, by unique id (the dock sees napari's proxies, not the layers)."""
        return next((i for i, other in enumerate(self.viewer.layers) if same(other, layer)), None)

    def leave_case(self) -> bool:
        """Save the open case and remove its layers; False (layers kept) when saving failed."""
        if self.current is None:
            return True
        retrain = retrain_dock(self.viewer, open_it=False)
        if retrain is not None and retrain.worker is not None and same(retrain.labels_layer(), self._layers[1]):
            self.status.setText(f"Fine-tuning on {self.current.entry.source.name} is running: wait for it, "
                                f"or Cancel it in \u201c{RETRAIN}\u201d, before leaving the case.")
            return False
        if not self.save_case(wait=True):
            return False
        self._leaving = True  # saved just now: removing its layers need not save again
        scribbles = case_scribble_layer(self.viewer, self._layers[0])
        try:
            for layer in (scribbles, *self._layers) if scribbles is not None else self._layers:
                index = self._index(layer)
                if index is not None:
                    self.viewer.layers.pop(index)
        finally:
            self._leaving = False
        self.current, self._layers = None, None
        self._ticker.stop()
        self.show_check_first(None)
        self.refresh_rows(rescan=False)
        self._set_running(self.worker is not None)
        return True


def _show_path(label: QLabel, path: Path) -> None:
    """The last two parts of ``path`` (a dock is narrow); the whole path as tooltip."""
    path = Path(path)
    label.setText(str(path) if len(path.parts) <= 3 else f"\u2026/{path.parent.name}/{path.name}")
    label.setToolTip(str(path))


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row
