import torch, sys, copy
sys.path.insert(0, "/work/main")
torch.set_num_threads(1)
from napari_medseg.models import build_model, family_spec
from napari_medseg.retrain.losses import DiceCELoss
torch.manual_seed(0)
m = build_model("dcaunet", 9, **family_spec("dcaunet").scratch_config()).double()
x = torch.rand(8, 1, 64, 64, dtype=torch.float64); y = torch.randint(0, 9, (8, 64, 64))
loss_fn = DiceCELoss(9, 0.4, 0.6)
def grads(model, xin):
    model.zero_grad(); loss_fn(model(xin), y, xin).backward()
    return {n: p.grad.detach().clone().double() for n, p in model.named_parameters()}
ref = grads(m, x)  # float64 reference
for name, fmt in [("fp32 default", torch.contiguous_format), ("fp32 channels_last", torch.channels_last)]:
    mm = copy.deepcopy(m).float().to(memory_format=fmt)
    g = grads(mm, x.float().contiguous(memory_format=fmt))
    rel = [((g[n] - ref[n]).norm() / ref[n].norm().clamp(min=1e-30)).item() for n in ref]
    worst = sorted(zip(rel, ref), reverse=True)[:3]
    print(name, "median rel err %.2e" % torch.tensor(rel).median().item(), "worst", [(f"{r:.1e}", n) for r, n in worst])
