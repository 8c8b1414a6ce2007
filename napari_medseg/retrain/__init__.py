"""The correct-and-retrain core: what the plugin runs when the user clicks *Fine-tune*.

Qt-, napari- and ``training``-free (``tests/test_dependencies.py``).  Import the
submodules directly; this package imports nothing heavy itself:

* :mod:`.ledger` -- per-slice state (edited / reviewed / locked) of one label volume.
* :mod:`.datastore` -- :class:`CorrectionStore`, corrections kept on disk for replay.
* :mod:`.loop` -- :func:`retrain_volume`: fine-tune, save a new version, re-segment.
* :mod:`.config` -- :class:`FinetuneConfig` (typed, frozen; unknown keys raise).
* :mod:`.finetune` -- :func:`finetune` on corrected slices (+ replay).
* :mod:`.protocol` -- the sample-CT k-slice protocol of ``medseg demo`` and the benchmark.
* :mod:`.slices` -- :class:`SliceDataset` (slices at model size, stacked as tensors).
* :mod:`.losses` -- :class:`DiceCELoss`; :mod:`.step` -- :func:`train_step`;
  :mod:`.dice` -- Dice counting; :mod:`.augment` -- batched augmentation;
  :mod:`.schedule` -- learning-rate factors.
"""
