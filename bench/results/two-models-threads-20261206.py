import sys, threading
sys.path.insert(0, "/work/main")
import numpy as np, torch
from napari_medseg.io import read_volume
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from napari_medseg.retrain import finetune as ft
from napari_medseg.retrain.loop import StartFrom, prepare_model, evenly_spaced_slices
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.models import family_spec
a = read_volume(SAMPLE_CT); ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
zs = evenly_spaced_slices(a.array.shape[0], 5)
def job(seed, steps, out):
    torch.manual_seed(seed)
    model, ls, prep, _ = prepare_model(StartFrom(model_name="dcaunet", label_set="synapse", modality="ct"), a.array)
    data = ft.FinetuneData(images=[a.array[z] for z in zs], labels=[ref[z] for z in zs], preprocessing=prep, spacing=a.geometry.spacing)
    cfg = FinetuneConfig(**{**family_spec("dcaunet").recipe(True), "steps": steps, "device": "cpu", "seed": seed})
    last = None
    for last in ft.finetune(model, data, cfg): pass
    out.append(last.step / last.elapsed_s)
mode = sys.argv[1]; steps = 200
if mode == "one2":
    torch.set_num_threads(2); out = []; job(0, steps, out); print("one model, 2 threads:", [round(x, 2) for x in out])
elif mode == "one1":
    torch.set_num_threads(1); out = []; job(0, steps, out); print("one model, 1 thread:", [round(x, 2) for x in out])
else:
    torch.set_num_threads(1); out = []
    ts = [threading.Thread(target=job, args=(s, steps, out)) for s in (0, 1)]
    [t.start() for t in ts]; [t.join() for t in ts]
    print("two models in two Python threads, 1 torch thread each:", [round(x, 2) for x in out], "total", round(sum(out), 2))
