import sys

from llmshearing.data.prepare.cli import main

sys.exit(main())
