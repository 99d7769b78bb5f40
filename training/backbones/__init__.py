"""Keras backbones with pretrained weights shipped under models/backbones/."""
