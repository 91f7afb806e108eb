"""`POST /uploads`: local storage's presigned upload form, the one S3 has built in.

The form `createImageUpload` hands out (`LocalStorage.presigned_post`) is signed over the
exact key, type, size limit and expiry; whoever holds it may store one file there, as
with S3, and nothing else. The file lands in quarantine (`incoming/`), unread: it is
checked when the upload is completed or used (app/uploads/service.py).
"""

from __future__ import annotations

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from providers.storage import LocalStorage

# The form fields and multipart framing around the file, on top of its bytes.
UPLOAD_FORM_OVERHEAD = 64 * 1024


async def upload_form(request: Request) -> Response:
    """Stores the form's file at the key its signed fields name (204), as S3 would."""
    storage = request.app.state.deps.storage
    if not isinstance(storage, LocalStorage):
        return PlainTextResponse("not found", status_code=404)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return PlainTextResponse("send the form as multipart/form-data", status_code=400)
    try:
        async with request.form(max_files=1, max_fields=16, max_part_size=4096) as form:
            fields = {name: value for name, value in form.items() if isinstance(value, str)}
            signed = storage.verify_post(fields)
            if signed is None:
                return PlainTextResponse("this upload form is invalid or has expired", 403)
            key, content_type, max_bytes = signed
            file = form.get("file")
            if not isinstance(file, UploadFile):
                return PlainTextResponse("the form has no `file` part", status_code=400)
            data = await file.read(max_bytes + 1)
    except MultiPartException as exc:
        return PlainTextResponse(f"the form could not be read: {exc.message}", 400)
    if not data:
        return PlainTextResponse("the file is empty", status_code=400)
    if len(data) > max_bytes:
        return PlainTextResponse(f"the file is larger than {max_bytes} bytes", 400)
    await storage.put(key, data, content_type)
    return Response(status_code=204)
