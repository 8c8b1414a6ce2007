"""The entropy term on the tiny synthetic case of tests/test_partial.py: organ Dice per seed and weight (docs/retrain.md)."""
import sys, numpy as np, torch
sys.path.insert(0, "tests")
from test_partial import synthetic_volume, rough_scribbles
from napari_medseg.models import TINY_CONFIGS, build_model
from napari_medseg.preprocess import Preprocessing, normalize
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.retrain.dice import batch_dice, dice_from_counts
from napari_medseg.retrain.finetune import FinetuneData, finetune, run_finetune
torch.set_num_threads(1)
images, reference, body = synthetic_volume()
train, test = [0, 3, 6], [1, 2, 4, 5, 7, 8, 9]
partial = [rough_scribbles(reference[z], body) for z in train]
for seed in (0, 1, 2):
    for w in (0.0, 0.3, 1.0):
        torch.manual_seed(seed)
        model = build_model("dcaunet", 3, **TINY_CONFIGS["dcaunet"])
        prep = Preprocessing(modality="ct", resize_policy="native")
        result = run_finetune(finetune(model, FinetuneData([images[z] for z in train], partial, prep),
                              FinetuneConfig(scope="all", steps=160, batch_size=3, lr=1e-2, device="cpu", seed=seed,
                                             augment=False, crop_size=None, entropy_weight=w)))
        model.eval()
        with torch.no_grad():
            x = np.stack([normalize(images[z], prep) for z in test]).astype(np.float32)
            pred = model(torch.from_numpy(x)[:, None]).argmax(1).numpy()
        organs = dice_from_counts(batch_dice(torch.from_numpy(pred), torch.from_numpy(reference[test].astype(np.int64)), 3))[1:]
        print(seed, w, np.round(organs, 3), flush=True)
