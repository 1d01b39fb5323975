"""The one path that makes an image: enhance -> token plan -> encode -> denoise -> decode ->
save -> record (`make`), with the pipeline calls in `render` and the record schema, identity
and failure records in `record`. Every front end makes its images here.
"""
