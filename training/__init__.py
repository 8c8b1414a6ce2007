"""Training, evaluation and fine-tuning for napari-medseg models (no napari, no Qt)."""
