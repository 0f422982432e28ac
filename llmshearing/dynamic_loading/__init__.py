"""Sheared LLaMA's dynamic batch loading, all of it: the domain mixture a run trains on is re-weighted from
each domain's loss against its reference loss.

- ``from_config``: the ``dynamic_loading:`` yaml section -> the train loader and the callback, every check first
- ``callback``: ``DynamicBatchLoading``, the Composer callback that measures, updates and publishes the weights
- ``loss_sources``: where each domain's loss comes from (eval splits, or the training batches)
- ``domain_loss``: per-sample and per-domain next-token loss sums
- ``mixture_update``: the paper's exponentiated update, with its clamp and smoothing
- ``loader``, ``dataset``: the DataLoader over one StreamingDataset that draws each batch from the current mix
- ``mixture_sampler``, ``permutation``, ``weight_table``: which sample each batch position gets, reproducibly
  and resumably; the weights shared with the loader's workers
- ``reference_loss``: ``llmshearing reference-loss``, a model's own per-domain loss as the reference
- ``weight_plot``: the weights over the run as a PNG
"""
from llmshearing.lazy_exports import lazy_exports

__all__ = ["DynamicBatchLoading", "MixtureUpdate"]
__getattr__, __dir__ = lazy_exports(__name__, {"DynamicBatchLoading": "callback", "MixtureUpdate": "mixture_update"})
