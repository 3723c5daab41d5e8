"""`medbench export`: from a trained cell to the files people deploy, each one scored like the cell itself.

One module per concern:
    source.py    which cells (--cell / --best), why a cell cannot be exported, loading what it trained
    merge.py     the standalone Hugging Face folder: adapters merged (merge_and_unload), logits integrity check,
                 the dtype that passes the check on the saved folder (else fp32)
    verify.py    every file checked as written against base + adapter unmerged in fp32: logits and greedy
                 continuations on fixed prompts, with stated tolerances (HF folder gated, GGUF reported)
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

# max |logit difference| allowed between the base+adapter model and the merged model, both in fp32. A merge adds
# B·A·scale into W once instead of computing it per forward; the only difference is fp32 rounding (~1e-6 relative),
# so 1e-3 absolute on logits of magnitude ~10 is loose enough for rounding and tight enough to catch a wrong merge.
MERGE_ATOL = 1e-3

FIXTURE_TEXTS = (
    "A 45-year-old man presents with chest pain radiating to the left arm. What is the most likely diagnosis?",
    "Question: Does aspirin reduce the risk of myocardial infarction? Answer: yes",
    "Hämoglobin 13,5 g/dl — paracétamol 500 mg, 2× täglich; 血压 120/80 mmHg.",
)

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
