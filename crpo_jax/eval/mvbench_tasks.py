"""MVBench's 20 tasks: name, question file, video folder, media kind, bounds.

The table follows the official VideoChat2 `mvbench.ipynb` data list: the video
folder is relative to the release's video/ root, "frame" tasks (Episodic Reasoning)
ship folders of frames instead of videos, and bounded tasks carry `start`/`end` in
seconds.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  file: str
  prefix: str
  kind: str
  bounded: bool


# TVQA frames ship at 3 fps (the folder name says so: frames_fps3_hq).
FRAME_FPS = 3.0


TASKS = (
  Task("Action Sequence", "action_sequence.json", "star/Charades_v1_480", "video", True),
  Task("Action Prediction", "action_prediction.json", "star/Charades_v1_480", "video", True),
  Task("Action Antonym", "action_antonym.json", "ssv2_video", "video", False),
  Task(
    "Fine-grained Action", "fine_grained_action.json", "Moments_in_Time_Raw/videos", "video", False
  ),
  Task("Unexpected Action", "unexpected_action.json", "FunQA_test/test", "video", False),
  Task("Object Existence", "object_existence.json", "clevrer/video_validation", "video", False),
  Task("Object Interaction", "object_interaction.json", "star/Charades_v1_480", "video", True),
  Task("Object Shuffle", "object_shuffle.json", "perception/videos", "video", False),
  Task("Moving Direction", "moving_direction.json", "clevrer/video_validation", "video", False),
  Task("Action Localization", "action_localization.json", "sta/sta_video", "video", True),
  Task("Scene Transition", "scene_transition.json", "scene_qa/video", "video", False),
  Task("Action Count", "action_count.json", "perception/videos", "video", False),
  Task("Moving Count", "moving_count.json", "clevrer/video_validation", "video", False),
  Task("Moving Attribute", "moving_attribute.json", "clevrer/video_validation", "video", False),
  Task("State Change", "state_change.json", "perception/videos", "video", False),
  Task("Fine-grained Pose", "fine_grained_pose.json", "nturgbd", "video", False),
  Task("Character Order", "character_order.json", "perception/videos", "video", False),
  Task("Egocentric Navigation", "egocentric_navigation.json", "vlnqa", "video", False),
  Task("Episodic Reasoning", "episodic_reasoning.json", "tvqa/frames_fps3_hq", "frame", True),
  Task(
    "Counterfactual Inference",
    "counterfactual_inference.json",
    "clevrer/video_validation",
    "video",
    False,
  ),
)

_BY_FILE = {t.file: t for t in TASKS}


def by_file(file_name: str) -> Task:
  """The task whose question file is `file_name` (e.g. 'action_count.json')."""
  if file_name not in _BY_FILE:
    raise ValueError(
      f"{file_name!r} is not an MVBench task file; expected one of {sorted(_BY_FILE)}"
    )
  return _BY_FILE[file_name]
