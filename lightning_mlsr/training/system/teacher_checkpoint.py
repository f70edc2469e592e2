"""A student's checkpoint without its frozen teacher: the teacher's weights left out on save
(~180 MB for MiniLM-L6 on both sides, twice the student with its optimizer state) and put
back on load from the teacher the student was built with, checked against the fingerprint
the checkpoint records."""

from __future__ import annotations

import warnings
from typing import Any

from lightning_mlsr.models.teacher import DenseTeacher

__all__ = ["FINGERPRINT_KEY", "TEACHER_PREFIX", "leave_teacher_out", "put_teacher_back"]

#: where the module holds its teacher (``SparseBiEncoder.teacher``)
TEACHER_PREFIX = "teacher."
#: the checkpoint entry holding :meth:`DenseTeacher.fingerprint`
FINGERPRINT_KEY = "distillation_teacher_sha256"
#: where checkpoints that hold their teacher's weights and were saved by a module whose
#: distillation loss held the teacher keep those weights
_TEACHER_IN_THE_LOSS = {
    "distillation.query_teacher.": "teacher.query_encoder.",
    "distillation.doc_teacher.": "teacher.doc_encoder.",
}


def leave_teacher_out(checkpoint: dict[str, Any], teacher: DenseTeacher) -> None:
    """Drop the teacher's weights from ``checkpoint["state_dict"]`` and record their
    fingerprint: building the student from its hyperparameters loads them again from the
    teacher's own checkpoint or backbone."""
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(TEACHER_PREFIX)]:
        del state[key]
    checkpoint[FINGERPRINT_KEY] = teacher.fingerprint()


def put_teacher_back(checkpoint: dict[str, Any], teacher: DenseTeacher, resuming: bool) -> None:
    """Put ``teacher``'s weights into a checkpoint saved without them; a checkpoint that
    holds its teacher's weights keeps them as they are.

    Raises:
        ValueError: ``resuming`` a fit with a teacher whose weights differ from those the
            checkpoint was trained with (it was replaced or retrained since). Outside a fit
            that is a warning: encoding and evaluation never use the teacher.
    """
    state = checkpoint.get("state_dict", {})
    for key in list(state):
        for inside, outside in _TEACHER_IN_THE_LOSS.items():
            if key.startswith(inside):
                state[outside + key[len(inside) :]] = state.pop(key)
    if any(k.startswith(TEACHER_PREFIX) for k in state):
        return
    saved, now = checkpoint.get(FINGERPRINT_KEY), teacher.fingerprint()
    if saved is not None and saved != now:
        source = teacher.checkpoint or "the backbone's own weights"
        message = (
            f"the distillation teacher built from {source} is not the one this "
            f"checkpoint was trained with (weights sha256 {now[:12]}, trained with "
            f"{saved[:12]}); it was replaced or retrained since"
        )
        if resuming:
            raise ValueError(
                f"cannot resume: {message}. Point model.teacher.init_args.checkpoint at "
                "the teacher the run started with, or start the fit afresh"
            )
        warnings.warn(f"{message}; the student's weights load as saved", stacklevel=3)
    state.update(teacher.state_dict(prefix=TEACHER_PREFIX))
