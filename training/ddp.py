"""torch.distributed glue: detect torchrun, wrap in DDP, shard epochs, agree on stopping.

``torchrun --nproc_per_node N`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; then :func:`setup` initialises the process group (NCCL on
CUDA, gloo on CPU), picks ``cuda:LOCAL_RANK`` and :meth:`Dist.wrap` returns a
``DistributedDataParallel`` module.  Without those variables everything is a
no-op single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Dist:
    enabled: bool
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    def wrap(self, model):
        """``DistributedDataParallel(model)`` when distributed, else ``model``."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def epoch_indices(self, n: int, epoch: int, seed: int) -> list[int]:
        """This process's shuffled sample indices for ``epoch`` (``DistributedSampler`` when distributed)."""
        if self.enabled:
            from torch.utils.data import DistributedSampler

            sampler = DistributedSampler(range(n), num_replicas=self.world_size, rank=self.rank, shuffle=True, seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
            return list(sampler)
        g = torch.Generator().manual_seed(seed + epoch)
        return torch.randperm(n, generator=g).tolist()


def setup(device_preference: str = "auto") -> Dist:
    """Initialise torch.distributed when launched by torchrun (``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(enabled=False)
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    use_cuda = torch.cuda.is_available() and device_preference != "cpu"
    if use_cuda:
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(True, rank, world, local, device)


def barrier(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()


def agree_stop(d: Dist, local_reason: str | None) -> str | None:
    """Stop everywhere when any process wants to (time budgets differ slightly per rank)."""
    if not d.enabled:
        return local_reason
    import torch.distributed as dist

    flag = torch.tensor([1.0 if local_reason else 0.0], device=d.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    if flag.item() > 0:
        return local_reason or "peer"
    return None


def cleanup(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
