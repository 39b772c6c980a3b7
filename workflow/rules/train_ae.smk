rule train_ae:
    """Flow autoencoder: 256 tracked points -> 128-d latent."""
    input:
        unpack(
            pulled_or(
                "models/{suite}/{task}/flow_ae",
                train="data/{suite}/{task}/tracks/train.zarr",
                test="data/{suite}/{task}/tracks/test.zarr",
            )
        ),
    output:
        directory("models/{suite}/{task}/flow_ae"),
    params:
        config_hash=config_hash("train_ae"),
    log:
        "logs/{suite}/{task}/train_ae.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/train_ae.tsv"
    threads: 2
    resources:
        runtime=60,
        mem_mb=4000,
    shell:
        "{KUBM} train-ae {wildcards.suite}/{wildcards.task} --train {input.train} --test {input.test} "
        "--out {output} --threads {threads} --no-progress {CONFIG_ARGS} > {log} 2>&1"
