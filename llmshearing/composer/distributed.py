"""How the algorithms' own modules live with Composer's distributed wrappers (DDP, FSDP1).

* ``composer_model(state)``: the ComposerLlama behind ``state.model``. Composer wraps the whole
  model in DDP after Event.INIT, so from FIT_START on ``state.model`` may be the wrapper.
* Replicated modules (the L0 masks and λ, the distillation projections): small (the masks of
  LLaMA2-7B are 0.36M values; one 3072 -> 4096 projection is 0.3% of a 4B student) and read outside
  the forward pass (Lagrangian, clamping, logging, the final plan),
  where an FSDP FULL_SHARD unit holds only this rank's slice of one flattened vector. So they are
  kept out of FSDP (``_fsdp_wrap = False``, which Composer respects for a ComposerModel's child):
  every rank holds them whole, in fp32, on its device. Under DDP they are part of the DDP module,
  which keeps them equal; under FSDP ``ReplicaSync`` does the same job: rank 0's values are
  broadcast when training starts and gradients are averaged over the ranks before each optimizer
  step, exactly what DDP would do.
* ``shard_frozen``: a frozen, forward-only model (the distillation teacher) sharded like the
  student under FSDP, so a 8B teacher costs 1/N of its weights per GPU instead of all of them.
* ``allow_fsdp_on_cpu``: torch's FSDP1 runs in CPU processes over gloo, but Composer 0.32.1 hands
  it ``device_id=torch.cuda.current_device()``, which has no answer there; with this, an FSDP
  yaml runs under ``composer -n N`` on CPUs too (how the tests check the FSDP path without a GPU).
  It also mends torch's full optimizer-state gathering for CPU processes (see ``_copy_gathered_states``).
"""
from __future__ import annotations

from typing import List, Optional

import torch
from composer.core import State
from composer.devices import DeviceGPU
from composer.utils import dist
from torch import nn
from torch.distributed.fsdp._flat_param import FlatParameter
from torch.nn.parallel import DistributedDataParallel


def _cpu_device_id() -> torch.device:
    return torch.device("cpu")


def _copy_gathered_states() -> None:
    """torch's FSDP1 gathers each optimizer state (exp_avg, exp_avg_sq) of a flat parameter into
    one reused buffer and keeps views of it, then "offloads" them with ``.cpu()``: a copy from a
    GPU, but the same tensor on a CPU, so every state would end up holding the last one gathered
    (a resumed run's Adam moments were wrong; tests/test_multiprocess.py). Copy them right away."""
    from torch.distributed.fsdp import _optim_utils

    unflatten = _optim_utils._unflatten_orig_param_states
    if getattr(unflatten, "copies", False):
        return

    def unflatten_and_copy(fsdp_param_info, output_states, state_name, shard_state, to_save, cpu_offload):
        unflatten(fsdp_param_info, output_states, state_name, shard_state, to_save, cpu_offload)
        for gathered in output_states.values():
            value = gathered.get(state_name)
            if torch.is_tensor(value) and value.device.type == "cpu" and value.dim() > 0:
                gathered[state_name] = value.clone()

    unflatten_and_copy.copies = True
    _optim_utils._unflatten_orig_param_states = unflatten_and_copy


def allow_fsdp_on_cpu() -> None:
    """Route Composer's FSDP1 set-up to the CPU when the trainer's device is the CPU (idempotent)."""
    import composer.distributed as composer_distributed
    from composer.devices import DeviceCPU

    prepare = composer_distributed.prepare_fsdp_module
    if getattr(prepare, "cpu_capable", False):
        return

    def prepare_fsdp_module(model, optimizers, fsdp_config, precision=None, device=None, *args, **kwargs):
        if not isinstance(device, DeviceCPU):
            return prepare(model, optimizers, fsdp_config, precision, device, *args, **kwargs)
        _copy_gathered_states()
        current_device = torch.cuda.current_device
        torch.cuda.current_device = _cpu_device_id  # read once, as FSDP's device_id
        try:
            return prepare(model, optimizers, fsdp_config, precision, device, *args, **kwargs)
        finally:
            torch.cuda.current_device = current_device

    prepare_fsdp_module.cpu_capable = True
    composer_distributed.prepare_fsdp_module = prepare_fsdp_module


