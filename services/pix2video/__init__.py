"""pix2video: text-guided video editing with a frozen image diffusion model (Pix2Video)."""

__version__ = "0.1.0"
