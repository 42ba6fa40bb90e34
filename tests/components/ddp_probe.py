"""``components.train_worker`` with dropout switched off: a test helper run under torchrun.

Without dropout, training is a deterministic function of the rows each optimizer step reads, so
2 processes x batch 8 must give the weights of 1 process x batch 16 (up to float rounding):
``tests/components/test_train_worker.py`` checks that DDP shards the data and averages the
gradients as one large batch would.

    python -m torch.distributed.run --nproc-per-node 2 -m tests.components.ddp_probe <worker args>
"""

from __future__ import annotations

import sys
from typing import Any

import torch


def without_dropout(build: Any) -> Any:
    """Wrap ``build_model_and_tokenizer`` so the model it returns has every dropout at 0."""

    def build_without_dropout(*args: Any, **kwargs: Any) -> Any:
        model, tokenizer, max_length = build(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0  # BERT's attention reads its dropout's p too
        return model, tokenizer, max_length

    return build_without_dropout


def main() -> int:
    import components.train_model as train_model
    from components.train_worker import main as worker_main

    train_model.build_model_and_tokenizer = without_dropout(train_model.build_model_and_tokenizer)
    return worker_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
