"""`python -m llmshearing COMMAND ...`: the `llmshearing` command (llmshearing/cli/main.py)."""
import sys

from llmshearing.cli.main import main

sys.exit(main())
