"""Train (prune / continue pre-training) from a yaml: `composer train.py YAML [key=value ...]`."""
import sys

from llmshearing.cli.train import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
