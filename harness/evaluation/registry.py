"""Built-in evaluation tasks shipped with the harness (light: no lm_eval import).

Each built-in task is one lm-eval task YAML in `harness/evaluation/tasks/` whose prompt, choices, target and
metrics are copied from lm-eval's own built-in task (`lm_eval_builtin`), but which reads the original local data
file (validated and normalised by `harness.evaluation.data`) instead of the Hub copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TASKS_DIR = Path(__file__).parent / "tasks"


@dataclass(frozen=True)
class BuiltinTask:
    name: str  # the name used in matrix files
    lm_eval_task: str  # the task name in the shipped YAML folder
    default_data: str  # relative to the data dir
    how_to_obtain: str
    # --- added for the evaluation runner (all have defaults so older call sites keep working)
    data_format: str = ""  # the loader in harness.evaluation.data: "medqa_jsonl" | "pubmedqa_json"
    lm_eval_builtin: str = ""  # the lm-eval built-in task whose prompt / choices / target / metrics we copy
    hub_dataset: str | None = None  # used only when online and no local file is given or found
    hub_name: str | None = None
    hub_split: str = "test"
    # Few-shot examples: a local file of the same format (relative to the data dir), the same split lm-eval's
    # built-in task draws its few-shot examples from. None: there is none; few-shot examples then come from the
    # evaluated split itself, never the item being evaluated (lm-eval's sampler excludes it).
    fewshot_data: str | None = None

    @property
    def yaml_path(self) -> Path:
        return TASKS_DIR / f"{self.lm_eval_task}.yaml"


BUILTIN_TASKS: dict[str, BuiltinTask] = {
    "medqa": BuiltinTask(
        name="medqa",
        lm_eval_task="medbench_medqa_4options",
        default_data="medqa_usmle_4opt/test.jsonl",
        how_to_obtain="MedQA (USMLE, 4 options) test split as JSONL with question / options / answer_idx, "
        "from https://github.com/jind11/MedQA (data_clean/questions/US/4_options/phrases_no_exclude_test.jsonl)",
        data_format="medqa_jsonl",
        lm_eval_builtin="medqa_4options",
        hub_dataset="GBaker/MedQA-USMLE-4-options-hf",
        fewshot_data=None,  # no MedQA train split ships with the data dir
    ),
    "pubmedqa": BuiltinTask(
        name="pubmedqa",
        lm_eval_task="medbench_pubmedqa",
        default_data="pubmedqa/test_set.json",
        how_to_obtain="PubMedQA PQA-L official test split (PMID-keyed JSON, test_set.json) from "
        "https://github.com/pubmedqa/pubmedqa (data/ori_pqal.json split with preprocess/split_dataset.py)",
        data_format="pubmedqa_json",
        lm_eval_builtin="pubmedqa",
        hub_dataset="bigbio/pubmed_qa",
        hub_name="pubmed_qa_labeled_fold0_source",
        fewshot_data="pubmedqa/pqal_fold0/train_set.json",  # lm-eval's pubmedqa: training_split = fold-0 train
    ),
}


def builtin_task(name: str) -> BuiltinTask | None:
    return BUILTIN_TASKS.get(name)
