rule evaluate_method:
    """One method's models, rolled out in the simulator on the protocol's test seeds."""
    input:
        models=lambda w: expand("models/{suite}/{task}/{method}/seed{seed}", seed=fit_seeds(w.method), **w),
        ae="models/{suite}/{task}/flow_ae",
        test="data/{suite}/{task}/features/test.zarr",
    output:
        eval="results/{suite}/{task}/methods/{method}.json",
        artifacts=directory("results/{suite}/{task}/methods/{method}"),
    params:
        config_hash=config_hash("evaluate_method"),
    log:
        "logs/{suite}/{task}/evaluate_{method}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/evaluate_{method}.tsv"
    # one worker process (one simulator, one torch thread) per thread: episodes run side by
    # side, and the document does not depend on how many (tests/test_evaluate_workers.py)
    threads: 2
    resources:
        runtime=180,
        mem_mb=4000,
    shell:
        "{KUBM} evaluate {wildcards.suite}/{wildcards.task} --models {input.models} --ae {input.ae} "
        "--test {input.test} --out {output.eval} --threads 1 --workers {threads} --no-progress {CONFIG_ARGS} "
        "> {log} 2>&1"


rule evaluate_perturbed:
    """Every method of a task on its perturbed test seeds (K-UBM open loop and replanning, and the baselines)."""
    input:
        models=lambda w: [f"models/{w.suite}/{w.task}/{m}/seed{k}" for m in task_methods(w) for k in fit_seeds(m)],
        ae="models/{suite}/{task}/flow_ae",
        test="data/{suite}/{task}/features/test.zarr",
    output:
        eval="results/{suite}/{task}/perturbed/eval.json",
        videos=directory("results/{suite}/{task}/perturbed/videos"),
        plots=directory("results/{suite}/{task}/perturbed/plots"),
    params:
        config_hash=config_hash("evaluate_perturbed"),
    log:
        "logs/{suite}/{task}/evaluate_perturbed.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/evaluate_perturbed.tsv"
    threads: 2
    resources:
        runtime=360,
        mem_mb=4000,
    shell:
        "{KUBM} evaluate {wildcards.suite}/{wildcards.task} --perturbed --models {input.models} --ae {input.ae} "
        "--test {input.test} --out {output.eval} --threads 1 --workers {threads} --no-progress {CONFIG_ARGS} "
        "> {log} 2>&1"


rule report:
    """results/report.md: the paper's claims against the committed metrics (no model is rebuilt)."""
    input:
        evals=all_targets(),
        perturbed=perturbed_targets(),
    output:
        md="results/report.md",
        json="results/report.json",
        plots=directory("results/report_plots"),
    log:
        "logs/report.log",
    benchmark:
        "logs/benchmarks/report.tsv"
    threads: 1
    resources:
        runtime=10,
    shell:
        "{KUBM} report {input.evals} {input.perturbed} --out {output.md} > {log} 2>&1"


rule merge_eval:
    """The task's eval.json: the per-method documents of the methods its config lists."""
    input:
        lambda w: expand("results/{suite}/{task}/methods/{method}.json", method=task_methods(w), **w),
    output:
        "results/{suite}/{task}/eval.json",
    log:
        "logs/{suite}/{task}/merge_eval.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/merge_eval.tsv"
    threads: 1
    resources:
        runtime=10,
    shell:
        "{KUBM} merge-eval {wildcards.suite}/{wildcards.task} {input} --out {output} "
        "{CONFIG_ARGS} > {log} 2>&1"


rule summary:
    """Success (Wilson 95 % CI), paired differences against K-UBM and latency across tasks and methods."""
    input:
        all_targets(),
    output:
        md="results/summary.md",
        json="results/summary.json",
        plots=directory("results/summary_plots"),
    log:
        "logs/summary.log",
    benchmark:
        "logs/benchmarks/summary.tsv"
    threads: 1
    resources:
        runtime=10,
    shell:
        "{KUBM} summary {input} --out {output.md} > {log} 2>&1"


rule openloop:
    """Diagnostic (not in the default DAG): held-out open-loop action RMS of every fitted method."""
    input:
        models=lambda w: [f"models/{w.suite}/{w.task}/{m}/seed{k}" for m in task_methods(w) for k in fit_seeds(m)],
        test="data/{suite}/{task}/features/test.zarr",
    output:
        "results/{suite}/{task}/openloop.json",
    log:
        "logs/{suite}/{task}/openloop.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/openloop.tsv"
    threads: 1
    resources:
        runtime=30,
    shell:
        "{KUBM} openloop {wildcards.suite}/{wildcards.task} --models {input.models} --test {input.test} "
        "--out {output} {CONFIG_ARGS} > {log} 2>&1"
