"""torch.distributed set-up for the bundles' multi-process configs (torchrun: CUDA + NCCL, or CPU + gloo)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["barrier", "finish_distributed", "init_distributed", "is_distributed", "is_main_process"]


def is_distributed() -> bool:
    """Whether a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """Rank 0, or the only process: the one that writes shared outputs."""
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def init_distributed() -> int:
    """Join the process group torchrun describes (env ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ...).

    NCCL with one CUDA device per local rank when CUDA is available, gloo on CPU otherwise. Calling
    it again is a no-op. Returns this process's rank.
    """
    if "WORLD_SIZE" not in os.environ:
        raise ValueError(
            "init_distributed: WORLD_SIZE is not set; start the run with torchrun "
            "(e.g. torchrun --nproc_per_node=2 -m monai.bundle run ...)."
        )
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
    return dist.get_rank()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finish_distributed() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
