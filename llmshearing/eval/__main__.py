import sys

from llmshearing.eval.cli import main

sys.exit(main())
