"""Images: segmentation with a Potts prior, label maps, NIfTI files, the MNI152 template,
phantoms, dipy's classifier and dask volumes (see ``emlab/__init__.py``)."""
