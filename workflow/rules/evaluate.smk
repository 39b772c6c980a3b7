rule evaluate:
    """Full-horizon rollouts in the simulator on the protocol's test seeds -> eval.json, videos, plots."""
    input:
        models=lambda w: expand("models/{suite}/{task}/kubm/seed{seed}", suite=w.suite, task=w.task, seed=fit_seeds()),
        ae="models/{suite}/{task}/flow_ae",
        test="data/{suite}/{task}/features/test.zarr",
    output:
        eval="results/{suite}/{task}/eval.json",
        videos=directory("results/{suite}/{task}/videos"),
        plots=directory("results/{suite}/{task}/plots"),
    params:
        config_hash=stage_hash("evaluate", "evaluate", "segment", "track", "fit", "weights"),
        kubm=KUBM,
        configs=CONFIG_ARGS,
    log:
        "logs/{suite}/{task}/evaluate.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/evaluate.tsv"
    threads: 1
    resources:
        mem_mb=4000,
    shell:
        "{params.kubm} evaluate {wildcards.suite}/{wildcards.task} --models {input.models} --ae {input.ae} "
        "--test {input.test} --out {output.eval} --threads {threads} --no-progress {params.configs} > {log} 2>&1"
