"""The fixed parts of the Teacher family: Qwen's special tokens, the answer words, the two
instructions the method asks with, the chat template, and the model classes by ``model_type``."""

from __future__ import annotations

from typing import Literal

from transformers import PreTrainedModel, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

IM_START, IM_END, ENDOFTEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD = "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"
QWEN_SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD]
YES, NO = "Yes", "No"

#: The Qwen-VL families the Teacher code supports, by ``config.json`` model_type.
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "qwen3_vl": Qwen3VLForConditionalGeneration,
}
TeacherFamily = Literal["qwen2_5_vl", "qwen3_vl"]

#: What the Teacher is asked after the instruction when it writes the rules (stage 1).
QUERY_INSTRUCTION = (
    "Write the rules of this task as yes/no questions about the video, each answered Yes when the rule "
    'holds, as JSON: {"goal": "<one final-goal question>", "process": ["<1 to 3 process questions>"]}'
)
#: What follows each rule question when the Teacher judges a video (stage 3).
ANSWER_INSTRUCTION = "Answer Yes or No."

#: Qwen2.5-VL's chat template in spirit: ChatML turns (a system turn only when given: the
#: tiny Teacher saves the tokens of Qwen's default one), image and
#: video content parts as vision_start + one pad token + vision_end (the pad is expanded
#: to the number of merged patches after rendering), and the assistant generation prompt.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['content'] is string -%}"
    "{{ message['content'] }}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'video' -%}{{ '<|vision_start|><|video_pad|><|vision_end|>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
