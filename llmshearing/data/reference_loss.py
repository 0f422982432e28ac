"""``python -m llmshearing.data.reference_loss``: the older spelling of ``llmshearing reference-loss``
(llmshearing/dynamic_loading/reference_loss.py)."""
import sys

from llmshearing.dynamic_loading.reference_loss import main

if __name__ == "__main__":
    sys.exit(main())
