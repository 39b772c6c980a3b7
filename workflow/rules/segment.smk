rule segment:
    """Masks of the manipulated object (SAM 3 / SAM 2 / simulator ground truth)."""
    input:
        demos="data/{suite}/{task}/demos/{split}.zarr",
    output:
        directory("data/{suite}/{task}/masks/{split}.zarr"),
    params:
        config_hash=task_hash,
        kubm=KUBM,
        configs=CONFIG_ARGS,
    log:
        "logs/{suite}/{task}/segment_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/segment_{split}.tsv"
    threads: 1
    shell:
        "{params.kubm} segment {wildcards.suite}/{wildcards.task} --demos {input.demos} "
        "--out {output} {params.configs} > {log} 2>&1"
