rule track:
    """256 object points tracked through each episode (CoTracker3 / OpenCV LK / ground truth)."""
    input:
        demos="data/{suite}/{task}/demos/{split}.zarr",
        masks="data/{suite}/{task}/masks/{split}.zarr",
    output:
        tracks=directory("data/{suite}/{task}/tracks/{split}.zarr"),
        metrics="results/{suite}/{task}/qc/track_{split}.metrics.json",
        video="results/{suite}/{task}/qc/track_{split}.mp4",
    params:
        config_hash=config_hash("track"),
    log:
        "logs/{suite}/{task}/track_{split}.log",
    benchmark:
        "logs/benchmarks/{suite}/{task}/track_{split}.tsv"
    threads: 2
    resources:
        runtime=120,
        mem_mb=4000,
    shell:
        "{KUBM} track {wildcards.suite}/{wildcards.task} --split {wildcards.split} "
        "--demos {input.demos} --masks {input.masks} --out {output.tracks} --metrics {output.metrics} "
        "--video {output.video} --threads {threads} --no-progress {CONFIG_ARGS} > {log} 2>&1"
