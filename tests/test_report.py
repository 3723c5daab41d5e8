"""The HTML report from fixture result folders (no training): full, partial, failed-only, empty and corrupt
folders; escaping; self-containedness; the synthetic-model rules; the headline's numbers."""

from __future__ import annotations

import base64
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from harness.report import render_report
from harness.report.loader import cell_key, load_report_data, normalize_comparisons

FIXTURES = Path(__file__).parent / "fixtures" / "report"
SMALL = FIXTURES / "small"
MATRIX = FIXTURES / "small_matrix.yaml"
XSS = "<script>alert(1)</script>"


def load_generator():
    spec = importlib.util.spec_from_file_location("report_fixture_generator", FIXTURES / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def small(tmp_path: Path) -> Path:
    """A private copy of the committed fixture folder (tests may edit it)."""
    return Path(shutil.copytree(SMALL, tmp_path / "small"))


def records(folder: Path) -> dict[Path, dict]:
    return {p: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.name != "comparisons.json"}


def render(folder: Path, tmp_path: Path, **kwargs) -> str:
    out = render_report(folder, tmp_path / "out" / "report.html", **kwargs)
    assert out.is_file()
    return out.read_text()


def section(html: str, sid: str) -> str:
    start = html.index(f'<section id="{sid}">')
    return html[start : html.index("</section>", start)]


def table_rows(html: str) -> list[str]:
    body = section(html, "table")
    return re.findall(r"<tr class=\"st-[a-z]+\">(.*?)</tr>", body, flags=re.S)


# ---------------------------------------------------------------------------------------------------- fixtures


def test_fixture_folder_is_what_the_generator_writes(tmp_path: Path) -> None:
    gen = load_generator()
    out = gen.write_small_matrix(tmp_path / "regen")
    committed = sorted(p.name for p in SMALL.glob("*.json"))
    assert committed == sorted(p.name for p in out.glob("*.json"))
    for name in committed:
        assert (out / name).read_text() == (SMALL / name).read_text(), name


def test_fixture_folder_loads_as_valid_records() -> None:
    from harness.results import load_results

    good, bad = load_results(SMALL)
    assert bad == []
    statuses = sorted(r.status for r in good)
    assert statuses.count("oom") == 1 and statuses.count("skipped") == 2 and len(good) == 37
    assert {r.config["model"]["source"] for r in good} == {"hub", "synthetic"}


# ---------------------------------------------------------------------------------------------------- full


def test_full_report_has_every_section_in_order(small: Path, tmp_path: Path) -> None:
    html = render(
        small,
        tmp_path,
        matrix_text=MATRIX.read_text(),
        matrix_path=str(MATRIX),
        command="medbench run matrices/fixture.yaml",
    )
    order = [
        html.index(f'<section id="{s}">')
        for s in ("headline", "pareto", "table", "curves", "heatmaps", "cost", "failures", "provenance")
    ]
    assert order == sorted(order)
    assert html.count("<section") == 8  # no gate section without a gate
    assert len(table_rows(html)) == 37
    # figures: 2 Pareto (one per task), 2 curve figures (one per model), 1 heatmap (real model only), 1 cost
    imgs = re.findall(r'<img src="([^"]+)"', html)
    assert len(imgs) == 6
    for uri in imgs:
        assert uri.startswith("data:image/png;base64,")
        assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    prov = section(html, "provenance")
    assert "fixture-gpu-host" in prov and "NVIDIA H100 80GB HBM3 (fixture)" in prov
    assert "f1c7u4e00000" in prov and "medbench run matrices/fixture.yaml" in prov
    assert "name: fixture-small" in prov  # the matrix file itself
    assert "Predicted vs measured" in prov
    fails = section(html, "failures")
    assert fails.count('<span class="badge b-oom">') == 1 and fails.count('<span class="badge b-skipped">') == 2
    assert "torch.OutOfMemoryError" in fails  # the traceback tail, inside <details>
    assert "<details><summary>traceback" in fails


def test_headline_picks_the_best_real_cell_and_reports_its_statistics(small: Path, tmp_path: Path) -> None:
    recs = list(records(small).values())
    comparisons = normalize_comparisons(json.loads((small / "comparisons.json").read_text()))
    html = render(small, tmp_path)
    head = section(html, "headline")
    for task in ("medqa", "pubmedqa"):
        trained = [
            r
            for r in recs
            if r["status"] == "success"
            and r["config"]["method"]["kind"] != "base"
            and r["config"]["model"]["source"] != "synthetic"
        ]
        # ties go to the cell with less peak memory
        best = max(
            trained, key=lambda r: (r["metrics"]["eval"][task]["acc"], -r["metrics"]["memory"]["headline_bytes"])
        )
        comp = comparisons[best["cell_id"]][task]
        assert best["cell_id"] in head
        assert f"{100 * best['metrics']['eval'][task]['acc']:.1f} %" in head
        assert (
            f"{100 * comp['diff']:+.1f} [{100 * comp['ci_low']:+.1f}, {100 * comp['ci_high']:+.1f}]".replace("-", "−")
            in head
        )
    assert "1 SE ≈ 1.3 points on 1273 items" in head  # MedQA noise level
    assert "1 SE ≈ 2.2 points on 500 items" in head  # PubMedQA noise level
    assert "winner&#39;s curse" in head


def test_headline_says_plainly_when_the_best_is_not_significant(small: Path, tmp_path: Path) -> None:
    comp_path = small / "comparisons.json"
    comparisons = json.loads(comp_path.read_text())
    for c in comparisons["comparisons"]:  # make every paired test inconclusive
        c["mcnemar_p"], c["ci_low"] = 0.31, -0.011
    comp_path.write_text(json.dumps(comparisons))
    head = section(render(small, tmp_path), "headline")
    assert head.count("Not significantly better than the untrained model") == 2
    assert "includes 0" in head and "Significantly better" not in head


def test_problems_recorded_by_the_comparison_step_are_surfaced(small: Path, tmp_path: Path) -> None:
    comp_path = small / "comparisons.json"
    data = json.loads(comp_path.read_text())
    # problems recorded by the comparison step are surfaced
    data["problems"] = [{"cell": "x", "task": "medqa", "reason": "the base row y has no result for this task"}]
    comp_path.write_text(json.dumps(data))
    assert "the base row y has no result for this task" in render(small, tmp_path / "c")


def test_synthetic_models_are_labelled_and_never_ranked(small: Path, tmp_path: Path) -> None:
    html = render(small, tmp_path)
    head = section(html, "headline")
    assert "llama-3.2-1b-random_" not in head  # no synthetic cell is ever a headline
    assert "not ranked" in head
    assert "accuracies are meaningless" in html
    data = load_report_data(small)
    syn = data.cells[data.cells["synthetic"]]
    for row in table_rows(html):
        if "llama-3.2-1b-random" in row:
            assert 'b-synthetic">synthetic' in row
            cells = re.findall(r'<td data-v="([^"]*)"', row)
            acc_cols = [6, 7, 8, 9]  # MedQA acc, Δ, PubMedQA acc, Δ: unranked -> empty sort keys
            assert all(cells[i] == "" for i in acc_cols), cells
    assert len(syn) == 19
    # the synthetic model has no heatmap, but it is in the cost figure's data and the curves
    assert "not shown: llama-3.2-1b-random" in section(html, "heatmaps")
    assert "llama-3.2-1b-random" in section(html, "curves")


def test_pareto_tables_list_only_real_trained_cells(small: Path, tmp_path: Path) -> None:
    from harness.report.pareto import pareto_front

    pareto = section(render(small, tmp_path), "pareto")
    assert "llama-3.2-1b-random" not in pareto
    # the memory front of MedQA, recomputed by hand from the records
    pts = [
        {
            "acc": r["metrics"]["eval"]["medqa"]["acc"],
            "mem": r["metrics"]["memory"]["headline_bytes"],
            "id": r["cell_id"],
        }
        for r in records(small).values()
        if r["status"] == "success"
        and r["config"]["method"]["kind"] != "base"
        and r["config"]["model"]["source"] != "synthetic"
    ]
    front = [pts[i] for i in pareto_front(pts, maximize=["acc"], minimize=["mem"])]
    table = pareto[pareto.index("Pareto-optimal on MedQA vs memory") : pareto.index("Pareto-optimal on MedQA vs time")]
    assert table.count('<tr><td class="num">') == len(front) >= 1


# ------------------------------------------------------------------------------------ partial / failed / empty


def test_partial_folder_without_comparisons(small: Path, tmp_path: Path) -> None:
    (small / "comparisons.json").unlink()
    trained = [p for p, r in records(small).items() if r["config"]["method"]["kind"] != "base"]
    for path in trained[::2]:
        path.unlink()
    html = render(small, tmp_path)
    assert len(table_rows(html)) == len(records(small))
    head = section(html, "headline")
    assert "unpaired" in head  # without comparisons.json: an unpaired difference, no CI, no p-value
    assert "No comparisons.json" in head


def test_partial_folder_without_base_rows(small: Path, tmp_path: Path) -> None:
    for path, rec in records(small).items():
        if rec["config"]["method"]["kind"] == "base":
            path.unlink()
    (small / "comparisons.json").unlink()
    head = section(render(small, tmp_path), "headline")
    assert "no successful base row" in head


def test_failed_only_folder(small: Path, tmp_path: Path) -> None:
    for path, rec in records(small).items():
        if rec["status"] == "success":
            path.unlink()
    html = render(small, tmp_path)
    assert len(table_rows(html)) == 3
    assert "<img" not in html
    assert "No real (non-synthetic) model" not in html  # there is a real model, it just has no success
    assert "No successful cell of this model has task scores yet" in section(html, "headline")
    assert section(html, "failures").count('<tr><td><span class="badge') == 3


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "does-not-exist"):
        html = render(folder, tmp_path)
        assert "no result records yet" in html
        assert "<img" not in html and "<section" in html
    assert "does not exist" in render(tmp_path / "does-not-exist", tmp_path)


