"""`cnnlab serve`: a trained run behind HTTP, with a page to draw on.

The pieces are small on purpose: :mod:`.decode` turns untrusted upload bytes into an image
(or a precise refusal), :mod:`.batcher` gathers concurrent requests into one forward pass,
:mod:`.app` is the FastAPI application (routes, limits, error bodies) and ``page.html`` the
drawing page. FastAPI and uvicorn are the ``serve`` extra: nothing here is imported by
``import cnnlab``.
"""
