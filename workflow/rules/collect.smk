rule collect:
    """Expert rollouts in the simulator; successful episodes only."""
    output:
        directory("data/{suite}/{task}/demos/{split}.zarr"),
    params:
        config_hash=config_hash("collect"),
    log:
        "logs/{suite}/{task}/collect_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/collect_{split}.tsv"
    threads: 1
    resources:
        runtime=60,
        mem_mb=4000,
    shell:
        "{KUBM} collect {wildcards.suite}/{wildcards.task} --split {wildcards.split} "
        "--out {output} {CONFIG_ARGS} > {log} 2>&1"
