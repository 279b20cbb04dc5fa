"""What the lifecycle's stages hand each other, defined once.

    names.py     the handover file names (``train.jsonl``, ``training.json``, ``manifest.json`` …)
    digest.py    ``sha256_file``: how every stage names the bytes it read or wrote
    manifest.py  ``manifest.json``: what ``ggserve convert`` built, from what, how good
    registry.py  the model registry: every servable version and which one is active
    lineage.py   a version's lineage, assembled from the files the earlier stages left

The bottom of the tree: standard library only, importing nothing of ours but itself, so the
server, the converter and the flywheel all read and write these files the same way.
"""
