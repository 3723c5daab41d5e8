"""`medbench export`: from a trained cell to the files people deploy, each one scored like the cell itself.

One module per concern:
    source.py    which cells (--cell / --best), why a cell cannot be exported, loading what it trained
    merge.py     the standalone Hugging Face folder: adapters merged (merge_and_unload), logits integrity check
    card.py      the model card (README.md) written from the result record
    gguf.py      llama.cpp's own converter (convert_hf_to_gguf.py from the llama-cpp-python sdist) and quantizer
                 (llama_cpp.llama_model_quantize); GGUF metadata and tokenizer round trips; CPU tokens/s
    llamacpp_lm.py  an lm-eval model whose log-likelihoods come from llama.cpp's kernels (llama-cpp-python)
    score.py     every artifact through the same lm-eval path and batch size, paired against the cell
    report.py    the report's Export section, read from results/<matrix>/<cell>/export/*.json
    cli.py       `medbench export RESULTS_DIR ...` and the matrix's `export:` block

Importing this package is light (no torch).
"""

FORMATS = ("hf", "f16", "q8_0", "q5_k_m", "q4_k_m")
GGUF_FORMATS = FORMATS[1:]
EXPORT_DIR = "export"  # results/<matrix>/<cell-id>/export/<format>.json
