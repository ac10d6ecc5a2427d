"""`python -m edgevlm.train ARGS` is `edgevlm train ARGS`: the module torchrun starts in every process."""

import sys

from edgevlm.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
