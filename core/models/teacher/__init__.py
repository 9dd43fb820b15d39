"""The Teacher's model family: a transformers Qwen2.5-VL (or Qwen3-VL) vision-language model.

One specification object for the family, in the finetrainers spirit: how to build a tiny
random one (``build_teacher``), how to load any one by path (``load_teacher``: our shipped
tiny checkpoint, or a real Qwen2.5-VL folder on a GPU machine), and the model-level
operations the method needs:

* ``video_to_pixels``: a differentiable torch version of the library's image processor
  (resize, normalise, pad to the temporal patch, patchify), so that the gradient of the
  Teacher's "Yes" log-probability reaches the video pixels;
* ``render_chat`` / ``video_qa_batch``: the prompt built with the folder's own chat
  template, with the single ``<|video_pad|>`` expanded to one token per merged patch, as
  Qwen2.5-VL's processor does;
* ``answer_logprob``: log P("Yes") and log P("No") at the answer position;
* ``generate_queries``: rule extraction (first frame + instruction -> JSON rule set);
* ``generate_reply``: free generation for a user turn of text, images and videos in any
  order (``ImagePart``, ``VideoPart``), which the RULER-Bench judge uses.

One module a job: ``spec`` (tokens, instructions, chat template, model classes), ``build``
(a tiny random folder), ``loading`` (any folder by path), ``pixels`` (differentiable
preprocessing), ``prompts`` (judging batches, answer log-probabilities), ``generate`` (free
generation, rule extraction), ``shared_encoding`` (one vision pass for M questions). This
package re-exports them all, so callers import from ``core.models.teacher``.

**Loading without torchvision.** transformers' ``Qwen2_5_VLProcessor`` always loads a
``Qwen2VLVideoProcessor``, which needs torchvision; without torchvision neither
``AutoProcessor`` nor even the processor's constructor works. Our folder therefore
names ``PaddleOCRVLProcessor`` as its processor class in ``processor_config.json``: a
library processor with exactly the parts we need and nothing more (an image processor
and a tokenizer, no video processor), whose image path is Qwen2.5-VL's own (it expands
``<|image_pad|>`` to ``grid_t*grid_h*grid_w/merge^2`` tokens and returns
``mm_token_type_ids``). The image processor is the library's ``Qwen2VLImageProcessor``
(the PIL backend is picked automatically where torchvision is missing). Videos never go
through a library processor: ``video_to_pixels`` builds them in torch, which the method
needs anyway for gradients. So ``AutoProcessor.from_pretrained(dir)`` works offline with
or without torchvision, and ``Qwen2_5_VLForConditionalGeneration.from_pretrained(dir)``
loads the model.
"""

from core.models.teacher.build import (
    TeacherArchConfig,
    build_image_processor,
    build_teacher,
    build_teacher_tokenizer,
    save_teacher,
    teacher_config,
)
from core.models.teacher.generate import (
    ChatInputs,
    ChatPart,
    ImagePart,
    VideoPart,
    chat_inputs,
    generate_queries,
    generate_reply,
    query_prompt_ids,
)
from core.models.teacher.loading import (
    Teacher,
    answer_token_id,
    enable_activation_checkpointing,
    load_teacher,
    teacher_model_type,
    teacher_placement,
)
from core.models.teacher.pixels import (
    VisionPreprocess,
    frames_to_tensor,
    image_to_pixels,
    n_vision_tokens,
    smart_resize,
    smart_resize_video,
    video_to_pixels,
)
from core.models.teacher.prompts import (
    VideoQABatch,
    answer_logits,
    answer_logprob,
    mm_token_types,
    p_yes,
    qa_messages,
    query_messages,
    query_text,
    render_chat,
    render_chat_in_order,
    video_qa_batch,
)
from core.models.teacher.shared_encoding import (
    shared_video_encoding,
    vision_tower,
)
from core.models.teacher.spec import (
    ANSWER_INSTRUCTION,
    CHAT_TEMPLATE,
    ENDOFTEXT,
    IMAGE_PAD,
    IM_END,
    IM_START,
    MODEL_CLASSES,
    NO,
    QUERY_INSTRUCTION,
    QWEN_SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    YES,
    TeacherFamily,
)

__all__ = [
    "ANSWER_INSTRUCTION",
    "CHAT_TEMPLATE",
    "ChatInputs",
    "ChatPart",
    "ENDOFTEXT",
    "IMAGE_PAD",
    "IM_END",
    "IM_START",
    "ImagePart",
    "MODEL_CLASSES",
    "NO",
    "QUERY_INSTRUCTION",
    "QWEN_SPECIAL_TOKENS",
    "Teacher",
    "TeacherArchConfig",
    "TeacherFamily",
    "VIDEO_PAD",
    "VISION_END",
    "VISION_START",
    "VideoPart",
    "VideoQABatch",
    "VisionPreprocess",
    "YES",
    "answer_logits",
    "answer_logprob",
    "answer_token_id",
    "build_image_processor",
    "build_teacher",
    "build_teacher_tokenizer",
    "chat_inputs",
    "enable_activation_checkpointing",
    "frames_to_tensor",
    "generate_queries",
    "generate_reply",
    "image_to_pixels",
    "load_teacher",
    "mm_token_types",
    "n_vision_tokens",
    "p_yes",
    "qa_messages",
    "query_messages",
    "query_prompt_ids",
    "query_text",
    "render_chat",
    "render_chat_in_order",
    "save_teacher",
    "shared_video_encoding",
    "smart_resize",
    "smart_resize_video",
    "teacher_config",
    "teacher_model_type",
    "teacher_placement",
    "video_qa_batch",
    "video_to_pixels",
    "vision_tower",
]
