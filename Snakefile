# kubm: one DAG per task {suite}/{task}. See README.md and config/README.md.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/train_ae.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/fit.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    input:
        all_targets(),
        "results/summary.md",
        perturbed_targets(),
        "results/report.md",
    default_target: True
