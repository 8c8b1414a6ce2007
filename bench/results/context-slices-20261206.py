"""Experiment: 2.5D input (neighbour slices at +-D mm as extra channels) vs 1 channel, paired seeds, fixed steps."""
import sys, time, os
sys.path.insert(0, "/work/main/bench"); sys.path.insert(0, "/work/main")
import numpy as np, torch
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
from pathlib import Path
from napari_medseg.io import read_volume
from napari_medseg.labels import SYNAPSE
from napari_medseg.retrain import finetune as ft
from napari_medseg.retrain import slices as sl
from napari_medseg.models import dcaunet
from napari_medseg.models.dcaunet import PatchEmbed, CSFF
from napari_medseg.retrain.loop import StartFrom, prepare_model, evenly_spaced_slices
from napari_medseg.retrain.config import FinetuneConfig
from napari_medseg.models import family_spec
from napari_medseg.preprocess import normalize, to_model_size
from napari_medseg.inference import native_logits
from napari_medseg.retrain.protocol import untouched_dice
from napari_medseg._sample_data import SAMPLE_CT, SAMPLE_LABELS
from second_patient import synapse_labels, DATA, DICOM

# --- hacks: allow (C,H,W) slices
def check_input(x, multiple, name):
    assert x.ndim == 4 and x.shape[-1] % multiple == 0 and x.shape[-2] % multiple == 0, x.shape
dcaunet.check_input = check_input
def getitem(self, index):
    im = np.ascontiguousarray(self.images[index], dtype=np.float32)
    image = torch.from_numpy(im)[None] if im.ndim == 3 else torch.from_numpy(im)[None, None]
    label = torch.from_numpy(np.ascontiguousarray(self.labels[index]).astype(np.int64))[None]
    image, info = sl.to_model_size(image, self.preprocessing, self.size_multiple, self.spacings[index])
    label = sl.labels_to_model_size(label, info)
    return {"image": image[0], "label": label[0], "index": index}
sl.SliceDataset.__getitem__ = getitem
_orig_init = sl.SliceDataset.__init__
def init(self, images, labels, preprocessing, size_multiple, names=None, spacings=None):
    self.images, self.labels = list(images), list(labels)
    self.preprocessing, self.size_multiple = preprocessing, int(size_multiple)
    self.names = [str(i) for i in range(len(self.images))]
    self.spacings = sl.per_slice_spacings(spacings, len(self.images), preprocessing)
sl.SliceDataset.__init__ = init
ft._check_slices = lambda images, labels, model: None
from napari_medseg.retrain.dice import batch_dice, dice_from_counts
@torch.no_grad()
def native_dice(model, slices, prep, multiple, num_classes, device, precision, spacing=None):
    was = model.training; model.eval()
    counts = torch.zeros(3, num_classes, dtype=torch.float64)
    for image, label in slices:
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        x = x[None] if x.ndim == 3 else x[None, None]
        x, info = to_model_size(x, prep, multiple, spacing)
        pred = native_logits(model, x, info, device, precision).argmax(1)[0].cpu()
        counts += batch_dice(pred, torch.from_numpy(np.asarray(label).astype(np.int64)), num_classes, ignore_index=255)
    model.train(was)
    return dice_from_counts(counts)
ft._native_dice = native_dice

def context(vol, z, offsets):
    """(C, H, W): vol at fractional slice z+o for each offset o (linear, clamped)."""
    out = []
    for o in offsets:
        p = min(max(z + o, 0.0), vol.shape[0] - 1.0)
        lo = int(np.floor(p)); hi = min(lo + 1, vol.shape[0] - 1); f = p - lo
        out.append(vol[lo] * (1 - f) + vol[hi] * f if f > 0 else vol[lo])
    return np.stack(out).astype(np.float32)

def make_model(image, channels):
    model, ls, prep, _ = prepare_model(StartFrom(model_name="dcaunet", label_set="synapse", modality="ct"), image)
    if channels > 1:
        c = model.config
        model.embeds[0] = PatchEmbed(channels, c["dims"][0], 4)
        d1 = c["decoder_channels"][3]; d4 = c["decoder_channels"][2]
        model.fuse[3] = CSFF(channels, 2 * d4, d1, c["reduction"])
    return model, prep

@torch.no_grad()
def predict(model, prep, vol_norm, spacing, offsets):
    model.eval(); out = np.zeros(vol_norm.shape, np.uint8)
    for z in range(vol_norm.shape[0]):
        x = context(vol_norm, z, offsets) if offsets else vol_norm[z][None].astype(np.float32)
        x = torch.from_numpy(x)[None]
        x, info = to_model_size(x, prep, model.size_multiple, spacing[1:])
        out[z] = native_logits(model, x, info, "cpu", "fp32").argmax(1)[0].numpy()
    return out

def run(seed, mm, steps, a, a_ref, b, b_ref):
    corrected = evenly_spaced_slices(a.array.shape[0], 5)
    offsets = [] if mm == 0 else [-mm / a.geometry.spacing[0], 0.0, mm / a.geometry.spacing[0]]
    torch.manual_seed(seed)
    model, prep = make_model(a.array, len(offsets) or 1)
    norm = normalize(a.array.astype(np.float32), prep, None)
    imgs = [context(a.array.astype(np.float32), z, offsets) if offsets else a.array[z] for z in corrected]
    data = ft.FinetuneData(images=imgs, labels=[a_ref[z] for z in corrected], preprocessing=prep, spacing=a.geometry.spacing)
    cfg = FinetuneConfig(**{**family_spec("dcaunet").recipe(True), "steps": steps, "device": "cpu", "seed": seed})
    t0 = time.monotonic(); res = ft.run_finetune(ft.finetune(model, data, cfg)); t = time.monotonic() - t0
    pa = predict(model, prep, norm, a.geometry.spacing, offsets)
    da = untouched_dice(pa, a_ref, corrected, SYNAPSE)
    bn = normalize(b.array.astype(np.float32), prep, None)
    boff = [] if mm == 0 else [-mm / b.geometry.spacing[0], 0.0, mm / b.geometry.spacing[0]]
    pb = predict(model, prep, bn, b.geometry.spacing, boff)
    db = untouched_dice(pb, b_ref, [], SYNAPSE)
    f = lambda d: " ".join("  - " if np.isnan(v) else f"{v:.2f}" for v in d.values())
    print(f"seed {seed} ctx {mm} mm steps {res.steps} {t:.0f}s  A {np.nanmean(list(da.values())):.4f} [{f(da)}]  "
          f"B {np.nanmean(list(db.values())):.4f} [{f(db)}]", flush=True)

if __name__ == "__main__":
    seeds = [int(s) for s in sys.argv[1].split(",")]; mms = [float(m) for m in sys.argv[2].split(",")]
    steps = int(sys.argv[3])
    a = read_volume(SAMPLE_CT); a_ref = read_volume(SAMPLE_LABELS).array.astype(np.uint8)
    b = read_volume(DICOM); bl = synapse_labels(DATA / "example_seg_dicom.nii.gz", "total", Path("/tmp/ctx/b_labels.nii.gz"))
    b_ref = read_volume(bl).array.astype(np.uint8)
    for seed in seeds:
        for mm in mms:
            run(seed, mm, steps, a, a_ref, b, b_ref)
