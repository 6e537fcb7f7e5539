"""Names and defaults of the quality commands' choices, importable without torch (for --help)."""

DEFAULT_CLIP_MODEL = "openai/clip-vit-large-patch14"  # the ViT-L/14 family, as the paper's CLIP scores
FLOW_METHODS = ("dis",)  # OpenCV's DIS optical flow
TOY_CLIP = "toy"  # --clip-model toy: the CLIP shipped with the toy model set (--model toy)
