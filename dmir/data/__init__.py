"""Evaluation datasets (:mod:`.datasets`) and the data files shipped with dmir.

The package folder also holds data files read by other modules — ``ddnm_inpainting_mask.npy``
(the DDNM/EquS inpainting protocol mask) and ``patch_gmm.npz`` (the patch-GMM prior's
parameters); :func:`resource` gives their paths.
"""
from .datasets import (CROP_MODES, IMAGE_EXTENSIONS, ImageDataset, ImageItem, find_images, image_id,
                       preprocess, read_list, resource, shard)

__all__ = ["CROP_MODES", "IMAGE_EXTENSIONS", "ImageDataset", "ImageItem", "find_images", "image_id",
           "preprocess", "read_list", "resource", "shard"]
