"""The sample corpus builder (llmshearing/data/sample_corpus.py), under its checkout path.

    python data_prep/build_sample_corpus.py --out DIR [--seq-len 512] ...
"""
import sys

from llmshearing.data.sample_corpus import main

if __name__ == "__main__":
    sys.exit(main(prog="data_prep/build_sample_corpus.py"))
