"""One decorator that registers every public class with Keras serialization."""

import keras

PACKAGE = "keras_maskrcnn_layers"


def kml_export(cls):
    """Registers `cls` as a Keras serializable under this package's name.

    Saved `.keras` files then refer to `"keras_maskrcnn_layers>ClassName"`,
    so loading needs no `custom_objects`.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(cls)