def test_corrupt_result_file_is_listed_not_fatal(small: Path, tmp_path: Path) -> None:
    (small / "broken_cell-deadbeef.json").write_text('{"cell_id": "broken", ')
    (small / "comparisons.json").write_text("[1, 2")
    html = render(small, tmp_path)
    assert "broken_cell-deadbeef.json" in html
    assert "comparisons.json is unreadable" in html
    assert len(table_rows(html)) == 37


def test_render_writes_atomically_a_readable_file(small: Path, tmp_path: Path) -> None:
    out = render_report(small, tmp_path / "deep" / "dir" / "r.html", title="My title")
    assert out.stat().st_mode & 0o044  # readable by others: a report is meant to be shared
    assert "<title>My title</title>" in out.read_text()
    assert not list(out.parent.glob(".*.tmp"))


def test_matrix_path_is_read_when_no_text_is_given(small: Path, tmp_path: Path) -> None:
    html = render(small, tmp_path, matrix_path=str(MATRIX))
    assert "name: fixture-small" in section(html, "provenance")


# ---------------------------------------------------------------------------------------------------- safety


def test_every_string_is_escaped(small: Path, tmp_path: Path) -> None:
    for path, rec in records(small).items():
        if rec["config"]["model"]["id"] == "smollm2-360m":
            rec["config"]["model"]["id"] = XSS
        else:  # '$' must not start matplotlib mathtext (an unbalanced or invalid one would crash the figure)
            rec["config"]["model"]["id"] = r"syn$\frac{1}{$"
        if rec["status"] != "success":
            rec["reason"] = f"boom {XSS}"
            rec["traceback"] = f"Traceback\nValueError: {XSS}"
        rec["config"]["method"]["name"] = rec["config"]["method"]["name"] + '"><img src=x onerror=alert(2)>'
        rec["environment"] = {**rec["environment"], "hostname": XSS}
        rec["data_files"] = {XSS: "abc"}
        path.write_text(json.dumps(rec))
    html = render(
        small,
        tmp_path,
        matrix_text=f"name: x\n# {XSS}\n",
        command=f"run {XSS}",
        title=f"report {XSS}",
        matrix_path=f"m{XSS}.yaml",
    )
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "onerror=alert(2)>" not in html
    assert html.count("<script") == 1  # only the report's own sorting/filtering script
    # the escaped id appears in the headline, the table, the failures and the provenance
    for sid in ("headline", "table", "failures", "provenance"):
        assert "&lt;script&gt;" in section(html, sid), sid


