import sys

from llmshearing.convert.cli import main

sys.exit(main())
