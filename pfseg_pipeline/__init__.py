"""pfseg: a self-configuring pipeline for patch-free 3D brain-tumour segmentation (PFSeg)."""

__version__ = "0.1.0"
