"""GPU checks (skipped without CUDA): the masked and sliced models agree in bf16 on the GPU."""
import pytest
import torch

from llmshearing.slicing import slice_model
from tests.helpers import random_plan, tiny_model


@pytest.mark.gpu
@pytest.mark.parametrize("attn_impl", ["sdpa", "flash_attn"])
def test_masked_equals_sliced_on_gpu_in_bf16(attn_impl):
    model = tiny_model(num_attention_heads=6, num_key_value_heads=2, attn_impl=attn_impl)
    plan = random_plan(model.config, layers=2, kv_heads=1, heads=2, neurons=19, hidden=29)
    tokens = torch.randint(0, 97, (2, 64), device="cuda")
    sliced = slice_model(model, plan).cuda().to(torch.bfloat16)
    masks = {k: v.cuda() for k, v in plan.to_masks().items()}
    model = model.cuda().to(torch.bfloat16)
    with torch.no_grad():
        masked, small = model(tokens, masks).float(), sliced(tokens).float()
    # bf16 has ~3 significant digits; compare relative to the logit scale
    assert (masked - small).abs().max() <= 2e-2 * masked.abs().max()
