rule fit:
    """Fit one method (kubm, kodex, regression, diffusion, act) for one training seed."""
    input:
        train="data/{suite}/{task}/features/train.zarr",
        test="data/{suite}/{task}/features/test.zarr",
        ae="models/{suite}/{task}/flow_ae",
    output:
        directory("models/{suite}/{task}/{method}/seed{seed}"),
    params:
        config_hash=config_hash("fit"),
    log:
        "logs/{suite}/{task}/fit_{method}_seed{seed}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/fit_{method}_seed{seed}.tsv"
    threads: 2
    resources:
        runtime=240,
        mem_mb=4000,
    shell:
        "{KUBM} fit {wildcards.suite}/{wildcards.task} --method {wildcards.method} --seed {wildcards.seed} "
        "--train {input.train} --test {input.test} --ae {input.ae} --out {output} "
        "--threads {threads} --no-progress {CONFIG_ARGS} > {log} 2>&1"
