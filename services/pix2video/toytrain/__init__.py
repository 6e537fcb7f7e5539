"""Training of the ``toy`` model set on the toy world (``pix2video train-toy``)."""
