"""What is written: files (one atomic write, names, temp-file tidying), A1111-compatible
metadata and reading it back, the run log and its pandas view, and labelled grids (one way to
draw them; `gridlog` builds grids from the run log).

A layer below `image`: the one image path ends by saving and recording through it.
"""
