"""label_pod: set labels on a pod (reversible: undo restores the previous values)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from qcdr_response.actions.cluster._pod_metadata import PodMetadataAction
from qcdr_response.actions.registry import ACTIONS


class LabelParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: dict[str, str] = Field(min_length=1, max_length=64)


class LabelPod(PodMetadataAction):
    name = "label_pod"
    description = "Set labels on a pod (merge patch); undo restores the previous values."
    params = LabelParams
    field = "labels"


ACTIONS.add(LabelPod.name, LabelPod(), __name__)
