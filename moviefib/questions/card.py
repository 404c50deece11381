"""The per-dataset card (``README.md``) that ``moviefib build`` writes into a dataset folder.

Its YAML header lists one Parquet file per split under ``configs``, so that plain
``datasets.load_dataset(folder)`` finds the splits without MovieFIB installed.
"""

from __future__ import annotations

from ..schema import DATA_DIR, QUESTION_COLUMNS

CITATION = """@inproceedings{maharaj2017dataset,
  title     = {A Dataset and Exploration of Models for Understanding Video Data through Fill-in-the-Blank
               Question-Answering},
  author    = {Maharaj, Tegan and Ballas, Nicolas and Rohrbach, Anna and Courville, Aaron and Pal, Christopher},
  booktitle = {IEEE Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2017}
}"""

_MODE_TEXT = {
    "clean": "`clean`: one question per whitespace word whose Penn tag is a noun, verb, adjective or "
             "adverb/particle, not on the stop list, not `SOMEONE`/`UNK`, and in the blank vocabulary; "
             "blanks are placed by word index (no blank inside another word, no truncated sentences).",
    "compat": "`compat`: the `clean` rule adjusted to come as close as possible to the released MovieFIB "
              "questions (particles such as over/around/down and the pronouns her/him are blanked; "
              "then/before are not stopped); see `moviefib.questions.words`.",
}


def _yaml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dataset_card(stats: dict) -> str:
    splits = stats.get("splits", {})
    labels = stats.get("label_columns", [])
    name = stats.get("name") or "MovieFIB-style fill-in-the-blank questions"
    lines = ["---", f"pretty_name: {_yaml_str(name)}", "language:", "- en",
             "task_categories:", "- question-answering", "license: other", "configs:",
             "- config_name: default", "  data_files:"]
    for s in splits:
        lines += [f"  - split: {s}", f"    path: {DATA_DIR}/{s}.parquet"]
    lines += ["---", "", f"# {name}", ""]

    tagger = stats.get("tagger", {})
    vocab = stats.get("blank_vocabulary", {})
    if stats.get("kind") == "imported":
        lines += ["Official fill-in-the-blank questions imported as they are: every row kept (duplicates "
                  "included), question ids `<split>-<row>` (row = 0-based line of the official file), so "
                  "that scores stay comparable with published numbers. `answer_pos` comes from tagging "
                  "the sentence.", ""]
    else:
        lines += ["Fill-in-the-blank questions built from video description sentences by `moviefib build`. "
                  "Each blankable word of a sentence gives one question; the blank unit is a "
                  "whitespace-separated word with surrounding punctuation stripped.", "",
                  "- Mode: " + _MODE_TEXT.get(stats.get("mode"), str(stats.get("mode"))),
                  "- Question ids: `q` + 16 hex digits of SHA-1(clip id, sentence, word index); stable "
                  "across runs. Identical questions are dropped and counted.",
                  f"- Stop list: {', '.join(stats.get('stop_words') or [])}.", ""]
    lines += [f"- Tagger: spaCy {tagger.get('spacy_version')} with `{tagger.get('model')}` "
              f"{tagger.get('version')} (tok2vec + tagger only).",
              f"- Blank vocabulary: {vocab.get('source')}; {vocab.get('size')} words "
              "(`vocab/blank_vocab.txt`).",
              f"- Answer counts (`vocab/answer_counts.tsv`): answers of split "
              f"`{stats.get('answer_counts_split')}`.",
              f"- Built by {stats.get('created_by')} from: {', '.join(stats.get('sources') or ['(in memory)'])}.",
              ""]
    lines += ["## Sizes", "", "| split | sentences | questions | clips | movies | distinct answers | "
              "duplicates dropped | sentences without blank | blind |", "|---|---|---|---|---|---|---|---|---|"]
    for s, st in splits.items():
        lines.append(f"| {s} | {st['sentences']} | {st['questions']} | {st['clips']} | {st['movies']} | "
                     f"{st['distinct_answers']} | {st['duplicates_dropped']} | {st['sentences_without_blank']} "
                     f"| {'yes' if st['blind'] else 'no'} |")
    problems = stats.get("input_problems") or []
    warn = (stats.get("input_warnings") or {}).get("counts") or {}
    lines += ["", f"Input rows skipped as invalid: {len(problems)} (listed in `stats.json`). "
              f"Quirks kept as warnings: {', '.join(f'{k} {v}' for k, v in warn.items()) or 'none'}.", ""]
    blind = [s for s, st in splits.items() if st["blind"]]
    if blind:
        lines += [f"Blind split(s): {', '.join(blind)}: `answer` and `answer_pos` are null here; the answer "
                  "key is in the sibling folder `<this folder>.keys/` (keep it away from participants).", ""]
    lines += ["## Loading", "", "```python", "import moviefib", "ds = moviefib.load_dataset(\"path/to/folder\")",
              "# or, without MovieFIB:", "import datasets",
              "ds = datasets.load_dataset(\"path/to/folder\")", "```", "", "## Columns", "",
              "| column | type | meaning |", "|---|---|---|"]
    for col, typ, nullable, meaning in QUESTION_COLUMNS:
        lines.append(f"| `{col}` | {typ}{' (nullable)' if nullable else ''} | {meaning} |")
    for col in labels:
        lines.append(f"| `{col}` | string | extra label |")
    lines += ["", "## Licence and sharing", "",
              "Questions built from LSMDC descriptions inherit the LSMDC research agreement: research use "
              "only, no redistribution. Share such a folder only with people who signed the agreement "
              "(e.g. a gated repository). Other corpora keep their own terms.", "",
              "## Citation", "", "```bibtex", CITATION, "```", ""]
    return "\n".join(lines)
