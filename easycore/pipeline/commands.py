"""The stage commands: `easycore <command>` runs the function named here (module:function), imported only for that command; easycore/pipeline/deps.py derives each command's code dependencies from it."""

ENTRY = {"check": "easycore.pipeline.stages:check", "source": "easycore.pipeline.datasource:stage", "prepare": "easycore.pipeline.stages:prepare",
         "proxy": "easycore.pipeline.stages:proxy_all", "select": "easycore.pipeline.stages:select_all",
         "train": "easycore.pipeline.group:train_group", "eval": "easycore.pipeline.group:evaluate_group",
         "notebook": "easycore.report.notebook:run", "autoattack": "easycore.pipeline.stages:autoattack_stage",
         # not pipeline stages: the listing, and training / evaluating files given by path
         "methods": "easycore.core.methods:direction_table_markdown", "train_files": "easycore.pipeline.stages:train_run",
         "select_one": "easycore.pipeline.stages:select",
         "proxy_one": "easycore.pipeline.stages:proxy",
         "eval_files": "easycore.pipeline.stages:evaluate_run", "reports": "easycore.report.render:render_all",
         "tables": "easycore.report.docs_tables:run",
         "adopt": "easycore.report.adopt:run"}
