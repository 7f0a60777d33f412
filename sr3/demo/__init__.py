"""``sr3 demo``: a local web page to upscale one image and watch the estimate refine.

:mod:`.jobs` runs upscaling jobs one at a time on a background thread (a queue, one
active job per browser, cancellation between sampling steps, the latest x̂₀ frame
kept as a JPEG); :mod:`.app` is the FastAPI app serving the page in ``static/`` and
the JSON/image endpoints it polls.
"""
