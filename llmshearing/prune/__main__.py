import sys

from llmshearing.prune.cli import main

sys.exit(main())
