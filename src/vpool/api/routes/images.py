import tempfile
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from vpool.api.deps import caller, control_plane
from vpool.api.routes.common import accepted
from vpool.model.names import check_name

router = APIRouter(tags=["images"])


@router.get("/images")
def list_images(cp=Depends(control_plane)):
    items = cp.images.listing()
    return {"items": items, "total": len(items), "limit": len(items), "offset": 0}


@router.get("/images/{ref}")
def show_image(ref: str, cp=Depends(control_plane)):
    return cp.images.show(ref)


@router.put("/images/{name}", status_code=201)
async def upload_image(name: str, request: Request, cp=Depends(control_plane)):
    """The request body is the image file itself (qcow2 or raw), streamed to disk."""
    check_name(name, "image name")
    cp.settings.images_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cp.settings.images_dir, prefix=".upload-")
    with open(fd, "wb") as fh:
        async for chunk in request.stream():
            fh.write(chunk)
    return cp.images.import_file(name, Path(tmp))


@router.post("/images/build-tiny", status_code=202)
def build_tiny(name: str = "tiny", who: str = Depends(caller), cp=Depends(control_plane)):
    return accepted(cp.images.build_tiny(name, requested_by=who))


@router.delete("/images/{ref}", status_code=204)
def delete_image(ref: str, cp=Depends(control_plane)):
    cp.images.delete(ref)
