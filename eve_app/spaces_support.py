"""`spaces.GPU` on Hugging Face ZeroGPU Spaces, an identity decorator everywhere else."""

try:
    import spaces

    gpu = spaces.GPU
except ImportError:  # not on a Space: nothing to request

    def gpu(fn=None, **kwargs):
        return fn if fn is not None else (lambda f: f)