def test_report_is_self_contained(small: Path, tmp_path: Path) -> None:
    html = render(small, tmp_path, matrix_text="# see https://example.org/matrix\nname: x\n")
    refs = re.findall(r'(?:src|href)\s*=\s*["\']?([^"\'\s>]+)', html, flags=re.I)
    assert refs, "expected images and in-page links"
    for ref in refs:
        assert ref.startswith(("data:", "#")), ref
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", html, flags=re.I)
    assert not re.search(r"<(?:link|iframe|object|embed)\b", html, flags=re.I)
    assert not re.search(r"<script[^>]+src", html, flags=re.I)
    assert not re.search(r"@import", html)


# ---------------------------------------------------------------------------------------------------- loader


def test_cell_key_is_stable_across_hash_changes() -> None:
    cfg = {
        "model": {"id": "m"},
        "method": {"name": "lora-r8"},
        "variant": "default",
        "epochs": 2,
        "learning_rate": 0.0002,
        "seed": 0,
        "train": {"max_seq_length": 512},
    }
    key = cell_key(cfg)
    assert key == "m/lora-r8/default/e2/lr0.0002/s0"
    assert cell_key({**cfg, "train": {"max_seq_length": 1024}}) == key
    assert cell_key({**cfg, "learning_rate": 0.0001}) != key


