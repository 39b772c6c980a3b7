rule segment:
    """Masks of the manipulated object (SAM 3 / SAM 2 / simulator ground truth)."""
    input:
        demos="data/{suite}/{task}/demos/{split}.zarr",
    output:
        masks=directory("data/{suite}/{task}/masks/{split}.zarr"),
        metrics="results/{suite}/{task}/qc/segment_{split}.metrics.json",
        video="results/{suite}/{task}/qc/segment_{split}.mp4",
    params:
        config_hash=config_hash("segment"),
    log:
        "logs/{suite}/{task}/segment_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/segment_{split}.tsv"
    threads: 2
    resources:
        runtime=120,
        mem_mb=4000,
    shell:
        "{KUBM} segment {wildcards.suite}/{wildcards.task} --split {wildcards.split} "
        "--demos {input.demos} --out {output.masks} --metrics {output.metrics} --video {output.video} "
        "--threads {threads} --no-progress {CONFIG_ARGS} > {log} 2>&1"
