"""The Retrain dock's option form: image, labels, start from, label set, scope, device, precision, budget.

The lists come from the family specs, ``labels.BUILTIN`` and ``models.spec.PRECISIONS``,
as the CLI's do (``tests/test_retrain_widget.py`` checks that they agree).
"""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QWidget

from napari_medseg.widgets._layout import ElidedComboBox, row

BROWSE = "Browse for a checkpoint\u2026"
DEFAULT = "default"  #: the first entry of the Models and Train rows: the family's own choice
MAX_MODELS = 4  #: the most models a new fine-tune offers to train at once (the checkpoint format allows more)


def scratch_choices() -> dict[str, str]:
    """``{"New DCAU-Net (from scratch)": "dcaunet", ...}`` from the family specs."""
    from napari_medseg.models import family_spec, model_names

    return {f"New {family_spec(name).display} (from scratch)": name for name in model_names()}


class RetrainOptions(QWidget):
    """The form at the top of the Retrain dock; the dock reads it through :meth:`start_from`,
    :meth:`scope`, :meth:`budget_kwargs`, ``device_combo`` and ``precision_combo``."""

    def __init__(self, parent=None):
        from napari_medseg.labels import BUILTIN
        from napari_medseg.models import fine_tuning_scopes
        from napari_medseg.models.spec import PRECISIONS

        super().__init__(parent)
        self.scratch = scratch_choices()
        # layer names and checkpoint paths are elided, so they never widen the dock
        self.image_combo, self.labels_combo = ElidedComboBox(), ElidedComboBox()
        self.start_combo = ElidedComboBox(mode=Qt.TextElideMode.ElideLeft)
        self.label_set_combo = _combo(sorted(BUILTIN, key=lambda name: name != "synapse"))
        self.members_combo = _combo([DEFAULT] + [str(n) for n in range(1, MAX_MODELS + 1)])
        self.members_combo.setToolTip("New models only: how many to train at once and average. Default (its count "
                                      "in brackets): 2 for DCAU-Net with a budget of 120 s or more on a CPU with two "
                                      "or more threads (better at equal time there; level at 60 s), else 1. "
                                      "A checkpoint keeps its own.")
        self.scope_combo = _combo([DEFAULT] + fine_tuning_scopes())
        self.device_combo = _combo(["auto"])  # the devices follow (widgets/_warm_up.py: listing them imports torch)
        self.precision_combo = _combo(list(PRECISIONS))
        self.budget = QDoubleSpinBox(minimum=5, maximum=3600, value=60, suffix=" s", decimals=0)
        self.budget_unit = _combo(["seconds", "steps"])
        self.budget_unit.currentTextChanged.connect(self._on_budget_unit)
        self.start_combo.activated.connect(self._on_start_chosen)
        self._warm = False  # the dock's warm-up has imported torch and the fine-tuning core
        for signal in (self.budget.valueChanged, self.budget_unit.currentTextChanged,
                       self.device_combo.currentTextChanged, self.start_combo.currentTextChanged):
            signal.connect(self.show_default_members)

        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        for label, w in [("Image", self.image_combo), ("Labels", self.labels_combo), ("Start from", self.start_combo),
                         ("Label set (new)", self.label_set_combo), ("Models (new)", self.members_combo),
                         ("Train", self.scope_combo),
                         ("Device", self.device_combo), ("Precision", self.precision_combo)]:
            form.addRow(label, w)
        form.addRow("Budget", row(self.budget, self.budget_unit))

    def start_from(self):
        """The :class:`~napari_medseg.retrain.loop.StartFrom` of the chosen start (a checkpoint path or a scratch model)."""
        from napari_medseg.retrain.loop import StartFrom

        choice = self.start_combo.currentText()
        if choice in self.scratch:  # U-DFA: DINOv2 weights from $MEDSEG_DINOV2_WEIGHTS, the cache or a download
            members = None if self.members_combo.currentIndex() == 0 else int(self.members_combo.currentText())
            return StartFrom(model_name=self.scratch[choice], label_set=self.label_set_combo.currentText(),
                             members=members)
        return StartFrom(checkpoint=choice)

    def scope(self) -> str | None:
        """The chosen fine-tuning scope; None for the model family's default."""
        text = self.scope_combo.currentText()
        return None if text == DEFAULT else text

    def warmed_up(self):
        """Called (GUI thread) when the dock's warm-up has imported torch and the fine-tuning core."""
        self._warm = True
        self.show_default_members()

    def show_default_members(self, *_):
        """Name what the Models row's "default" resolves to, e.g. "default (2)", for the chosen new model,
        budget and device; plain "default" for a checkpoint (it keeps its own) and until the warm-up is
        done (counting torch's threads needs torch and ``retrain.loop``, imported off the GUI thread)."""
        name = self.scratch.get(self.start_combo.currentText())
        text = DEFAULT
        if name is not None and self._warm:
            from napari_medseg.retrain.loop import default_members

            count = default_members(name, self.device_combo.currentText(), self.budget_kwargs().get("time_budget_s"))
            text = f"{DEFAULT} ({count})"
        self.members_combo.setItemText(0, text)

    def budget_kwargs(self) -> dict:
        """``time_budget_s`` or ``steps`` for the fine-tune, from the Budget row."""
        if self.budget_unit.currentText() == "steps":
            return {"steps": int(self.budget.value()), "time_budget_s": None}
        return {"time_budget_s": float(self.budget.value())}

    def fill_start_combo(self, layer, select: str | None = None):
        """Offer the layer's checkpoint, the scratch models and Browse; keep or set the selection."""
        select = select or self.start_combo.currentText()
        checkpoints = list((layer.metadata.get("medseg", {}) if layer is not None else {}).get("checkpoints", []))
        items = [select] if select and select != BROWSE else []
        items += [c for c in checkpoints[:1] + list(self.scratch) if c not in items] + [BROWSE]
        self.start_combo.clear()
        self.start_combo.addItems(items)
        if not select or select == BROWSE:
            self.start_combo.setCurrentIndex(0)
        else:
            self.start_combo.setCurrentText(select)

    def _on_start_chosen(self, index):
        if self.start_combo.itemText(index) != BROWSE:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Base checkpoint", "", "Checkpoints (*.safetensors)")
        if path:
            self.start_combo.insertItem(0, path)
            self.start_combo.setCurrentIndex(0)

    def _on_budget_unit(self, unit: str):
        if unit == "steps":
            self.budget.setRange(1, 100000)
            self.budget.setSuffix(" steps")
            self.budget.setValue(300)
        else:
            self.budget.setRange(5, 3600)
            self.budget.setSuffix(" s")
            self.budget.setValue(60)


def _combo(items) -> QComboBox:
    combo = QComboBox()
    combo.addItems(items)
    return combo
