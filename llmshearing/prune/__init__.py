"""`python -m llmshearing.prune METHOD ...`: one-shot pruning methods that write an HF model."""
