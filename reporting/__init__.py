"""Reporting: the layer that turns result rows into files people read.

One job per module:

* :mod:`reporting.tables`        the one table model (:class:`~reporting.tables.Table`: column keys, headers,
                                 formatted cells; ``to_markdown()`` / ``to_html()``) and the value formatters.
* :mod:`reporting.results`       the results schema: row validation, ``write_results`` / ``read_results``
                                 (JSON/CSV/MD), ``results_table`` / ``markdown_table``, ``comparison_table`` /
                                 ``pivot_table`` (the paper's clean / audio / visual / both table).
* :mod:`reporting.plots`         accuracy-vs-eps and the audio-visual cosine histogram (PNG).
* :mod:`reporting.examples_page` the offline HTML page of adversarial examples (frames, diffs, audio).
* :mod:`reporting.study_report`  the study report: blocks rendered to report.md and report.html.

Import rules: this package may import :mod:`utils` and :mod:`attacks.metrics`; nothing in :mod:`utils`
imports it. Import names from the submodules (this file re-exports nothing).
"""