def test_loader_tolerates_minimal_records(tmp_path: Path) -> None:
    from harness.results import CellResult, write_result

    folder = tmp_path / "r"
    write_result(
        folder,
        CellResult(
            cell_id="m_base-00000000",
            config_hash="0" * 64,
            matrix="x",
            status="success",
            config={"model": {"id": "m"}, "method": {"kind": "base", "name": "base"}},
        ),
    )
    write_result(
        folder,
        CellResult(
            cell_id="m_lora-11111111", config_hash="1" * 64, matrix="x", status="failed", reason="it broke", config={}
        ),
    )
    data = load_report_data(folder)
    assert len(data.cells) == 2 and data.tasks == []
    html = render(folder, tmp_path)
    assert "it broke" in html


def test_variants_and_seeds(small: Path, tmp_path: Path) -> None:
    """A variant axis and repeated seeds: a variant column appears, heatmaps average over seeds."""
    for rec in records(small).values():
        if rec["config"]["model"]["id"] != "smollm2-360m" or rec["config"]["method"]["kind"] in ("base", "unsloth"):
            continue
        for seed, variant in ((1, "default"), (0, "seq2048")):
            twin = json.loads(json.dumps(rec))
            twin["config"]["seed"], twin["config"]["variant"] = seed, variant
            twin["cell_id"] = rec["cell_id"].replace("_s0-", f"_{variant}_s{seed}-")
            for ev in twin["metrics"]["eval"].values():
                ev["acc"] = round(ev["acc"] - 0.004, 6)
            (small / f"{twin['cell_id']}.json").write_text(json.dumps(twin))
    html = render(small, tmp_path)
    assert len(table_rows(html)) == 37 + 2 * 16
    assert ">variant</th>" in section(html, "table")
    assert ", seed 0" in section(html, "headline")  # with several seeds the headline names the seed
    data = load_report_data(small)
    assert data.cells["key"].is_unique  # the stable key tells seeds and variants apart
    assert len(re.findall(r"<img ", html)) == 6
