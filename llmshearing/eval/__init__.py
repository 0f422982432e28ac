from llmshearing.eval.perplexity import DomainResult, evaluate_domains

__all__ = ["DomainResult", "evaluate_domains"]
