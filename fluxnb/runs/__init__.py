"""Many images: sweeps (axes, layout, labelled grids), batches (params files, the batch
notebook run by papermill) and the Ray backend both can use. Each image is made by the one
image path (`fluxnb.image`).
"""
