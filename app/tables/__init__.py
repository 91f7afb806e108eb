"""SQLModel tables, one file each. Importing this package registers them all on `metadata`."""

from app.tables.base import metadata, new_id, utcnow
from app.tables.credit_entry import CreditEntry
from app.tables.dead_letter import DeadLetter
from app.tables.gallery_rank import GalleryRank
from app.tables.gallery_ranking import GalleryRanking
from app.tables.generated_image import GeneratedImage
from app.tables.generation_job import GenerationJob
from app.tables.generation_request import GenerationRequest
from app.tables.model import Model
from app.tables.model_interaction import ModelInteraction
from app.tables.request_event import RequestEvent
from app.tables.uploaded_image import UploadedImage
from app.tables.user import User

__all__ = [
    "CreditEntry",
    "DeadLetter",
    "GalleryRank",
    "GalleryRanking",
    "GeneratedImage",
    "GenerationJob",
    "GenerationRequest",
    "Model",
    "ModelInteraction",
    "RequestEvent",
    "UploadedImage",
    "User",
    "metadata",
    "new_id",
    "utcnow",
]
