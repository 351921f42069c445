"""The processes of a multi-process launch (`accelerate launch --num_processes N`), as torch.distributed joins them."""

import torch.distributed as dist


def is_distributed() -> bool:
    """Several processes joined by torch.distributed; False for a single process (nothing to agree on)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def end_process_group() -> None:
    """End a multi-process launch's process group while the interpreter is whole: Gloo's threads outliving it can
    abort the process at exit ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
