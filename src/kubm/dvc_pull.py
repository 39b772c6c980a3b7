"""`kubm pull`: fetch locked artifacts from the DVC remote and say plainly whether it worked.

`dvc pull` alone exits 1 on stages that were never locked, says "Everything is up to date"
for a local remote folder that does not exist, and `dvc status` exits 0 when outputs are
missing. This wraps both: it pulls only stages that ``dvc.lock`` records (by default the
features and flow autoencoders, what a fit needs), names an unreachable or incomplete
remote with the fix, and checks that `dvc status` is clean afterwards.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from kubm.errors import KubmError

# What a fit and evaluation need from a remote: the flow AE and the feature caches. Raw
# demos, masks and tracks (--all) are large and only needed to rebuild those.
DEFAULT_RULES = ("train_ae", "encode")
_UNREACHABLE = re.compile(r"unable to connect|could not connect|connection (refused|error)|endpointconnectionerror|"
                          r"timed out|name or service not known|no credentials|nocredentialserror|access denied|"
                          r"forbidden|permission denied", re.I)


class PullError(KubmError):
    """The pull did not leave the workspace with what dvc.lock records."""


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "dvc"
    return subprocess.run([str(exe) if exe.exists() else "dvc", *args], cwd=root, capture_output=True, text=True)


def locked_stages(root: Path, rules: tuple[str, ...] | None = DEFAULT_RULES, tasks: list[str] | None = None) -> list[str]:
    """Stage names dvc.lock records, of ``rules`` (None: every rule) and ``tasks`` ("suite/task")."""
    lock = root / "dvc.lock"
    if not lock.is_file():
        raise PullError("no dvc.lock in this checkout: nothing was built and pushed from this commit; "
                        "build with `make run` (snakemake) instead, or check out a commit that has a dvc.lock")
    names = list((yaml.safe_load(lock.read_text()) or {}).get("stages", {}))
    wanted = {tuple(t.split("/", 1)) for t in tasks or []}
    keep = [n for n in names if (rules is None or n.split("-")[0] in rules)
            and (not wanted or tuple(n.split("-")[1:3]) in wanted)]
    if not keep:
        what = f"rules {list(rules)}" if rules else "any rule"
        raise PullError(f"dvc.lock records no stage of {what}{' for ' + ', '.join(tasks) if tasks else ''}; "
                        f"locked stages: {names[:8]}{' ...' if len(names) > 8 else ''}")
    return keep


def remote_url(root: Path, remote: str | None) -> tuple[str, str]:
    """(name, url) of ``remote`` or of the default remote."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        config = repo.config
        remotes = {k: v.get("url", "") for k, v in config.get("remote", {}).items()}
        name = remote or config.get("core", {}).get("remote")
    if not name or name not in remotes:
        raise PullError(f"no DVC remote {name or '(default)'}; configured: {sorted(remotes) or 'none'}. "
                        "Add one: `dvc remote add -d NAME URL` (README, 'Sharing artifacts with DVC')")
    return name, remotes[name].strip()


def pull(root: Path, stages: list[str], remote: str | None = None) -> dict:
    """Pull ``stages``; raise PullError naming the problem and the fix unless every output
    is in the workspace and `dvc status` of the stages is clean."""
    name, url = remote_url(root, remote)
    if "://" not in url and not (root / url).expanduser().is_dir():
        raise PullError(f"DVC remote {name!r} is the folder {url}, which does not exist on this machine: "
                        "point it at the lab's copy (`dvc remote modify {name} url PATH`) or add an object-store "
                        "remote (README, 'Sharing artifacts with DVC')".replace("{name}", name))
    proc = _dvc(root, "pull", *(["-r", name] if remote else []), *stages)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        missing = _failed_targets(out)
        if missing:
            raise PullError(f"DVC remote {name!r} ({url}) lacks {len(missing)} output(s) of the locked stages, e.g. "
                            f"{missing[:3]}: push them from the machine that built them (`dvc push`), "
                            "or rebuild them with snakemake")
        if _UNREACHABLE.search(out):
            raise PullError(f"DVC remote {name!r} ({url}) is unreachable or refuses access: check the URL, "
                            f"network and credentials. dvc said: {_tail(out)}")
        raise PullError(f"dvc pull failed (exit {proc.returncode}): {_tail(out)}")
    status = _dvc(root, "status", "--json", *stages)
    if status.returncode != 0:
        raise PullError(f"dvc status failed after the pull: {_tail(status.stderr)}")
    outs, upstream, changed = _status(json.loads(status.stdout or "{}"))
    if outs:
        raise PullError(f"after the pull, {len(outs)} output(s) of the pulled stages are missing or differ from "
                        f"dvc.lock, e.g. {outs[:3]}: push them from the machine that built them (`dvc push`)")
    return {"remote": name, "url": url, "stages": stages, "dvc": _tail(out),
            "upstream_not_pulled": upstream, "deps_changed_since_lock": changed}


def _status(doc: dict) -> tuple[list[str], list[str], list[str]]:
    """(outputs missing or changed, upstream deps absent, deps changed since the lock) from
    `dvc status --json`. A pulled feature store's demos are absent by design (pull them with
    --all); a dep changed since the lock (code edited after the build) is reported, not fatal:
    a store built under another config is refused by the stage that reads it."""
    outs, upstream, changed = [], [], []
    for entries in doc.values():
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict):
                continue
            outs += [f"{p} ({why})" for p, why in (entry.get("changed outs") or {}).items()]
            for p, why in (entry.get("changed deps") or {}).items():
                (upstream if why == "deleted" else changed).append(p)
    return outs, sorted(set(upstream)), sorted(set(changed))


def _failed_targets(out: str) -> list[str]:
    if "Checkout failed for following targets" not in out:
        return []
    after = out.split("Checkout failed for following targets:", 1)[1].splitlines()
    targets = []
    for line in after:
        line = line.strip()
        if not line and not targets:
            continue
        if not line or line.startswith("Is your cache") or line.startswith("<"):
            break
        targets.append(line)
    return targets


def _tail(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text[-n:]
