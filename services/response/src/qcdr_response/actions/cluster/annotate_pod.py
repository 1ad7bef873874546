"""annotate_pod: set annotations on a pod (reversible: undo restores the previous values)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from qcdr_response.actions.cluster._pod_metadata import PodMetadataAction
from qcdr_response.actions.registry import ACTIONS


class AnnotationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    annotations: dict[str, str] = Field(min_length=1, max_length=64)


class AnnotatePod(PodMetadataAction):
    name = "annotate_pod"
    description = "Set annotations on a pod (merge patch); undo restores the previous values."
    params = AnnotationParams
    field = "annotations"


ACTIONS.add(AnnotatePod.name, AnnotatePod(), __name__)
