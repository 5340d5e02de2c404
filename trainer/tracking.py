"""Weights & Biases: one run per training job with config, metrics, the dataset and the model
package.

- the dataset is logged as a ``dataset`` artifact whose metadata (and an alias) carry the dataset
  digest and each source's name, size and sha256; the files (complaint text) are attached only with
  ``TrainConfig.wandb_upload_data``, for a W&B server that is the bank's own;
- the package folder is logged as a ``model`` artifact (manifest metrics and lineage as metadata)
  and linked into the model registry collection ``registry_collection`` with the alias
  ``challenger``; ``promote`` adds ``champion`` later (when the promoter or a person promotes it).
wandb 0.31 cannot link to a registry from an offline run (``Run.link_artifact`` raises
``NotImplementedError``), so offline runs log the artifact with its aliases and record the pending
link in the run summary (``registry_link_pending``); run ``promote``/link once synced.
``WANDB_MODE`` (read by wandb itself) or ``TrainConfig.wandb_mode`` picks online/offline/disabled.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class Tracker:
    """A thin wrapper so the pipeline never checks whether tracking is on: ``Tracker(None)`` does
    nothing."""

    def __init__(self, run: Any | None) -> None:
        self.run = run

    @classmethod
    def start(
        cls,
        project: str,
        config: dict[str, Any],
        mode: str = "",
        job_type: str = "train",
        directory: Path | None = None,
    ) -> Tracker:
        if mode == "disabled":
            return cls(None)
        import wandb

        kwargs: dict[str, Any] = {"project": project, "config": config, "job_type": job_type}
        if mode:
            kwargs["mode"] = mode
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            kwargs["dir"] = str(directory)
        return cls(wandb.init(**kwargs))

    @property
    def active(self) -> bool:
        return self.run is not None

    @property
    def offline(self) -> bool:
        return bool(self.run is not None and self.run.settings._offline)

    @property
    def ref(self) -> str | None:
        """``entity/project/run_id`` (``project/run_id`` offline), for the manifest's lineage."""
        if self.run is None:
            return None
        return "/".join(p for p in (self.run.entity, self.run.project, self.run.id) if p)

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update(values)

    def log_dataset(
        self,
        digest: str,
        sources: list[str],
        summary: dict[str, Any],
        upload_files: bool = False,
    ) -> None:
        """The dataset as an artifact: its digest, load summary and, per source, name, size and
        sha256. The files themselves (complaint text, personal data) are attached only with
        ``upload_files``, which is for a W&B server that is the bank's own, and then only when local
        and small (< 200 MB)."""
        if self.run is None:
            return
        import wandb

        refs = [_describe(Path(src)) for src in sources]
        art = wandb.Artifact(
            "complaints-dataset",
            type="dataset",
            metadata={"digest": digest, "sources": refs, "files_attached": upload_files, **summary},
        )
        if upload_files:
            log.warning(
                "wandb_upload_data is on: the training files (complaint text) go to the W&B server"
            )
            for src in sources:
                path = Path(src)
                if path.is_file() and path.stat().st_size < 200 << 20:
                    art.add_file(str(path))
                elif path.is_dir():
                    art.add_dir(str(path), name=path.name)
        self.run.log_artifact(art, aliases=["latest", f"sha256-{digest[:16]}"])

    def log_package(
        self,
        folder: Path,
        manifest: dict[str, Any],
        collection: str,
        aliases: tuple[str, ...] = ("challenger",),
    ) -> None:
        if self.run is None:
            return
        import wandb

        meta = {
            "version": manifest["version"],
            "metrics": manifest.get("metrics", {}),
            "lineage": manifest.get("lineage", {}),
            "onnx": manifest.get("onnx", {}),
        }
        art = wandb.Artifact(manifest["name"], type="model", metadata=meta)
        art.add_dir(str(folder))
        logged = self.run.log_artifact(art, aliases=["latest", manifest["version"], *aliases])
        if self.offline:
            log.warning(
                "wandb offline: registry link to %s skipped; link after `wandb sync`", collection
            )
            self.summary(
                {"registry_link_pending": {"collection": collection, "aliases": list(aliases)}}
            )
            return
        self.run.link_artifact(logged, target_path=collection, aliases=list(aliases))

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def _describe(path: Path) -> dict[str, Any]:
    """A source as W&B may see it: its name, and for a local file its size and sha256."""
    if not path.is_file():
        return {"name": path.name or str(path)}
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": h.hexdigest()}


def promote(artifact_path: str, alias: str = "champion") -> None:
    """Add ``alias`` to a registered model version (online only), e.g.
    ``wandb-registry-model/x:v3``."""
    import wandb

    art = wandb.Api().artifact(artifact_path)
    if alias not in art.aliases:
        art.aliases.append(alias)
        art.save()
