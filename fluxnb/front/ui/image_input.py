"""The generator form's image input: an init image (an upload or a path), a strength slider,
a mask (an upload or a path), and the input shown as a thumbnail.

    box = ImageInput(settings)     # settings: where uploads are kept (output_dir), the start values
    box.widget                     # the controls
    box.shown                      # the input's thumbnail (the generator puts it beside the result)
    box.value()                    # {"init_image": ..., "mask": ..., "strength": ...} for settings.replace
    box.use(path)                  # "use this result as input"

An upload is written once into the output folder's `inputs/` under its sha256 (the same place
every input is kept), and its path goes in the path field: every setting is a path. With
"size from the input" ticked (the default) the form's size is left out while an input is set,
so the image is made at the input's size (rounded to multiples of 16).
"""

from __future__ import annotations

from pathlib import Path

from ...config.schema import SETTINGS, limits
from .widgets import png, row, w


class ImageInput:
    """The image input controls; `.widget`, `.shown`, `.value()`, `.use(path)`."""

    def __init__(self, settings):
        W = w()
        self.output_dir = settings.output_dir
        lo, hi = limits(SETTINGS["strength"])
        path_layout = W.Layout(width="60%")
        self.init_image = W.Text(value=settings.init_image, placeholder="init image: a path, or upload one",
                                 layout=path_layout)
        self.upload = W.FileUpload(accept="image/*", multiple=False, description="Upload", icon="upload")
        self.strength = W.FloatSlider(value=settings.strength, min=max(lo, 0.01), max=hi, step=0.01,
                                      description="strength", readout_format=".2f")
        self.mask = W.Text(value=settings.mask, placeholder="mask (white = repaint): a path, or upload one",
                           layout=path_layout)
        self.mask_upload = W.FileUpload(accept="image/*", multiple=False, description="Mask", icon="upload")
        self.size_from_input = W.Checkbox(value=True, description="size from the input", indent=False)
        self.clear_button = W.Button(description="No input", icon="times", layout=W.Layout(width="auto"))
        self.shown = W.Image(format="png", layout=W.Layout(width="auto", display="none"))
        self.shown.add_class("fluxnb-input")
        self.upload.observe(lambda c: self._uploaded(c, self.init_image), "value")
        self.mask_upload.observe(lambda c: self._uploaded(c, self.mask), "value")
        self.init_image.observe(lambda _c: self._show(), "value")
        self.clear_button.on_click(lambda _b: self.clear())
        self._show()
        self.widget = W.VBox([row(self.init_image, self.upload, self.clear_button), row(self.mask, self.mask_upload),
                              row(self.strength, self.size_from_input)])
        self.widget.add_class("fluxnb-image-input")

    def value(self) -> dict:
        """The input settings by name (raw: `settings` checks them). With an input and "size
        from the input", the size is None: left to the input's own."""
        path = self.init_image.value.strip()
        out = {"init_image": path, "mask": self.mask.value.strip(), "strength": self.strength.value}
        return out | ({"size": None} if path and self.size_from_input.value else {})

    def use(self, path) -> None:
        """Make `path` (an image made earlier) the input."""
        self.init_image.value = str(path)

    def set(self, settings) -> None:
        """The controls as an image's settings had them (restoring an image)."""
        self.init_image.value, self.mask.value = settings.init_image, settings.mask
        self.strength.value = settings.strength

    def clear(self) -> None:
        self.init_image.value = self.mask.value = ""

    def _uploaded(self, change, field) -> None:
        """An upload: kept in the output folder's inputs/, its path put in `field`."""
        from ...outputs.inputs import store

        files = change["new"]
        if files:
            f = files[0]
            field.value = str(store(bytes(f["content"]), Path(f["name"]).suffix, self.output_dir))

    def _show(self) -> None:
        """The input's thumbnail, or nothing (no input, or not an image: settings say why)."""
        from PIL import Image, UnidentifiedImageError

        path = Path(self.init_image.value.strip()).expanduser()
        try:
            with Image.open(path) as im:
                self.shown.value = png(im.convert("RGB"), 256)
            self.shown.layout.display = None
        except (OSError, UnidentifiedImageError, ValueError):
            self.shown.layout.display = "none"
