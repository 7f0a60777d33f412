"""sr3: diffusion super-resolution (SR3) and cascaded diffusion (CDM).

    import sr3
    pipe = sr3.load("runs/cpu-4x")           # or sr3.load() for the shipped 4x model
    image = pipe.upscale(pil_image, steps=20, seed=0)
"""

from .pipeline import SRPipeline, load

__all__ = ["load", "SRPipeline"]
__version__ = "0.1.0"
