"""Dataset converters into the project's layout (COCO JSON with compressed RLE masks, ``train/``, ``val/``).

``common``: what every converter shares (photo checks, annotation rendering, outputs written as one set);
``class_map``: ``--class-map`` files; ``coco_sources``: Fashionpedia, ModaNet, DeepFashion2 (any COCO-style
source). The Kaggle iMaterialist converter is ``gluon_fashion.convert``.
"""
