"""The image-status cache: Qualys Container Security images (``GET /csapi/v1.3/images``) polled
into ``ingest_images`` and published read-only as the view ``ingest_image_status`` (admission reads
it for ``block_unscanned_images``).

ASSUMPTIONS about the CS API (checked against the double only; not confirmed Qualys behaviour):
paging by ``pageNumber`` (1-based) and ``pageSize``; the answer is ``{"data": [...], "count":
total}``; an image has ``sha`` (64 hex), ``imageId``, ``repo: [{registry, repository, tag}]``,
``repoDigests: [{registry, repository, digest}]``, ``lastScanned`` (epoch ms, null when never
scanned) and ``vulnerabilities: {"severity1Count" .. "severity5Count"}``.
"""
