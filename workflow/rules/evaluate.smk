rule evaluate:
    """Full-horizon rollouts in the simulator on the protocol's test seeds -> eval.json."""
    input:
        models=lambda w: expand("models/{suite}/{task}/kubm/seed{seed}", suite=w.suite, task=w.task, seed=fit_seeds()),
        ae="models/{suite}/{task}/flow_ae",
        test="data/{suite}/{task}/features/test.zarr",
    output:
        "results/{suite}/{task}/eval.json",
    params:
        config_hash=task_hash,
        kubm=KUBM,
        configs=CONFIG_ARGS,
    log:
        "logs/{suite}/{task}/evaluate.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/evaluate.tsv"
    threads: 1
    shell:
        "{params.kubm} evaluate {wildcards.suite}/{wildcards.task} --models {input.models} --ae {input.ae} "
        "--test {input.test} --out {output} {params.configs} > {log} 2>&1"
