"""edgevlm: small vision-language models from training to a phone."""

import logging as _logging

__version__ = "0.1.0"

# torchao (pulled in by transformers when installed) logs failures to load CUDA-only kernels on CPU machines,
# and torch warns about torchao's enum registrations: noise on every command, not problems.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
