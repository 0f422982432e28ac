from llmshearing.eval.perplexity import ALL, DomainResult, evaluate_domains, format_table

__all__ = ["ALL", "DomainResult", "evaluate_domains", "format_table"]
