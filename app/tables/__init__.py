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
from app.tables.webhook_account import WebhookAccount
from app.tables.webhook_delivery import WebhookDelivery
from app.tables.webhook_endpoint import WebhookEndpoint
from app.tables.webhook_request_url import WebhookRequestUrl

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
    "WebhookAccount",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookRequestUrl",
    "metadata",
    "new_id",
    "utcnow",
]
