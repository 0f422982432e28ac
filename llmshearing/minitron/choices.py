"""The values of Minitron's settings, apart from the torch code, so that the command's parser (and
``--help``) reads them without importing torch."""

IMPORTANCE_FILE = "importance.json"
DEPTH_METRICS = ("block_importance", "lm_loss")
DEPTH_SELECTIONS = ("top", "contiguous")
ORDERS = ("joint", "depth-first", "width-first")
AGGREGATIONS = ("mean", "l2", "var")
