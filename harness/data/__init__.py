"""Training data: load -> clean -> template and tokenize (label masks) -> split -> cache, and batches (packing).

    prepared = prepare_data(cell.train, tokenizer, data_dir, cache_dir, seed)
    for batch in iter_batches(prepared.train, batch_size=..., max_seq_length=..., packing=..., pad_to_max_length=...,
                              pad_token_id=tokenizer.pad_token_id, seed=seed, epoch=epoch):
        loss = model(**batch.model_kwargs(device)).loss

Modules: `loaders` (file types and formats -> Example), `clean` (de-dup, PII, short responses), `format` (chat or
plain template, labels), `pack` (batches, packing, padding statistics), `cache` (content-hashed entries),
`prepare` (the pipeline). Importing this package does not import torch, transformers or datasets.
"""

from harness.data.examples import DataError, Example
from harness.data.format import IGNORE_INDEX, encode_prompt
from harness.data.pack import Batch, iter_batches, padding_stats
from harness.data.prepare import PreparedData, prepare_data

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "DataError",
    "Example",
    "PreparedData",
    "encode_prompt",
    "iter_batches",
    "padding_stats",
    "prepare_data",
]
