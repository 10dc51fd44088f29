"""Checkpoint files and where they live: reading and writing weights without running pickled
code (:mod:`.reading`: safetensors, torch zip/legacy pickles through a restricted unpickler),
and the named pretrained checkpoints with their download URLs, checksums and the local
cache (:mod:`.registry`; ``$DMIR_HOME`` or ``~/.cache/dmir``, shared with the metrics'
weights in :mod:`dmir.metrics.weights`).

Nothing here builds a network: :mod:`dmir.models.loading` turns what is read into priors.
"""
