"""The LLM Surgeon (van der Ouderaa et al. 2023): K-FAC curvature pruning with correlated weight updates."""
