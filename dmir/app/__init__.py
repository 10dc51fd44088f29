"""``dmir serve``: a local web app over :func:`dmir.pipeline.restore`.

* :mod:`.form` — the ONE mapping from the page's fields to the ``dmir restore`` command line and
  from that command line to the pipeline's arguments (through the CLI's own parser and option
  checks); feature detection of the options the installed ``dmir restore`` has.
* :mod:`.jobs` — the server side without any web framework: a temporary workspace (every
  upload and result lives inside it), upload checks, the mask drawn in the browser as a PNG
  (white = kept), one restoration at a time, the prior loaded once, progress and cancel.
* :mod:`.ui` — the Gradio page (``pip install "dmir[app]"``); imported only by ``dmir serve``.

Nothing here imports Gradio at module level except :mod:`.ui`, so the package imports without
the extra.
"""
