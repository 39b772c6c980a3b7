rule fit:
    """K-UBM fit for one training seed."""
    input:
        train="data/{suite}/{task}/features/train.zarr",
        test="data/{suite}/{task}/features/test.zarr",
        ae="models/{suite}/{task}/flow_ae",
    output:
        directory("models/{suite}/{task}/kubm/seed{seed}"),
    params:
        config_hash=stage_hash("fit", "fit"),
        kubm=KUBM,
        configs=CONFIG_ARGS,
    log:
        "logs/{suite}/{task}/fit_kubm_seed{seed}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/fit_kubm_seed{seed}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    shell:
        "{params.kubm} fit {wildcards.suite}/{wildcards.task} --method kubm --seed {wildcards.seed} "
        "--train {input.train} --test {input.test} --ae {input.ae} --out {output} "
        "--threads {threads} --no-progress {params.configs} > {log} 2>&1"
