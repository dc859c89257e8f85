"""The logic of the report notebooks, tested: read the evaluated runs a params file declares, build the coreset tables
(mean and 95 % CI per cell, bold only where the CI excludes the runner-up), the paired comparisons and the verdict,
the robustness curves, the top-level DVC metric, and save tables / figures atomically.

Every declared run appears in the tables: a run whose metrics are missing or unreadable is shown as `missing (<why>)`,
never dropped silently. Statistics come from `easycore.inference` (the replicate as the unit: paired differences over
crossed test images x replicates, t intervals; Holm over the pre-registered primary family) and, for a cell with one
replicate, `easycore.inference.cell_stat` (the interval over test images alone).

The parts: publish (staged outputs, tables, figures, captions), outcomes (per-image outcomes of every run, read and written), verdict (the paired comparisons and the verdict), tables (accuracy tables and curves), analyses (the proxy's scores). This face re-exports their public names for the notebooks (`from easycore import report; report.verdict(...)`)."""
from __future__ import annotations

from easycore.report.analyses import (  # noqa: F401
    ablation_table,
    ablation_variants,
    aign_stability,
    claim_reading,
    default_variants,
    hardness_vs_vulnerability,
    jaccard,
    method_score_table,
    replicate_summary,
    spearman_matrix,
)
from easycore.report.outcomes import (  # noqa: F401
    OUTCOMES_FORMAT,
    PREPARED_INFO,
    RunResult,
    attacked_labels,
    autoattack_outcomes,
    cells,
    check_outcomes,
    export_outcomes,
    fractions,
    labels_of,
    load_results,
    load_run,
    outcome_matrix,
    outcomes_data,
    paired_rows,
    read_labels,
    read_outcomes,
    seed_rows,
    subset_of,
)
from easycore.report.publish import (  # noqa: F401
    FIGURES,
    STAGING_ENV,
    TABLES,
    hardware,
    out_dirs,
    pipeline_minutes,
    publish,
    save_figure,
    save_json,
    save_table,
    scale_caption,
    staged,
    to_markdown,
)
from easycore.report.tables import (  # noqa: F401
    BOLD,
    TIMINGS,
    accuracy_stat,
    accuracy_table,
    autoattack_table,
    best_marks,
    cell_frame,
    curves,
    runs_frame,
    summary,
    timing_table,
)
from easycore.report.verdict import (  # noqa: F401
    INDICATIVE_K,
    PAPER_CLAIM,
    REGIME,
    chance_pct,
    compare_cells,
    comparisons,
    per_class_analysis,
    per_class_table,
    primary_eps,
    regime_checks,
    regime_table,
    verdict,
    verdict_headline,
    verdict_markdown,
)
