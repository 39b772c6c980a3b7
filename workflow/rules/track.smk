rule track:
    """256 object points tracked through each episode (CoTracker3 / OpenCV LK / ground truth)."""
    input:
        demos="data/{suite}/{task}/demos/{split}.zarr",
        masks="data/{suite}/{task}/masks/{split}.zarr",
    output:
        directory("data/{suite}/{task}/tracks/{split}.zarr"),
    params:
        config_hash=task_hash,
        kubm=KUBM,
        configs=CONFIG_ARGS,
    log:
        "logs/{suite}/{task}/track_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/track_{split}.tsv"
    threads: 1
    shell:
        "{params.kubm} track {wildcards.suite}/{wildcards.task} --demos {input.demos} --masks {input.masks} "
        "--out {output} {params.configs} > {log} 2>&1"
