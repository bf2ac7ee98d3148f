"""Where a job's outputs go: a local or shared path, or a URI (`s3://`, `gs://`, ...) that
pyarrow's filesystems write to, the way Ray Train's `storage_path` already takes one.

A job submitted with `ray job submit --working-dir .` runs in Ray's temporary copy of the
working directory on whichever node runs the driver, so a relative output path there is
lost to the user: `check_output` refuses it and says what to pass instead. For a URI the
job writes into a local staging folder and `output_dir` copies it to the URI when the job
finishes (docs/ARCHITECTURE.md, "Installs, images, cluster manifests").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

# Set by Ray's job supervisor in the environment of a submitted job's entrypoint.
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
REMOTE_SCHEMES = {"s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss", "file"}


class OutputError(ValueError):
    """An output location the job cannot use; the message says what to pass instead."""


def submission_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The submission id when this process is the entrypoint of a `ray job submit`, else None."""
    raw = (os.environ if environ is None else environ).get(JOB_CONFIG_ENV)
    if not raw:
        return None
    try:
        metadata = json.loads(raw).get("metadata") or {}
    except (ValueError, AttributeError):
        return "unknown"
    return str(metadata.get("job_submission_id") or "unknown")


def is_uri(target: str | os.PathLike) -> bool:
    scheme = urlparse(str(target)).scheme
    return scheme in REMOTE_SCHEMES


def check_output(target: str | os.PathLike, *, key: str = "out", environ: Mapping[str, str] | None = None) -> str:
    """`target` as a string if a job can write there; OutputError naming `key` otherwise."""
    text = str(target)
    scheme = urlparse(text).scheme
    if scheme in REMOTE_SCHEMES and text.startswith(f"{scheme}:/") and not text.startswith(f"{scheme}://"):
        text = f"{scheme}://{text[len(scheme) + 2:]}"  # a Path-typed config field collapsed the "//"
    if scheme and len(scheme) > 1 and scheme not in REMOTE_SCHEMES:
        raise OutputError(f"{key}={text!r}: unsupported scheme {scheme!r} "
                          f"(use a path or one of {', '.join(sorted(REMOTE_SCHEMES))}://)")
    if is_uri(text):
        if scheme != "file" and not urlparse(text).netloc:
            raise OutputError(f"{key}={text!r} names no bucket (expected {scheme}://BUCKET/PREFIX)")
        return text
    job = submission_id(environ)
    sep = " " if key.startswith("-") else "="  # `--out PATH` on a command line, `out=PATH` as an override
    if job is not None and not Path(text).is_absolute():
        raise OutputError(
            f"{key}{sep}{text!r} is a relative path, and this runs as the submitted Ray job {job}: it would be "
            f"written inside Ray's temporary copy of the working directory on the driver's node, where you "
            f"cannot find it. Pass an absolute path on storage every node sees ({key}{sep}/mnt/shared/...) "
            f"or a URI ({key}{sep}s3://BUCKET/PREFIX, {key}{sep}gs://BUCKET/PREFIX).")
    return text


def check_local_output(target: str | os.PathLike, *, key: str = "out", why: str = "",
                       environ: Mapping[str, str] | None = None) -> Path:
    """For jobs that resume from their output folder: a path (not a URI), refused when relative
    inside a submitted job; `why` says why a URI cannot be used."""
    text = check_output(target, key=key, environ=environ)
    if is_uri(text):
        raise OutputError(f"{key}={text!r}: this job needs a filesystem path{why} "
                          f"(a shared mount such as /mnt/shared/..., or a bucket mounted there)")
    return Path(text)


@contextmanager
def output_dir(target: str | os.PathLike, *, key: str = "out", resume: bool = False,
               environ: Mapping[str, str] | None = None) -> Iterator[Path]:
    """A local folder to write the outputs in: the path itself, or for a URI a staging folder
    copied to the URI (pyarrow.fs.copy_files) when the block ends without an error.

    `resume=True` is for jobs that skip work already in their output folder: the URI's current
    contents are copied into the staging folder first, and what the run finished is copied back
    even when it fails, so a resubmit with the same URI resumes instead of starting over."""
    text = check_output(target, key=key, environ=environ)
    if not is_uri(text):
        path = Path(text)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    staging = Path(tempfile.mkdtemp(prefix="mnemoray-out-"))
    finished = False
    try:
        if resume:
            download(text, staging)
        yield staging
        finished = True
    finally:
        try:
            if finished or resume:
                upload(staging, text)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def upload(local: Path, uri: str) -> None:
    """Copy the tree under `local` to `uri` through pyarrow's filesystem for its scheme."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(root, recursive=True)
    fs.copy_files(str(local), root, source_filesystem=fs.LocalFileSystem(), destination_filesystem=filesystem)


def download(uri: str, local: Path) -> bool:
    """Copy the tree at `uri` into `local`; False when nothing is there yet."""
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(root).type != fs.FileType.Directory:
        return False
    local.mkdir(parents=True, exist_ok=True)
    fs.copy_files(root, str(local), source_filesystem=filesystem, destination_filesystem=fs.LocalFileSystem())
    return True
