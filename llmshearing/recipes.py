"""Where the run yamls live: inside the package (``llmshearing/yamls``, reached as ``yamls/`` at the repo
root through a link), so an installed wheel carries the recipes its commands default to."""
from pathlib import Path

RECIPES = Path(__file__).resolve().parent / "yamls"
