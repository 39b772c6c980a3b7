rule encode:
    """Feature cache: flow latents, qpos, actions and context per split."""
    input:
        unpack(
            pulled_or(
                "data/{suite}/{task}/features/{split}.zarr",
                demos="data/{suite}/{task}/demos/{split}.zarr",
                tracks="data/{suite}/{task}/tracks/{split}.zarr",
                masks="data/{suite}/{task}/masks/{split}.zarr",
                ae="models/{suite}/{task}/flow_ae",
            )
        ),
    output:
        directory("data/{suite}/{task}/features/{split}.zarr"),
    params:
        config_hash=config_hash("encode"),
    log:
        "logs/{suite}/{task}/encode_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/encode_{split}.tsv"
    threads: 1
    resources:
        runtime=30,
    shell:
        "{KUBM} encode {wildcards.suite}/{wildcards.task} --demos {input.demos} --tracks {input.tracks} "
        "--masks {input.masks} --ae {input.ae} --out {output} --threads {threads} --no-progress "
        "{CONFIG_ARGS} > {log} 2>&1"
