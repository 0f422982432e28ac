from llmshearing.lazy_exports import lazy_exports

__all__ = ["ALL", "DomainResult", "evaluate_domains", "format_table"]
__getattr__, __dir__ = lazy_exports(__name__, {name: "perplexity" for name in __all__})