def composer_model(state: State) -> nn.Module:
    model = state.model
    return model.module if isinstance(model, DistributedDataParallel) else model


def attach_replicated(state: State, name: str, module: nn.Module) -> nn.Module:
    """Make ``module`` the child ``name`` of the ComposerModel, on the run's device, left out of FSDP.

    Call at Event.INIT (before Composer wraps the model). Under FSDP the model is still on the CPU
    then (FSDP moves its units), so the device comes from the trainer, not from the model.
    """
    module._fsdp_wrap = False
    module = state.device.module_to_device(module)
    setattr(composer_model(state), name, module)
    return module


class ReplicaSync:
    """Keeps a replicated module identical on every rank when FSDP (not DDP) runs the model."""

    def __init__(self, module: nn.Module):
        self.module = module

    @classmethod
    def start(cls, state: State, module: nn.Module) -> Optional["ReplicaSync"]:
        """At FIT_START: a sync that has broadcast rank 0's values, or None where DDP or one process suffices."""
        if not (state.fsdp_enabled and dist.get_world_size() > 1):
            return None
        sync = cls(module)
        sync.broadcast_from_rank_zero()
        return sync

    def broadcast_from_rank_zero(self) -> None:
        with torch.no_grad():
            for tensor in self._parameters():
                dist.broadcast(tensor.data, src=0)

    def average_gradients(self) -> None:
        """One all-reduce of every gradient, flattened; call after backward, before the step."""
        grads = [p.grad for p in self._parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        dist.all_reduce(flat, reduce_operation="SUM")
        flat /= dist.get_world_size()
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
            offset += grad.numel()

    def _parameters(self) -> List[nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]


def shard_frozen(module: nn.Module, state: State, unit: type) -> nn.Module:
    """FSDP-wrap a frozen model with the run's sharding strategy, one FSDP unit per ``unit`` submodule.

    Forward only (no gradients, nothing to reduce): each forward all-gathers one unit at a time.
    The parameters are all-gathered in the dtype they have (no mixed-precision casting: the teacher
    is already in its compute dtype); the RoPE frequencies are fp32 outside any cast.

    ``module`` needs its weights on rank 0 only; elsewhere its ``unit`` submodules may be empty
    (meta tensors). Unit by unit, each rank moves (or allocates) the unit on its device, rank 0's
    weights are broadcast into it and FSDP shards it, so a rank never holds more than one whole
    unit beyond its shards. (FSDP's own ``sync_module_states`` does the same, but refuses CPUs.)
    """
    from torch.distributed.fsdp import FullyShardedDataParallel, ShardingStrategy

    device = torch.device("cuda", torch.cuda.current_device()) if isinstance(state.device, DeviceGPU) else _cpu_device_id()
    strategy = getattr(state.fsdp_config, "sharding_strategy", "FULL_SHARD").upper()

    def wrap(part: nn.Module) -> nn.Module:
        return FullyShardedDataParallel(part, sharding_strategy=ShardingStrategy[strategy], device_id=device,
                                        limit_all_gathers=True, use_orig_params=False)

    for name, child in list(module.named_modules()):
        if isinstance(child, unit):
            _filled_from_rank_zero(child.to_empty(device=device) if _is_empty(child) else child.to(device))
            module.set_submodule(name, wrap(child))
    outside_units = [p for p in module.parameters() if not isinstance(p, FlatParameter)]
    for param in outside_units:  # in place: tied weights stay tied
        param.data = param.data.to(device)
    _broadcast_from_rank_zero(outside_units)
    return wrap(module)


def _is_empty(module: nn.Module) -> bool:
    return any(t.is_meta for t in module.parameters())


def _filled_from_rank_zero(module: nn.Module) -> None:
    _broadcast_from_rank_zero(list(module.parameters()) + list(module.buffers()))


def _broadcast_from_rank_zero(tensors: List[torch.Tensor]) -> None:
    if dist.get_world_size() > 1:
        with torch.no_grad():
            for tensor in tensors:
                dist.broadcast(tensor.data, src=0)
