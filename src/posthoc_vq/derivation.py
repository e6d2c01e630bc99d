"""What a derived artifact was made from, compared with what is on disk when it is read.

A run's model can change after its codebooks, packed weights and evaluations were made (``train --resume``,
a fine-tune resumed into the same folder, a model copied in). Each derived artifact therefore records the
sha256 of what it was derived from:

* a codebook, the model whose latents it was fitted on (``codebook.json``: ``model_sha256``; a fine-tuned
  run's codebook is part of that fine-tune and records ``fine_tuned_from`` instead);
* packed weights, the model they quantize (``weights.json``: ``source_model_sha256``);
* an evaluation, the model, codebook and packed weights it measured (``model.sha256``, ``codebook_sha256``,
  ``weights_sha256``).

Readers call :func:`check_source`: a different checksum is a :class:`StaleArtifactError` naming the artifact
and the command that makes it again, never a silent number; a record from before these fields were kept is
read with a :class:`ProvenanceUnknownWarning`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from posthoc_vq.errors import CheckpointError


class StaleArtifactError(CheckpointError):
    """A derived artifact made from another version of what it derives from (exit code 1, as any inconsistent artifact)."""


class ProvenanceUnknownWarning(UserWarning):
    """A derived artifact whose record predates the checksums of its sources: it cannot be checked."""


class ReplacedArtifactWarning(UserWarning):
    """A codebook or packed weights written over an earlier artifact of the same name."""


def recorded_sha256(record: str | Path) -> str | None:
    """The ``sha256`` an artifact's JSON record keeps of its tensors (None when there is no readable record)."""
    import json

    try:
        return json.loads(Path(record).read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return None


def warn_replaced(what: str, record: str | Path, before: str | None) -> None:
    """Say that ``what`` (e.g. "codebook 'cb' of RUN") replaced an earlier artifact of the same name with other contents
    (``before``: the earlier record's sha256, None if there was none): its evaluations are stale from now on. Written
    again with the same contents (a deterministic refit or repack), nothing is said: its evaluations still hold."""
    after = recorded_sha256(record)
    if before is not None and after != before:
        warnings.warn(f"{what} replaced the one of that name ({Path(record).parent}) with other contents; evaluations of the old one "
                      "are stale from now on (tables leave them out): evaluate it again", ReplacedArtifactWarning, stacklevel=3)


def check_source(what: str, record: str | Path, recorded: str | None, current: str, source: str, remake: str) -> None:
    """Raise :class:`StaleArtifactError` when ``recorded`` (the checksum ``record`` keeps of ``source``) is not ``current``.

    ``what`` names the artifact ("codebook 'kmeans-K8-mu-train'"), ``source`` what it derives from ("the run's model"),
    ``remake`` the command that makes it again. A missing ``recorded`` warns that the provenance is unknown.
    """
    if recorded is None:
        warnings.warn(f"{what} ({record}) records no checksum of {source} (made before these were kept): provenance unknown; "
                      f"to be sure it is current: {remake}", ProvenanceUnknownWarning, stacklevel=3)
    elif recorded != current:
        raise StaleArtifactError(f"{what} ({record}) was made from another version of {source} (sha256 {recorded[:12]}..., now {current[:12]}...): "
                                 f"it is stale; {remake}")
