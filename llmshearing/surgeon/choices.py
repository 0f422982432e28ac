"""The values of LLM Surgeon's settings, apart from the torch code, so that the command's parser
(and ``--help``) reads them without importing torch."""

STRUCTURED, UNSTRUCTURED, TWO_FOUR = "structured", "unstructured", "2:4"
MODES = (STRUCTURED, TWO_FOUR, UNSTRUCTURED)
CURVATURE, MAGNITUDE = "curvature", "magnitude"
SCORINGS = (CURVATURE, MAGNITUDE)
HEAD, KV_GROUP = "head", "kv-group"  # attention units: a query head, or a whole KV group
ATTENTION_UNITS = (HEAD, KV_GROUP)
MATRIX, GLOBAL = "matrix", "global"  # 2:4/unstructured allocation: each matrix at the density, or one global threshold
ALLOCATIONS = (MATRIX, GLOBAL)
SEQUENTIAL, KFAC = "sequential", "kfac"  # 2:4/unstructured curvature: layer-by-layer input factors, or K-FAC G ⊗ A
CURVATURES = (SEQUENTIAL, KFAC)
