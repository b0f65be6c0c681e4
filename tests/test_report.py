"""results.md as a reader sees it: rendered by a CommonMark + tables renderer (markdown-it-py,
what GitHub and most viewers follow), it must hold well-formed tables, say what was run and
how to read it, caption every figure, show figures that exist, and never print NaN."""

from __future__ import annotations

import re

from click.testing import CliRunner
from markdown_it import MarkdownIt

from onnx_run.cli import cli


def test_results_md_renders_and_stands_on_its_own(tmp_path, tiny_optics):
    out = tmp_path / "runs"
    args = ["--optics", "tiny", "--task", "classification", "--distill", "none", "--out", str(out),
            "--stages", "students,realise,fabricate,compensate,report", "--set", "train.epochs=1",
            "--set", "train.max_train=96", "--set", "fabricate.student=none", "--set", "finetune.epochs=1",
            "--set", "finetune.methods=none,e2e", "--set", "run.progress=false"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    run_dir = out / "tiny-classification-digits"
    text = (run_dir / "results.md").read_text()
    assert "nan" not in text.lower()
    tokens = MarkdownIt("commonmark").enable("table").parse(text)

    # every table: a header and rows with as many cells as the header
    tables, row_cells, header = 0, [], None
    for tok in tokens:
        if tok.type == "table_open":
            tables += 1
        elif tok.type == "tr_open":
            row_cells = []
        elif tok.type in ("th_open", "td_open"):
            row_cells.append(tok.type)
        elif tok.type == "tr_close":
            if row_cells[0] == "th_open":
                header = len(row_cells)
            else:
                assert len(row_cells) == header
    assert tables >= 3  # simulation, after fabrication, paired differences

    paragraphs = [t.content for t in tokens if t.type == "inline"]
    assert any(p.startswith("**What was run.** Optics `tiny`, 4 kernels; task `classification` on `digits` (")
               for p in paragraphs)
    assert any(p.startswith("**How to read this.**") for p in paragraphs)
    assert any("none (1 pair: an interval needs 2)" in p for p in paragraphs)  # one device: no interval, no NaN

    images = [child for t in tokens if t.type == "inline" for child in (t.children or []) if child.type == "image"]
    assert {img.attrGet("src").split("/")[-1] for img in images} >= {"learning_curves.png", "kernels.png"}
    for img in images:
        assert (run_dir / img.attrGet("src")).exists(), img.attrGet("src")
    captions = [p for p in paragraphs if re.fullmatch(r"\*.+\*", p)]
    assert len(captions) == len(images)


def test_what_was_run_says_whom_the_compensation_distilled_from():
    """The report names the compensation's teacher when KD or NTKD fine-tuned: the design by
    default; a config from before ``finetune.teacher`` existed distilled from the teacher. An
    NTKD with an output term says so."""
    from onnx_run.report.tables import what_was_run

    base = {"fabricate": {"devices": 3, "student": "ntkd"}}
    design, old = (what_was_run({**base, "finetune": {"methods": ["none", "ntkd"], **t}})[0]
                   for t in ({"teacher": "design"}, {}))
    assert "KD and NTKD distilling from the student as designed" in design
    assert "KD and NTKD distilling from the teacher." in old
    assert "distilling" not in what_was_run({**base, "finetune": {"methods": ["none", "e2e"]}})[0]
    with_output = what_was_run({**base, "finetune": {"methods": ["none", "ntkd"], "teacher": "design",
                                                     "distill": {"ntkd": {"kd_weight": 0.5}}}})[0]
    assert ", NTKD with its output term (KD weight 0.5)." in with_output and "output term" not in design
