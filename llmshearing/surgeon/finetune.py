"""Optional short LM-loss fine-tuning between shots; pruned weights are zeroed again after each step."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llmshearing.model.llama import LlamaForCausalLM
from llmshearing.surgeon.grads import trainable_only


def layer_weights(model: LlamaForCausalLM):
    return [m.weight for layer in model.model.layers for m in layer.modules() if isinstance(m, torch.nn.Linear)]


def finetune(model: LlamaForCausalLM, batches: Sequence[torch.Tensor], steps: int, lr: float,
             after_step: Callable[[], None], progress: bool = False) -> float:
    """``steps`` AdamW steps on the decoder layers' projections over ``batches`` (cycled); the last loss."""
    params = layer_weights(model)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = model.lm_head.weight.device
    was_training = model.training
    model.train()
    loss = torch.tensor(float("nan"))
    try:
        with trainable_only(model, params):
            for step in tqdm(range(steps), desc="  fine-tune", leave=False, disable=not progress):
                ids = batches[step % len(batches)].to(device)
                logits = model(ids)[:, :-1]
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids[:, 1:].reshape(-1))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                after_step()
    finally:
        model.train(was_training)
    return float(loss.detach())
