"""Command-line diagnostics: `python -m keras_maskrcnn_layers.tools {anchors,masks} --help`.

- `anchors`: from a COCO annotation file alone, the anchor scales and
  ratios that fit its boxes best, against those of a config.
- `masks`: runs a saved `kml.MaskRCNN` on COCO images and prints mask
  quality by object size (`kml.evaluation.mask_size_report`) and proposal
  recall (`kml.evaluation.proposal_recall`).

From Python: `from keras_maskrcnn_layers.tools.__main__ import main;
main(["anchors", "--coco", "instances.json"])`.
"""
