"""Named model architectures the benchmarks build with random weights (LlamaConfig keyword values)."""
from __future__ import annotations

LLAMA2 = dict(vocab_size=32000, head_dim=128, max_position_embeddings=4096, tie_word_embeddings=False)
SMOLLM2 = dict(vocab_size=49152, head_dim=64, max_position_embeddings=8192, tie_word_embeddings=True)
TINY = dict(vocab_size=512, head_dim=16, max_position_embeddings=256)

SHAPES = {
    "llama2-7b": dict(LLAMA2, hidden_size=4096, num_attention_heads=32, num_key_value_heads=32,
                      num_hidden_layers=32, intermediate_size=11008),
    # the papers' pruned shapes (Sheared-LLaMA-2.7B / -1.3B)
    "sheared-2.7b": dict(LLAMA2, hidden_size=2560, num_attention_heads=20, num_key_value_heads=20,
                         num_hidden_layers=32, intermediate_size=6912),
    "sheared-1.3b": dict(LLAMA2, hidden_size=2048, num_attention_heads=16, num_key_value_heads=16,
                         num_hidden_layers=24, intermediate_size=5504),
    "smollm2": dict(SMOLLM2, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
                    num_hidden_layers=30, intermediate_size=1536),
    # docs/RESULTS.md's target: every method's SmolLM2 pruned to about half the parameters
    "smollm2-half": dict(SMOLLM2, hidden_size=576, num_attention_heads=6, num_key_value_heads=3,
                         num_hidden_layers=30, intermediate_size=384),
    "tiny": dict(vocab_size=1000, hidden_size=128, num_attention_heads=4, num_key_value_heads=4,
                 num_hidden_layers=4, intermediate_size=344),
    "tiny-source": dict(TINY, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
                        num_hidden_layers=2, intermediate_size=128),
    "tiny-target": dict(TINY, hidden_size=32, num_attention_heads=2, num_key_value_heads=2,
                        num_hidden_layers=2, intermediate_size=64),
}
