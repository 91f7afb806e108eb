"""GraphQL enums of the requests room, every value described."""

from __future__ import annotations

from enum import Enum

from app.graphql.enums import described, described_enum
from app.requests import stages

RequestStatus = described_enum(
    stages.Status,
    name="RequestStatus",
    description="Where a request is in its lifecycle.",
    values={
        "IMAGE_PENDING": "Received; its prompt is about to be optimized.",
        "IMAGE_GENERATING": "Optimizing the prompt, then generating the candidate images.",
        "IMAGE_COMPLETED": "The images are ready: waiting for `selectImage`, unless "
        "`autoModel` picks one at once.",
        "IMAGE_FAILED": "No image could be made; FAILED follows at once.",
        "MODEL_PENDING": "An image is chosen; the 3D job waits for a worker.",
        "MODEL_GENERATING": "A 3D provider is building the model.",
        "MODEL_COMPLETED": "The model is built and stored; COMPLETED follows at once.",
        "MODEL_FAILED": "The 3D model could not be made; FAILED follows at once.",
        "COMPLETED": "Done: the model is in the owner's library. Final.",
        "FAILED": "Stopped by a failure, what was not delivered refunded; `retryRequest` "
        "resumes it. Final.",
        "CANCELLED": "Stopped by its owner, what was not delivered refunded. Final.",
    },
)
RequestPhase = described_enum(
    stages.Phase,
    name="RequestPhase",
    description="The four phases of a request.",
    values={
        "IMAGE_GENERATION": "The prompt becomes candidate images.",
        "AWAITING_SELECTION": "The images are ready and the owner picks one.",
        "MODEL_GENERATION": "The chosen image becomes a 3D model.",
        "COMPLETED": "The model is done.",
    },
)


@described(
    description="Status of one candidate image.",
    values={
        "PENDING": "Not started: a slot, from the moment the request is created.",
        "GENERATING": "A provider is making it.",
        "COMPLETED": "Made and stored: `url` works.",
        "FAILED": "It could not be made (refunded).",
    },
)
class ImageStatus(Enum):
    PENDING = "PENDING"
    GENERATING = "GENERATING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


@described(
    description="Queue a request's work waits in; HIGH is reserved to some roles.",
    values={
        "HIGH": "Before all other work; roles in `LUMI_HIGH_PRIORITY_ROLES` only.",
        "DEFAULT": "The usual queue.",
        "LOW": "After all other work.",
    },
)
class RequestPriority(Enum):
    HIGH = "high"
    DEFAULT = "default"
    LOW = "low"


@described(
    description="What a provider does.",
    values={
        "LLM": "Rewrites prompts (one variant per image).",
        "IMAGE": "Makes images from prompts.",
        "MODEL": "Makes 3D models from images.",
    },
)
class ProviderKind(Enum):
    LLM = "llm"
    IMAGE = "image"
    MODEL = "model"


@described(
    description="Status of one unit of provider work.",
    values={
        "PENDING": "Waiting for a worker.",
        "RUNNING": "A worker is on it.",
        "RETRYING": "An attempt failed transiently; another follows at `nextAttemptAt`.",
        "COMPLETED": "Done.",
        "FAILED": "Given up for good.",
        "CANCELLED": "Its request was cancelled.",
        "TIMEOUT": "The vendor's job ran out of time (then retried or given up).",
    },
)
class JobStatus(Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"


@described(
    description="What a job does.",
    values={
        "PROMPT": "Optimizes the prompt.",
        "IMAGE": "Makes one candidate image.",
        "MODEL": "Makes the 3D model.",
    },
)
class JobKind(Enum):
    PROMPT = "PROMPT"
    IMAGE = "IMAGE"
    MODEL = "MODEL"
